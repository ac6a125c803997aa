"""The template catalog (``judge.templates_topic``): the templates the daemon has seen, with counts and verdicts.

Each replica writes its own record per template: key = ``<template id>/<instance>``, value = the replica's counts
and its current verdict as JSON (``TemplateStat``). The topic is compacted, so it keeps the latest record per
template per replica, and no replica overwrites another's counts. The instance is the replica's group and static
member id (``<group_id>:<group_instance_id>``), under which a restart reads its counts back and continues; without
one, host and start time (a new name per process start). ``read_catalog`` reads the topic to its end offsets and sums
the replicas' records into one stat per template; ``rationad templates`` lists them merged with the operator labels
(``listing``), and ``rationad label`` looks templates up in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog

from rationad.config import KafkaConfig
from rationad.dialects import MAX_EPOCH
from rationad.labels import Label, decode_tid, read_latest
from rationad.prompt import VERDICTS
from rationad.templates import template_id

log = structlog.get_logger("rationad.catalog")

STAT_FORMAT_VERSION = 1
SOURCES = ("model", "operator", "pending")
# A count past this is not one a replica counted (2^53 lines): a hostile record carried as this replica's own count
# (``carry_counts``) reached 2^64 at the next line, which JSON cannot encode, and every catalog round failed.
MAX_COUNT = 2**53


@dataclass(slots=True)
class TemplateStat:
    """One replica's view of one template (or, from ``aggregate``, all replicas' together)."""

    template: str
    verdict: str | None  # "normal" | "anomalous"; None: not judged yet
    source: Literal["model", "operator", "pending"]
    rationale: str
    model_version: str
    count: int  # lines of this template seen
    first_seen: float  # Unix times
    last_seen: float
    instance: str  # the replica that wrote it; aggregated: the replicas, comma-separated

    @property
    def id(self) -> str:
        return template_id(self.template)


def encode_stat(stat: TemplateStat) -> tuple[bytes, bytes]:
    """The record of ``stat``: (key = ``<template id>/<instance>``, value = JSON)."""
    value = {"v": STAT_FORMAT_VERSION, "template": stat.template, "verdict": stat.verdict, "source": stat.source,
             "rationale": stat.rationale, "model_version": stat.model_version, "count": stat.count,
             "first_seen": stat.first_seen, "last_seen": stat.last_seen, "instance": stat.instance}
    return f"{stat.id}/{stat.instance}".encode(), orjson.dumps(value)


def _time(data: dict[str, Any], name: str) -> float:
    """A Unix time a datetime can show (``rationad templates`` prints it)."""
    v = data.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= MAX_EPOCH:
        raise ValueError(f"{name} must be a Unix time from 0 to {MAX_EPOCH:.0f}, got {v!r}")
    return float(v)


def decode_stat(key: bytes | None, value: bytes | None) -> TemplateStat | None:
    """The stat of one record; None for a tombstone. ``ValueError`` for anything else that is not a stat (a key that
    is not ``<template id>/<instance>``, or not the one of the value)."""
    if key is None:
        raise ValueError("no key (<template id>/<instance> is expected)")
    tid, sep, instance = key.partition(b"/")
    tid_s = decode_tid(tid)
    if not sep or not instance:
        raise ValueError(f"key {key[:60]!r} is not <template id>/<instance>")
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{tid_s}: value is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{tid_s}: value is not a JSON object")  # noqa: TRY004 - garbage is a ValueError
    if data.get("v", STAT_FORMAT_VERSION) != STAT_FORMAT_VERSION:
        raise ValueError(f"{tid_s}: stat format {data.get('v')!r} (this rationad reads {STAT_FORMAT_VERSION})")
    strings = {name: data.get(name) for name in ("template", "rationale", "model_version", "instance")}
    bad = [name for name, v in strings.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{tid_s}: {', '.join(bad)} must be strings")
    verdict, source, count = data.get("verdict"), data.get("source"), data.get("count")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"{tid_s}: unknown verdict {verdict!r}")
    if source not in SOURCES:
        raise ValueError(f"{tid_s}: unknown source {source!r}")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ValueError(f"{tid_s}: count must be an integer from 0 to 2^53, got {count!r}")
    stat = TemplateStat(template=strings["template"], verdict=verdict, source=source, rationale=strings["rationale"],
                        model_version=strings["model_version"], count=count, first_seen=_time(data, "first_seen"),
                        last_seen=_time(data, "last_seen"), instance=strings["instance"])
    if key != f"{stat.id}/{stat.instance}".encode():
        raise ValueError(f"{tid_s}: key {key[:60]!r} is not the one of the stat ({stat.id}/{stat.instance})")
    return stat


def aggregate(stats: Iterable[TemplateStat]) -> list[TemplateStat]:
    """One stat per template over the replicas' stats: counts summed, the earliest first_seen, the latest last_seen;
    verdict, source, rationale and model version from the replica that saw the template last among those that have a
    verdict (pending only when none has; the model's over a stat written as ``operator``, which releases before
    2026-12-05 wrote for a labelled template). Most seen first, then by template id."""
    groups: dict[tuple[str, str], list[TemplateStat]] = {}
    for s in stats:  # by id and text: two templates of one id (a crafted collision) are two rows, not one merged
        groups.setdefault((s.id, s.template), []).append(s)
    out = []
    for group in groups.values():
        judged = ([s for s in group if s.verdict is not None and s.source == "model"]
                  or [s for s in group if s.verdict is not None] or group)
        latest = max(judged, key=lambda s: (s.last_seen, s.instance))
        out.append(TemplateStat(
            template=latest.template, verdict=latest.verdict, source=latest.source, rationale=latest.rationale,
            model_version=latest.model_version, count=sum(s.count for s in group),
            first_seen=min(s.first_seen for s in group), last_seen=max(s.last_seen for s in group),
            instance=",".join(sorted({s.instance for s in group}))))
    return sorted(out, key=lambda s: (-s.count, s.id))


async def read_catalog(kafka: KafkaConfig, topic: str, timeout_secs: float = 30) -> list[TemplateStat]:
    """The catalog up to the topic's end offsets as of the call, one stat per template (``aggregate``); ``[]`` when
    the topic does not exist yet."""
    return aggregate(await read_stats(kafka, topic, timeout_secs))


async def read_stats(kafka: KafkaConfig, topic: str, timeout_secs: float = 30) -> list[TemplateStat]:
    """Every replica's latest stat per template, up to the topic's end offsets as of the call; records that are not
    stats are logged and skipped."""
    stats = []
    for key, value in (await read_latest(kafka, topic, timeout_secs=timeout_secs)).items():
        try:
            stat = decode_stat(key, value)
        except ValueError as exc:
            log.warning("template_stat_skipped", topic=topic, error=str(exc))
            continue
        if stat is not None:
            stats.append(stat)
    return stats


def listing(stats: Iterable[TemplateStat], labels: Iterable[Label]) -> list[dict[str, Any]]:
    """The rows of ``rationad templates``: each template of the catalog, its operator label (if any) overriding the
    verdict, source and rationale (the model's verdict stays in ``model_verdict``), then labels of templates the
    catalog has not seen (given with ``--force``: ``seen`` false, ``forced`` true)."""
    by_id = {lb.id: lb for lb in labels}
    rows = []
    for s in stats:
        row = {"id": s.id, "template": s.template, "count": s.count, "first_seen": s.first_seen,
               "last_seen": s.last_seen, "verdict": s.verdict, "source": s.source, "rationale": s.rationale,
               "model_version": s.model_version, "model_verdict": s.verdict if s.source == "model" else None,
               "labelled_by": None, "labelled_at": None, "forced": False, "seen": True}
        label = by_id.get(s.id)
        if label is not None and label.template == s.template:  # a label applies to the template whose text it names
            del by_id[s.id]
        else:
            label = None
        if label is None and s.source == "operator":  # an earlier release's stat of a label cleared since: no label
            row.update(verdict=None, source="pending", rationale="")  # is in force, and the model's verdict is unknown
        if label is not None:
            row.update(verdict=label.verdict, source="operator", rationale=label.reason, labelled_by=label.by,
                       labelled_at=label.at, forced=label.forced)
        rows.append(row)
    for label in sorted(by_id.values(), key=lambda lb: lb.id):
        rows.append({"id": label.id, "template": label.template, "count": 0, "first_seen": None, "last_seen": None,
                     "verdict": label.verdict, "source": "operator", "rationale": label.reason, "model_version": "",
                     "model_verdict": None, "labelled_by": label.by, "labelled_at": label.at, "forced": label.forced,
                     "seen": False})
    return rows


def select(rows: Iterable[dict[str, Any]], *, verdict: str | None = None, source: str | None = None,
           ) -> list[dict[str, Any]]:
    """``rows`` filtered by verdict (``pending``: not judged yet) and by source."""
    want = None if verdict in (None, "pending") else verdict
    return [r for r in rows
            if (verdict is None or r["verdict"] == want) and (source is None or r["source"] == source)]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def format_table(rows: list[dict[str, Any]], width: int = 120) -> str:
    """``rows`` as a table for a terminal ``width`` characters wide: template and rationale share what the other
    columns leave and are cut with ``…``. Log-derived text is escaped (``rationad.tail.safe``)."""
    from rationad.tail import safe

    head = ("ID", "COUNT", "FIRST SEEN (UTC)", "LAST SEEN (UTC)", "VERDICT", "SOURCE")
    cells = [(r["id"], f"{r['count']:,}" if r["seen"] else "-", _when(r["first_seen"]), _when(r["last_seen"]),
              r["verdict"] or "pending", r["source"] + ("*" if r["forced"] else "")) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head)]
    fixed = sum(widths) + 2 * len(widths)
    rest = max(20, width - fixed - 2)
    tw, rw = rest * 2 // 5, rest - rest * 2 // 5

    def line(values: tuple[str, ...], template: str, rationale: str) -> str:
        left = "  ".join(v.rjust(w) if i == 1 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
        return f"{left}  {_cut(template, tw).ljust(tw)}  {_cut(rationale, rw)}".rstrip()

    out = [line(head, "TEMPLATE", "RATIONALE")]
    for r, c in zip(rows, cells, strict=True):
        out.append(line(c, safe(r["template"]), safe(" ".join(str(r["rationale"]).split()))))
    if any(r["forced"] for r in rows):
        out.append("* forced: labelled with --force before the template was seen")
    return "\n".join(out)
