"""Does GRPO's rationale reward tell a true rationale from a word salad of it? For each SFT row (the data stage's
``sft_train.jsonl``: label, reference analysis, session, n_refs), the rationale part of the reward (0.5 * (grounding +
brevity), ``training.rewards``) of the reference itself against two salads of its words padded to its length: the
reference's distinct words sorted by length, and the session's words that are also in the reference. Prints the
mean of each and on how many rows a salad scores at least the reference.

With ``--against REV`` the same runs on ``training/rewards.py`` as it was at that git revision (``173fc9e~1``: single
words instead of word pairs), in the same process.

The rows: ``.venv/bin/python -m training.pipeline --config training/configs/cpu_continue.toml --stages data`` writes
``build/training/continue/data/sft_train.jsonl``.

Usage: ``.venv/bin/python bench/reward_salad.py --rows build/training/continue/data/sft_train.jsonl
[--against 173fc9e~1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import module_at, print_machine

_WORD = re.compile(r"[A-Za-z][A-Za-z]+")


def _padded(words: list[str], length: int) -> str:
    bag = " ".join(words)
    return ((bag + " ") * (length // max(1, len(bag)) + 1))[:length]


def run(rewards, rows: list[dict]) -> dict:
    means = {"reference": 0.0, "reference words": 0.0, "session words in reference": 0.0}
    beaten = {"reference words": 0, "session words in reference": 0}
    for r in rows:
        ref, label = r["reference"], r["label"]
        in_ref = {w.lower() for w in _WORD.findall(ref)}
        texts = {"reference": ref,
                 "reference words": _padded(sorted(set(_WORD.findall(ref)), key=len, reverse=True), len(ref)),
                 "session words in reference": _padded(
                     [w for w in _WORD.findall(r["session"]) if w.lower() in in_ref] or _WORD.findall(r["session"]),
                     len(ref))}
        cols = {k: [r[k]] * len(texts) for k in ("label", "reference", "session", "n_refs")}
        comps = [f"<think>{t}</think>\n<answer>{label}</answer>" for t in texts.values()]
        g = rewards.grounding_reward(None, comps, **cols)
        b = rewards.brevity_reward(None, comps, **cols)
        part = {name: 0.5 * (g[i] + b[i]) for i, name in enumerate(texts)}
        for name in means:
            means[name] += part[name] / len(rows)
        for name in beaten:
            beaten[name] += part[name] >= part["reference"]
    return {"rows": len(rows), "mean": {k: round(v, 3) for k, v in means.items()}, "salad >= reference": beaten}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=Path, required=True)
    ap.add_argument("--against", help="also score with training/rewards.py at this git revision")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import training.rewards

    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("reference")]
    result: dict = {"machine": print_machine(), "rows_file": str(args.rows)}
    sides = [("now", training.rewards)] + ([(args.against, module_at(args.against, "training/rewards.py"))]
                                          if args.against else [])
    for name, module in sides:
        r = result[name] = run(module, rows)
        print(f"{name}: {r['rows']} rows; mean rationale part {r['mean']}; a salad scores at least the reference on "
              f"{r['salad >= reference']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
