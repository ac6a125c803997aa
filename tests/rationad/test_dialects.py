"""Tests for rationad.dialects: Kafka record values -> LogLines (hdfs, bgl, generic; text and json) or BadRecord."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationad.config import InputConfig
from rationad.dialects import BGL_STREAM_KEY, BadRecord, InputConfigError, make_parser, parse_timestamp

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "loghub"

HDFS_LINE = ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
             "blk_38865049064139660 terminating")
BGL_NORMAL = ("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL "
              "INFO instruction cache parity error corrected")
BGL_ALERT = ("KERNDTLB 1118536327 2005.06.11 R30-M0-N9-C:J16-U01 2005-06-11-17.32.07.581048 R30-M0-N9-C:J16-U01 RAS "
             "KERNEL FATAL data TLB error interrupt")
# The syslog-like layout of Loghub's Spirit, Thunderbird and Liberty logs.
SPIRIT = "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed for user root"
SPIRIT_ALERT = ("R_HDA_NR 1131566462 2005.11.09 sn125 Nov 9 12:01:02 sn125/sn125 kernel: hda: drive not ready for "
                "command")
TBIRD = ("- 1131566461 2005.11.09 tbird-admin1 Nov 10 00:01:01 local@tbird-admin1 /apps/x86_64/system/ganglia-3.0.1/"
         "sbin/gmetad[1682]: data_thread() got not answer from any [Thunderbird_C8] datasource")


def parser(**kw):
    return make_parser(InputConfig(**kw))


def loghub(name: str) -> Path:
    path = LOGHUB / name
    if not path.exists():
        pytest.skip(f"shared Loghub data not present: {path}")
    return path


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# ---- hdfs ----------------------------------------------------------------------------------------------------------


def test_hdfs_line_is_keyed_by_block_with_header_time_and_level_component_kept():
    (line,) = parser(dialect="hdfs").parse(HDFS_LINE.encode(), topic="logs", partition=2, offset=41)
    assert line.key == "blk_38865049064139660"
    assert line.ts == utc(2008, 11, 9, 20, 36, 15)
    assert line.message == ("INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 "
                            "terminating")
    assert line.raw == HDFS_LINE
    assert (line.topic, line.partition, line.offset, line.label) == ("logs", 2, 41, None)
    assert parser(dialect="hdfs").source == "hdfs"


def test_hdfs_line_naming_two_blocks_yields_one_logline_per_block():
    raw = "081111 091733 19 INFO dfs.FSNamesystem: BLOCK* ask 10.251.126.5:50010 to delete  blk_-9016 blk_167132"
    lines = parser(dialect="hdfs").parse(raw.encode(), offset=7)
    assert [x.key for x in lines] == ["blk_-9016", "blk_167132"]
    assert all(x.raw == raw and x.offset == 7 and x.message.startswith("INFO dfs.FSNamesystem: ") for x in lines)


def test_hdfs_line_naming_one_block_twice_yields_one_logline():
    raw = ("081109 213816 19 INFO dfs.FSDataset: Deleting block blk_-8739764029727208009 file "
           "/mnt/hadoop/dfs/data/current/subdir58/blk_-8739764029727208009")
    (line,) = parser(dialect="hdfs").parse(raw.encode())
    assert line.key == "blk_-8739764029727208009"


def test_hdfs_line_without_a_header_is_kept_whole_without_time():
    (line,) = parser(dialect="hdfs").parse(b"something about blk_5 happened")
    assert (line.key, line.ts, line.message) == ("blk_5", None, "something about blk_5 happened")
    (line,) = parser(dialect="hdfs").parse(b"081399 203615 148 INFO dfs.X: blk_5 bad month")
    assert line.ts is None and line.message.startswith("081399")


def test_hdfs_line_without_a_block_is_rejected():
    with pytest.raises(BadRecord) as exc:
        parser(dialect="hdfs").parse(b"081109 203615 148 INFO dfs.DataNode$DataXceiver: no block named here")
    assert exc.value.reason == "no_session_key"


def test_hdfs_every_line_of_loghub_hdfs_2k_parses_to_its_block():
    path = loghub("HDFS_2k.log")
    # Two NameNode lines ("BLOCK* ask ... to delete blk_...") name 100 blocks each (HDFS's dfs.block.invalidate.limit
    # is 100 in Hadoop 0.20, 1000 later): input.max_keys_per_line must be at least that for real HDFS input.
    p = parser(dialect="hdfs", max_keys_per_line=1_000)
    with (LOGHUB / "HDFS_2k.log_structured.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = path.read_text().splitlines()
    assert len(lines) == len(rows) == 2000
    for n, (raw, row) in enumerate(zip(lines, rows, strict=True)):
        parsed = p.parse(raw.encode(), offset=n)
        assert parsed, raw
        assert {x.key for x in parsed} <= set(row["Content"].split()) | {
            w for w in row["Content"].replace("/", " ").split() if w.startswith("blk_")}
        for x in parsed:
            assert x.message == f"{row['Level']} {row['Component']}: {row['Content']}"
            assert x.ts == datetime.strptime(row["Date"] + row["Time"], "%y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()


def test_multi_line_record_yields_every_line_and_continuation_lines_join_the_entry_before():
    p = parser(dialect="hdfs")
    value = f"{HDFS_LINE}\r\n\n081109 203807 222 INFO dfs.X: blk_-6952 done\n".encode()
    assert [x.key for x in p.parse(value, offset=3)] == ["blk_38865049064139660", "blk_-6952"]
    # A stack trace (or a message with embedded newlines) continues the entry before it: judged with it, not lost.
    (line, other) = p.parse(f"{HDFS_LINE}\njava.io.IOException: Connection reset\n\tat x.y(Z.java:1)\n"
                            f"081109 203807 222 INFO dfs.X: blk_-6952 done".encode())
    assert line.key == "blk_38865049064139660" and other.key == "blk_-6952"
    assert line.message.endswith("java.io.IOException: Connection reset\n\tat x.y(Z.java:1)")
    assert "Connection reset" in line.raw and "Connection reset" not in other.message
    with pytest.raises(BadRecord) as exc:  # nothing to continue: the record is rejected naming the line
        p.parse(f"no block here\n{HDFS_LINE}".encode())
    assert exc.value.reason in ("no_session_key", "bad_header")
    assert "line 1 of 2" in exc.value.detail


def test_a_record_of_lines_ended_by_a_carriage_return_alone_yields_each_line():
    """Found in review: lines ended by ``\r`` alone (classic Mac endings, some Windows tools' progress output) were one
    line holding every entry, keyed by the first block id: the other blocks' lines were judged in the wrong session."""
    p = parser(dialect="hdfs")
    value = f"{HDFS_LINE}\r081109 203807 222 INFO dfs.X: blk_-6952 done\r\r".encode()
    lines = p.parse(value, offset=3)
    assert [x.key for x in lines] == ["blk_38865049064139660", "blk_-6952"]
    assert all("\r" not in x.raw and "\r" not in x.message for x in lines)
    # mixed endings: each a line boundary once
    value = f"{HDFS_LINE}\r\n081109 203807 222 INFO dfs.X: blk_-6952 done\r081109 203808 222 INFO dfs.X: blk_7 x\n"
    assert [x.key for x in p.parse(value.encode())] == ["blk_38865049064139660", "blk_-6952", "blk_7"]


# ---- bgl and other Loghub-labelled logs ----------------------------------------------------------------------------


def test_bgl_label_is_stripped_into_logline_label_and_epoch_is_the_time():
    p = parser(dialect="bgl")
    (normal,) = p.parse(BGL_NORMAL.encode())
    (alert,) = p.parse(BGL_ALERT.encode())
    assert (normal.label, normal.ts, normal.key) == ("normal", 1117838570.0, BGL_STREAM_KEY)
    # the content, as Loghub parses BGL (TYPE COMPONENT LEVEL are header fields): what the model's templates and the
    # experts' label corrections are written over
    assert normal.message == "instruction cache parity error corrected"
    assert (alert.label, alert.ts) == ("anomalous", 1118536327.0)
    assert alert.message == "data TLB error interrupt"
    assert "KERNDTLB" not in alert.message
    assert alert.raw == BGL_ALERT  # evidence keeps the whole line; only ``message`` reaches the model


@pytest.mark.parametrize(
    ("raw", "label", "ts", "message"),
    [
        (SPIRIT, "normal", 1131566461.0, "session closed for user root"),  # component[pid]: is a header field
        (SPIRIT_ALERT, "anomalous", 1131566462.0, "hda: drive not ready for command"),
        (TBIRD, "normal", 1131566461.0, "data_thread() got not answer from any [Thunderbird_C8] datasource"),
    ],
)
def test_bgl_dialect_reads_spirit_and_thunderbird_layouts(raw, label, ts, message):
    (line,) = parser(dialect="bgl").parse(raw.encode())
    assert (line.label, line.ts, line.message) == (label, ts, message)


def test_a_bgl_line_of_header_fields_alone_keeps_them_as_its_message():
    """Found by review (2026-12-07) of the content change: a line whose content is blank after BGL's TYPE COMPONENT
    LEVEL (or the syslog layout's component:) was dead-lettered as empty, its label lost from its window."""
    p = parser(dialect="bgl")
    (bgl,) = p.parse(b"KERNDTLB 1117838570 2005.06.03 R02 2005-06-03-15.42.50.675872 R02 RAS KERNEL FATAL ")
    assert (bgl.message, bgl.label) == ("RAS KERNEL FATAL ", "anomalous")
    (syslog,) = p.parse(b"- 1131566461 2005.11.09 sn209 Nov 9 12:01:01 sn209/sn209 kernel: ")
    assert syslog.message == "kernel: "


def test_bgl_unknown_layout_falls_back_to_everything_after_the_epoch():
    (line,) = parser(dialect="bgl").parse(b"APPSEV 1117869872 free text after the epoch")
    assert (line.label, line.message) == ("anomalous", "free text after the epoch")


def test_bgl_key_regex_never_sees_the_label():
    p = parser(dialect="bgl", key_regex=r"^(\S+)")  # the first token AFTER the label: the epoch
    (line,) = p.parse(BGL_ALERT.encode())
    assert line.key == "1118536327"
    node = parser(dialect="bgl", key_regex=r"(R\d\d-M\d)")
    assert node.parse(BGL_ALERT.encode())[0].key == "R30-M0"
    with pytest.raises(BadRecord) as exc:
        parser(dialect="bgl", key_regex=r"(KERNDTLB)").parse(BGL_ALERT.encode())
    assert exc.value.reason == "no_session_key"


@pytest.mark.parametrize(("raw", "reason"), [(b"- notanepoch rest", "bad_header"), (b"- 1117838570 ", "empty"),
                                             (b"nolabel", "bad_header"),
                                             (b"X 999999999999 msg id=1", "bad_timestamp")])  # past year 9999
def test_bgl_bad_lines(raw, reason):
    with pytest.raises(BadRecord) as exc:
        parser(dialect="bgl").parse(raw)
    assert exc.value.reason == reason


def test_bgl_every_line_of_loghub_bgl_2k_keeps_its_label_out_of_the_message():
    path = loghub("BGL_2k.log")
    p = parser(dialect="bgl")
    anomalous = 0
    for raw in path.read_text().splitlines():
        (line,) = p.parse(raw.encode())
        label, epoch = raw.split(" ", 2)[:2]
        assert line.label == ("normal" if label == "-" else "anomalous")
        assert line.ts == float(epoch)
        assert raw.endswith(line.message)
        assert not line.message.startswith((label + " ", epoch))
        if label != "-":
            assert label not in line.message
        anomalous += line.label == "anomalous"
    assert anomalous == 143  # datasets/README.md


# ---- generic and json ----------------------------------------------------------------------------------------------


def test_generic_key_regex_with_and_without_a_group():
    line = b"2024-01-02 03:04:05 worker-7 request id=abc123 failed"
    (x,) = parser(dialect="generic", key_regex=r"id=(\w+)").parse(line)
    assert (x.key, x.message, x.ts) == ("abc123", line.decode(), None)
    (y,) = parser(dialect="generic", key_regex=r"worker-\d+").parse(line)
    assert y.key == "worker-7"
    with pytest.raises(BadRecord) as exc:
        parser(dialect="generic", key_regex=r"user=(\w+)").parse(line)
    assert exc.value.reason == "no_session_key"


def test_json_record_with_key_and_timestamp_fields():
    p = parser(dialect="generic", format="json", json_key_field="host", timestamp_field="ts",
               json_message_field="msg")
    value = orjson.dumps({"msg": "disk full\n", "host": "n1", "ts": "2008-11-09T20:36:15"})
    (x,) = p.parse(value, topic="t", offset=5)
    assert (x.key, x.message, x.ts, x.raw, x.offset) == ("n1", "disk full", utc(2008, 11, 9, 20, 36, 15),
                                                        value.decode(), 5)
    (y,) = p.parse(orjson.dumps({"msg": "m", "host": 17, "ts": 1226262975.5}))
    assert (y.key, y.ts) == ("17", 1226262975.5)
    (z,) = p.parse(memoryview(orjson.dumps({"msg": "m", "host": "h", "ts": "2008-11-09T20:36:15+01:00"})))
    assert z.ts == utc(2008, 11, 9, 19, 36, 15)


def test_json_key_field_overrides_the_hdfs_block_and_the_generic_regex():
    hdfs = parser(dialect="hdfs", format="json", json_key_field="k")
    (x,) = hdfs.parse(orjson.dumps({"message": HDFS_LINE, "k": "custom"}))
    assert (x.key, x.ts) == ("custom", utc(2008, 11, 9, 20, 36, 15))
    (y,) = parser(dialect="hdfs", format="json").parse(orjson.dumps({"message": HDFS_LINE}))
    assert y.key == "blk_38865049064139660"
    gen = parser(dialect="generic", format="json", key_regex=r"id=(\d+)")
    assert gen.parse(b'{"message": "req id=42 ok"}')[0].key == "42"


@pytest.mark.parametrize(
    ("kw", "value", "reason"),
    [
        ({"dialect": "hdfs"}, b"081109 203615 148 INFO dfs.DataNode: \xff\xfe\xc3\x28 blk_1", "invalid_utf8"),
        ({"dialect": "hdfs", "format": "json"}, b'{"message": "\xff blk_1"}', "invalid_utf8"),
        ({"dialect": "hdfs"}, b"", "empty"),
        ({"dialect": "hdfs"}, None, "empty"),
        ({"dialect": "hdfs"}, b"  \n\r\n ", "empty"),
        ({"dialect": "hdfs"}, b"   ", "empty"),
        ({"dialect": "hdfs", "format": "json"}, b'{"message": "  "}', "empty"),
        ({"dialect": "hdfs", "max_record_bytes": 64}, b"081109 203615 148 INFO dfs.DataNode: blk_2 " + b"x" * 64,
         "too_large"),
        ({"dialect": "hdfs", "format": "json"}, b'{"message": "blk_1"', "bad_json"),
        ({"dialect": "hdfs", "format": "json"}, b'["blk_1"]', "not_an_object"),
        ({"dialect": "hdfs", "format": "json"}, b'{"msg": "blk_1"}', "missing_field"),
        ({"dialect": "hdfs", "format": "json"}, b'{"message": 3}', "bad_field"),
        ({"dialect": "hdfs", "format": "json"}, b'{"message": "no block"}', "no_session_key"),
        ({"dialect": "generic", "format": "json", "json_key_field": "k"}, b'{"message": "m", "k": ""}',
         "no_session_key"),
        ({"dialect": "generic", "format": "json", "json_key_field": "k"}, b'{"message": "m", "k": true}', "bad_field"),
        ({"dialect": "generic", "format": "json", "json_key_field": "k", "timestamp_field": "t"},
         b'{"message": "m", "k": "a"}', "missing_field"),
        ({"dialect": "generic", "format": "json", "json_key_field": "k", "timestamp_field": "t"},
         b'{"message": "m", "k": "a", "t": "yesterday"}', "bad_timestamp"),
        ({"dialect": "generic", "format": "json", "json_key_field": "k", "timestamp_field": "t"},
         b'{"message": "m", "k": "a", "t": 1' + b"0" * 40 + b"}", "bad_timestamp"),
        ({"dialect": "generic", "key_regex": "id=(\\d+)"}, b"no id", "no_session_key"),
    ],
)
def test_bad_records_say_why(kw, value, reason):
    with pytest.raises(BadRecord) as exc:
        parser(**kw).parse(value)
    assert exc.value.reason == reason
    assert str(exc.value) == exc.value.detail and exc.value.detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (1226262975, 1226262975.0), (1226262975.25, 1226262975.25), ("2008-11-09 20:36:15", 1226262975.0),
     ("2008-11-09T21:36:15+01:00", 1226262975.0),
     # epoch milliseconds, microseconds, nanoseconds (told apart by size) and epoch numbers written as strings: until
     # 2026-12-07 every line of a JSON logger writing milliseconds was dead-lettered as bad_timestamp
     (1226262975250, 1226262975.25), (1226262975250000, 1226262975.25), (1226262975250000000, 1226262975.25),
     ("1226262975", 1226262975.0), (" 1226262975.25 ", 1226262975.25), ("1226262975250", 1226262975.25),
     ("20081109", 1226188800.0)],  # ISO-8601's basic date first
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


def test_a_json_line_stamped_in_epoch_milliseconds_is_timed():
    p = parser(dialect="generic", format="json", json_key_field="k", timestamp_field="t")
    (ln,) = p.parse(b'{"message": "m", "k": "a", "t": 1700000000123}')
    assert ln.ts == pytest.approx(1_700_000_000.123)


@pytest.mark.parametrize("value", [True, -1, float("nan"), float("inf"), pytest.param(10**400, id="huge_int"), 1e300,
                                   "0001-01-01T00:00:00", "soon", None, [1], "-1700000000", "1e12", "1" + "0" * 40])
def test_parse_timestamp_rejects(value):
    with pytest.raises(BadRecord) as exc:
        parse_timestamp(value)
    assert exc.value.reason == "bad_timestamp"


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"dialect": "hdfs", "key_regex": "x"}, "input.key_regex"),
        ({"dialect": "hdfs", "json_key_field": "k"}, "input.json_key_field"),
        ({"dialect": "hdfs", "timestamp_field": "t"}, "input.timestamp_field"),
    ],
)
def test_impossible_input_combinations_name_the_key(kw, key):
    with pytest.raises(InputConfigError, match=key):
        parser(**kw)


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=300), dialect=st.sampled_from(["hdfs", "bgl", "generic"]),
       fmt=st.sampled_from(["text", "json"]), kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_a_parser_raises_bad_record_and_nothing_else(value, dialect, fmt, kind):
    kw = {"dialect": dialect, "format": fmt, "max_record_bytes": 256}
    if dialect == "generic":
        kw["key_regex"] = r"(\w+)"
    try:
        lines = make_parser(InputConfig(**kw)).parse(kind(value))
    except BadRecord as exc:
        assert exc.reason and exc.detail
    else:
        assert lines and all(x.key and x.message.strip() for x in lines)


@settings(max_examples=200, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(["message", "k", "t"]),
                           st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))))
def test_a_json_parser_raises_bad_record_and_nothing_else(obj):
    p = parser(dialect="generic", format="json", json_key_field="k", timestamp_field="t")
    try:
        value = orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return
    try:
        (line,) = p.parse(value)
    except BadRecord as exc:
        assert exc.reason
    else:
        assert line.key == str(obj["k"]) and 0 <= line.ts


@pytest.mark.parametrize("stamp", ["\x1c1700000000", "1700000000\x1f", " \x1d1700000000.5 "])
@pytest.mark.parametrize("dialect", ["generic", "hdfs", "bgl"])
def test_an_epoch_text_with_a_separator_control_parses_on_both_paths(stamp, dialect):
    """Found by review (2026-12-07), failing before its fix: ``str.strip`` takes \x1c-\x1f for spaces and ``float``
    does not, so such a timestamp passed the digit check and raised ValueError, past every call site: the daemon
    exited, and again at each restart on the same record."""
    p = parser(dialect=dialect, format="json", json_key_field="k", timestamp_field="t")
    message = ("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL "
               "INFO instruction cache parity error corrected" if dialect == "bgl" else "INFO x blk_1 y")
    value = orjson.dumps({"k": "s1", "t": stamp, "message": message})
    (line,) = p.parse(value)
    assert line.ts == float(stamp.strip())
    assert [k for k, _ in p.route(value)] == ["s1"]


@settings(max_examples=200, deadline=None)
@given(t=st.text(alphabet=st.sampled_from("0123456789.-+: \x1c\x1d\x1e\x1f\x85\xa0Tz"), max_size=20))
def test_a_json_timestamp_of_digits_spaces_and_separators_raises_bad_record_or_parses(t):
    p = parser(dialect="generic", format="json", json_key_field="k", timestamp_field="t")
    try:
        (line,) = p.parse(orjson.dumps({"k": "s", "t": t, "message": "m"}))
    except BadRecord as exc:
        assert exc.reason == "bad_timestamp"
    else:
        assert 0 <= line.ts


def test_a_parser_failure_is_a_bounded_dead_letter_reason_and_memory_is_not_the_record_s_fault():
    """Review of the parse_failed fix: a failure's message may quote the record whole (logged and kept at input
    rate), and a MemoryError is the daemon's state, not the record's: it stops the daemon, as before, and the record
    is read again."""
    from rationad.dialects import bad_record_of

    exc = bad_record_of(ValueError("x" * 100_000))
    assert exc.reason == "parse_failed" and len(exc.detail) < 400
    with pytest.raises(MemoryError):
        bad_record_of(MemoryError())


def test_every_line_of_the_embedded_demo_sample_parses_to_a_labelled_block():
    """The bundled real HDFS sample (scripts/make_demo_sample.py): complete blocks, chronological, all labelled."""
    from rationad import demo

    labels = demo.sample_labels()
    p = parser(dialect="hdfs")
    keys, times = set(), []
    for n, raw in enumerate(demo.sample_lines()):
        lines = p.parse(raw, offset=n)
        keys |= {x.key for x in lines}
        times.append(lines[0].ts)
    assert keys == set(labels)
    assert len(labels) == 400 and sum(v == "anomalous" for v in labels.values()) == 40
    assert None not in times and times == sorted(times)


# ---- caps and cost of multi-line records (issue 13, item 9) --------------------------------------------------------


def _stack_trace_record(blocks: int, continuation_lines: int) -> bytes:
    names = " ".join(f"blk_{i}" for i in range(blocks))
    return ("\n".join([f"081109 203615 148 WARN dfs.D: {names}"] + ["x"] * continuation_lines)).encode()


@pytest.mark.parametrize(
    ("blocks", "continuation_lines", "size"),
    [(600, 1_500, (7_000, 8_000)),  # the reviewed case: ~7.7 KB, 2 s before (22 s on a slower machine)
     (16, 32_000, (64_000, 70_000))],  # 64 KiB of stack trace under the default cap of 16 blocks
)
def test_continuation_lines_parse_in_time_linear_in_the_record_size(blocks, continuation_lines, size):
    # Each continuation line used to re-copy the whole entry for every block its header names: quadratic (the 7.7 KB
    # record took 3 s, 64 KiB 2 s). Linear means four times the lines cost about four times the time (quadratic:
    # sixteen); best of three of each, so a loaded machine slows both sides alike.
    import time

    p = parser(dialect="hdfs", max_record_bytes=1 << 20, max_keys_per_line=1_000, max_lines_per_record=100_000)
    value = _stack_trace_record(blocks, continuation_lines)
    assert size[0] < len(value) < size[1]
    out = p.parse(value)
    assert len(out) == blocks and all(x.message.count("\n") == continuation_lines for x in out)
    assert out[0].raw == value.decode()
    assert len({id(x.message) for x in out}) == 1  # the entry's text is built once, shared by its blocks' lines

    def best(v: bytes) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            p.parse(v)
            times.append(time.perf_counter() - start)
        return min(times)

    small, big = best(_stack_trace_record(blocks, continuation_lines // 4)), best(value)
    assert big < 9 * small + 0.05, f"4x the lines took {big / small:.1f}x the time ({small:.3f} s -> {big:.3f} s)"


def test_continuation_lines_join_once_and_entries_after_them_are_kept():
    p = parser(dialect="hdfs")
    value = (f"{HDFS_LINE}\n  a\n  b\n081109 203807 222 INFO dfs.X: blk_1 blk_2 done\n  c\n"
             f"081109 203808 222 INFO dfs.X: blk_3 done").encode()
    out = p.parse(value)
    assert [(x.key, x.message.split(": ", 1)[1]) for x in out] == [
        ("blk_38865049064139660", HDFS_LINE.split(": ", 1)[1] + "\n  a\n  b"),
        ("blk_1", "blk_1 blk_2 done\n  c"),
        ("blk_2", "blk_1 blk_2 done\n  c"),
        ("blk_3", "blk_3 done"),
    ]
    assert out[1].raw == "081109 203807 222 INFO dfs.X: blk_1 blk_2 done\n  c"


def test_a_record_with_more_lines_than_the_cap_is_rejected():
    p = parser(dialect="hdfs", max_lines_per_record=3)
    assert len(p.parse(f"{HDFS_LINE}\n{HDFS_LINE}\n\n{HDFS_LINE}\n".encode())) == 3  # blank lines do not count
    with pytest.raises(BadRecord) as exc:
        p.parse(f"{HDFS_LINE}\n  at x\n  at y\n  at z".encode())
    assert exc.value.reason == "too_many_lines"
    assert "4 lines" in exc.value.detail and "max_lines_per_record=3" in exc.value.detail


def test_a_line_naming_more_session_keys_than_the_cap_is_rejected():
    p = parser(dialect="hdfs", max_keys_per_line=3)
    assert len(p.parse(_stack_trace_record(3, 0))) == 3
    assert len(p.parse(b"081109 203615 148 INFO dfs.X: blk_1 blk_1 blk_1 blk_1 blk_2")) == 2  # distinct keys count
    for value in (_stack_trace_record(4, 0), _stack_trace_record(4, 2), b"no header blk_1 blk_2 blk_3 blk_4",
                  f"{HDFS_LINE}\n  at blk_1 blk_2 blk_3 blk_4".encode()):
        with pytest.raises(BadRecord) as exc:
            p.parse(value)
        assert exc.value.reason == "too_many_keys"
        assert "4 session keys" in exc.value.detail and "max_keys_per_line=3" in exc.value.detail
    jp = parser(dialect="hdfs", format="json", max_keys_per_line=3)
    with pytest.raises(BadRecord) as exc:
        jp.parse(orjson.dumps({"message": "081109 203615 148 INFO dfs.X: blk_1 blk_2 blk_3 blk_4"}))
    assert exc.value.reason == "too_many_keys"


def test_generic_without_a_key_windows_the_stream():
    # Fixed windows over a file or a partition need no session key (Settings refuses session windows without one).
    (x,) = parser(dialect="generic").parse(b"2026-12-01 10:00:00 worker started")
    assert x.key == "stream" and x.message == "2026-12-01 10:00:00 worker started"


def test_hostile_hdfs_headers_do_not_grow_the_header_caches():
    """Found by review (2026-12-03), failing before its fix: ``\\d`` and ``int`` take any Unicode decimal digit, so
    the day and time caches, bounded for ASCII stamps, grew by two entries per hostile line."""
    import random
    import unicodedata

    from rationad import dialects

    digits = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Nd"]
    parser = make_parser(InputConfig())
    rng = random.Random(0)
    before = len(dialects._day_epochs) + len(dialects._second_of_day)
    for _ in range(5_000):
        d = "".join(rng.choice(digits) for _ in range(12))
        parser.parse(f"{d[:6]} {d[6:]} 1 INFO x: blk_1".encode())
    assert len(dialects._day_epochs) + len(dialects._second_of_day) - before < 1_000


def test_bogus_hdfs_stamps_do_not_grow_the_date_and_time_caches():
    """Found by review: invalid dates and times were cached too (up to 10**6 keys each, never cleared); only valid
    ones are now: at most 100 * 12 * 31 days and 86,400 seconds of the day, whatever the input."""
    from rationad import dialects

    p = make_parser(InputConfig(dialect="hdfs"))
    days, secs = len(dialects._day_epochs), len(dialects._second_of_day)
    for i in range(2_000):  # months 13-32, hours 24-43: no date or time of them is valid
        p.parse(f"99{13 + i // 100:02d}{i % 100:02d} {24 + i // 100:02d}{i % 100:02d}00 1 INFO x: blk_1".encode())
    assert len(dialects._day_epochs) == days and len(dialects._second_of_day) == secs


def test_a_continuation_line_that_parses_on_its_own_stays_with_its_entry():
    """Found by review (2026-12-06): in a multi-line record, a trace line naming a block (hdfs) or starting "WORD
    NUMBER" (bgl) parsed as an entry of its own: blk_1's exception went to blk_2's session without a time, and
    "HTTP 500 returned by upstream" became an entry labelled anomalous, dated 1970, with "HTTP 500" cut off."""
    hdfs = parser(dialect="hdfs").parse(b"081109 203615 148 WARN a: blk_1 write failed\n"
                                        b"java.io.IOException: replica of blk_2 missing\n\tat Foo.bar(Foo.java:1)")
    assert [(ln.key, ln.ts is not None) for ln in hdfs] == [("blk_1", True)]
    assert hdfs[0].message.endswith("replica of blk_2 missing\n\tat Foo.bar(Foo.java:1)")
    bgl = parser(dialect="bgl").parse(b"- 1117838570 2005.06.03 R02 2005-06-03-15.42.50.675872 R02 RAS APP INFO "
                                      b"request failed:\nHTTP 500 returned by upstream\n  at x")
    assert [(ln.label, ln.ts) for ln in bgl] == [("normal", 1117838570.0)]
    assert "HTTP 500 returned by upstream" in bgl[0].message
    two = parser(dialect="bgl").parse((BGL_ALERT + "\n" + BGL_ALERT).encode())  # two entries stay two
    assert len(two) == 2
    # entries without headers stay apart (found by review of this fix: they were merged into the first)
    bare = parser(dialect="hdfs").parse(b"Receiving block blk_1 src: /10.0.0.1\nReceiving block blk_2 src: /10.0.0.2")
    assert [ln.key for ln in bare] == ["blk_1", "blk_2"]
    lenient = parser(dialect="bgl").parse(b"- 1117838570 ok\nAPPREAD 1117838571 read failed")
    assert [ln.label for ln in lenient] == ["normal", "anomalous"]
