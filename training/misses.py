"""Which HDFS failures a model misses, by the kind the knowledge base names (issue 16).

Every anomalous HDFS view gets its failure kind (``training.rationales.failure_kind``: the first error row's name,
``lifecycle`` for a write that never completed, ``none``); the table gives each kind's views and sessions per split
and, with ``--scores`` (per-item lines of ``bench/threshold.py --data``, validation views), how many of its views the
model flags at ``--threshold``. It shows whether the misses are spread or come from kinds the training rows lack
(``[data] hdfs_min_per_failure``)::

    .venv/bin/python -m training.misses --config training/configs/cpu.toml \\
        --scores bench/results/threshold-0.2.1/hdfs.jsonl --threshold 0.0004
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections import Counter
from pathlib import Path


def kind_table(corpus_splits: dict, scores: dict[str, float] | None, threshold: float) -> list[str]:
    """Markdown rows: kind, then views / sessions per split, then the validation views flagged at ``threshold``."""
    from training.dataset import distinct_views
    from training.rationales import failure_kind

    splits = ("train", "val", "test")
    views: dict[str, Counter] = {s: Counter() for s in splits}
    sessions: dict[str, Counter] = {s: Counter() for s in splits}
    flagged: Counter = Counter()
    judged: Counter = Counter()
    # A score names one session; the evaluation judges each distinct view once, under any of its sessions' ids, so
    # scores are joined by view, not by the id ``distinct_views`` happens to pick as the representative.
    by_view = {}
    if scores is not None:
        by_view = {e.view_key: scores[e.sid] for e in corpus_splits["val"] if e.task == "hdfs" and e.sid in scores}
    for s in splits:
        for rep, n, label in distinct_views([e for e in corpus_splits[s] if e.task == "hdfs"]):
            if label != "anomalous":
                continue
            k = failure_kind(rep.view)
            views[s][k] += 1
            sessions[s][k] += n
            if s == "val" and rep.view_key in by_view:
                judged[k] += 1
                flagged[k] += by_view[rep.view_key] >= threshold
    head = "| failure kind | " + " | ".join(f"{s} views (sessions)" for s in splits)
    out = [head + (f" | val views flagged at {threshold:g} |" if scores is not None else " |")]
    out.append("|---" * (len(splits) + 1 + (scores is not None)) + "|")
    for k, _ in (views["train"] + views["val"] + views["test"]).most_common():
        row = f"| {k} | " + " | ".join(f"{views[s][k]} ({sessions[s][k]})" for s in splits)
        if scores is not None:
            row += f" | {flagged[k]} of {judged[k]}" if judged[k] else " | -"
        out.append(row + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    from training.evaluate import eval_inputs
    from training.pipeline import prepare_base

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--scores", type=Path, help="per-item JSON lines of bench/threshold.py (id, score)")
    ap.add_argument("--threshold", type=float, default=0.5, help="a view is flagged at score >= this")
    a = ap.parse_args(argv)
    cfg = tomllib.loads(a.config.read_text())
    _, _, corpus = eval_inputs(cfg, a.config, prepare_base(cfg), False)
    scores = None
    if a.scores is not None:
        scores = {r["id"]: float(r["score"]) for r in map(json.loads, a.scores.read_text().splitlines())
                  if r.get("score") is not None}
    print("\n".join(kind_table(corpus.splits, scores, a.threshold)))


if __name__ == "__main__":
    main()
