"""Dead letters: what could not be judged goes to the dead-letter topic with the reason, never silently dropped.

An undecodable record keeps its original key and value; the reason travels in headers (stage, type, reason,
source topic/partition/offset). A poison session (the model's answer stayed malformed) is written as JSON with
the raw completion so it can be inspected and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from rationad.judge import Judgement

MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str  # the low-cardinality type, for metrics


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
    headers = list(original_headers or []) + _headers("parse", error_type, reason, topic, partition, offset)
    return DeadLetter(key, value, headers, error_type)


def poison_session(judgement: Judgement, error_type: str = "malformed_answer") -> DeadLetter:
    s, a = judgement.session, judgement.answer
    body = {
        "error": a.error,
        "raw_completion": a.raw,
        "attempts": judgement.attempts,
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
    headers = _headers("model", error_type, a.error or error_type, s.topic, s.partition, s.first_offset)
    return DeadLetter(s.key.encode(), orjson.dumps(body), headers, error_type)
