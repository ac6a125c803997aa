"""rationad's training pipeline: data, CoT-SFT, GRPO, evaluation and export of the checkpoint the daemon serves.

Imports ``rationad``'s prompt and schema code (the prompt that is trained is the prompt that is served); the daemon
never imports this package.
"""
