from rationad.config import load_settings
from rationad.records import LogLine
from rationad.repartition import SeenLines, forward, source_of


def test_auto_repartitions_session_windows_with_a_key_only():
    assert load_settings().repartition_topic() == "rationad-repartition"  # hdfs: block ids, session windows
    assert load_settings(input={"dialect": "bgl"}).repartition_topic() is None  # fixed windows
    assert load_settings(input={"dialect": "generic"}, sessions={"window_lines": 100}).repartition_topic() is None
    assert load_settings(input={"dialect": "generic", "key_regex": r"id=(\w+)"}).repartition_topic() is not None
    assert load_settings(input={"repartition": "never"}).repartition_topic() is None
    assert load_settings(input={"dialect": "bgl", "repartition": "always"},
                         repartition={"topic": "x"}).repartition_topic() == "x"
    assert load_settings(kafka={"group_id": "g"}).repartition_topic() == "g-repartition"


def test_forward_sends_each_line_once_per_key_with_its_source():
    raw = "081109 203619 148 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.2:50010 to delete  blk_1 blk_2"
    lines = [LogLine("blk_1", "m", raw), LogLine("blk_2", "m", raw), LogLine("blk_2", "m", raw)]
    outs = forward(lines, "internal", "logs", 2, 41)
    assert [(o.topic, o.key, o.value) for o in outs] == [("internal", b"blk_1", raw.encode()),
                                                         ("internal", b"blk_2", raw.encode())]
    assert source_of(outs[0].headers) == (b"logs", b"2", b"41")
    assert source_of([]) is None


def test_seen_lines_drops_repeats_within_its_bound():
    seen = SeenLines(limit=2)
    assert seen.first_time((b"logs", b"0", b"1", "a"))
    assert not seen.first_time((b"logs", b"0", b"1", "a"))
    assert seen.first_time((b"logs", b"0", b"1", "b"))  # the same line for another key is not a repeat
    assert seen.first_time((b"logs", b"0", b"2", "a"))  # a third line: the oldest (offset 1, key a) is forgotten
    assert len(seen._seen) == 2
    assert seen.first_time((b"logs", b"0", b"1", "a"))
