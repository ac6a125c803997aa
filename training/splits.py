"""Deterministic train / validation / test splits by hash of content (no RNG state, no dependence on file order).

HDFS: a share of the distinct views (the template sequence with counts, exactly what the model sees) is held out
whole into test, so the test split has a guaranteed set of sequences never seen in training; the remaining sessions
are split by the hash of their own content. ``unseen`` marks test sessions whose view is absent from train.
Templates: split by the hash of the template text.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

from training.example import Example

SPLITS = ("train", "val", "test")


def unit(key: str, salt: str = "rationad-split-v1") -> float:
    """A number in [0, 1) fixed by ``key``."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()[:8], "big") / 2**64


def by_fraction(u: float, val: float, test: float) -> str:
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def seeded_order(ids: Iterable[str], seed: str) -> list[str]:
    """``ids`` in an order fixed by ``seed`` (SHA-256 of seed and id): how samples and benchmarks pick blocks."""
    return sorted(ids, key=lambda b: hashlib.sha256(f"{seed}:{b}".encode()).hexdigest())


def split_examples(examples: Sequence[Example], *, val: float = 0.1, test: float = 0.2,
                   holdout_views: float = 0.1) -> dict[str, list[Example]]:
    """Assign every example to a split; marks ``extra['unseen']`` on test examples whose view is not in train."""
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for ex in examples:
        if ex.task == "hdfs" and unit(ex.view_key, "view-holdout") < holdout_views:
            out["test"].append(ex)
        else:
            key = ex.view_key if ex.task != "hdfs" else f"{ex.origin}\x1f{ex.sid}\x1f{ex.view_key}"
            out[by_fraction(unit(key), val, test)].append(ex)
    train_views = {ex.view_key for ex in out["train"]}
    for s in ("val", "test"):
        for ex in out[s]:
            ex.extra["unseen"] = ex.view_key not in train_views
    return out


def report(splits: dict[str, list[Example]]) -> str:
    """Counts per split, task and label, and the unseen subset, as text."""
    lines = []
    for s in SPLITS:
        c = Counter((ex.task, ex.label) for ex in splits[s])
        unseen = sum(1 for ex in splits[s] if ex.extra.get("unseen"))
        views = len({ex.view_key for ex in splits[s]})
        parts = ", ".join(f"{t}/{lab}={n}" for (t, lab), n in sorted(c.items()))
        lines.append(f"{s}: {len(splits[s])} examples ({views} distinct views; unseen {unseen}): {parts}")
    return "\n".join(lines)
