"""Where ``rewind`` moves each partition after a fetch that raised (the broker-backed cases are in
tests/integration/test_undecodable_record.py)."""

from __future__ import annotations

from collections import namedtuple

import pytest

from rationad.undecodable import rewind

TP = namedtuple("TP", "topic partition")


class Consumer:
    def __init__(self, committed: dict, assigned: set | None = None) -> None:
        self._committed = committed
        self.moves: dict = {}
        self.assigned = assigned

    def assignment(self):
        return self.assigned if self.assigned is not None else {TP("t", p) for p in range(3)}

    async def committed(self, tp):
        return self._committed.get(tp)

    def seek(self, tp, offset: int) -> None:
        self.moves[tp] = offset

    async def seek_to_beginning(self, tp) -> None:
        self.moves[tp] = "beginning"


@pytest.mark.parametrize("reset, fresh", [("earliest", "beginning"), ("latest", None)])
async def test_each_partition_goes_back_to_what_was_not_seen(reset, fresh):
    seen, group, new = TP("t", 0), TP("t", 1), TP("t", 2)
    c = Consumer({group: 40, seen: 7})
    await rewind(c, {seen: 12, group: None, new: None}, reset)
    # read up to 11: back to 12 (not to the group's 7); nothing read: the group's offset, else where a reset put it
    # (the beginning; the end as it was when assigned is not known, so that partition stays where it is)
    assert c.moves == {seen: 12, group: 40, **({new: fresh} if fresh else {})}


async def test_a_partition_moved_away_meanwhile_is_left_to_its_new_owner():
    """Found by review (2026-12-05): a rebalance during the recovery moved a partition away, and aiokafka's calls for
    it (seek, position, highwater) raised: the daemon exited, and met the same record again after its restart."""
    from rationad.undecodable import fetch_around

    kept, moved = TP("t", 0), TP("t", 1)
    c = Consumer({}, assigned={kept})
    await rewind(c, {kept: 3, moved: 5}, "earliest")
    assert c.moves == {kept: 3}

    def highwater(tp):
        assert tp == kept, "asked about a partition this consumer no longer has"
        return 3

    async def position(tp):
        return 3

    c.highwater, c.position = highwater, position
    assert await fetch_around(c, [kept, moved], 10) == ({}, {})


async def test_a_partition_assigned_again_meanwhile_is_not_moved_to_the_old_assignment_s_offset():
    """Found by review (2026-12-05): revoked and assigned back to this consumer while the recovery looked up its
    committed offset, it was moved to where the old assignment had read, past records whose sessions the revocation
    dropped (the new assignment starts from the group's offset and must read them again)."""
    tp = TP("t", 0)
    c = Consumer({tp: 40})
    generation = [1]

    async def committed(p):
        generation[0] = 2  # the rebalance happens during the lookup
        return 40

    c.committed = committed
    await rewind(c, {tp: None}, "earliest", held=lambda p: generation[0] == 1)
    assert c.moves == {}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_batches_compressed_by_a_shipper_can_be_read(codec):
    """Found by review: log shippers compress their batches (lz4, snappy and zstd are common), and without the codec
    libraries (cramjam, aiokafka's extras, now a dependency) aiokafka raised UnsupportedCodecError from ``getmany``
    for such a batch, every time: the replica stopped at every restart. (noida-db stores batches uncompressed, so the
    broker tests cannot show this: the batch is built and read here with aiokafka's own record code.)"""
    from aiokafka.producer.message_accumulator import BatchBuilder
    from aiokafka.record.default_records import DefaultRecordBatch
    from aiokafka.record.memory_records import MemoryRecords

    code = {"gzip": DefaultRecordBatch.CODEC_GZIP, "snappy": DefaultRecordBatch.CODEC_SNAPPY,
            "lz4": DefaultRecordBatch.CODEC_LZ4, "zstd": DefaultRecordBatch.CODEC_ZSTD}[codec]
    builder = BatchBuilder(1 << 20, code)
    lines = [f"081109 2036{i:02d} 148 INFO dfs.DataNode: Receiving block blk_{i}".encode() for i in range(20)]
    for line in lines:
        builder.append(timestamp=None, key=None, value=line)
    raw = bytes(builder._build())
    batch = MemoryRecords(raw).next_batch()
    assert batch.compression_type == code
    assert [r.value for r in batch] == lines


def test_a_batch_in_a_codec_that_cannot_be_read_is_stepped_past_not_fatal():
    from aiokafka.errors import UnsupportedCodecError

    from rationad.undecodable import DECODE_ERRORS

    assert issubclass(UnsupportedCodecError, DECODE_ERRORS)  # found and dead-lettered by offset, as a bad header key


@pytest.mark.parametrize("gap", [0, 2, 50])
async def test_an_undecodable_record_after_a_gap_is_met_once_at_its_own_offset(gap):
    """Found by review (2026-12-07): after a gap of offsets (a batch removed by compaction, a commit marker) the
    position lay before the undecodable record; taken for its offset, every offset of the gap was reported, counted
    and stepped past one at a time as an undecodable record (51 for a gap of 50). Real v2 batches decoded by aiokafka's
    own PartitionRecords / FetchResult / SubscriptionState; a fake broker serves them by fetch offset."""
    import struct

    from aiokafka import TopicPartition
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy as Builder
    from aiokafka.record.memory_records import MemoryRecords

    from rationad.undecodable import fetch_around

    tp = TopicPartition("labels", 0)

    def batch(base: int, values: list[bytes], bad: bool = False) -> tuple[int, bytes]:
        b = Builder(2, 0, 0, -1, -1, -1, 1 << 20)
        for i, v in enumerate(values):
            b.append(i, 1000, b"k", v, [("ZQ", b"x")] if bad else [])
        buf = bytearray(b.build())
        if bad:
            buf[buf.find(b"ZQ")] = 0xFF  # a header key that is no longer UTF-8 (CRCs are not checked here)
        buf[0:8] = struct.pack(">q", base)
        return base + len(values) - 1, bytes(buf)

    log = [batch(0, [b"a", b"b", b"c"]), batch(3 + gap, [b"BAD"], bad=True), batch(4 + gap, [b"d", b"e"])]
    end = 6 + gap

    class Broker:
        def __init__(self) -> None:
            self.subs = SubscriptionState()
            self.subs.assign_from_user({tp})
            self.buffered = None
            self.state().seek(3)  # a, b, c read already

        def state(self):
            return self.subs.subscription.assignment.state_value(tp)

        def assignment(self):
            return {tp}

        def highwater(self, _tp):
            return end

        async def position(self, _tp):
            return self.state().position

        def seek(self, _tp, offset: int) -> None:
            self.state().seek(offset)
            self.buffered = None

        async def getmany(self, *_tps, timeout_ms=0, max_records=None):  # aiokafka's fetched_records, one partition
            for _ in range(2):
                if self.buffered is None:
                    pos = self.state().position
                    data = b"".join(raw for last, raw in log if last >= pos)
                    if not data:
                        return {}
                    records = PartitionRecords(tp, MemoryRecords(data), [], pos, None, None, False, READ_UNCOMMITTED)
                    self.buffered = FetchResult(tp, assignment=self.subs.subscription.assignment,
                                                partition_records=records, backoff=0)
                try:
                    got = self.buffered.getall(max_records)
                finally:
                    if not self.buffered.has_more():
                        self.buffered = None
                if got:
                    return {tp: got}
            return {}

    broker = Broker()
    records, bad = await fetch_around(broker, [tp], 500)
    assert records == {tp: []} and bad[tp].offset == 3 + gap  # the record's own offset, not one inside the gap
    assert await broker.position(tp) == 4 + gap
    records, bad = await fetch_around(broker, [tp], 500)
    assert [r.value for r in records[tp]] == [b"d", b"e"] and not bad
