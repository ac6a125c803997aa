from rationad.config import load_settings
from rationad.repartition import Router, SeenLines, forward, source_headers, source_of


def test_auto_repartitions_session_windows_with_a_key_only():
    assert load_settings().repartition_topic() == "rationad-repartition"  # hdfs: block ids, session windows
    assert load_settings(input={"dialect": "bgl"}).repartition_topic() is None  # fixed windows
    assert load_settings(input={"dialect": "generic"}, sessions={"window_lines": 100}).repartition_topic() is None
    # generic judges templates by default: a window split over partitions loses nothing, so auto stays off
    assert load_settings(input={"dialect": "generic", "key_regex": r"id=(\w+)"}).repartition_topic() is None
    assert load_settings(input={"dialect": "generic", "key_regex": r"id=(\w+)"},
                         judge={"level": "session"}).repartition_topic() is not None
    assert load_settings(input={"repartition": "never"}).repartition_topic() is None
    assert load_settings(input={"dialect": "bgl", "repartition": "always"},
                         repartition={"topic": "x"}).repartition_topic() == "x"
    assert load_settings(kafka={"group_id": "g"}).repartition_topic() == "g-repartition"


def test_forward_sends_each_route_with_its_source():
    raw = b"081109 203619 148 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.2:50010 to delete  blk_1 blk_2"
    outs = forward([("blk_1", raw), ("blk_2", raw)], "internal", source_headers("logs", 2, 41))
    assert [(o.topic, o.key, o.value) for o in outs] == [("internal", b"blk_1", raw), ("internal", b"blk_2", raw)]
    assert source_of(outs[0].headers) == (b"logs", b"2", b"41")
    assert source_of([("other", b"x")] + outs[1].headers[::-1]) == (b"logs", b"2", b"41")
    assert source_of([]) is None


def test_router_agrees_with_the_producers_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    for n in (1, 3, 7):
        router = Router(n, memo_keys=5)
        for i in range(50):
            key = f"blk_{i * 7919}".encode()
            assert router.partition(key) == DefaultPartitioner()(key, list(range(n)), list(range(n)))
            assert router.partition(key) == DefaultPartitioner()(key, list(range(n)), [])  # memoised, same answer
        assert len(router._memo) <= 5


HDFS_RECORDS = [
    b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 "
    b"terminating",
    b"081109 203619 148 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.2:50010 to delete  blk_1 blk_2 blk_1",
    b"081109 203615 148 INFO dfs.DataNode: no block id here",
    b"no header but blk_-42 named",
    b"081109 203615 148 INFO a: blk_1 first\n  continued\n081109 203616 148 INFO b: blk_2 second",
    b"   ", b"", b"\xff\xfe blk_1", "blk_1 caf\u00e9".encode(),
]


def test_route_keys_exactly_what_parse_keys_and_refuses_what_parse_refuses():
    from rationad.config import InputConfig
    from rationad.dialects import BadRecord, make_parser

    for cfg in (InputConfig(), InputConfig(max_keys_per_line=1), InputConfig(dialect="generic", key_regex=r"blk_(-?\d+)"),
                InputConfig(max_record_bytes=64)):
        parser = make_parser(cfg)
        for value in HDFS_RECORDS:
            try:
                lines = parser.parse(value)
            except BadRecord as exc:
                try:
                    parser.route(value)
                except BadRecord as again:
                    assert again.reason == exc.reason
                else:
                    raise AssertionError(f"route accepted what parse refused: {value!r}")
                continue
            routes = parser.route(value)
            assert sorted({k for k, _ in routes}) == sorted({x.key for x in lines})
            for key, forwarded in routes:  # the session stage parses the forwarded bytes to the same lines of its key
                again = [x for x in parser.parse(forwarded) if x.key == key]
                assert [(x.message, x.ts) for x in again] == [(x.message, x.ts) for x in lines if x.key == key]


def test_seen_lines_drops_repeats_within_its_bound():
    seen = SeenLines(limit=2)
    assert seen.first_time((b"logs", b"0", b"1", "a"))
    assert not seen.first_time((b"logs", b"0", b"1", "a"))
    assert seen.first_time((b"logs", b"0", b"1", "b"))  # the same line for another key is not a repeat
    assert seen.first_time((b"logs", b"0", b"2", "a"))  # a third line: the oldest (offset 1, key a) is forgotten
    assert len(seen._seen) == 2
    assert seen.first_time((b"logs", b"0", b"1", "a"))
