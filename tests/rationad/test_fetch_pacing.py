"""Empty fetches are paced on a broker that answers them at once (noida-db): an idle consumer stops spinning a core,
new records still arrive promptly, and stopping the consumer mid-pause raises nothing."""

import asyncio
import time
import uuid

import pytest

from rationad.broker import create_topics
from rationad.fetch_pacing import MIN_EMPTY_FETCH_SECS, pace_empty_fetches

pytestmark = pytest.mark.integration


async def _idle_fetches(bootstrap: str, secs: float) -> tuple[int, float, int]:
    """(fetch requests sent by a consumer idling on an empty topic for ``secs``, seconds until a record produced
    afterwards was read, records read)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"pace-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, {topic: 1})
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await c.start()
    fetches = 0
    send = c._client.send

    async def counting(node_id, request, *a, **kw):
        nonlocal fetches
        fetches += type(request).__name__.startswith("FetchRequest")
        return await send(node_id, request, *a, **kw)

    c._client.send = counting
    try:
        await asyncio.sleep(secs)
        idle = fetches
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            await p.send_and_wait(topic, b"x")
        finally:
            await p.stop()
        t0 = time.monotonic()
        got = []
        while not got and time.monotonic() - t0 < 10:
            got = [r for rs in (await c.getmany(timeout_ms=200)).values() for r in rs]
        return idle, time.monotonic() - t0, len(got)
    finally:
        await c.stop()  # usually inside a pause: must end quietly


def test_an_idle_consumer_sends_at_most_ten_fetches_a_second_and_still_sees_new_records(broker):
    pace_empty_fetches()
    pace_empty_fetches()  # idempotent: not wrapped twice
    idle, latency, n = asyncio.run(_idle_fetches(broker.bootstrap, 3.0))
    # Unpaced, noida-db 0.2.3 answers every fetch at once: hundreds to over a thousand fetches a second.
    assert idle <= 3.0 / MIN_EMPTY_FETCH_SECS + 5, idle
    assert n == 1 and latency < 2.0, (n, latency)
