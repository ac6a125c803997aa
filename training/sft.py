"""CoT supervised fine-tuning: LoRA (peft) on the chat-formatted rows with TRL's SFTTrainer.

Rows are conversational prompt-completion pairs (``training.dataset.sft_rows``): SmolLM2's chat template has no
``{% generation %}`` markers, so instead of ``assistant_only_loss`` the prompt-completion format is used, and TRL's
``completion_only_loss`` puts the loss on the assistant turn only (``<think>`` + ``<answer>`` + end-of-turn).
A wall-clock guard stops training (and saves) when ``max_minutes`` is reached.

    python -m training.sft --config training/configs/cpu.toml --rows DATA.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(slots=True)
class SFTParams:
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 1024
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"])
    warmup_ratio: float = 0.05
    lr_scheduler: str = "constant_with_warmup"  # robust to a wall-clock stop; "cosine" when the run always finishes
    layers_from: int = 0  # LoRA only on decoder layers >= this (0 = all): cuts the backward pass on slow CPUs
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    max_steps: int = -1
    threads: int = 0  # torch threads (0 = torch's default)
    bf16: bool = False  # bf16 mixed precision (autocast); on CPUs with AMX / avx512_bf16 about 2x faster than float32
    # Recompute activations in the backward pass: saves memory for a 7B base on a GPU, costs about 2x per step on a
    # small model (with LoRA it also sends the backward through every layer); TRL turns it on unless told otherwise.
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    save_steps: int = 40
    seed: int = 0


def _time_guard(max_minutes: float):
    from transformers import TrainerCallback

    class TimeGuard(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.stopped_early = False

        def on_step_end(self, args, state, control, **kwargs):
            if max_minutes and time.monotonic() - self.start > max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                self.stopped_early = True
            return control

    return TimeGuard()


def _lineage(init_adapter: Path | None) -> dict | None:
    """What a continuation started from: the adapter folder and, for a released one, its manifest's identity."""
    if init_adapter is None:
        return None
    manifest = init_adapter / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    return {"adapter": str(init_adapter), **{k: m[k] for k in ("name", "version", "adapter_sha256") if k in m}}


def train_sft(base: Path, rows: list[dict], out_dir: Path, p: SFTParams, *, init_adapter: Path | None = None) -> dict:
    """Train; saves the adapter and tokenizer in ``out_dir/adapter``; returns metrics (loss, steps, seconds)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from training.config import bf16_usable

    if p.threads:
        torch.set_num_threads(p.threads)
    bf16 = bf16_usable(p.bf16)
    tok = AutoTokenizer.from_pretrained(base)
    # Weights load in bf16 on GPUs (memory); on CPU they stay float32 and bf16 is autocast only, which is what is fast.
    dtype = torch.bfloat16 if bf16 and torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft_config = None
    if init_adapter is not None:
        # The adapter's shape (rank, layers, modules) is its own; the dropout is a training choice of this run.
        resumed = LoraConfig.from_pretrained(init_adapter)
        resumed.lora_dropout = p.lora_dropout
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True, config=resumed)
    else:
        n_layers = model.config.num_hidden_layers
        peft_config = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                                 target_modules=list(p.target_modules), task_type="CAUSAL_LM",
                                 layers_to_transform=list(range(p.layers_from, n_layers)) if p.layers_from else None)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=p.epochs, max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler, warmup_steps=p.warmup_ratio,
        max_length=p.max_length, completion_only_loss=True, train_sampling_strategy="group_by_length",
        logging_steps=p.logging_steps, save_steps=p.save_steps, save_total_limit=2, bf16=bf16,
        report_to=[], seed=p.seed, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, gradient_checkpointing=p.gradient_checkpointing,
    )
    guard = _time_guard(p.max_minutes)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config,
                         callbacks=[guard])
    t0 = time.monotonic()
    result = trainer.train()
    seconds = time.monotonic() - t0
    adapter_dir = out_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
               "examples": len(rows), "stopped_early": guard.stopped_early, "params": asdict(p),
               "bf16_used": bf16, "continued_from": _lineage(init_adapter), "log": trainer.state.log_history}
    (out_dir / "sft_metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    return metrics


def main(argv: list[str] | None = None) -> None:
    from training.config import load, section
    from training.dataset import read_jsonl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--rows", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--init-adapter", type=Path, help="continue training this adapter (e.g. after a wall-clock stop)")
    ap.add_argument("--max-minutes", type=float, help="override [sft] max_minutes")
    ap.add_argument("--learning-rate", type=float, help="override [sft] learning_rate")
    ap.add_argument("--seed", type=int, help="override [sft] seed (a new data order for a continuation)")
    ap.add_argument("--epochs", type=float, help="override [sft] epochs (size a continuation to its time budget)")
    a = ap.parse_args(argv)
    p = section(load(a.config), "sft", SFTParams, a.config)
    for key in ("max_minutes", "learning_rate", "seed", "epochs"):
        if getattr(a, key) is not None:
            setattr(p, key, getattr(a, key))
    m = train_sft(a.base, read_jsonl(a.rows), a.out, p, init_adapter=a.init_adapter)
    print(json.dumps({k: v for k, v in m.items() if k != "log"}, default=str))


if __name__ == "__main__":
    main()
