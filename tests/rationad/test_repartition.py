import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationad.config import load_settings
from rationad.repartition import Router, SeenLines, source_headers, source_of


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
                         repartition={"topic": "rationad.x"}).repartition_topic() == "rationad.x"
    assert load_settings(kafka={"group_id": "g"}).repartition_topic() == "g-repartition"


def test_source_headers_say_where_a_line_was_read():
    headers = source_headers("logs", 2, 41)
    assert source_of(headers) == (b"logs", b"2", b"41")
    assert source_of([("other", b"x")] + headers[::-1]) == (b"logs", b"2", b"41")
    assert source_of([]) is None and source_of(headers[:2]) is None


def test_router_agrees_with_the_producers_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    for n in (1, 3, 7):
        router = Router(n, memo_keys=5)
        for i in range(50):
            key = f"blk_{i * 7919}".encode()
            assert router.partition(key) == DefaultPartitioner()(key, list(range(n)), list(range(n)))
            assert router.key(key.decode()) == (key, router.partition(key), len(key) + 3)  # "key", in an index
            assert router.key(key.decode()) == (key, router.partition(key), len(key) + 3)  # memoised, same answer
        assert len(router.keys) <= 5
    assert Router(3).key("blk_\udc80")[2] == 0  # a lone surrogate: no pack can carry it
    assert Router(3).key("s\x01")[2] == len('"s\\u0001",')  # as JSON writes it


def test_router_remembers_no_key_longer_than_a_session_key_needs():
    """Found by review: the memo was bounded by entries only, and an HDFS line needs nothing but a block id, so
    100,000 records of unique 65,000-digit block ids held about 12 GiB of keys before any model call."""
    from rationad.repartition import ROUTER_MEMO_KEY_CHARS

    router = Router(3)
    huge = "blk_" + "7" * 65_000
    assert router.key(huge) == (huge.encode(), router.partition(huge.encode()), 65_007)  # routed all the same
    assert router.keys == {}
    ordinary = "blk_" + "7" * (ROUTER_MEMO_KEY_CHARS - 4)
    router.key(ordinary)
    assert list(router.keys) == [ordinary]


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


def test_seen_lines_keeps_no_copy_of_a_long_key():
    """Found by review (2026-12-06), failing before its fix: each remembered line kept its key, a fresh string per
    record, so one-line records with 60 KB keys would have held gigabytes per internal partition at the bound."""
    import tracemalloc

    seen = SeenLines()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            key = f"{i:05d}" + "k" * 50_000  # built per record, as the daemon decodes each record's key
            assert seen.first_time((("logs", 0, i), key, hash(b"v"), 0))
            assert not seen.first_time((("logs", 0, i), key, hash(b"v"), 0))
            assert seen.first_time((("logs", 0, i), key[:-1], hash(b"v"), 0))  # another key: another line
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 200_000, held  # 400 entries of fixed size, not 400 keys of 50 KB (20 MB)


# ---- packs ----------------------------------------------------------------------------------------------------------

def _routes(parser, values):
    return [(offset, parser.route(v)) for offset, v in values]


def test_packs_carry_every_route_in_source_order_per_internal_partition():
    from rationad.config import InputConfig
    from rationad.dialects import make_parser
    from rationad.repartition import Packer, is_pack, pack_source, unpack

    parser = make_parser(InputConfig())
    values = [(10 + i, f"081109 2036{i % 60:02d} 148 INFO dfs.DataNode: Receiving block blk_{i % 7} x".encode())
              for i in range(200)]
    values.append((300, HDFS_RECORDS[1]))  # one line, two blocks: once for each
    router = Router(3)
    packer = Packer("internal", "logs", 2, router, max_bytes=2_000)  # small packs: several per partition
    for offset, routes in _routes(parser, values):
        packer.add(routes, offset)
    outs = packer.outputs()
    assert packer.outputs() == [] and packer.lines == 202
    assert all(is_pack(o.headers) and pack_source(o.headers) == (b"logs", b"2") for o in outs)
    assert all(len(o.value) < 2_000 for o in outs) and len(outs) > 3
    got: dict[int, list] = {}
    for o in outs:
        for offset, key, line in unpack(o.value):
            assert router.partition(key.encode()) == o.partition
            got.setdefault(o.partition, []).append((offset, key, line))
    want: dict[int, list] = {}
    for offset, routes in _routes(parser, values):
        for key, line in routes:
            want.setdefault(router.partition(key.encode()), []).append((offset, key, line))
    assert got == want  # every line, once per key, in source order within each internal partition


def test_a_line_a_pack_cannot_frame_goes_alone_after_the_pack_before_it():
    from rationad.repartition import Packer, is_pack, unpack

    router = Router(1)
    packer = Packer("internal", "logs", 0, router)
    packer.add([("k", b"first")], 1)
    packer.add([("k", b"two\nlines")], 2)  # a JSON message with a newline: its own record, source headers
    packer.add([("k", b"third")], 3)
    outs = packer.outputs()
    assert [is_pack(o.headers) for o in outs] == [True, False, True]
    assert [o.partition for o in outs] == [0, 0, 0]
    assert unpack(outs[0].value) == [(1, "k", b"first")] and unpack(outs[2].value) == [(3, "k", b"third")]
    assert (outs[1].key, outs[1].value, source_of(outs[1].headers)) == (b"k", b"two\nlines", (b"logs", b"0", b"2"))


def test_unpack_refuses_what_is_not_a_pack():
    import pytest

    from rationad.repartition import Packer, unpack

    packer = Packer("internal", "logs", 0, Router(1))
    packer.add([("k\u00e9", b"a line with \x00 and \r inside"), ("k2", b"")], 5)
    [out] = packer.outputs()
    assert unpack(out.value) == [(5, "k\u00e9", b"a line with \x00 and \r inside"), (5, "k2", b"")]
    for bad in (b"", b"no index", b'[[1,2],["k","j"]]\nonly one line', b'[["1"],["k"]]\nline',
                b'[[1],[2]]\nline', b'{"o":1}\nline', b'[[1]]\nline'):
        with pytest.raises(ValueError):
            unpack(bad)


def _pack_daemon(**kafka):
    from aiokafka.structs import TopicPartition

    from rationad.daemon import Daemon
    from tests.rationad.fakes import FakeModel

    d = Daemon(load_settings(input={"repartition": "always"}, cache={"enabled": False}, server={"enabled": False},
                             kafka=kafka), client=FakeModel())
    tp = TopicPartition(d.internal, 0)
    d._on_assigned([tp])
    return d, tp, d._parts[tp]


def test_the_session_stage_windows_a_pack_once_and_dead_letters_a_bad_line_with_its_source():
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon()
    packer = Packer(d.internal, "logs", 1, Router(1))
    good = b"081109 203615 148 INFO dfs.DataNode: Receiving block blk_5 src: /10.0.0.1:1"
    packer.add([("blk_5", good)], 40)
    packer.add([("blk_9", good)], 41)  # its line does not name blk_9 (a tampered pack): dead-lettered alone
    packer.add([("blk_5", good.replace(b"203615", b"203616"))], 42)
    [pack] = packer.outputs()
    dead: list = []
    lines = d._pack_lines(tp, part, Rec(offset=7, value=pack.value, headers=pack.headers), dead)
    assert [(x.key, x.offset, x.source) for x in lines] == [("blk_5", 7, ("logs", 1, 40)),
                                                             ("blk_5", 7, ("logs", 1, 42))]
    [(hold, dl)] = dead
    h = dict(dl.headers)
    assert hold.offset == 7 and dl.reason == "repartition_key_mismatch"  # held at the pack's offset
    assert (h["rationad-source-topic"], h["rationad-source-partition"], h["rationad-source-offset"]) == \
        (b"logs", b"1", b"41")  # where the line came from, not the pack
    assert (dl.key, dl.value) == (b"blk_9", good)
    again: list = []  # the same pack forwarded again (a restart between the hops): nothing windowed twice
    assert d._pack_lines(tp, part, Rec(offset=8, value=pack.value, headers=pack.headers), again) == []
    hold.release()


def test_a_line_of_a_pack_the_parser_fails_on_costs_that_line_only(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a parser bug (any exception but BadRecord) on one line of
    a pack dead-lettered the whole pack, as one record of the internal topic (purged once committed), and the pack's
    other lines, already remembered as windowed, were never windowed, not even when forwarded again."""
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec, parser_bug_on

    parser_bug_on(monkeypatch)
    d, tp, part = _pack_daemon()
    packer = Packer(d.internal, "logs", 1, Router(1))
    good = b"081109 203615 148 INFO dfs.DataNode: Receiving block blk_5 src: /10.0.0.1:1"
    packer.add([("blk_5", good)], 40)
    packer.add([("blk_5", good.replace(b"src", b"boom"))], 42)
    packer.add([("blk_5", good.replace(b"203615", b"203616"))], 43)
    [pack] = packer.outputs()
    dead: list = []
    lines = d._pack_lines(tp, part, Rec(offset=7, value=pack.value, headers=pack.headers), dead)
    assert [x.source for x in lines] == [("logs", 1, 40), ("logs", 1, 43)]
    [(hold, dl)] = dead
    h = dict(dl.headers)
    assert (dl.reason, h["rationad-source-topic"], h["rationad-source-offset"]) == ("parse_failed", b"logs", b"42")
    hold.release()


def test_a_line_naming_many_blocks_the_parser_fails_on_is_one_dead_letter(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a line naming N blocks crosses the hop once per block,
    and a parse that failed on it failed for each: N dead letters of one line (up to input.max_keys_per_line)."""
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec, parser_bug_on

    parser_bug_on(monkeypatch)
    d, tp, part = _pack_daemon()
    line = b"081109 203615 148 INFO dfs.FSNamesystem: BLOCK* boom delete " + b" ".join(b"blk_%d" % i for i in range(5))
    routes = d.parser.route(line, topic="logs", partition=1, offset=40)
    assert len(routes) == 5  # (routed by the regex alone: the parse fails at the session stage)
    packer = Packer(d.internal, "logs", 1, Router(1))
    packer.add(routes, 40)
    packer.add(routes[:2], 41)  # the same line again in the next record: its own dead letter
    dead: list = []
    for n, pack in enumerate(packer.outputs()):
        assert d._pack_lines(tp, part, Rec(offset=7 + n, value=pack.value, headers=pack.headers), dead) == []
    assert [dict(dl.headers)["rationad-source-offset"] for _, dl in dead] == [b"40", b"41"]
    for hold, _ in dead:
        hold.release()


async def test_packs_awaiting_their_acknowledgement_count_in_the_pending_bytes():
    """Found by review (2026-12-07), failing before its fix: the hold on forwarded packs carried no bytes, so an
    internal topic refusing writes let delivery.max_pending_sessions fetches of packs (about 0.5 GiB) pile up unseen
    by delivery.max_open_bytes. A fetch of packs over the budget now pauses input by itself."""
    from aiokafka.structs import TopicPartition

    from rationad.daemon import Daemon
    from tests.rationad.fakes import FakeModel, Rec

    d = Daemon(load_settings(input={"repartition": "always"}, cache={"enabled": False}, server={"enabled": False},
                             delivery={"max_open_bytes": 1_000_000}), client=FakeModel())
    d._router = Router(12)
    tp = TopicPartition("logs", 0)
    d._on_assigned([tp])
    pad = "x" * 4000
    recs = [Rec(o, f"081109 203615 148 INFO dfs.DataNode: Receiving block blk_{o} src: /10.0.0.1 {pad}".encode())
            for o in range(250)]
    dead: list = []
    forwards: list = []
    await d._forward(tp, d._parts[tp], recs, dead, forwards)
    kept = sum(len(o.value) + len(o.key or b"") for _, outs in forwards for o in outs)
    assert kept > 1_000_000 and d.delivery.held_bytes == kept
    assert d._over_pending()
    for hold, _ in forwards:
        hold.release()
    assert d.delivery.held_bytes == 0


async def test_a_pack_the_broker_never_takes_is_dead_lettered_line_by_line_and_the_input_moves_on():
    from aiokafka.errors import RecordTooLargeError

    from rationad.delivery import Delivery
    from rationad.metrics import Metrics
    from rationad.offsets import PartitionOffsets
    from rationad.repartition import Packer
    from tests.rationad.fakes import FakeProducer

    d, _, _ = _pack_daemon()
    producer = FakeProducer(fail=lambda s: RecordTooLargeError() if s.topic == d.internal else None)
    delivery = Delivery(dlq_topic="dlq", max_message_bytes=1_000_000, metrics=Metrics(), on_fatal=pytest_fail,
                        producer=producer)
    packer = Packer(d.internal, "logs", 3, Router(2))
    for i in range(5):
        packer.add([(f"blk_{i}", f"081109 203615 148 INFO x: blk_{i} line".encode())], 100 + i)
    offsets = PartitionOffsets()
    hold = delivery.hold(offsets, 100)
    await delivery.forward([(hold, packer.outputs())], d._unforwardable)
    assert hold.released  # every line is accounted for (dead-lettered): the input offset is free to commit
    dead = producer.on("dlq")
    assert sorted(dict(x.headers)["rationad-source-offset"] for x in dead) == [b"100", b"101", b"102", b"103", b"104"]
    assert {dict(x.headers)["rationad-error-type"] for x in dead} == {b"undeliverable_repartition"}
    assert sorted(x.key for x in dead) == [f"blk_{i}".encode() for i in range(5)]


async def test_a_repartition_topic_the_acl_refuses_holds_the_input_until_the_write_is_granted():
    """Found by review: with the Write ACL on the internal topic missing (or still propagating), every line was
    dead-lettered as undeliverable_repartition and its input offset committed: a copier from input to dead letters."""
    import asyncio

    from aiokafka.errors import TopicAuthorizationFailedError

    from rationad.delivery import Delivery
    from rationad.metrics import Metrics
    from rationad.offsets import PartitionOffsets
    from rationad.repartition import Packer
    from tests.rationad.fakes import FakeProducer

    async def no_sleep(_secs):
        await asyncio.sleep(0)

    d, _, _ = _pack_daemon()
    refusals = [TopicAuthorizationFailedError() for _ in range(4)]
    producer = FakeProducer(fail=lambda s: refusals.pop() if refusals and s.topic == d.internal else None)
    delivery = Delivery(dlq_topic="dlq", max_message_bytes=1_000_000, metrics=Metrics(), on_fatal=pytest_fail,
                        producer=producer, sleep=no_sleep)
    packer = Packer(d.internal, "logs", 3, Router(2))
    packer.add([("blk_1", b"081109 203615 148 INFO x: blk_1 line")], 100)
    offsets = PartitionOffsets()
    hold = delivery.hold(offsets, 100)
    await delivery.forward([(hold, packer.outputs())], d._unforwardable)
    assert hold.released and producer.on("dlq") == [] and len(producer.on(d.internal)) == 1


def pytest_fail(msg):
    raise AssertionError(msg)


def test_pack_ranges_find_exactly_the_overlaps_and_stay_bounded():
    seen = SeenLines(ranges=3)
    assert seen.windowed("s", 10, 20) == []
    assert seen.windowed("s", 30, 40) == []
    assert seen.windowed("s", 0, 5) == []  # a batch resent late: before, not inside
    assert seen.windowed("other", 10, 20) == []  # another source partition
    assert seen.windowed("s", 15, 35) == [(10, 20), (30, 40)]  # re-forwarded across two packs: merged
    assert seen._starts["s"] == [0, 10] and seen._ends["s"] == [5, 40]
    assert seen.windowed("s", 21, 29) == [(10, 40)]
    seen.windowed("s", 50, 60)
    seen.windowed("s", 70, 80)  # a fourth range: the oldest (0-5) is forgotten
    assert seen._starts["s"] == [10, 50, 70] and seen.windowed("s", 1, 2) == []


def test_a_pack_forwarded_again_with_other_boundaries_windows_only_the_new_lines():
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon()
    lines = [(o, f"081109 2036{o:02d} 148 INFO dfs.DataNode: Receiving block blk_5 x".encode()) for o in range(10, 30)]

    def pack(rows, max_bytes=1 << 20):
        packer = Packer(d.internal, "logs", 1, Router(1), max_bytes)
        for o, v in rows:
            packer.add([("blk_5", v)], o)
        return packer.outputs()

    first = [x for i, out in enumerate(pack(lines[:12], max_bytes=400))
             for x in d._pack_lines(tp, part, Rec(offset=i, value=out.value, headers=out.headers), [])]
    assert [x.source[2] for x in first] == list(range(10, 22))
    # a restart between the hops: the input is read again from offset 15, packed differently, and goes on to 29
    again = [x for out in pack(lines[5:]) for x in d._pack_lines(tp, part, Rec(offset=9, value=out.value,
                                                                                 headers=out.headers), [])]
    assert [x.source[2] for x in again] == list(range(22, 30))


def test_a_pack_spanning_more_than_a_fetch_hides_no_later_line_and_still_drops_its_own_repeats():
    """Found by review, failing before its fix: a pack whose index claims offsets far apart (a forged or corrupt
    record on the internal topic) was remembered as one range, so every later line of that source inside it was
    dropped as a duplicate, lost. A pack wider than one fetch (kafka.fetch_max_records) is now told apart line by
    line: its own lines are windowed once (identical lines of one record too), later packs are untouched."""
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon()
    line = b"081109 203615 148 INFO dfs.DataNode: Receiving block blk_5 src: /10.0.0.1:1"
    forged = Packer(d.internal, "logs", 1, Router(1))
    forged.add([("blk_5", line), ("blk_5", line)], 3)  # one record holding the same line twice
    forged.add([("blk_5", line)], 10**15)
    [wide] = forged.outputs()
    got = d._pack_lines(tp, part, Rec(offset=1, value=wide.value, headers=wide.headers), [])
    assert [x.source[2] for x in got] == [3, 3, 10**15]
    assert d._pack_lines(tp, part, Rec(offset=2, value=wide.value, headers=wide.headers), []) == []  # re-read
    later = Packer(d.internal, "logs", 1, Router(1))
    for o in (40, 41):
        later.add([("blk_5", line)], o)
    [real] = later.outputs()
    got = d._pack_lines(tp, part, Rec(offset=3, value=real.value, headers=real.headers), [])
    assert [x.source[2] for x in got] == [40, 41]


def test_a_record_whose_lines_fill_a_pack_keeps_them_all():
    """Found by review (2026-12-03), failing before its fix: a record naming two blocks of one internal partition
    was split when the pack filled between them; the next pack's offset range then overlapped the first's at that
    record, and the session stage dropped its second line as a re-read."""
    from rationad.repartition import Packer
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon()
    before = b"081109 203610 148 INFO dfs.DataNode: Receiving block blk_4 src: /10.0.0.1:1"
    multi = b"081109 203615 148 INFO dfs.FSNamesystem: BLOCK* ask 10.250.10.6:50010 to delete  blk_5 blk_6"
    # Small packs (256 KiB ones fill the same way): the first line and one of the record's fit, both do not.
    packer = Packer(d.internal, "logs", 1, Router(1), max_bytes=250)
    packer.add(d.parser.route(before, topic="logs", partition=1, offset=39), 39)
    packer.add(d.parser.route(multi, topic="logs", partition=1, offset=40), 40)
    outs = packer.outputs()
    assert all(out.key is None for out in outs)  # packs only: the record's lines together are under max_bytes
    got = []
    for i, out in enumerate(outs):
        got += d._pack_lines(tp, part, Rec(offset=i, value=out.value, headers=out.headers), [])
    assert sorted((x.source[2], x.key) for x in got) == [(39, "blk_4"), (40, "blk_5"), (40, "blk_6")]


_route = st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "\ud800x", "\x01" * 30]),
                   st.one_of(st.binary(min_size=1, max_size=90).filter(lambda v: b"\n" not in v),
                             st.just(b"one\ntwo")))


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.lists(_route, min_size=1, max_size=5), max_size=12), partitions=st.sampled_from([1, 2]))
def test_packer_never_splits_a_record_between_two_records_of_one_partition(records, partitions):
    """Every line goes out once; a record's lines for one internal partition are in one pack or all in one-line
    records, so no two records of a partition share a source offset unless both are one-line records; a pack is
    never larger than ``max_bytes`` (found by review, failing before its fix: the size counted a key's raw bytes,
    not its JSON, where a control character takes 6, and a record's lines joined an open pack beyond its bound:
    packs reached twice ``max_bytes`` and more, over the producer's limit, and their good lines were dead-lettered)."""
    from rationad.repartition import Packer, unpack

    packer = Packer("internal", "logs", 0, Router(partitions), max_bytes=200)
    for offset, routes in enumerate(records):
        packer.add(routes, offset)
    sent, packed, single = [], {}, {}
    for out in packer.outputs():
        if out.key is None:  # a pack
            assert len(out.value) <= 200
            entries = unpack(out.value)
            sent += [(o, k, v) for o, k, v in entries]
            for o in {o for o, _, _ in entries}:
                packed.setdefault((out.partition, o), 0)
                packed[(out.partition, o)] += 1
        else:
            o = int(source_of(out.headers)[2])
            sent.append((o, out.key.decode("utf-8", "surrogatepass"), out.value))
            single[(out.partition, o)] = True
    assert sorted(sent) == sorted((o, k, v) for o, routes in enumerate(records) for k, v in routes)
    assert all(n == 1 for n in packed.values()), packed
    assert not set(packed) & set(single)


def _across_the_hop(value: bytes, d=None) -> list:
    """The lines the session stage windows from one input record at offset 40, forwarded by a ``Packer`` (to ``d``'s
    one internal partition, or a new daemon's)."""
    from rationad.repartition import Packer, is_pack
    from tests.rationad.fakes import Rec

    if d is None:
        d, tp, part = _pack_daemon()
    else:
        [(tp, part)] = d._parts.items()
    packer = Packer(d.internal, "logs", 1, Router(1))
    packer.add(d.parser.route(value, topic="logs", partition=1, offset=40), 40)
    got = []
    for i, out in enumerate(packer.outputs()):
        rec = Rec(offset=i, value=out.value, key=out.key, headers=out.headers)
        if is_pack(out.headers):
            got += d._pack_lines(tp, part, rec, [])
        else:  # as _consume_once does for a one-line internal record
            got += d._own_lines(tp, part, rec, [])
    return got


def test_two_lines_of_one_block_in_one_record_both_cross_the_hop():
    """Found by review (2026-12-03), failing before its fix: a record whose lines for a partition go as one-line
    records (one holds a newline: a stack trace) sent two lines of one block with the same source offset and key, and
    the session stage dropped the second as a re-read."""
    d, _, _ = _pack_daemon()
    value = (b"081109 203615 148 INFO dfs.DataNode: first blk_1\n"
             b"081109 203616 148 WARN dfs.DataNode: second blk_1\n"
             b"  at org.apache.Foo(Foo.java:1)")
    got = _across_the_hop(value)
    assert sorted(x.message for x in got) == sorted(x.message for x in d.parser.parse(value))
    assert len(got) == 2


@pytest.mark.parametrize("tail", [b"", b"\n  at org.apache.Foo(Foo.java:1)"], ids=["pack", "one-line records"])
def test_identical_lines_of_one_record_all_cross_the_hop(tail):
    """Found by review (2026-12-03), failing before its fix: the forward sent each distinct (key, line) of a record
    once, so a record repeating a line (a shipper batching "disk full" twice) lost the repeat through the hop, and the
    session's counts differed from the same input read without repartitioning. With a line holding a newline the
    record's lines go as one-line records; those the session stage told apart by source position, key and value only."""
    d, _, _ = _pack_daemon()
    same = b"081109 203615 148 WARN dfs.DataNode: disk full blk_1"
    value = same + b"\n" + same + b"\n081109 203616 148 WARN dfs.DataNode: second blk_1" + tail + b"\n" + same
    got = _across_the_hop(value)
    assert sorted(x.message for x in got) == sorted(x.message for x in d.parser.parse(value))
    assert len(got) == 4


def test_a_line_forwarded_by_the_previous_release_and_again_after_an_upgrade_is_windowed_once():
    """Found by review (2026-12-03), failing before its fix: one-line records of the previous release carry no repeat
    header; the same input line forwarded again after the upgrade (a restart between the hops) must still be known
    as a re-read."""
    from rationad.repartition import SOURCE_REPEAT_HEADER, Packer, is_pack
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon()
    value = b"081109 203615 148 INFO dfs.DataNode: first blk_1\n  at org.apache.Foo(Foo.java:1)"  # a one-line record
    packer = Packer(d.internal, "logs", 1, Router(1))
    packer.add(d.parser.route(value, topic="logs", partition=1, offset=40), 40)
    [new] = packer.outputs()
    assert not is_pack(new.headers) and (SOURCE_REPEAT_HEADER, b"0") in new.headers
    old_headers = [h for h in new.headers if h[0] != SOURCE_REPEAT_HEADER]
    got = []
    for i, headers in enumerate((old_headers, new.headers)):
        rec = Rec(offset=i, value=new.value, key=new.key, headers=headers)
        got += d._own_lines(tp, part, rec, [])
    assert len(got) == 1


def _gapped_pack(d, offsets):
    """A pack of one line per offset (a transactional input: commit markers take the offsets between)."""
    from rationad.repartition import Packer

    p = Packer(d.internal, "logs", 1, Router(1))
    for o in offsets:
        p.add([("blk_5", f"081109 2036{o % 60:02d} 148 INFO dfs.DataNode: Receiving block blk_5 x{o}".encode())], o)
    [out] = p.outputs()
    return out


@pytest.mark.parametrize("order", ["wide first", "narrow first"])
def test_a_transactional_inputs_lines_forwarded_again_are_windowed_once(order):
    """Found by review (2026-12-04), failing before its fix: a full fetch of a transactional (or compacted) input
    spans more offsets than it holds records, so its pack is wide and was told apart line by line only, while a
    re-read of part of it (a restart between the hops) is narrow and was checked against ranges only: neither saw
    what the other remembered, and every re-forwarded line was windowed twice."""
    from tests.rationad.fakes import Rec

    d, tp, part = _pack_daemon(fetch_max_records=10)
    wide, narrow = _gapped_pack(d, range(0, 20, 2)), _gapped_pack(d, range(12, 20, 2))  # spans 18 and 6
    packs = [wide, narrow] if order == "wide first" else [narrow, wide]
    got = [[x.source[2] for x in d._pack_lines(tp, part, Rec(offset=i, value=p.value, headers=p.headers), [])]
           for i, p in enumerate(packs)]
    assert sorted(got[0] + got[1]) == list(range(0, 20, 2))  # each line once


def test_pack_ranges_are_bounded_per_internal_partition_however_many_sources_feed_it():
    """Found by review (2026-12-07), failing before its fix: ranges were bounded per source only, and every input
    partition feeds every internal partition: 12 inputs held 600,000 ranges (47 MiB) on one internal partition when
    full. Their sources share SEEN_RANGES now, each keeping its newest."""
    from rationad.repartition import SEEN_RANGES, SEEN_RANGES_MIN

    seen = SeenLines()
    for n in range(6_000):  # consecutive fetches of 12 source partitions, one pack each, never overlapping
        for source in range(12):
            seen.windowed(source, 10 * n, 10 * n + 5)
    held = sum(len(v) for v in seen._starts.values())
    assert held <= SEEN_RANGES + 12 * SEEN_RANGES_MIN
    assert all(v[-1] == 10 * 5_999 for v in seen._starts.values())  # the newest of each source kept
    assert seen.windowed(3, 10 * 5_999 + 1, 10 * 5_999 + 2) == [(10 * 5_999, 10 * 5_999 + 5)]  # still found
    assert all(len(seen._starts[k]) == len(seen._ends[k]) for k in seen._starts)

    # Sources arriving one after another, each going quiet (review of the first fix: a quiet source kept the larger
    # share it had while there were fewer, 155,157 ranges held for 12 sources)
    seen = SeenLines()
    for source in range(12):
        for n in range(SEEN_RANGES):
            seen.windowed(source, 10 * n, 10 * n + 5)
    held = sum(len(v) for v in seen._starts.values())
    assert held <= SEEN_RANGES + SEEN_RANGES_MIN
    assert all(len(seen._starts[k]) == len(seen._ends[k]) for k in seen._starts)


def test_packs_and_one_line_records_carry_the_span_of_kafka_times_of_their_input_records():
    from rationad.repartition import Packer, is_pack, source_time

    packer = Packer("internal", "logs", 0, Router(1))
    packer.add([("a", b"one a")], 0, 1_000)
    packer.add([("a", b"two a")], 1, 3_000)
    packer.add([("a", b"three a")], 2, 2_000)
    packer.add([("a", b"four a\n  at x")], 3, 4_000)  # a newline: a one-line record (and the pack closed)
    packer.add([("a", b"five a")], 4, -1)  # no time (an old message format)
    pack, loose, last = packer.outputs()
    assert is_pack(pack.headers) and source_time(pack.headers) == (1.0, 3.0)
    assert not is_pack(loose.headers) and source_time(loose.headers) == (4.0, 4.0)
    assert source_time(last.headers) is None
    # a corrupt or forged header is ignored, never fatal (review: 312 digits raised OverflowError in the main loop)
    for bad in (b"9" * 312 + b",1", b"1," + b"9" * 312, b"3,1", b"x", b"", b"0,0", b"-5,1"):
        assert source_time([("rationad-source-time", bad)]) is None, bad


@pytest.mark.parametrize("blocks", [5, 300], ids=["pack", "one-line records"])
@pytest.mark.parametrize("repeats", [1, 2])
def test_a_line_naming_many_blocks_is_parsed_once_across_the_hop(blocks, repeats):
    """Found by review (2026-12-07), failing before its fix: an HDFS delete naming N blocks reaches an internal
    partition once per block, and each copy was parsed whole to keep one line: N parses of N lines (0.6 s for 1,000
    blocks) and N copies of the text held in open sessions (47 MiB). The first copy's parse now serves the others; each
    block still gets its line once per time the record holds it, each line object once."""
    d, _, part = _pack_daemon()
    d._router = Router(1)
    line = ("081109 203619 148 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.2:50010 to delete  "
            + " ".join(f"blk_{-7 * i - 1000}" for i in range(blocks))).encode()
    value = b"\n".join([line] * repeats)
    calls = []
    real = d.parser.parse
    d.parser.parse = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    got = _across_the_hop(value, d)
    assert sorted(x.key for x in got) == sorted(x.key for x in real(value))  # every block, as often as without the hop
    assert len({id(x) for x in got}) == len(got)  # no line object handed out twice
    # once per copy of the text in the record, not once per block (and the forward hop reads a record of several
    # lines whole, once)
    assert len(calls) == repeats + (repeats > 1)
    assert len({id(x.raw) for x in got}) == repeats  # one text in memory per copy in the record
    assert part.shared.lines == 0  # nothing left waiting
