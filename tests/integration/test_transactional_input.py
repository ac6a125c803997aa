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
    # one plain record after the commit marker: the daemon commits past the last record it reads (a marker is not
    # one), so the run below, which waits for the commit to reach the end, ends
    plain = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await plain.start()
    try:
        await (await plain.send(topic, LINE.format(s=6, b=2).encode(), partition=0))
    finally:
        await plain.stop()
    dead, events = await _run_to_end(_settings(broker, topic), topic)
    assert dead == []
    assert sorted((e["session"]["key"], e["session"]["line_count"]) for e in events) == [("blk_1", 3), ("blk_2", 1)]
