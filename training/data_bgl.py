"""BGL raw lines in fixed windows (``loghub/BGL_2k.log``) and normal-only windows of a log system absent from
training (Proxifier lines of LogLM's instruction data), as daemon sessions.

BGL lines go through the daemon's bgl dialect, which strips the label column (it never reaches the model) and keeps
it as the line's ground truth; a window is anomalous when any of its lines is. The unseen-system windows use the
generic source name, as the daemon would show a log of an unknown system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from rationad.records import LogLine, Session

PROXIFIER = re.compile(r"open through proxy|close, \d+ bytes|proxy\.cse\.cuhk")
TROUBLE = re.compile(r"error|fail|refused|timed? ?out|could not|cannot", re.I)


def corrected_line_labels(structured_csv: Path, patch_path: Path) -> dict[str, str]:
    """Each line's label (by 1-based line number) of a Loghub structured BGL file, corrected as training corrects
    templates: a line whose ``EventTemplate`` the experts' patch rectifies takes the rectified label, the rest
    Loghub's alert column (the datasets' README: apply the patch before training or evaluating on BGL-style data)."""
    import csv

    from training.data_templates import read_patch

    patch = read_patch(patch_path)
    out = {}
    with structured_csv.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=1):
            template = row["EventTemplate"].strip()
            out[str(n)] = patch[template][1] if template in patch else (
                "normal" if row["Label"] == "-" else "anomalous")
    return out


def bgl_windows(log_path: Path, window_lines: int = 100, labels: dict[str, str] | None = None) -> list[Session]:
    """Fixed windows of ``window_lines`` lines with labels (``labels``: by 1-based line number, e.g.
    ``corrected_line_labels``; else each line's alert column); unparseable lines raise ValueError naming file:line."""
    from rationad.config import InputConfig, SessionsConfig
    from rationad.replay import Skipped, sessions_from_log

    skipped = Skipped()
    cfg = SessionsConfig(mode="fixed", window_lines=window_lines)
    sessions = list(sessions_from_log(log_path, "bgl", cfg, InputConfig(dialect="bgl"), skipped, labels=labels))
    if skipped.count:
        raise ValueError(f"{log_path}: {skipped.count} unparseable lines, e.g. {skipped.examples[0]}")
    return sessions


def parsing_lines(loglm_path: Path) -> list[str]:
    """The log lines of LogLM's parsing task (200 of each of seven Loghub systems, in order)."""
    items = json.loads(loglm_path.read_text(encoding="utf-8"))
    return [x["input"].strip() for x in items if x.get("instruction", "").startswith("Convert the following logs")]


def unseen_system_lines(loglm_path: Path) -> list[str]:
    """Proxifier lines (a system absent from training) from LogLM's parsing task."""
    return [ln for ln in parsing_lines(loglm_path) if PROXIFIER.search(ln)]


def unseen_system_windows(loglm_path: Path, window_lines: int = 10) -> tuple[list[Session], int]:
    """(normal-only windows, lines dropped for reporting trouble)."""
    lines = unseen_system_lines(loglm_path)
    clean = [ln for ln in lines if not TROUBLE.search(ln)]
    out = []
    for i in range(0, len(clean) - window_lines + 1, window_lines):
        chunk = clean[i : i + window_lines]
        key = f"proxifier-{i // window_lines + 1}"
        out.append(Session(key=key, lines=[LogLine(key, m, m, None, str(loglm_path), 0, i + n) for n, m in
                                           enumerate(chunk)], close_reason="window", label="normal", source_id=key))
    return out, len(lines) - len(clean)


def iter_labels(sessions: list[Session]) -> Iterator[str | None]:
    return (s.label for s in sessions)
