"""Two evaluated runs side by side on the same test sets, with a paired bootstrap of their F1 difference.

    python -m training.compare build/training/templates build/training/templates-neighbours [--json out.json]

Each run folder is a pipeline ``out`` folder after its evaluate stage (``eval/metrics.json`` and the per-set verdicts
``eval/<model>/<set>.jsonl``). Both runs must have judged the same items of a set (same ids, same labels): the
difference is then paired, and its 95% interval comes from resampling the items (2,000 resamples, fixed seed), so a
set with 17 anomalies says how little one F1 difference there proves. The baselines of the first run (fitted on the
training split, no model) are printed beside both.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

RESAMPLES = 2000


def _f1(pairs: list[tuple[bool, bool]]) -> float:
    tp = sum(y and p for y, p in pairs)
    fp = sum(p and not y for y, p in pairs)
    fn = sum(y and not p for y, p in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _verdicts(path: Path) -> dict[str, tuple[bool, bool]]:
    """id -> (labelled anomalous, judged anomalous) for a set's verdict file (a malformed answer counts as normal,
    as the set metrics count it)."""
    out = {}
    for line in path.read_text().splitlines():
        pt = json.loads(line)
        (label,) = set(pt["labels"])  # template sets: one item per judged prompt
        out[pt["id"]] = (label == "anomalous", pt["verdict"] == "anomalous")
    return out


def paired_difference(a: dict[str, tuple[bool, bool]], b: dict[str, tuple[bool, bool]],
                      seed: int = 0) -> dict[str, float]:
    """F1(b) - F1(a) on the same items, and its 95% bootstrap interval."""
    if a.keys() != b.keys() or any(a[k][0] != b[k][0] for k in a):
        raise ValueError("the two runs judged different items (or labels): not a paired comparison")
    ids = sorted(a)
    rng = random.Random(seed)
    diffs = []
    for _ in range(RESAMPLES):
        sample = [rng.choice(ids) for _ in ids]
        diffs.append(_f1([b[i] for i in sample]) - _f1([a[i] for i in sample]))
    diffs.sort()
    return {"diff": round(_f1([b[i] for i in ids]) - _f1([a[i] for i in ids]), 4),
            "ci95": [round(diffs[int(0.025 * RESAMPLES)], 4), round(diffs[int(0.975 * RESAMPLES) - 1], 4)]}


def compare(run_a: Path, run_b: Path, model: str = "sft") -> dict[str, Any]:
    from training.evaluate import verdicts_file

    ma = json.loads((run_a / "eval" / "metrics.json").read_text())
    mb = json.loads((run_b / "eval" / "metrics.json").read_text())
    sa, sb = ma["test"][model]["sets"], mb["test"][model]["sets"]
    out: dict[str, Any] = {"runs": [str(run_a), str(run_b)], "sets": {}}
    for name in sa:
        if name not in sb:
            continue
        fa, fb = (verdicts_file(run / "eval" / model, name) for run in (run_a, run_b))
        row = {"a": sa[name], "b": sb[name],
               "baselines": {k: v["sets"][name]["f1"] for k, v in (ma.get("baselines") or {}).get("test", {}).items()
                             if name in v.get("sets", {})}}
        if fa.is_file() and fb.is_file():
            row["paired"] = paired_difference(_verdicts(fa), _verdicts(fb))
        out["sets"][name] = row
    return out


def table(res: dict[str, Any], labels: tuple[str, str]) -> str:
    names = sorted({b for row in res["sets"].values() for b in row["baselines"]})
    head = ("| set | anomalous / items | " + " | ".join(f"{lab}: P / R / F1" for lab in labels)
            + " | F1 difference [95% CI] | " + " | ".join(names) + " | faithful (a / b) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in res["sets"].items():
        a, b = row["a"], row["b"]
        cells = [f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}" for m in (a, b)]
        p = row.get("paired")
        diff = f"{p['diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]" if p else "-"
        lines.append(f"| {name} | {a['tp'] + a['fn']} / {a['labelled']} | " + " | ".join(cells) + f" | {diff} | "
                     + " | ".join(f"{row['baselines'][n]:.3f}" if n in row["baselines"] else "-" for n in names)
                     + f" | {a.get('faithful_rate')} / {b.get('faithful_rate')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="compare two evaluated runs on the same test sets")
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--model", default="sft", choices=("sft", "grpo"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    res = compare(a.run_a, a.run_b, a.model)
    print(table(res, (a.run_a.name, a.run_b.name)))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
