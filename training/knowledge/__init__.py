"""The expert knowledge base as data (``hdfs.json`` here; the BGL/Spirit template rules in ``rationad.template_rules``,
which the daemon reads to check served rationales) and its loader.

HDFS templates are matched by their text (Loghub ``<*>`` wildcards) against a line's masked template, never by id:
the two Loghub numberings disagree. BGL/Spirit knowledge is an ordered list of keyword rules (first match wins).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rationad.template_rules import Rule, match_rule, template_rules  # noqa: F401 (re-exported)

KB_DIR = Path(__file__).resolve().parent


class KnowledgeError(ValueError):
    """The knowledge base file is malformed (the message names the file)."""


@dataclass(frozen=True, slots=True)
class HdfsTemplate:
    text: str  # Loghub template text with <*> wildcards
    role: str  # error | benign_exception | routine | write_start | write_done | responder_done | stored | allocate | replication
    short: str
    meaning: str
    regex: re.Pattern[str]
    literal_len: int


def _load(name: str) -> dict:
    path = KB_DIR / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowledgeError(f"{path}: cannot read the knowledge base: {exc}") from exc


def _template_regex(text: str) -> re.Pattern[str]:
    parts = [re.escape(p.strip()) for p in text.split("<*>") if p.strip()]
    return re.compile(".*?".join(parts), re.S)


@lru_cache(maxsize=1)
def hdfs_templates() -> tuple[HdfsTemplate, ...]:
    data = _load("hdfs.json")
    out = []
    for n, t in enumerate(data.get("templates", []), start=1):
        try:
            out.append(HdfsTemplate(t["text"], t["role"], t["short"], t["meaning"], _template_regex(t["text"]),
                                    len(t["text"].replace("<*>", ""))))
        except KeyError as exc:
            raise KnowledgeError(f"{KB_DIR / 'hdfs.json'}: template {n} lacks {exc}") from None
    return tuple(out)


@lru_cache(maxsize=1)
def hdfs_pairs() -> tuple[dict, ...]:
    return tuple(_load("hdfs.json")["sequence_rules"]["pairs"])


@lru_cache(maxsize=4096)
def match_hdfs(masked: str) -> HdfsTemplate | None:
    """The knowledge-base template whose literal text matches a masked HDFS message (the most specific one)."""
    best: HdfsTemplate | None = None
    for t in hdfs_templates():
        if t.regex.search(masked) and (best is None or t.literal_len > best.literal_len):
            best = t
    return best
