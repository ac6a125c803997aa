"""Rows for a short continuation of SFT: every row of a kind the adapter has not learned yet plus a replay sample.

    python -m training.focus --rows build/training/cpu/data/sft_train.jsonl --out build/training/cpu/data/focus.jsonl \\
        --new generic,injected --replay 12

A continuation from a released adapter on a slow CPU affords a few dozen steps, not another epoch: it spends them
on the new kinds of rows (``generic``: windows of other systems; ``injected``: injection-hardening copies;
``fragment``: tails of a lifecycle, ``training.data_fragments``) and keeps ``--replay`` hash-chosen rows of every
other (task, label) so the old skills are rehearsed, not overwritten. ``--balance`` keeps as many rows of each label
of a new kind as its rarer label has (hash-chosen; tails are two-thirds anomalous, training/RESULTS.md, "One tally
form").
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from training.dataset import read_jsonl, write_jsonl
from training.splits import unit


def kind(row: dict) -> str:
    return "injected" if row.get("injected") else "fragment" if row.get("fragment") else row["task"]


def focus_rows(rows: list[dict], new: set[str], replay: int, balance: bool = False) -> list[dict]:
    """Every row whose kind is in ``new`` (with ``balance``, as many of each label as the kind's rarer label has);
    ``replay`` rows of each other (task, label), chosen by content hash."""
    unknown = new - {kind(r) for r in rows}
    if unknown:
        raise ValueError(f"no rows of kind {sorted(unknown)} (kinds: {sorted({kind(r) for r in rows})})")
    keep = [r for r in rows if kind(r) in new]
    if balance:
        by: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in keep:
            by[(kind(r), r["label"])].append(r)
        least: dict[str, int] = {}
        for (k, _), v in by.items():
            least[k] = min(least.get(k, len(v)), len(v))
        keep = [r for key in sorted(by)  # a kind with one label only keeps it whole: nothing to balance it against
                for r in sorted(by[key], key=lambda r: unit(r["session"], "focus-balance"))[:least[key[0]]]]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if kind(r) not in new:
            groups[(r["task"], r["label"])].append(r)
    for key in sorted(groups):
        keep += sorted(groups[key], key=lambda r: unit(r["session"], "focus-replay"))[:replay]
    return sorted(keep, key=lambda r: unit(r["session"] + r["label"], "focus-order"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--new", required=True, help="comma-separated kinds to keep whole (a task name, or injected)")
    ap.add_argument("--replay", type=int, required=True, help="rows kept of every other (task, label)")
    ap.add_argument("--balance", action="store_true", help="as many rows of each label of a new kind as its rarer one")
    a = ap.parse_args(argv)
    rows = focus_rows(read_jsonl(a.rows), set(a.new.split(",")), a.replay, a.balance)
    write_jsonl(rows, a.out)
    counts = Counter(f"{kind(r)}/{r['label']}" for r in rows)
    print(f"[focus] {len(rows)} rows: {dict(sorted(counts.items()))}", flush=True)


if __name__ == "__main__":
    main()
