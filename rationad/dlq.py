"""Dead letters: what could not be judged goes to the dead-letter topic with the reason, never silently dropped.

An undecodable record keeps its original key and value; the reason travels in headers (stage, type, reason,
source topic/partition/offset). A poison session (the model's answer stayed malformed) is written as JSON with
the raw completion so it can be inspected and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from rationad.records import LogLine, Session, input_spans

if TYPE_CHECKING:  # annotations only: rationad.events sizes its records with record_bytes
    from rationad.judge import Judgement

MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str  # the low-cardinality type, for metrics


# The headers this module writes (``_headers``); ``fit`` keeps only these when an input's own headers do not fit.
OWN_HEADERS = frozenset({"rationad-error-stage", "rationad-error-type", "rationad-error-reason",
                         "rationad-source-topic", "rationad-source-partition", "rationad-source-offset"})


def _headers(stage: str, error_type: str, reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("rationad-error-stage", stage.encode()),
        ("rationad-error-type", error_type.encode()),
        ("rationad-error-reason", reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
        ("rationad-source-topic", topic.encode()),
        ("rationad-source-partition", str(partition).encode()),
        ("rationad-source-offset", str(offset).encode()),
    ]


def bad_record(
    key: bytes | None,
    value: bytes | None,
    original_headers: list[tuple[str, bytes]] | tuple | None,
    *,
    error_type: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    # A Kafka header value may be null (aiokafka gives None): kept as empty bytes, so the dead letter can be sized
    # and sent.
    kept = [(k, b"" if v is None else bytes(v)) for k, v in original_headers or []]
    if key is None and value is None:  # a record with neither (or one that could not be read): the producer refuses
        value = b""  # to send neither, and the dead letter was retried for ever, holding its partition
    return DeadLetter(key, value, kept + _headers("parse", error_type, reason, topic, partition, offset), error_type)


def poison_session(judgement: Judgement, error_type: str = "malformed_answer") -> DeadLetter:
    a = judgement.answer
    return session_dead_letter(judgement.session, error_type, a.error or error_type, raw_completion=a.raw,
                               attempts=judgement.attempts)


def session_dead_letter(session: Session, error_type: str, error: str, *, raw_completion: str = "",
                        attempts: int = 0) -> DeadLetter:
    """A session that could not be judged or delivered, as JSON with its raw lines (the first 1,000).

    The headers name where it was read on the input: for lines that came through the repartition topic, the input
    partitions and offsets (``session.inputs``, the first in the headers), not the internal topic's, which is purged
    once committed; for a template the model could not judge (``template_session``), the line it was first met in
    (``session.example``), whose raw text its masked template no longer holds."""
    s = session
    spans = input_spans(s.lines)
    example: LogLine | None = s.extra.get("example")
    if example is not None:
        where = example.source or (example.topic, example.partition, example.offset)
    elif spans is not None:
        where = spans[0][:3]
    else:
        where = (s.topic, s.partition, s.first_offset)
    body = {
        "error": error,
        "raw_completion": raw_completion,
        "attempts": attempts,
        "session": {
            "key": s.key,
            "topic": s.topic,
            "partition": s.partition,
            "first_offset": s.first_offset,
            "last_offset": s.last_offset,
            "line_count": len(s.lines),
            "close_reason": s.close_reason,
            "lines": [line.raw for line in s.lines[:1000]],
        },
    }
    if spans is not None:
        body["session"]["inputs"] = [{"topic": t, "partition": p, "first_offset": lo, "last_offset": hi}
                                     for t, p, lo, hi in spans]
    if example is not None:
        body["session"]["example"] = {"line": example.raw, "topic": where[0], "partition": where[1],
                                      "offset": where[2]}
    headers = _headers("model", error_type, error or error_type, *where)
    return DeadLetter(s.key.encode(), orjson.dumps(body), headers, error_type)


RECORD_OVERHEAD_BYTES = 512  # record batch framing, attributes, varints: generous, so a fitted record always fits
HEADER_OVERHEAD_BYTES = 16
MAX_KEY_BYTES = 1_024  # a key longer than this is cut when the record must be cut anyway
MAX_BODY_KEY_CHARS = 256  # the session key inside a cut session dead letter (the record key keeps MAX_KEY_BYTES)


def record_bytes(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """An upper estimate of a record's size as the producer counts it against ``max_request_size``."""
    return (RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
            + sum(len(k.encode()) + len(v) + HEADER_OVERHEAD_BYTES for k, v in headers))


def fit(dl: DeadLetter, max_bytes: int) -> DeadLetter:
    """``dl`` if it fits in ``max_bytes``; otherwise a copy cut to fit, saying so in headers
    (``rationad-truncated: true``, ``rationad-original-bytes``: the value's original size).

    A session dead letter (JSON) keeps valid JSON: its key, error and raw completion are cut to bounds, its raw lines
    dropped from the end (``lines_kept`` says how many remain) and each kept line cut to a bound first (``{}`` when
    even that does not fit); any other value is cut to a prefix. Headers copied from
    the input record are dropped only when they alone do not fit."""
    if record_bytes(dl.key, dl.value, dl.headers) <= max_bytes:
        return dl
    value = dl.value or b""
    marks = [("rationad-truncated", b"true"), ("rationad-original-bytes", str(len(value)).encode())]
    key = dl.key if dl.key is None or len(dl.key) <= MAX_KEY_BYTES else dl.key[:MAX_KEY_BYTES]
    headers = list(dl.headers) + marks
    own = {k: v for k, v in dl.headers if k in OWN_HEADERS}  # ours come last: an input's header of the same name loses
    if record_bytes(key, b"", headers) > max_bytes:  # the input's own headers are too large: keep only ours
        # cut at a character, not inside one: a reason of 500 characters can be 2,000 bytes of UTF-8
        headers = [(k, v[:MAX_REASON_CHARS].decode("utf-8", "ignore").encode()) for k, v in own.items()] + marks
        headers.append(("rationad-headers-dropped", b"true"))
    room = max(0, max_bytes - record_bytes(key, b"", headers))
    # A session dead letter is our JSON (cut line by line); a parse dead letter carries the input's value (a prefix).
    return DeadLetter(key, _cut_value(value, room, session=own.get("rationad-error-stage") != b"parse"), headers,
                      dl.reason)


def _cut_value(value: bytes, room: int, *, session: bool) -> bytes:
    body = None
    if session:
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    session_body = body.get("session") if isinstance(body, dict) else None
    lines = session_body.get("lines") if isinstance(session_body, dict) else None
    if isinstance(body, dict) and isinstance(lines, list) and all(isinstance(ln, str) for ln in lines):
        body["raw_completion"] = str(body.get("raw_completion", ""))[: max(0, room // 8)]
        # A session key (a JSON key field, a key_regex capture) and an error can be as long as a record: bounded too
        body["error"] = str(body.get("error", ""))[:MAX_REASON_CHARS]
        body["session"]["key"] = str(session_body.get("key", ""))[:MAX_BODY_KEY_CHARS]
        per_line = max(256, room // max(1, len(lines)))
        lines = [ln[:per_line] for ln in lines]
        example = session_body.get("example")
        if isinstance(example, dict) and isinstance(example.get("line"), str):
            example["line"] = example["line"][: max(256, room // 8)]  # (quoted, a character takes up to 6 bytes)
        # Binary search on how many lines fit, keeping the first ones (a session's start names what it was).
        lo, hi = 0, len(lines)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            body["session"]["lines"] = lines[:mid]
            body["session"]["lines_kept"] = mid
            if len(orjson.dumps(body)) <= room:
                lo = mid
            else:
                hi = mid - 1
        body["session"]["lines"] = lines[:lo]
        body["session"]["lines_kept"] = lo
        out = orjson.dumps(body)
        if len(out) <= room:
            return out
        return b"{}"  # still valid JSON: the headers carry the reason and the input position
    return value[:room]
