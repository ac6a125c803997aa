"""LoRA training step on CPU: float32 vs bf16 autocast (what `bf16 = true` in training/configs/cpu.toml buys).

Times forward+backward of the SFT model's LoRA setup (r=16, top 16 of 30 layers) on a batch of random tokens and
prints seconds per step for each mode. The base folder is ``python -m training.prepare_base``'s output.

    .venv/bin/python bench/train_step.py --base ~/.cache/rationad/models/base [--batch 8 --tokens 550 --steps 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def step_seconds(base: Path, autocast: bool, batch: int, tokens: int, steps: int, threads: int) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.sft import SFTParams

    torch.set_num_threads(threads)
    p = SFTParams(lora_r=16, lora_alpha=32, layers_from=14)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    n = model.config.num_hidden_layers
    model = get_peft_model(model, LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, target_modules=list(p.target_modules),
                                             layers_to_transform=list(range(p.layers_from, n)), task_type="CAUSAL_LM"))
    x = torch.randint(0, model.config.vocab_size, (batch, tokens))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path.home() / ".cache/rationad/models/base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=550)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    out = {mode: round(step_seconds(a.base, mode == "bf16_autocast", a.batch, a.tokens, a.steps, a.threads), 2)
           for mode in ("float32", "bf16_autocast")}
    out["speedup"] = round(out["float32"] / out["bf16_autocast"], 2)
    print(json.dumps({"batch": a.batch, "tokens": a.tokens, "threads": a.threads, "seconds_per_step": out}))


if __name__ == "__main__":
    main()
