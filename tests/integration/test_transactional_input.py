"""Input written by a transactional producer (Kafka Connect, Flink, Streams under exactly-once), on a real broker:
records of an aborted transaction were read and judged (aiokafka's default isolation is read_uncommitted), and the
writer's retry wrote the same lines again at new offsets, so consumers got two verdicts under different ids, one of
them about data that never committed. The consumer reads committed records only now. The model is a fake (the model
is not what this tests); the daemon and the broker are real."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from rationad.broker import create_topics
from tests.integration.test_undecodable_record import LINE, _run_to_end, _settings

pytestmark = pytest.mark.integration


async def test_records_of_an_aborted_transaction_are_not_judged(broker):
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"writer-{topic}")
    await p.start()
    try:
        await p.begin_transaction()
        for i in range(3):
            await p.send(topic, LINE.format(s=i, b=9).encode(), partition=0)
        await p.abort_transaction()
        async with p.transaction():
            for i in range(3, 6):
                await p.send(topic, LINE.format(s=i, b=1).encode(), partition=0)
    finally:
        await p.stop()
    # and one plain record after the commit marker, read as any other
    plain = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await plain.start()
    try:
        await (await plain.send(topic, LINE.format(s=6, b=2).encode(), partition=0))
    finally:
        await plain.stop()
    dead, events = await _run_to_end(_settings(broker, topic), topic)
    assert dead == []
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [("blk_1", 3), ("blk_2", 1)]


async def test_a_quiet_transactional_input_is_committed_to_its_end(broker):
    """Left since review (2026-12-07), done: a transaction's commit marker takes the last offset of a quiet
    transactional input and is no record the daemon reads, so its commit stayed one short of the end for good: lag 1
    on every partition, in the daemon's gauges and in ``kafka-consumer-groups``. What lies between what the daemon read
    and the consumer's position (a marker, an aborted transaction's records) is now read past, and committed."""
    topic = f"txq-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"writer-{topic}")
    await p.start()
    try:
        async with p.transaction():
            for i in range(3):
                await p.send(topic, LINE.format(s=i, b=1).encode(), partition=0)
        await p.begin_transaction()  # and an aborted one after it: its records and its marker are no lines either
        for i in range(3, 5):
            await p.send(topic, LINE.format(s=i, b=9).encode(), partition=0)
        await p.abort_transaction()
    finally:
        await p.stop()
    dead, events = await _run_to_end(_settings(broker, topic), topic)  # committed to the end (7: 3 + 1 + 2 + 1)
    assert dead == []
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [("blk_1", 3)]
