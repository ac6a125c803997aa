"""Verdict events: what consumers of the output topic read. The JSON Schema is ``schemas/anomaly_event.v1.json``.

The event id is deterministic: the same lines (source topic, partition, key, first and last offsets, line count,
part) judged by the same model and prompt version at the same level always get the same id, so a consumer can drop
the duplicates that at-least-once delivery may bring (``event_id``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from rationad import __version__
from rationad.answer import CUT_MARK, ParsedAnswer, served_verdict
from rationad.dlq import record_bytes
from rationad.prompt import PROMPT_VERSION, SessionView
from rationad.records import Session, input_spans
from rationad.template_book import Decision

EVENT_TYPE = "rationad.verdict.v1"
SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c0b55-8d1e-4c6e-9a53-2f3b4f8f7a10")
_MAX_LINE_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Stamped into every event: which model and prompt produced the verdict."""

    name: str
    version: str = "unversioned"
    prompt_version: str = PROMPT_VERSION


def event_id(session: Session, model: ModelInfo, level: str = "session", verdict: str | None = None) -> str:
    """The same lines judged by the same model at the same level (and, at template level, decided the same
    ``verdict``) -> the same id; other lines -> another id. Whatever else decides
    the verdict is part of it too: a session judged as unfinished (another prompt note, ``judge.threshold_unfinished``),
    or on fewer rows once the model refused it (``model_stage.cut_harder``), and the same lines read again and judged
    as finished or whole, or a window decided while a template's judgement had failed and decided again once it was
    judged, gave one id to opposite verdicts, and consumers dropping duplicates by id kept the first (review
    2026-12-07). A template window's verdict is named, not the operator labels or the unjudged templates it rests on:
    a window decided again after a label, or a template's judgement, that changed no verdict is a duplicate (it was a
    second alert under another id), one decided again with another verdict is not.

    A session is named by the lines it holds: its partition, key, first and last offsets, line count and ``part``
    (sessions of one key beginning in the same record). Read again after a restart or a rebalance, the same lines
    give the same id, so consumers drop the duplicate; a session cut by the wall clock (``max_open``, a quiet
    partition) and read again as a longer one gets an id of its own, so the fuller verdict is not dropped as a
    duplicate of the shorter. The revision number is not part of it: it lives in memory and starts again at 1
    after a restart (the event carries it, for reading only).

    Lines that came through the repartition topic are named by their input positions (``LogLine.source``), not by
    their offsets on that topic: lines forwarded again (a restart between the hops, whose duplicate memory the new
    owner of an internal partition does not have) land at new internal offsets, and the same lines then give the
    same id, so consumers drop the copy. A digest of the lines' text goes with them, in place of ``part``: the lines
    of one input record (one position) may fill several sessions of one key (``sessions.max_lines``), which the
    positions alone do not tell apart, and ``part`` depends on how the lines were packed on the internal topic."""
    spans = input_spans(session.lines)
    forwarded = spans is not None
    if spans is not None:
        where = ["source", *(f"{t}/{p}:{lo}-{hi}" for t, p, lo, hi in spans)]
        text = hashlib.blake2b(digest_size=16)
        # in input order, not the session's: a line without a time sorts by the lines that arrived on the internal
        # partition before it, and lines forwarded again arrive from their input partitions in another order
        # (review 2026-12-07: the same lines, another id)
        for line in sorted(session.lines, key=lambda x: (x.source, x.raw)):
            text.update(line.raw.encode("utf-8", "surrogatepass") + b"\x1f")
        parts = [*where, f"text={text.hexdigest()}", session.key, model.name, model.version, model.prompt_version,
                 f"lines={len(session.lines)}"]
    else:
        parts = [session.topic, str(session.partition), session.key, str(session.first_offset), model.name,
                 model.version, model.prompt_version, f"last={session.last_offset}", f"lines={len(session.lines)}"]
    if level != "session":
        parts.append(f"level={level}")
    elif session.unfinished:
        parts.append("unfinished")
    if "max_prompt_tokens" in session.extra:  # judged on fewer rows, cut after the model refused it (model_stage)
        parts.append(f"budget={session.extra['max_prompt_tokens']}")
    if verdict is not None:
        parts.append(f"verdict={verdict}")
    if session.part and not forwarded:
        # (not for forwarded lines: ``part`` counts by internal record, and a pack forwarded again is cut elsewhere;
        # their input positions and text tell sessions of one record apart)
        parts.append(f"part={session.part}")
    ident = "\x1f".join(parts)
    return str(uuid.uuid5(_NAMESPACE, ident))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _about(session: Session, source: str, template_count: int, model: ModelInfo) -> dict[str, Any]:
    """What every event says of its session, model and producer."""
    return {
        "session": {
            "key": session.key,
            "source": source,
            "topic": session.topic,
            "partition": session.partition,
            "first_offset": session.first_offset,
            "last_offset": session.last_offset,
            "first_time": _iso(session.first_ts),
            "last_time": _iso(session.last_ts),
            "line_count": len(session.lines),
            "context_lines": len(session.context),
            "template_count": template_count,
            "close_reason": session.close_reason,
            "revision": session.revision,
            "part": session.part,
        },
        "model": {"name": model.name, "version": model.version, "prompt_version": model.prompt_version},
        "producer": {"name": "rationad", "version": __version__},
    }


def evidence(answer: ParsedAnswer, view: SessionView, session: Session) -> list[dict[str, Any]]:
    """The lines a rationale cites, each with its template, count and the session's first raw line of it (from an
    earlier revision's lines when the row first appeared there: ``Session.context``)."""
    out = []
    shown = session.judged_lines
    for row in answer.cited:
        line = shown[row.first_index]
        out.append(
            {
                "ref": row.ref,
                "template": row.template,
                "count": row.count,
                "line": line.raw[:_MAX_LINE_CHARS],
                "offset": line.offset,
            }
        )
    return out


def build_event(
    session: Session,
    view: SessionView,
    answer: ParsedAnswer,
    model: ModelInfo,
    *,
    cached: bool,
    max_rationale_chars: int = 2_000,
    now: float | None = None,
    score: float | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A verdict event for a session whose answer parsed (``answer.verdict`` is set). ``verdict`` is the answer at
    ``threshold`` (anomalous when ``score >= threshold``; the model's written answer when either is None; normal when
    the answer's own evidence is void, ``answer.unsupported``, the reason among ``rationale_problems``);
    ``model_verdict`` is the answer the model wrote, whose analysis the rationale is."""
    if answer.verdict is None:
        raise ValueError("a verdict event needs a parsed verdict")
    return {
        "type": EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "id": event_id(session, model),
        "time": _iso(time.time() if now is None else now),
        "verdict": served_verdict(answer, score, threshold),
        "model_verdict": answer.verdict,
        "score": score,
        "threshold": threshold if score is not None else None,
        "rationale": cut_text(answer.rationale, max_rationale_chars),
        "evidence": evidence(answer, view, session),
        "grounded": answer.grounded,
        "ungrounded_refs": list(answer.ungrounded_refs),
        "rationale_problems": list(answer.problems),
        "cached": cached,
        "judge_level": "session",
    } | _about(session, view.source, len(view.rows) + view.omitted_templates, model)


MAX_TEMPLATE_LINES = 20  # lines of one template an event quotes (the count says how many the window held)



# A template is judged alone, as the one row ``L1`` (``x1``) of its own prompt; its rationale says so.
_OWN_ROW = re.compile(r"\bL1(?: x\d+)?\b")


def in_window(rationale: str, ref: str) -> str:
    """A template's rationale as part of its window's: its own row ``L1`` (and that row's count) becomes ``ref``,
    the template's place in the window; the window's count of it is given beside it."""
    return _OWN_ROW.sub(ref, rationale)


def build_template_event(
    session: Session,
    decision: Decision,
    model: ModelInfo,
    *,
    source: str,
    max_rationale_chars: int = 2_000,
    now: float | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A verdict event for a window decided from its templates' verdicts (``judge.level = "template"``). It carries
    each anomalous template, each template an operator labelled, and each whose verdict at the threshold differs
    from the answer the model wrote, with its rationale, score, its count in the window and the window's own lines
    of it; ``evidence`` cites the first line of each anomalous template (``ref`` = the template's place in the
    window, in order of first appearance). The window's ``score`` is the maximum over its templates (a label counts
    as 1 or 0), ``threshold`` the one its templates' verdicts were decided at (``judge.threshold_template``)."""
    uses = decision.uses
    shown = [(i, u) for i, u in enumerate(uses, start=1)
             if u.state.verdict == "anomalous" or u.state.label is not None
             or u.state.answer_verdict != u.state.model_verdict]
    anomalous = [(i, u) for i, u in shown if u.state.verdict == "anomalous"]
    if anomalous:
        rationale = " ".join(f"[{u.state.id} x{len(u.lines)}, {u.state.source}] "
                             f"{in_window(u.state.reason, f'L{i}') if u.state.source == 'model' else u.state.reason}"
                             for i, u in anomalous)
    else:
        rationale = f"Every template of the window ({len(uses)}) is judged normal."
    # the templates the verdict rests on: the anomalous ones, else every one judged (a normal window's verdict came
    # from the cache only when each of them did; ``all`` of none said so of every normal window)
    deciding = [u for _, u in anomalous] or [u for u in uses if u.state.verdict is not None]
    ungrounded = [f"{u.state.id}:{ref}" for _, u in anomalous if u.state.source == "model"
                  for ref in u.state.ungrounded]
    templates = []
    for _, u in shown:
        st = u.state
        entry: dict[str, Any] = {
            "id": st.id, "template": st.template, "verdict": st.verdict, "source": st.source,
            "rationale": cut_text(st.reason, max_rationale_chars), "count": len(u.lines),
            "rationale_problems": list(st.problems) if st.source == "model" else [],
            "lines": [{"line": x.raw[:_MAX_LINE_CHARS], "offset": x.offset} for x in u.lines[:MAX_TEMPLATE_LINES]],
        }
        if st.label is not None:
            entry["labelled_by"] = st.label.by
        if st.model_verdict is not None:
            entry["model_verdict"] = st.answer_verdict
            entry["score"] = st.score
        templates.append(entry)
    return {
        "type": EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        # its verdict: a window decided again once an operator label changed it is not a duplicate of its earlier
        # event (review 2026-12-07: the same id, the opposite verdict, dropped by id); once a label changed none, it is
        "id": event_id(session, model, "template", decision.verdict),
        "time": _iso(time.time() if now is None else now),
        "verdict": decision.verdict,
        "model_verdict": decision.model_verdict,
        "score": decision.score,
        "threshold": threshold if decision.score is not None else None,
        "rationale": cut_text(rationale, max_rationale_chars),
        "evidence": [{"ref": f"L{i}", "template": u.state.template, "count": len(u.lines),
                      "line": u.lines[0].raw[:_MAX_LINE_CHARS], "offset": u.lines[0].offset} for i, u in anomalous],
        # Each rationale is about its own template (its prompt's one row, L1) and the lines quoted are the window's
        # own; a ref to any other row of that prompt cites nothing: named with its template's id.
        "grounded": not ungrounded,
        "ungrounded_refs": ungrounded,
        "cached": bool(deciding) and all(u.state.cached or u.state.label is not None for u in deciding),
        "judge_level": "template",
        "templates": templates,
        "unjudged_templates": list(decision.unjudged),
    } | _about(session, source, len(uses), model)


def cut_text(text: str, limit: int) -> str:
    """``text`` in ``limit`` characters (``output.max_rationale_chars``): cut at a word's end and marked as a cut
    rationale is (`` …``), never inside a word (a plain slice served "L12" as "L1", a line it did not mean)."""
    if len(text) <= limit:
        return text
    head = text[: limit - len(CUT_MARK)]
    space = head.rfind(" ")
    return (head[:space] if space > 0 else head).rstrip() + CUT_MARK


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


_CUT_TEMPLATE_CHARS = 200  # a template's text, and a quoted line, where even one line per template does not fit


def fit_template_event(event: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``event`` (judge level template) made to fit ``max_bytes`` of JSON, or ``event`` itself when it does.

    A window of many anomalous templates, or of a few long ones (a template can be longer than its line), could make
    an event larger than the output topic takes; it was dead-lettered and the anomaly never reached its consumers.
    In turn until it fits: each template's text is cut to a line's bound (``…`` ends a cut text), each template
    quotes one line of the window (``count`` still says how many it had), the templates that are not anomalous are
    left out, listed last first, the texts are cut to 200 characters, and then anomalous templates are left out,
    listed last first, never the first one (``omitted_templates`` counts what was left out; ``evidence`` keeps the
    anomalous ones listed). Verdict, score, id and rationale are never changed. An event that still does not fit is
    returned cut as far as it goes."""
    if len(encode(event)) <= max_bytes:
        return event
    ev = {**event, "templates": [{**t, "lines": list(t["lines"])} for t in event["templates"]],
          "evidence": [dict(e) for e in event["evidence"]]}

    def cut_texts(chars: int) -> None:
        for entry in ev["templates"] + ev["evidence"]:
            if len(entry["template"]) > chars:
                entry["template"] = entry["template"][: chars - 2] + " …"
            if "line" in entry and len(entry["line"]) > chars:
                entry["line"] = entry["line"][: chars - 2] + " …"
        for t in ev["templates"]:
            t["lines"] = [x if len(x["line"]) <= chars else {**x, "line": x["line"][: chars - 2] + " …"}
                          for x in t["lines"]]

    def fits() -> bool:
        return len(encode(ev)) <= max_bytes

    cut_texts(_MAX_LINE_CHARS)
    if fits():
        return ev
    for t in ev["templates"]:
        t["lines"] = t["lines"][:1]
    if fits():
        return ev
    _omit_templates(ev, max_bytes, anomalous=False)
    if fits():
        return ev
    cut_texts(_CUT_TEMPLATE_CHARS)
    _omit_templates(ev, max_bytes, anomalous=True)
    return ev


def fit_session_event(event: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``event`` (judge level session) made to fit ``max_bytes`` of JSON, or ``event`` itself when it does.

    Each cited row quotes its session's first line of it (up to 2,000 characters, the whole record for JSON input),
    so a rationale citing many rows of long lines made an event larger than the output topic takes: it was
    dead-lettered and the anomaly never reached its consumers. In turn until it fits: every evidence entry's template
    and line are cut to 200 characters (`` …`` ends a cut text), then entries are left out, listed last first, never
    the first (``omitted_evidence`` counts them). Verdict, score, id and rationale are never changed."""
    if len(encode(event)) <= max_bytes:
        return event
    ev = {**event, "evidence": [dict(e) for e in event["evidence"]]}
    for entry in ev["evidence"]:
        for field in ("template", "line"):
            if len(entry[field]) > _CUT_TEMPLATE_CHARS:
                entry[field] = entry[field][: _CUT_TEMPLATE_CHARS - 2] + " …"
    # Entries are left out by their encoded size (the list's bytes are each entry's and a comma), so the event is
    # encoded once more per round, not once per entry; the count's own bytes are counted too.
    while (size := len(encode(ev))) > max_bytes and len(ev["evidence"]) > 1:
        excess = size - max_bytes + (8 if "omitted_evidence" in ev else len(',"omitted_evidence":') + 8)
        freed = 0
        while freed < excess and len(ev["evidence"]) > 1:
            freed += len(orjson.dumps(ev["evidence"].pop())) + 1
            ev["omitted_evidence"] = ev.get("omitted_evidence", 0) + 1
    return ev


def encode_to_fit(event: dict[str, Any], key: bytes, max_bytes: int,
                  fit: Callable[[dict[str, Any], int], dict[str, Any]]) -> tuple[dict[str, Any], bytes]:
    """``event`` and its JSON, cut by ``fit`` (``fit_session_event``, ``fit_template_event``) where the record
    (``key``, value and headers) would be over ``max_bytes``: encoded once on the common path."""
    room = max_bytes - record_bytes(key, b"", headers(event))
    value = encode(event)
    if len(value) > room:
        event = fit(event, room)
        value = encode(event)
    return event, value


def _omit_templates(ev: dict[str, Any], max_bytes: int, *, anomalous: bool) -> None:
    """Leave out of ``ev["templates"]`` the entries listed last that are not anomalous (``anomalous``: then the
    anomalous ones but the first, with their evidence) until ``ev`` fits ``max_bytes`` or none is left to leave out;
    ``omitted_templates`` counts them (its own bytes are counted too)."""
    while (size := len(encode(ev))) > max_bytes:
        templates = ev["templates"]
        evidence_of = {i: n for n, i in enumerate(i for i, t in enumerate(templates) if t["verdict"] == "anomalous")}
        order = [i for i in reversed(range(len(templates))) if i not in evidence_of]
        if anomalous:
            order += [i for i in reversed(evidence_of) if evidence_of[i] > 0]
        if not order:
            return
        excess = size - max_bytes + (8 if "omitted_templates" in ev else len(',"omitted_templates":') + 8)
        gone: set[int] = set()
        freed = 0
        for i in order:
            if freed >= excess:
                break
            gone.add(i)
            freed += len(orjson.dumps(templates[i])) + 1
            if i in evidence_of:
                freed += len(orjson.dumps(ev["evidence"][evidence_of[i]])) + 1
        ev["evidence"] = [ev["evidence"][n] for i, n in evidence_of.items() if i not in gone]
        ev["templates"] = [t for i, t in enumerate(templates) if i not in gone]
        ev["omitted_templates"] = ev.get("omitted_templates", 0) + len(gone)


def headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode attributes as Kafka headers (the value stays the plain JSON event)."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event["id"].encode()),
        ("ce_type", EVENT_TYPE.encode()),
        ("ce_source", f"rationad/{event['session']['topic']}".encode()),
        ("content-type", b"application/json"),
        ("rationad-verdict", event["verdict"].encode()),
    ]


def schema() -> dict[str, Any]:
    """The committed JSON Schema of verdict events."""
    return json.loads(resources.files("rationad").joinpath("schemas/anomaly_event.v1.json").read_text())
