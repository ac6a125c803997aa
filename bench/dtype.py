"""vLLM on CPU: bfloat16 vs float32 for the same judgements (what ``[model] dtype = "auto"`` decides).

Loads the model in vLLM (CPU backend) with ``--dtype`` and times greedy answers to the first ``--prompts`` validation
prompts of the training data (the daemon's chat prompt), printing seconds and generated tokens, and the CPU's
native-bf16 verdict (``rationad.model.dtype.cpu_has_native_bf16``). One process per dtype; nothing else on the cores.

    for d in bfloat16 float32; do .venv/bin/python bench/dtype.py --dtype $d --model ~/.cache/rationad/models/default \\
        --rows build/training/cpu/data/sft_val.jsonl; done
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def run(model: Path, dtype: str, prompts: list, max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    t0 = time.monotonic()
    llm = LLM(model=str(model), dtype=dtype, max_model_len=2048, enforce_eager=True)
    load = time.monotonic() - t0
    t0 = time.monotonic()
    out = llm.chat(prompts, SamplingParams(max_tokens=max_tokens, temperature=0))
    return {"dtype": dtype, "load_s": round(load, 1), "judge_s": round(time.monotonic() - t0, 1),
            "prompts": len(prompts), "tokens": sum(len(o.outputs[0].token_ids) for o in out)}


def main() -> None:
    from rationad.model.dtype import cpu_has_native_bf16

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), required=True)
    ap.add_argument("--model", type=Path, default=Path("~/.cache/rationad/models/default").expanduser())
    ap.add_argument("--rows", type=Path, default=Path("build/training/cpu/data/sft_val.jsonl"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    rows = [json.loads(line) for line in a.rows.read_text().splitlines()[: a.prompts]]
    prompts = [r["prompt"] for r in rows]
    print(json.dumps({"cpu_native_bf16": cpu_has_native_bf16(), **run(a.model, a.dtype, prompts, a.max_tokens)}),
          flush=True)


if __name__ == "__main__":
    main()
