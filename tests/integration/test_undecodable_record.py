"""A record aiokafka cannot decode, on a real broker: a header key that is not UTF-8 (any writer to the topic can send
one; the broker stores it). aiokafka's record parser raises on it inside ``getmany``; before the fix the daemon exited
and met the same record after every restart, the whole replica down. Now the record goes to the dead-letter topic
(partition and offset; its bytes could not be read) and the lines around it are judged. And a record with neither
key nor value: its dead letter had neither either, which the producer refuses, and it was retried for ever, holding
the partition's commit. The model is a fake (the
model is not what this tests); the daemon and the broker are real."""

from __future__ import annotations

import asyncio
import struct
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.util import calc_crc32c

from rationad.broker import create_topics
from rationad.config import Settings
from rationad.daemon import Daemon
from tests.integration.harness import committed_vs_end, read_to_end
from tests.rationad.fakes import FakeModel

pytestmark = pytest.mark.integration

LINE = "081109 2036{s:02d} 148 INFO dfs.DataNode$PacketResponder: Received block blk_{b} of size 67108864 from /1.2.3.4"
CRC_AT, CRC_FROM = 17, 21  # record batch v2: the CRC-32C field, and where the bytes it covers begin


class _BadHeaderKey(BatchBuilder):
    """A batch whose one record's header key ``HK`` becomes the bytes ff fe, with the batch CRC made valid again."""

    def _build(self):
        buf = bytearray(super()._build())
        at = buf.find(b"HK")
        buf[at:at + 2] = b"\xff\xfe"
        struct.pack_into(">I", buf, CRC_AT, calc_crc32c(bytes(buf[CRC_FROM:])))
        self._buffer = buf
        return buf


async def _produce(bootstrap: str, topic: str) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for i in range(3):
            await (await p.send(topic, LINE.format(s=i, b=1).encode(), partition=0))
        bad = _BadHeaderKey(16_384, 0)
        bad.append(timestamp=None, key=None, value=LINE.format(s=3, b=2).encode(), headers=[("HK", b"v")])
        await (await p.send_batch(bad, topic, partition=0))
        nothing = BatchBuilder(16_384, 0)  # neither key nor value (the producer's send() refuses to write one)
        nothing.append(timestamp=None, key=None, value=None)
        await (await p.send_batch(nothing, topic, partition=0))
        for i in range(5, 8):
            await (await p.send(topic, LINE.format(s=i, b=3).encode(), partition=0))
    finally:
        await p.stop()


async def test_a_record_with_an_undecodable_header_key_is_dead_lettered_and_the_partition_moves_on(broker):
    topic = f"hk-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1})
    await _produce(broker.bootstrap, topic)
    dead, events = await _run_to_end(_settings(broker, topic), topic)
    assert [(h["rationad-error-type"], h["rationad-source-offset"]) for h in dead] == [
        (b"undecodable_record", b"3"), (b"empty", b"4")], dead
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [("blk_1", 3), ("blk_3", 3)]


def _settings(broker, topic: str) -> Settings:
    return Settings(kafka={"bootstrap_servers": broker.bootstrap, "group_id": f"g-{topic}"},
                    input={"topics": [topic], "dialect": "hdfs", "repartition": "never"},
                    sessions={"quiet_flush_secs": 1},
                    cache={"enabled": False}, server={"enabled": False},
                    output={"topic": f"{topic}.out", "dlq_topic": f"{topic}.dlq", "emit_normal": True},
                    delivery={"commit_interval_ms": 100, "drain_timeout_secs": 10})


async def _run_to_end(s: Settings, topic: str) -> tuple[list[dict], list[dict]]:
    """Run the daemon until its input is committed to the end; (dead letters' headers, events)."""
    d = Daemon(s, client=FakeModel())
    task = asyncio.create_task(d.run())
    try:
        for _ in range(300):
            await asyncio.sleep(0.1)
            assert not task.done(), "the daemon stopped"
            got = await committed_vs_end(s.kafka.bootstrap_servers, topic, s.kafka.group_id)
            if got and all(c == e for c, e in got.values()):
                break
        else:
            raise AssertionError(f"not committed to the end: {got}")
    finally:
        d.request_stop()
        code = await asyncio.wait_for(task, 60)
    assert code == 0
    dead = [dict(dl.headers) for dl in await read_to_end(s.kafka.bootstrap_servers, f"{topic}.dlq")]
    return dead, [orjson.loads(r.value) for r in await read_to_end(s.kafka.bootstrap_servers, f"{topic}.out")]


async def test_records_after_an_undecodable_one_in_its_batch_are_dead_lettered_naming_it(broker):
    """Found by review: a producer batches records, and aiokafka decodes a fetched batch from its first record, so it
    cannot read the records after an undecodable one in its batch: each was dead-lettered with the bad record's error
    as its own. Now each names the undecodable record of its batch, and the record after the batch is judged."""
    topic = f"hkb-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        batch = _BadHeaderKey(16_384, 0)  # offsets 0-3: good, bad, good, good
        for i in range(4):
            batch.append(timestamp=None, key=None, value=LINE.format(s=i, b=1 if i != 1 else 2).encode(),
                         headers=[("HK", b"v")] if i == 1 else [])
        await (await p.send_batch(batch, topic, partition=0))
        await (await p.send(topic, LINE.format(s=4, b=1).encode(), partition=0))
    finally:
        await p.stop()
    dead, events = await _run_to_end(_settings(broker, topic), topic)
    assert [(h["rationad-error-type"], h["rationad-source-offset"]) for h in dead] == [
        (b"undecodable_record", b"1"), (b"undecodable_record", b"2"), (b"undecodable_record", b"3")], dead
    reasons = [h["rationad-error-reason"].decode() for h in dead]
    assert "after undecodable record" not in reasons[0], reasons
    assert all("after undecodable record 1:" in r for r in reasons[1:]), reasons
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [("blk_1", 2)]


@pytest.mark.parametrize("bad_partition", [0, 1])  # aiokafka hands out partitions in its buffer's order: both
async def test_an_undecodable_record_on_one_partition_loses_no_line_of_another(broker, bad_partition):
    """Found by review: one fetch holds records of both partitions; aiokafka hands out the healthy partition's records
    (advancing its position) and then raises on the other's, and the healthy ones went with the exception: never
    judged, and committed past."""
    topic = f"hkp-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 2, f"{topic}.out": 1, f"{topic}.dlq": 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        for partition in (0, 1):  # 3 good lines each; the bad partition then a bad record and 3 more
            for i in range(3):
                await (await p.send(topic, LINE.format(s=i, b=10 + partition).encode(), partition=partition))
        bad = _BadHeaderKey(16_384, 0)
        bad.append(timestamp=None, key=None, value=LINE.format(s=3, b=20).encode(), headers=[("HK", b"v")])
        await (await p.send_batch(bad, topic, partition=bad_partition))
        for i in range(4, 7):
            await (await p.send(topic, LINE.format(s=i, b=30).encode(), partition=bad_partition))
    finally:
        await p.stop()
    dead, events = await _run_to_end(_settings(broker, topic), topic)
    assert [(h["rationad-error-type"], h["rationad-source-partition"], h["rationad-source-offset"])
            for h in dead] == [(b"undecodable_record", str(bad_partition).encode(), b"3")], dead
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [
        ("blk_10", 3), ("blk_11", 3), ("blk_30", 3)]


async def test_tail_steps_past_an_undecodable_record_on_the_output_topic(broker):
    """Found by review (2026-12-07), failing before its fix: ``rationad tail`` ended with a traceback at a record
    aiokafka cannot decode on the output topic (anyone who may write there can send one), and ``--from-beginning``
    ended there at every run. It steps past it (logged ``undecodable_record``) and shows the events around it."""
    import io

    from rationad.tail import tail

    topic = f"tl-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1})

    def event(key: str) -> bytes:
        return orjson.dumps({"verdict": "anomalous", "session": {"key": key}, "rationale": f"L1 about {key}"})

    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        await (await p.send(topic, event("before"), partition=0))
        bad = _BadHeaderKey(16_384, 0)
        bad.append(timestamp=None, key=None, value=event("unreadable"), headers=[("HK", b"v")])
        await (await p.send_batch(bad, topic, partition=0))
        await (await p.send(topic, event("after"), partition=0))
    finally:
        await p.stop()
    out = io.StringIO()
    s = Settings(kafka={"bootstrap_servers": broker.bootstrap}, output={"topic": topic})
    shown = await asyncio.wait_for(tail(s, from_beginning=True, idle_exit_secs=5, as_json=True, out=out), 60)
    assert shown == 2
    assert [orjson.loads(x)["session"]["key"] for x in out.getvalue().splitlines()] == ["before", "after"]
