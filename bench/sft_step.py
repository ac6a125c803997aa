"""Seconds per SFT step through the real trainer (TRL SFTTrainer, ``training.sft.train_sft``) on HDFS rows:
TRL's default gradient checkpointing and LoRA dropout against the CPU configuration's choices.

Needs the data stage's rows (``python -m training.pipeline --config training/configs/cpu.toml --stages data``)::

    .venv/bin/python bench/sft_step.py [--rows build/training/cpu/data/sft_train.jsonl --steps 3]

The losses of the first steps are printed too: turning checkpointing off must not change them (same math).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

VARIANTS = {"checkpointing+dropout (TRL default)": (True, 0.05), "dropout only": (False, 0.05),
            "neither (cpu.toml)": (False, 0.0)}


def main() -> None:
    from training.dataset import read_jsonl
    from training.sft import SFTParams, train_sft

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path.home() / ".cache/rationad/models/base")
    ap.add_argument("--rows", type=Path, default=Path("build/training/cpu/data/sft_train.jsonl"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    rows = [r for r in read_jsonl(a.rows) if r["task"] == "hdfs"][: a.batch * a.steps]
    out = {}
    for name, (checkpointing, dropout) in VARIANTS.items():
        p = SFTParams(lora_r=16, lora_alpha=32, layers_from=14, batch_size=a.batch, grad_accum=1, max_steps=a.steps,
                      threads=2, bf16=False, logging_steps=1, save_steps=10_000, lora_dropout=dropout,
                      gradient_checkpointing=checkpointing)
        with tempfile.TemporaryDirectory() as tmp:
            m = train_sft(a.base, rows, Path(tmp), p)
        out[name] = {"seconds_per_step": round(m["seconds"] / m["steps"], 1),
                     "losses": [round(x["loss"], 4) for x in m["log"] if "loss" in x]}
    print(json.dumps({"rows": len(rows), "batch": a.batch, "dtype": "float32", "variants": out}, indent=1))


if __name__ == "__main__":
    main()
