"""``rationad replay``: judge a log file offline (no Kafka) through the daemon's own path.

Same parser, windows, prompt, model client, cache and answer parser as ``rationad run``; writes one JSON object per
session. Inputs (gzip-compressed ones too):
- a raw log file in a dialect (``hdfs``, ``bgl``, ``generic``): sessions come from the windows; the ``id`` is the
  session key (a block id), or for fixed windows the 1-based line number of the window's first line (``#2``, ``#3``
  ... on a key's later sessions, or on the other windows a line naming several keys starts);
- ``hdfs-sessions``: the session JSONL of ``datasets/hdfs_sessions`` (template ids rendered to realistic lines);
- ``templates``: a CSV with an ``EventTemplate`` column, one template a session (the paper's template-level task).
Labels, where the input has them, give precision/recall/F1 on stderr: a ``key,label`` CSV for session windows, a
``line,label`` CSV (1-based line numbers) for fixed windows, where a window is anomalous when any of its lines is.
Each output carries the model's ``score`` (P(anomalous), README "Events"), the ``verdict`` at the threshold and the
``model_verdict`` it wrote; with labels, ``pr_curve`` gives the operating points of every threshold (the CLI prints
them, so an operator can choose ``judge.threshold_*`` before alerting on a system).

``judge_sessions`` asks the model about each window (session level); ``judge_by_template`` asks it about each distinct
line template once and decides every window from its templates (``judge.level = "template"``, as the daemon does).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import math
import random
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rationad.config import InputConfig, ModelConfig, SessionsConfig
from rationad.dialects import BadRecord, bad_record_of, make_parser
from rationad.model.base import ModelError
from rationad.records import LogLine, Session
from rationad.tail import safe_json
from rationad.windows import Sessionizer, resolve_spec

if TYPE_CHECKING:
    from rationad.judge import Judge, Judgement

DIALECTS = ("hdfs", "bgl", "generic", "hdfs-sessions", "templates")
# What reading a file on may raise: a truncated gzip (EOFError), a corrupt one (zlib.error), a disk error.
READ_ERRORS = (OSError, EOFError, zlib.error)
TEMPLATE_LABEL_COLUMNS = ("Label_RationAnomaly_rectified", "Label", "label")


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    """``path`` (gzip too) as text; ``encoding="utf-8-sig"`` for the CSV files people save (a spreadsheet's byte
    order mark made the first label's key "\\ufeff1", and that label was lost without a word)."""
    raw = path.open("rb")
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding=encoding, errors="surrogateescape", newline="\n")
    # lines end at "\n" only, as the records a shipper sends: a lone "\r" inside a line does not split it (it shifted
    # every later line number, and the labels given by line number with them)
    return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="\n")


def _label(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("1", "anomaly", "anomalous", "abnormal", "true"):
        return "anomalous"
    if v in ("0", "normal", "false"):
        return "normal"
    return None


def _is_header(row: list[str]) -> bool:
    """A labels file's header row (``BlockId,Label``, ``key,label``, ``id,class``): its label field names a column.
    Guessed from "not a label" alone, a first data row with a misspelt label was taken for one and its key silently
    left unlabelled (review 2026-12-07)."""
    name = row[1].strip().lower() if len(row) >= 2 else ""
    return _label(name) is None and ("label" in name or name in ("class", "verdict", "is_anomaly", "target"))


def read_labels(path: Path) -> dict[str, str]:
    """A ``key,label`` CSV (e.g. ``BlockId,Label`` with Normal/Anomaly): an optional header row, blank rows skipped,
    every other row a key and a label (normal/anomaly, 0/1, ...), else ValueError naming the line."""
    with open_text(path, "utf-8-sig") as f:
        out: dict[str, str] = {}
        for n, row in enumerate(csv.reader(f), start=1):
            if not any(x.strip() for x in row):
                continue
            if n == 1 and _is_header(row):
                continue
            if len(row) < 2 or _label(row[1]) is None or any(x.strip() for x in row[2:]):
                raise ValueError(f"{path}:{n}: expected 'key,label' with a normal/anomaly label, got {row!r}")
            key, label = row[0].strip(), _label(row[1])
            if out.get(key, label) != label:
                raise ValueError(f"{path}:{n}: {key!r} is labelled both {out[key]} and {label}")
            out[key] = label
        return out


@dataclass(slots=True)
class Skipped:
    """Input lines that could not be parsed: reported, never silently dropped."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, exc: BadRecord) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {exc.reason}: {exc.detail}")


def _parses(parser, text: str) -> bool:
    try:
        parser.parse(text.encode("utf-8", "surrogateescape"))
    except Exception:  # noqa: BLE001 - a parser bug too (``bad_record_of``)
        return False
    return True


def _continues(parser, headed: bool | None, line: str) -> bool:
    """Does ``line`` continue the entry a record of a file starts with (``headed``: None when that entry does not
    parse, else ``parser.headed(entry)``), as the parser joins the lines of one record? Asked of the parser, not its
    rule copied: a generic line that parses is an entry of its own, an hdfs or bgl line without a header continues a
    headed entry, a line that does not parse continues any entry that does. (Joined by a rule of its own, an indented
    generic line was split off again by the parser with the entry's line number: ids repeated, labels by line
    misapplied.) A blank line goes with the record, as the parser drops it (it split a stack trace in two). A bad
    entry takes the lines that do not parse either: skipped once. One parse of ``line`` alone: linear in the file."""
    if not line.strip():
        return True
    if headed is None:
        return not parser.starts_entry(line) and not _parses(parser, line)
    return parser.continues(headed, line)


def _records(f: Iterable[str], parser, input_cfg: InputConfig) -> Iterator[tuple[int, str]]:
    """(line number of its first line, record) of a text log: a line that continues the entry before it (a stack
    trace's ``\\tat ...``, as ``_continues`` asks the parser) joins it, as the lines of one Kafka record do in the
    daemon (an exported multi-line record is several lines of the file: each was parsed alone, its continuation lines
    skipped or judged as entries of their own). Never past input.max_record_bytes; one line a record for JSON input."""
    joins = input_cfg.format == "text"
    pending: str | None = None
    # the entry ``pending`` starts with: None when it does not parse, else whether it has its dialect's header
    headed: bool | None = None
    first = size = 0
    for n, text in enumerate(f, start=1):
        text = text.removesuffix("\n").removesuffix("\r")
        raw = text.encode("utf-8", "surrogateescape")  # as the parser sizes and decodes the record: bytes
        if (pending is not None and joins and size + 1 + len(raw) <= input_cfg.max_record_bytes
                and raw.decode("utf-8", "replace") == text
                and _continues(parser, headed, text)):
            # (a line too long, or not UTF-8, is not joined: skipped alone, it takes no entry with it)
            pending += "\n" + text
            size += 1 + len(raw)
            continue
        if pending is not None:
            yield first, pending
        pending, first, size = text, n, len(raw)
        headed = parser.headed(text) if _parses(parser, text) else None
    if pending is not None:
        yield first, pending


def sessions_from_log(
    path: Path, dialect: str, sessions_cfg: SessionsConfig, input_cfg: InputConfig, skipped: Skipped,
    labels: dict[str, str] | None = None,
) -> Iterator[Session]:
    """Window a raw log file; offsets are 1-based line numbers."""
    parser = make_parser(input_cfg)
    # Replay's clock is the file's own event time (below), and nothing is committed: sessions.max_open_secs, a bound
    # in wall-clock time that keeps a daemon's committed offset moving, would cut a block's hours-long life into
    # pieces here. Replay ignores it, whatever the config says. sessions.max_future_secs holds against the wall clock,
    # as in the daemon: a line dated past it (2099 in a 2008 file) is untimed and never the clock (taken as the
    # clock, it closed every open session and made every later line late).
    spec = replace(resolve_spec(sessions_cfg, dialect), max_open_secs=None)
    windower = Sessionizer(spec, topic=str(path), partition=0)
    seen: dict[str, int] = {}
    joined: dict[int, int] = {}  # line number -> lines of the file its record joined, where more than one

    def finish(batch: Iterable[Session]) -> Iterator[Session]:
        for s in batch:
            # a fixed window by the line it starts at: a line naming several keys starts several windows there
            base = str(s.first_offset) if spec.mode == "fixed" else s.key
            n = seen[base] = seen.get(base, 0) + 1
            s.source_id = base if n == 1 else f"{base}#{n}"
            line_labels = [line.label for line in s.lines if line.label is not None]
            if labels is not None and spec.mode == "fixed":  # a label per line number: anomalous if any line is
                # (each line of a record joined from several lines of the file: a continuation line's label counted
                # for nothing, review 2026-12-07)
                marks = [labels[str(n)] for first in sorted({line.offset for line in s.lines})
                         for n in range(first, first + joined.get(first, 1)) if str(n) in labels]
                s.label = ("anomalous" if "anomalous" in marks else "normal") if marks else None
            elif labels is not None:
                s.label = labels.get(s.key)
            elif line_labels:
                s.label = "anomalous" if "anomalous" in line_labels else "normal"
            yield s

    clock = ticked = 0.0
    # (the file's newest time as the horizon froze the clock after any quiet spell longer than max_future_secs)
    horizon = time.time() + (spec.max_future_secs if spec.max_future_secs is not None else math.inf)
    try:
        with open_text(path) as f:
            for n, text in _records(f, parser, input_cfg):
                if labels is not None and "\n" in text:
                    joined[n] = text.count("\n") + 1
                try:
                    lines = parser.parse(text.encode("utf-8", "surrogateescape"), topic=str(path), offset=n)
                except Exception as exc:  # noqa: BLE001 - skipped as the daemon dead-letters it (``bad_record_of``)
                    skipped.add(f"{path}:{n}", bad_record_of(exc))
                    continue
                for line in lines:
                    if line.ts is not None and line.ts <= horizon:
                        clock = max(clock, line.ts)
                    yield from finish(windower.add(line, clock))
                if clock > ticked:  # as the daemon's tick: a key that logs no more closes by its gap, not at the end
                    ticked = clock  # (held open, it waited for an eviction that could cut a live session in two)
                    yield from finish(windower.tick(clock))
    except READ_ERRORS:  # the file cannot be read on (a truncated gzip): what was read is judged, then the error
        yield from finish(windower.flush("end_of_input"))
        raise
    yield from finish(windower.flush("end_of_input"))


def sessions_from_hdfs_jsonl(path: Path, seed: int = 0) -> Iterator[Session]:
    from rationad.hdfs_render import iter_session_records, render_session

    parser = make_parser(InputConfig(dialect="hdfs"))
    rng = random.Random(seed)
    start = 1_226_246_400.0  # 2008-11-09, as in Loghub HDFS
    for n, rec in enumerate(iter_session_records(path), start=1):
        block = f"blk_{rng.randrange(-(2**63), 2**63)}"
        raw_lines = render_session(rec["events"], block_id=block, start_ts=start + n * 7, rng=rng)
        lines: list[LogLine] = []
        for i, raw in enumerate(raw_lines):
            lines.extend(x for x in parser.parse(raw.encode(), topic=str(path), offset=i) if x.key == block)
        yield Session(key=block, lines=lines, close_reason="end_of_input", topic=str(path), label=rec.get("label"),
                      source_id=str(rec["id"]))


def _is_utf8(text: str) -> bool:
    """No byte of ``text`` failed to decode (``open_text`` keeps such bytes as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sessions_from_templates(path: Path) -> Iterator[Session]:
    from rationad.templates import from_loghub

    with open_text(path, "utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "EventTemplate" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a CSV with an EventTemplate column")
        label_col = next((c for c in TEMPLATE_LABEL_COLUMNS if c in reader.fieldnames), None)
        for n, row in enumerate(reader, start=1):
            tpl = (row.get("EventTemplate") or "").strip()
            if not tpl:
                raise ValueError(f"{path}:{n + 1}: empty EventTemplate")
            if not _is_utf8(tpl):  # refused, not guessed at: the daemon dead-letters a record that is not UTF-8
                raise ValueError(f"{path}:{n + 1}: EventTemplate is not UTF-8 text: {tpl!r}")
            label = None
            if label_col:  # a row short of it, or a value that is no label: refused, not left unscored (review)
                label = _label(row.get(label_col) or "")
                if label is None:
                    raise ValueError(f"{path}:{n + 1}: {label_col} is not a normal/anomaly label: "
                                     f"{row.get(label_col)!r}")
            line = LogLine(key=str(n), message=from_loghub(tpl), raw=tpl, topic=str(path), offset=n)
            yield Session(key=str(n), lines=[line], close_reason="template", topic=str(path), label=label,
                          source_id=str(n), extra={"templated": True})


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The verdicts at one threshold (anomalous when score >= threshold) on the labelled, scored outputs."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def flagged(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def pr_curve(pairs: Iterable[tuple[float, bool]]) -> list[OperatingPoint]:
    """Every distinct operating point of (score, is_anomalous) pairs: one per distinct score, used as threshold,
    highest first (fewest flagged); between two adjacent scores every threshold gives the point of the higher."""
    ranked = sorted(pairs, key=lambda x: -x[0])
    pos = sum(1 for _, y in ranked if y)
    neg = len(ranked) - pos
    out: list[OperatingPoint] = []
    tp = fp = 0
    for i, (score, y) in enumerate(ranked):
        tp += y
        fp += not y
        if i + 1 < len(ranked) and ranked[i + 1][0] == score:
            continue
        out.append(OperatingPoint(score, tp, fp, pos - tp, neg - fp))
    return out


def at_threshold(curve: list[OperatingPoint], threshold: float, pos: int, neg: int) -> OperatingPoint:
    """The operating point of ``threshold`` on ``curve`` (of ``pos`` anomalous and ``neg`` normal outputs)."""
    best = OperatingPoint(threshold, 0, 0, pos, neg)  # above every score: nothing flagged
    for p in curve:  # thresholds descending
        if p.threshold < threshold:
            break
        best = OperatingPoint(threshold, p.tp, p.fp, p.fn, p.tn)
    return best


def best_f1(curve: list[OperatingPoint]) -> tuple[OperatingPoint, float] | None:
    """The operating point of best F1 (the highest threshold among equals: fewest alerts) and a threshold to
    configure for it: halfway between its score and the next lower one, so it does not sit on a measured score.
    None when there is nothing to choose: no anomalous output (F1 is 0 at every threshold), no score above 0
    (a threshold must be above 0, and a score of 0, an answer served normal on void evidence, is flagged by none),
    or no threshold above 0 that finds one (F1 0 at each: the "best" flagged only normal outputs, review 2026-12-07)."""
    eligible = [k for k, p in enumerate(curve) if p.threshold > 0]
    if not eligible or curve[0].tp + curve[0].fn == 0:
        return None
    i = max(eligible, key=lambda k: (curve[k].f1, curve[k].threshold))
    if curve[i].f1 == 0:
        return None
    lower = curve[i + 1].threshold if i + 1 < len(curve) else 0.0
    mid = (curve[i].threshold + lower) / 2
    # two adjacent floats (scores near 1 are that close) have no float between them: the midpoint rounds onto the
    # lower one, which flags the next point too (review 2026-12-07); the point's own score flags exactly its outputs
    return curve[i], (mid if lower < mid < curve[i].threshold else curve[i].threshold)


def write_curve(path: Path, pairs: list[tuple[float, bool]]) -> None:
    """Every operating point as CSV: threshold, precision, recall, f1, flagged, tp, fp, fn, tn. The threshold is
    written with every digit it needs (``repr``): scores crowd within 1e-9 of 1, and nine digits wrote several points
    as "1", which set in config flags none of them (review 2026-12-07)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["threshold", "precision", "recall", "f1", "flagged", "tp", "fp", "fn", "tn"])
        for p in pr_curve(pairs):
            if p.threshold <= 0:  # flagged at no threshold, and one the config refuses (``operating_points_table``)
                continue
            w.writerow([repr(p.threshold), f"{p.precision:.4f}", f"{p.recall:.4f}", f"{p.f1:.4f}", p.flagged,
                        p.tp, p.fp, p.fn, p.tn])


def average_precision(curve: list[OperatingPoint]) -> float:
    """Area under the PR curve as a step function (sum over points of recall gained times precision)."""
    ap, last_recall = 0.0, 0.0
    for p in curve:
        ap += (p.recall - last_recall) * p.precision
        last_recall = p.recall
    return ap


GRID = (0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999)
CURVE_ROWS = 12  # operating points taken along the curve itself (the model's scores crowd near 0 and 1)


def operating_points_table(pairs: list[tuple[float, bool]], threshold: float | None = None) -> str:
    """The operating points an operator chooses from: thresholds on a coarse grid, ``CURVE_ROWS`` points spread
    evenly along the curve (the scores of a confident model sit within 1e-3 of 0 or 1, where a grid sees nothing),
    the configured threshold and the best-F1 one."""
    curve = pr_curve(pairs)
    pos = sum(1 for _, y in pairs if y)
    neg = len(pairs) - pos
    rows: dict[float, str] = {t: "" for t in GRID}
    if curve:
        step = max(1, len(curve) // CURVE_ROWS)
        # (not a score of 0, an answer served normal on void evidence: no threshold flags it, and the config refuses
        # 0; its row counted those answers as flagged, a recall no setting reaches: review 2026-12-07)
        rows.update({curve[i].threshold: "" for i in range(0, len(curve), step) if curve[i].threshold > 0})
        if curve[-1].threshold > 0:
            rows.setdefault(curve[-1].threshold, "")  # the lowest score: everything flagged
    best = best_f1(curve)
    if best is not None:
        rows[best[1]] = "best F1"
    if threshold is not None:
        rows[threshold] = (rows.get(threshold, "") + " configured").strip()
    lines = [f"PR curve ({len(pairs)} labelled, scored; {pos} anomalous; average precision "
             f"{average_precision(curve):.4f}): verdict anomalous when score >= threshold",
             f"{'threshold':>20} {'precision':>9} {'recall':>7} {'F1':>6} {'flagged':>8} {'tp':>6} {'fp':>6} {'fn':>6}"]
    for t in sorted(rows):
        p = at_threshold(curve, t, pos, neg)
        precision = f"{p.precision:>9.4f}" if p.flagged else f"{'-':>9}"
        # every digit a threshold needs (the shortest repr): near 1, eight digits printed scores of 0.9999999999 and
        # 0.9999999997 both as "1", and "1" copied into judge.threshold_* flagged only scores of exactly 1.0
        lines.append(f"{t!r:>20} {precision} {p.recall:>7.4f} {p.f1:>6.4f} {p.flagged:>8} {p.tp:>6} "
                     f"{p.fp:>6} {p.fn:>6}  {rows[t]}".rstrip())
    return "\n".join(lines)


@dataclass(slots=True)
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    malformed: int = 0
    ungrounded: int = 0
    total: int = 0
    unscored: int = 0  # well-formed answers without a score (no logprobs)
    templates: int = 0  # template level: templates sent to the model, and those whose answer stayed malformed
    templates_failed: int = 0
    pairs: list[tuple[float, bool]] = field(default_factory=list)  # (score, labelled anomalous), for pr_curve
    # sessions closed early to bound memory (``Session.unfinished``): verdicts at judge.threshold_unfinished, and no
    # point of the curve judge.threshold_session is chosen from
    unfinished: int = 0

    def add(self, label: str | None, verdict: str | None, grounded: bool, score: float | None = None,
            unfinished: bool = False) -> None:
        self.total += 1
        self.unfinished += unfinished
        if verdict is None:
            self.malformed += 1
        elif score is None:
            self.unscored += 1
        if not grounded:
            self.ungrounded += 1
        if label is None:
            return
        if verdict is not None and score is not None and not unfinished:
            self.pairs.append((score, label == "anomalous"))
        predicted = verdict == "anomalous"
        actual = label == "anomalous"
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def labelled(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def summary(self) -> dict[str, Any]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        labelled = self.labelled > 0  # without labels there is nothing to score: null, not 0
        out = {
            "sessions": self.total, "labelled": self.labelled, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "tn": self.tn, "precision": round(p, 4) if labelled else None, "recall": round(r, 4) if labelled else None,
            "f1": round(f1, 4) if labelled else None,
            "format_valid_rate": round(1 - self.malformed / self.total, 4) if self.total else None,
            "grounded_rate": round(1 - self.ungrounded / self.total, 4) if self.total else None,
        }
        if self.templates:  # template level: a window is well-formed when every template answer of it was
            out |= {"templates_judged": self.templates, "templates_failed": self.templates_failed}
        if self.unfinished:
            out["unfinished"] = self.unfinished
        return out | self.curve_summary()

    def curve_summary(self) -> dict[str, Any]:
        if not self.pairs:
            return {"unscored": self.unscored} if self.unscored else {}
        curve = pr_curve(self.pairs)
        out: dict[str, Any] = {"scored": len(self.pairs), "unscored": self.unscored,
                               "average_precision": round(average_precision(curve), 4)}
        best = best_f1(curve)
        if best is None:
            return out
        point, threshold = best
        # the threshold unrounded: scores crowd near 0, and a rounded one can flag another output (or be 0)
        return out | {"best_f1": round(point.f1, 4), "best_f1_threshold": threshold,
                      "best_f1_precision": round(point.precision, 4), "best_f1_recall": round(point.recall, 4)}


@contextlib.asynccontextmanager
async def judging(model_cfg: ModelConfig, source: str, *, client=None, use_cache: bool = False,
                  cache_entries: int = 100_000):
    """A ``Judge`` over ``client`` (started and closed here when None is given: a client from ``model_cfg``), with
    a verdict cache of ``cache_entries`` when ``use_cache`` (``judge.cache``)."""
    from rationad.cache import VerdictCache
    from rationad.judge import Judge
    from rationad.model.base import make_client

    owns_client = client is None
    client = client or make_client(model_cfg)
    try:
        if owns_client:  # in the try: a Ctrl-C during an engine's load closes it too (its build shuts it down)
            await client.start()
        yield Judge(client, model_cfg, source, cache=VerdictCache(cache_entries) if use_cache else None)
    finally:
        if owns_client:
            await client.aclose()


class ModelUnavailable(Exception):
    """The model stopped answering (an outage past the client's own retries, a misconfigured or dead model, a server
    that refuses every request): replay stops. ``scores`` and ``calls`` are those of what was judged and written."""

    def __init__(self, reason: str, scores: Scores, calls: int) -> None:
        super().__init__(reason)
        self.scores = scores
        self.calls = calls


async def judge_refused_alone(judge: Judge, sessions: list[Session]) -> list[Judgement]:
    """``judge.judge_many(sessions)``, where a batch holding a request the model refuses for its content
    (``ModelError`` of kind ``rejected``: 400, 413, a prompt too long; or ``config``, as a filter in front of the
    server answers 403 for one prompt, when the probe is answered) is judged one session at a time, and the
    refused session comes back as a malformed answer whose error is ``model_rejected: ...``, as the daemon splits the
    batch and dead-letters that session alone (``model_stage``). When the probe request is refused too, no session is
    at fault (a server that refuses every request): that and every other ``ModelError`` propagate. An outage has been
    retried by the client already."""
    from rationad.answer import ParsedAnswer
    from rationad.judge import Judgement
    from rationad.model_stage import PROBE_TOKENS, cut_harder  # the daemon's probe, shaped like a real request

    try:
        return await judge.judge_many(sessions)
    except ModelError as exc:
        if exc.kind not in ("rejected", "config"):  # config: a filter's 403 for one prompt, unless the probe fails too
            raise
        if len(sessions) > 1:
            parts = await asyncio.gather(*(judge_refused_alone(judge, [s]) for s in sessions),
                                         return_exceptions=True)  # every request settled before one error is raised
            if failed := next((p for p in parts if isinstance(p, BaseException)), None):
                raise failed from None
            return [j for part in parts for j in part]
        [s] = sessions
        conversation, regex = judge.probe_request(templated=bool(s.extra.get("templated")))
        try:
            await judge.client.generate([conversation], max_tokens=PROBE_TOKENS, temperature=0.0, regex=regex)
        except ModelError as probe_exc:
            raise ModelError(f"the model refuses every request ({probe_exc}): {exc}", kind="config") from exc
        if exc.kind == "rejected" and cut_harder(s, judge.cfg.max_prompt_tokens, exc):  # as the daemon does
            return await judge_refused_alone(judge, [s])
        refused = ParsedAnswer(verdict=None, rationale="", cited=(), ungrounded_refs=(),
                               error=f"model_rejected: {exc}", raw="")
        return [Judgement(session=s, view=judge.view(s), answer=refused, cached=False, attempts=1)]


async def _in_chunks(sessions: Iterable[Session], chunk: int, judge_chunk, progress: bool, status) -> None:
    """``await judge_chunk(batch)`` for every ``chunk`` sessions; ``status(done)`` is the progress line."""
    batch: list[Session] = []
    done = 0
    try:
        for s in sessions:
            batch.append(s)
            if len(batch) >= chunk:
                await judge_chunk(batch)
                done += len(batch)
                batch = []
                if progress:
                    print(f"\r{status(done)}", end="", file=sys.stderr)
        if batch:
            await judge_chunk(batch)
            done += len(batch)
            if progress:
                print(f"\r{status(done)}", end="", file=sys.stderr)
    finally:
        if progress:  # the progress line ended, also when the model stopped answering (the error follows)
            print(file=sys.stderr)


async def judge_sessions(
    sessions: Iterable[Session], model_cfg: ModelConfig, source: str, out: IO[bytes], *, use_cache: bool,
    cache_entries: int = 100_000, chunk: int = 256, client=None, progress: bool = False,
    threshold: float | None = None, threshold_unfinished: float | None = None,
) -> tuple[Scores, int]:
    """Run sessions through the model stage; write JSON lines; return scores and the number of model calls. The
    verdict is the answer at ``threshold`` (None: the model's written answer), or for a session closed early to bound
    memory (``Session.unfinished``) at ``threshold_unfinished`` where given, as the daemon serves it (review
    2026-12-07: replay judged those at the finished sessions' threshold, and put them on the curve it is chosen
    from)."""
    scores = Scores()
    async with judging(model_cfg, source, client=client, use_cache=use_cache, cache_entries=cache_entries) as judge:

        async def judge_chunk(batch: list[Session]) -> None:
            for j in await judge_refused_alone(judge, batch):
                s, a = j.session, j.answer
                unfinished = s.unfinished and threshold_unfinished is not None
                verdict = j.verdict_at(threshold_unfinished if unfinished else threshold)
                scores.add(s.label, verdict, a.grounded, j.served_score, unfinished)
                rec = {
                    "id": s.source_id or s.key,
                    "verdict": verdict,
                    "model_verdict": a.verdict,
                    "score": j.score,
                    "rationale": a.rationale,
                    "evidence": [
                        {"ref": r.ref, "template": r.template, "count": r.count,
                         "line": s.judged_lines[r.first_index].raw, "offset": s.judged_lines[r.first_index].offset}
                        for r in a.cited
                    ],
                    "grounded": a.grounded,
                    "rationale_problems": list(a.problems),
                    "unsupported": a.unsupported,  # anomalous on void evidence: served normal (rationad.faithful)
                    "cached": j.cached,
                }
                if s.label is not None:
                    rec["label"] = s.label
                if unfinished:
                    rec["unfinished"] = True
                if not a.ok:
                    rec["error"] = a.error
                if not a.ok or not a.grounded:  # what the model wrote (the rationale is served cut when ungrounded)
                    rec["raw_completion"] = a.raw
                out.write(safe_json(rec).encode() + b"\n")  # log text is untrusted: no terminal controls

        try:
            await _in_chunks(sessions, chunk, judge_chunk, progress,
                             lambda done: f"judged {done} sessions, {judge.model_calls} model calls")
        except ModelError as exc:
            raise ModelUnavailable(str(exc), scores, judge.model_calls) from exc
    return scores, judge.model_calls


async def judge_by_template(
    sessions: Iterable[Session], model_cfg: ModelConfig, source: str, out: IO[bytes], *, use_cache: bool,
    cache_entries: int = 100_000, chunk: int = 256, client=None, progress: bool = False,
    threshold: float | None = None,
) -> tuple[Scores, int]:
    """Template level: each distinct template of the windows is judged once (one ``judge_many`` per chunk of
    windows), every window decided from its templates' verdicts at ``threshold``; JSON lines as the daemon's
    template events carry them. A window's score is the maximum of its templates'."""
    from rationad.events import ModelInfo, build_template_event
    from rationad.template_book import TemplateBook, template_session

    book = TemplateBook(max_templates=cache_entries)
    scores = Scores()
    async with judging(model_cfg, source, client=client, use_cache=use_cache, cache_entries=cache_entries) as judge:
        model = ModelInfo(name=judge.client.name)

        async def judge_chunk(batch: list[Session]) -> None:
            uses = [book.uses(s) for s in batch]
            todo = {u.state.template: u.state for us in uses for u in us if not u.state.known}
            if todo:
                for j in await judge_refused_alone(judge, [template_session(st.template) for st in todo.values()]):
                    a = j.answer
                    scores.templates += 1
                    scores.templates_failed += 0 if a.ok else 1
                    book.judged(j.session.lines[0].message, j.verdict_at(threshold), a.rationale, cached=j.cached,
                                failed=None if a.ok else (a.error or "malformed_answer"), score=j.score,
                                answer_verdict=a.verdict, problems=a.problems, ungrounded=a.ungrounded_refs,
                                unsupported=a.unsupported)
            for s, us in zip(batch, uses, strict=True):
                decision = book.decide(us)
                assert decision is not None  # every template was judged (or failed) above
                ev = build_template_event(s, decision, model, source=source, threshold=threshold)
                scores.add(s.label, decision.verdict, ev["grounded"], decision.score)
                if decision.unjudged:  # a template of it has no verdict: the window counts as not well-formed
                    scores.malformed += 1
                rec = {"id": s.source_id or s.key, "verdict": decision.verdict,
                       "model_verdict": decision.model_verdict, "score": decision.score, "rationale": ev["rationale"],
                       "judge_level": "template", "evidence": ev["evidence"], "grounded": ev["grounded"],
                       "templates": ev["templates"],
                       "unjudged_templates": ev["unjudged_templates"], "lines": len(s.lines)}
                if s.label is not None:
                    rec["label"] = s.label
                # why a template has no verdict, as a session's record says it (a refused request: model_rejected)
                failed = [st.failed for st in map(book.get, decision.unjudged) if st is not None and st.failed]
                if failed:
                    rec["error"] = "; ".join(dict.fromkeys(failed))
                out.write(safe_json(rec).encode() + b"\n")

        try:
            await _in_chunks(sessions, chunk, judge_chunk, progress, lambda done: f"judged {done} windows, "
                             f"{len(book)} templates, {judge.model_calls} model calls")
        except ModelError as exc:
            raise ModelUnavailable(str(exc), scores, judge.model_calls) from exc
    return scores, judge.model_calls
