"""Repartitioning by session key on a real broker (issue 17): one session's lines produced round-robin over three
input partitions, unkeyed as log shippers write them, are judged as one session; a line naming two blocks joins both
sessions; commits reach the end of the input and of the internal topic. The model is a fake (the model is not what
this tests); the daemon, the broker and the internal topic are real. Committed internal records are purged
(DeleteRecords on the real broker)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rationad import purge
from rationad.broker import create_topics
from rationad.config import Settings
from rationad.daemon import Daemon
from rationad.repartition import is_pack, pack_source, unpack
from tests.integration.harness import committed_vs_end, read_to_end
from tests.rationad.fakes import FakeModel

pytestmark = pytest.mark.integration

LINES = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:2",
    "081109 203616 148 INFO dfs.DataNode$PacketResponder: Receiving block blk_2 src: /10.0.0.1:1 dest: /10.0.0.2:2",
    "081109 203617 148 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/part-1. blk_1",
    "081109 203618 148 INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1",
    "081109 203619 148 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.2:50010 to delete  blk_1 blk_2",
    "081109 203620 148 INFO dfs.DataNode$PacketResponder: Received block blk_2 of size 67108864 from /10.0.0.1",
]


async def _produce_round_robin(bootstrap: str, topic: str, lines: list[str]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for i, line in enumerate(lines):  # unkeyed, one partition after another: every session is split
            await (await p.send(topic, line.encode(), partition=i % 3))
    finally:
        await p.stop()


async def _run_until_committed(broker, topic: str, group: str) -> tuple[Daemon, dict]:
    """Run the daemon on ``topic`` until the input and the internal topic are committed to their ends; stop it."""
    s = Settings(kafka={"bootstrap_servers": broker.bootstrap, "group_id": group},
                 input={"topics": [topic], "dialect": "hdfs"},
                 sessions={"quiet_flush_secs": 2},
                 cache={"enabled": False}, server={"enabled": False},
                 output={"topic": f"{topic}.out", "dlq_topic": f"{topic}.dlq", "emit_normal": True},
                 delivery={"commit_interval_ms": 100, "drain_timeout_secs": 10})
    assert s.repartition_topic() == f"{group}-repartition"  # auto: session windows with a session key
    d = Daemon(s, client=FakeModel())
    task = asyncio.create_task(d.run())
    try:
        for _ in range(600):
            await asyncio.sleep(0.1)
            got = await committed_vs_end(broker.bootstrap, topic, group)
            internal = await committed_vs_end(broker.bootstrap, f"{group}-repartition", group)
            if all(c == e for c, e in got.values()) and internal and all((c or 0) == e for c, e in internal.values()) \
                    and d.metrics.lines_repartitioned._value.get() >= 7:
                break
        else:
            raise AssertionError(f"not settled: input {got}, internal {internal}")
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 60) == 0
    return d, internal


async def test_committed_internal_records_are_deleted(broker, monkeypatch):
    # A forwarded line's input offset is committed, so the internal topic has no time limit (it holds the line's only
    # copy until its verdict); what the group committed there is deleted instead, so it holds only waiting lines.
    from aiokafka import AIOKafkaConsumer, TopicPartition

    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)  # a purge after every commit
    topic = f"rp-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 3, f"{topic}.out": 1, f"{topic}.dlq": 1})
    await _produce_round_robin(broker.bootstrap, topic, LINES)
    group = f"g-{topic}"
    d, internal = await _run_until_committed(broker, topic, group)
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await c.start()
    try:
        tps = [TopicPartition(f"{group}-repartition", p) for p in internal]
        for _ in range(100):  # the last purge may still be on its way when the commit is seen
            first = {tp.partition: off for tp, off in (await c.beginning_offsets(tps)).items()}
            if first == {p: e for p, (_, e) in internal.items()}:
                break
            await asyncio.sleep(0.1)
    finally:
        await c.stop()
    assert first == {p: e for p, (_, e) in internal.items()} and sum(first.values()) >= 2, (first, internal)
    assert d.metrics.repartition_purges.labels("error")._value.get() == 0
    assert await read_to_end(broker.bootstrap, f"{group}-repartition") == []
    assert len(await read_to_end(broker.bootstrap, f"{topic}.out")) == 2  # both sessions judged all the same


async def test_lines_of_one_session_on_three_partitions_are_judged_as_one_session(broker, monkeypatch):
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 1e9)  # this test reads what the internal topic carried
    topic = f"rr-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 3, f"{topic}.out": 1, f"{topic}.dlq": 1})
    await _produce_round_robin(broker.bootstrap, topic, LINES)
    group = f"g-{topic}"
    d, internal = await _run_until_committed(broker, topic, group)
    assert len(internal) == 3  # as many partitions as the input topic
    carried = []  # the internal records are packs: (source partition, source offset, key) of every line they carry
    for r in await read_to_end(broker.bootstrap, f"{group}-repartition"):
        assert is_pack(r.headers)
        carried += [(pack_source(r.headers)[1], o, k) for o, k, _ in unpack(r.value)]
    assert sorted(carried) == sorted([(b"0", 0, "blk_1"), (b"1", 0, "blk_2"), (b"2", 0, "blk_1"), (b"0", 1, "blk_1"),
                                      (b"1", 1, "blk_1"), (b"1", 1, "blk_2"), (b"2", 1, "blk_2")])
    # six lines, the delete line (partition 1, offset 1) once per block it names
    events = [orjson.loads(r.value) for r in await read_to_end(broker.bootstrap, f"{topic}.out")]
    sessions = {e["session"]["key"]: e["session"] for e in events}
    assert sorted(sessions) == ["blk_1", "blk_2"] and len(events) == 2, [e["session"] for e in events]
    assert sessions["blk_1"]["line_count"] == 4 and sessions["blk_2"]["line_count"] == 3
    assert d.metrics.lines_repartitioned._value.get() == 7
    assert d.metrics.split_sessions._value.get() == 0
