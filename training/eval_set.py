"""Judge the evaluation sets whose names start with ``--set`` (as ``training.evaluate.build_sets`` makes them for
``--split``) with one merged model folder, without the whole evaluate stage: a quick measurement of one set, e.g.

    .venv/bin/python -m training.eval_set --model ~/.cache/rationad/models/default --set "HDFS fragments" --out /tmp/ev

prints the knowledge-base rules' metrics and the model's on each set, and writes each set's verdicts
(``<out>/<set>.jsonl``, as the evaluate stage does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a merged model folder (base + adapter)")
    ap.add_argument("--set", required=True, help="the start of the set names to judge, e.g. 'HDFS fragments'")
    ap.add_argument("--split", default="test", choices=("test", "val"))
    ap.add_argument("--config", type=Path, default=Path("training/configs/cpu.toml"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)

    from training.config import load
    from training.evaluate import build_sets, eval_inputs, evaluate_model, kb_baseline
    from training.pipeline import prepare_base

    cfg = load(a.config)
    t0 = time.monotonic()
    p, dc, corpus = eval_inputs(cfg, a.config, prepare_base(cfg), False)
    sets = [s for s in build_sets(corpus, p, a.split, val_mode=a.split == "val", datasets=dc.datasets)
            if s.name.startswith(a.set)]
    if not sets:
        raise SystemExit(f"no {a.split} set starts with {a.set!r}")
    print(f"[eval_set] data in {time.monotonic() - t0:.0f} s: " + "; ".join(f"{s.name}: {s.note}" for s in sets))
    print("[eval_set] knowledge-base rules:", json.dumps(kb_baseline(sets)["sets"]), flush=True)
    res = asyncio.run(evaluate_model(a.model, sets, a.out, p.chunk))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
