import orjson

from rationad.answer import parse_completion
from rationad.dlq import bad_record, fit, poison_session, record_bytes, session_dead_letter
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


def test_a_record_with_neither_key_nor_value_gets_a_dead_letter_the_producer_sends():
    """Found 2026-12-04, failing before its fix (tests/integration/test_undecodable_record.py on the real broker):
    aiokafka refuses to send a record with neither key nor value, and such a dead letter was retried for ever."""
    dl = bad_record(None, None, [], error_type="empty", reason="empty record (no value)", topic="logs", partition=0,
                    offset=4)
    assert (dl.key, dl.value) == (None, b"")
    assert bad_record(b"k", None, [], error_type="empty", reason="", topic="t", partition=0, offset=0).value is None


def test_poison_session_carries_raw_completion_and_lines():
    s = Session(key="blk_9", lines=[LogLine("blk_9", "INFO x", "raw line", offset=7)], close_reason="gap",
                topic="logs")
    view = build_view("hdfs", ["INFO x"])
    j = Judgement(s, view, parse_completion("babble", view), cached=False, attempts=2)
    dl = poison_session(j)
    body = orjson.loads(dl.value)
    assert body["raw_completion"] == "babble" and body["session"]["lines"] == ["raw line"]
    assert dict(dl.headers)["rationad-error-stage"] == b"model" and dl.key == b"blk_9"


# ---- found by review (2026-12-03): each failed before its fix (a dead letter that cannot be sized or cut wedged its
# partition; one that never fits stopped the daemon, which read the record again: a crash loop) ---------------------
def test_a_null_header_value_is_kept_as_empty_bytes_and_fits():
    from rationad.dlq import fit, record_bytes

    dl = bad_record(b"k", b"x" * 100_000, [("trace", None)], error_type="bad_header", reason="r", topic="logs",
                    partition=0, offset=7)
    assert ("trace", b"") in dl.headers
    out = fit(dl, 20_000)
    assert record_bytes(out.key, out.value, out.headers) <= 20_000


def test_input_headers_named_like_ours_do_not_keep_a_dead_letter_from_fitting():
    from rationad.dlq import fit, record_bytes

    headers = [(f"rationad-h{i}", b"v" * 400) for i in range(1_000)] + [("rationad-error-type", b"forged")]
    out = fit(bad_record(b"k", b"x", headers, error_type="bad_json", reason="r", topic="logs", partition=0,
                         offset=7), 65_536)
    assert record_bytes(out.key, out.value, out.headers) <= 65_536
    assert dict(out.headers)["rationad-error-type"] == b"bad_json"  # ours, not the input's


def test_an_oversized_input_that_looks_like_a_session_dead_letter_is_cut_to_a_prefix():
    from rationad.dlq import fit, record_bytes

    for lines in (b"[1, 2, 3]", b'[{"a": 1}]', b'["a", "b"]'):
        value = b'{"session": {"lines": ' + lines + b'}, "pad": "' + b"x" * 100_000 + b'"}'
        out = fit(bad_record(b"k", value, [], error_type="too_large", reason="r", topic="logs", partition=0,
                             offset=7), 20_000)
        assert record_bytes(out.key, out.value, out.headers) <= 20_000
        assert value.startswith(out.value)  # the input's own bytes, cut: not rewritten


def test_a_session_dead_letter_with_a_long_key_stays_valid_json_when_cut():
    """Found by review, failing before its fix: the cut bounded lines and the raw completion but not the session's
    key: a long key (a JSON key field, a key_regex capture) left even the zero-line body too large, and the value
    was cut to a byte prefix, invalid JSON for every tool that reads session dead letters."""
    from rationad.dlq import fit, record_bytes, session_dead_letter

    for key, limit in (("k" * 15_000, 16_384), ("k" * 3_000, 4_096), ("k" * 3_000, 2_400)):
        s = Session(key=key, lines=[LogLine(key=key, message="m", raw='{"sid": "..", "msg": "m"}', offset=i)
                                    for i in range(3)], close_reason="gap", topic="logs")
        dl = fit(session_dead_letter(s, "malformed_answer", "e" * 5_000, raw_completion="<think>x", attempts=2),
                 limit)
        assert record_bytes(dl.key, dl.value, dl.headers) <= limit
        body = orjson.loads(dl.value)
        assert dict(dl.headers)["rationad-truncated"] == b"true"
        if limit > 2_400:
            assert body["session"]["key"] == key[:256] and len(body["error"]) == 500, limit


def test_our_headers_cut_to_fit_end_at_a_character():
    """Found by review, failing before its fix: when the input's own headers did not fit, ours were cut to 500 bytes,
    inside a character of a reason in another script (500 characters can be 2,000 bytes): invalid UTF-8."""
    from rationad.dlq import bad_record, fit

    dl = bad_record(b"k", b"v", [("big", b"x" * 20_000)], error_type="bad_json", reason="a" + "é" * 400, topic="logs",
                    partition=0, offset=7)
    cut = fit(dl, 4_096)
    reason = dict(cut.headers)["rationad-error-reason"]
    assert reason.decode("utf-8") == "a" + "é" * 249 and dict(cut.headers)["rationad-headers-dropped"] == b"true"


def test_a_repartitioned_session_s_dead_letter_names_its_input_positions():
    """Found by review (2026-12-07), failing before its fix: a session read on the repartition topic was dead-lettered
    under the internal topic's partition and offsets, which are purged once committed (right after the dead letter
    is acknowledged): a cut dead letter's dropped lines could not be found on the input the headers promise."""
    from rationad.records import LogLine, Session

    lines = [LogLine(key="blk_1", message=f"m{i}", raw=f"line {i}", topic="g-repartition", partition=3, offset=77 + i,
                     source=("logs", 1 - i % 2, 5_000 + i)) for i in range(3)]
    s = Session(key="blk_1", lines=lines, close_reason="gap", topic="g-repartition", partition=3)
    dl = session_dead_letter(s, "malformed_answer", "missing <answer> section")
    assert {k: v for k, v in dl.headers if k.startswith("rationad-source")} == {
        "rationad-source-topic": b"logs", "rationad-source-partition": b"0", "rationad-source-offset": b"5001"}
    assert orjson.loads(dl.value)["session"]["inputs"] == [
        {"topic": "logs", "partition": 0, "first_offset": 5001, "last_offset": 5001},
        {"topic": "logs", "partition": 1, "first_offset": 5000, "last_offset": 5002}]
    direct = Session(key="k", lines=[LogLine(key="k", message="m", raw="m", topic="logs", partition=2, offset=9)],
                     close_reason="gap", topic="logs", partition=2)
    body = orjson.loads(session_dead_letter(direct, "model_failed", "x").value)["session"]
    assert "inputs" not in body and (body["topic"], body["partition"], body["first_offset"]) == ("logs", 2, 9)


def test_a_template_dead_letter_with_a_long_example_line_is_cut_to_fit():
    from rationad.records import LogLine
    from rationad.template_book import template_session

    example = LogLine(key="k", message="x", raw="ERROR " + "y" * 200_000, topic="logs", partition=0, offset=4)
    dl = fit(session_dead_letter(template_session("ERROR {*}", example=example), "model_failed", "x"), 20_000)
    body = orjson.loads(dl.value)["session"]
    assert record_bytes(dl.key, dl.value, dl.headers) <= 20_000
    assert body["example"]["line"].startswith("ERROR yyy") and body["lines"] == ["ERROR {*}"]
