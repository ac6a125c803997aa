"""The HDFS knowledge base (``data/hdfs_kb.json``): what each Loghub HDFS template means in a block's write lifecycle.

The training side writes its rationales from it (``training.rationales``); the daemon reads it (every judge, at
start) to write the walk through an HDFS session's rows that its rationales start with (``rationad.facts``) and to
check what an HDFS rationale says of its rows (``rationad.faithful``: roles, the tally, receive-start pairs).
Templates are matched by their text (Loghub ``<*>`` wildcards) against a line's masked template, never by id: the two
Loghub numberings disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KB_FILE = Path(__file__).resolve().parent / "data" / "hdfs_kb.json"


class KnowledgeError(ValueError):
    """The knowledge base file is malformed (the message names the file)."""


@dataclass(frozen=True, slots=True)
class HdfsTemplate:
    text: str  # Loghub template text with <*> wildcards
    # error | benign_exception | routine | write_start | write_done | responder_done | stored | allocate | replication
    role: str
    short: str
    meaning: str
    parts: tuple[str, ...]  # the literal text between the ``<*>`` slots, in order
    literal_len: int

    def matches(self, masked: str) -> bool:
        """Whether ``masked`` holds the literal parts in order (what ``part1.*?part2...`` would search, found by
        ``str.find`` from each part's end: linear; the regex backtracked cubically on a long line repeating the first
        parts without the last, and anyone writing to the input topic could stall the event loop with one)."""
        pos = 0
        for part in self.parts:
            i = masked.find(part, pos)
            if i < 0:
                return False
            pos = i + len(part)
        return True


@lru_cache(maxsize=1)
def _data() -> dict:
    try:
        data = json.loads(KB_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowledgeError(f"{KB_FILE}: cannot read the knowledge base: {exc}") from exc
    if not isinstance(data, dict):
        raise KnowledgeError(f"{KB_FILE}: not a JSON object")
    return data


def _literal_parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split("<*>") if p.strip())


@lru_cache(maxsize=1)
def hdfs_templates() -> tuple[HdfsTemplate, ...]:
    out = []
    for n, t in enumerate(_data().get("templates", []), start=1):
        try:
            out.append(HdfsTemplate(t["text"], t["role"], t["short"], t["meaning"], _literal_parts(t["text"]),
                                    len(t["text"].replace("<*>", ""))))
        except (KeyError, TypeError) as exc:
            raise KnowledgeError(f"{KB_FILE}: template {n} lacks {exc}") from None
    return tuple(out)


@lru_cache(maxsize=1)
def hdfs_pairs() -> tuple[dict, ...]:
    try:
        return tuple(_data()["sequence_rules"]["pairs"])
    except (KeyError, TypeError) as exc:
        raise KnowledgeError(f"{KB_FILE}: no sequence_rules.pairs ({exc})") from None


@lru_cache(maxsize=4096)
def match_hdfs(masked: str) -> HdfsTemplate | None:
    """The knowledge-base template whose literal text matches a masked HDFS message (the most specific one)."""
    best: HdfsTemplate | None = None
    for t in hdfs_templates():
        if t.matches(masked) and (best is None or t.literal_len > best.literal_len):
            best = t
    return best
