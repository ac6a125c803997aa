"""HDFS block sessions as examples, built through the daemon's own parsing and prompt code.

Two sources (see datasets/README.md):
- ``hdfs_2pct``: real raw lines, windowed by block id with the daemon's hdfs dialect, labels from
  ``anomaly_label_dev.csv``;
- ``hdfs_sessions``: Loghub template-id sequences rendered to realistic lines by ``rationad.hdfs_render`` and parsed by
  the hdfs dialect (``rationad.replay.sessions_from_hdfs_jsonl``), so their views equal what the daemon sees.
Each view is ``rationad.prompt.view_of(session, "hdfs")``, the daemon's prompt. Bad input raises ValueError naming
the file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from rationad.prompt import approx_tokens, view_of
from rationad.records import Session

from training.example import Example

SOURCE = "hdfs"  # rationad.dialects.Parser.source for the hdfs dialect


def _examples(sessions: Iterator[Session], origin: str, count_tokens: Callable[[str], int],
              max_prompt_tokens: int, keep_sessions: bool = False) -> Iterator[Example]:
    for s in sessions:
        if not s.lines:
            raise ValueError(f"{origin}: session {s.source_id or s.key} is empty")
        if s.label not in ("normal", "anomalous"):
            raise ValueError(f"{origin}: session {s.source_id or s.key} has no normal/anomalous label")
        view = view_of(s, SOURCE, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
        yield Example("hdfs", SOURCE, str(s.source_id or s.key), view, s.label, origin,
                      {"lines": len(s.lines), **({"session": s} if keep_sessions else {})})


def raw_sessions(log_path: Path, label_path: Path) -> Iterator[Session]:
    """Real HDFS block sessions from a raw log and its ``BlockId,Label`` CSV; a block without a label is an error."""
    from rationad.config import InputConfig, SessionsConfig
    from rationad.replay import Skipped, read_labels, sessions_from_log

    labels = read_labels(label_path)
    skipped = Skipped()
    for s in sessions_from_log(log_path, "hdfs", SessionsConfig(), InputConfig(dialect="hdfs"), skipped, labels):
        if s.label is None:
            raise ValueError(f"{label_path}: no label for block {s.key} (first line {log_path}:{s.first_offset})")
        yield s
    if skipped.count:
        raise ValueError(f"{log_path}: {skipped.count} unparseable lines, e.g. {skipped.examples[0]}")


# An HDFS example's split key starts with its origin (``training.splits``). The released models' splits were keyed with
# the config's spelling of the datasets folder, ``../shared/datasets``; a path spelt another way (absolute,
# $RATIONAD_SHARED, another checkout, a benchmark's own constant) split the same sessions differently, so an
# evaluation or a benchmark's "test-split blocks" read from there held sessions the model was trained on. The origin
# is that spelling joined to the file's folder and name, wherever the file lies: the same data splits the same from
# any path, for every caller.
SPLIT_ROOT = "../shared/datasets"


def split_origin(path: Path) -> str:
    """The origin of the examples read from ``path`` (``<SPLIT_ROOT>/<its folder>/<its name>``)."""
    return f"{SPLIT_ROOT}/{path.parent.name}/{path.name}"


def load_raw(log_path: Path, label_path: Path, *, count_tokens: Callable[[str], int] = approx_tokens,
             max_prompt_tokens: int = 1024, keep_sessions: bool = False) -> list[Example]:
    return list(_examples(raw_sessions(log_path, label_path), split_origin(log_path), count_tokens,
                          max_prompt_tokens, keep_sessions))


def block_splits(source_dir: Path) -> dict[str, tuple[str, str]]:
    """Block id -> (split, label) of the real HDFS sample (``HDFS_2pct_dev.log.gz`` and ``anomaly_label_dev.csv`` in
    ``source_dir``), as the training pipeline's corpus splits them: the demo sample, the benchmarks and the tests that
    must stay on held-out blocks ask here."""
    from training.splits import split_examples

    examples = load_raw(source_dir / "HDFS_2pct_dev.log.gz", source_dir / "anomaly_label_dev.csv")
    return {e.sid: (split, e.label) for split, group in split_examples(examples).items() for e in group}


def load_rendered(jsonl_path: Path, *, seed: int = 0, limit: int | None = None,
                  count_tokens: Callable[[str], int] = approx_tokens, max_prompt_tokens: int = 1024,
                  keep_sessions: bool = False) -> list[Example]:
    """Rendered sessions of ``hdfs_sessions.jsonl`` (unknown template ids raise ValueError naming file:line)."""
    from itertools import islice

    from rationad.replay import sessions_from_hdfs_jsonl

    sessions = sessions_from_hdfs_jsonl(jsonl_path, seed=seed)
    if limit is not None:
        sessions = islice(sessions, limit)
    return list(_examples(sessions, split_origin(jsonl_path), count_tokens, max_prompt_tokens, keep_sessions))
