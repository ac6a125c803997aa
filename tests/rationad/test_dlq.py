import orjson

from rationad.answer import parse_completion
from rationad.dlq import bad_record, poison_session
from rationad.judge import Judgement
from rationad.prompt import build_view
from rationad.records import LogLine, Session


def test_bad_record_keeps_key_value_and_original_headers():
    dl = bad_record(b"k", b"\xff", [("trace", b"1")], error_type="invalid_utf8", reason="byte 0xff",
                    topic="logs", partition=3, offset=42)
    h = dict(dl.headers)
    assert dl.key == b"k" and dl.value == b"\xff" and h["trace"] == b"1"
    assert h["rationad-error-type"] == b"invalid_utf8" and h["rationad-error-stage"] == b"parse"
    assert (h["rationad-source-topic"], h["rationad-source-partition"], h["rationad-source-offset"]) == (
        b"logs", b"3", b"42")


def test_poison_session_carries_raw_completion_and_lines():
    s = Session(key="blk_9", lines=[LogLine("blk_9", "INFO x", "raw line", offset=7)], close_reason="gap",
                topic="logs")
    view = build_view("hdfs", ["INFO x"])
    j = Judgement(s, view, parse_completion("babble", view), cached=False, attempts=2)
    dl = poison_session(j)
    body = orjson.loads(dl.value)
    assert body["raw_completion"] == "babble" and body["session"]["lines"] == ["raw line"]
    assert dict(dl.headers)["rationad-error-stage"] == b"model" and dl.key == b"blk_9"
