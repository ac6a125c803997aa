"""Minimal reproduction of the dead-letter flood stall (found by tests/failure/test_fuzz.py).

The daemon sends each dead letter from its own task (``Daemon._spawn(self._send_dead_letter(...))``), and each
task awaits ``producer.send`` and then the delivery future. With thousands of bad records in one fetch, thousands
of tasks wait on the same partition's full batch (``aiokafka`` ``MessageAccumulator.add_message`` -> ``wait_drain``);
every drain wakes all of them, and their ``request_timeout_ms`` budget runs out: ``KafkaTimeoutError`` floods, the
daemon retries with backoff, and dead letters trickle out at a few per second. Sending in order from one task and
awaiting the futures together (what ``produce`` in tests/integration/harness.py does) is orders of magnitude faster.

Usage: ``.venv/bin/python bench/repro_dlq_flood.py [--records 10000]``; prints both timings and the timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: F401  (puts the repo root on sys.path)


async def per_task(bootstrap: str, topic: str, n: int, limit: float) -> tuple[int, int, float]:
    """Like the daemon: one task per record, each send awaited with its own retry loop (here: counted, retried)."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await p.start()
    timeouts = done = 0
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal timeouts, done
        while True:
            try:
                await (await p.send(topic, value=b"x" * 200 + str(i).encode(), key=b"k%d" % i,
                                    headers=[("rationad-error-type", b"no_session_key")]))
                done += 1
                return
            except Exception:  # KafkaTimeoutError
                timeouts += 1
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), limit)
    except TimeoutError:
        pass
    secs = time.perf_counter() - t0
    await p.stop()
    return done, timeouts, secs


async def in_order(bootstrap: str, topic: str, n: int) -> tuple[int, float]:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await p.start()
    t0 = time.perf_counter()
    futs = [await p.send(topic, value=b"x" * 200 + str(i).encode(), key=b"k%d" % i,
                         headers=[("rationad-error-type", b"no_session_key")]) for i in range(n)]
    await asyncio.gather(*futs)
    secs = time.perf_counter() - t0
    await p.stop()
    return n, secs


async def amain(n: int, limit: float) -> None:
    from rationad.broker import LocalBroker, create_topics

    with LocalBroker() as b:
        await create_topics(b.bootstrap, {"dlq-a": 1, "dlq-b": 1})
        done, secs = await in_order(b.bootstrap, "dlq-b", n)
        print(f"in order from one task: {done:,} records acknowledged in {secs:.1f} s")
        done, timeouts, secs = await per_task(b.bootstrap, "dlq-a", n, limit)
        print(f"one task per record (the daemon's way): {done:,}/{n:,} acknowledged in {secs:.1f} s, "
              f"{timeouts:,} KafkaTimeoutErrors")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--limit-secs", type=float, default=120.0)
    a = ap.parse_args()
    asyncio.run(amain(a.records, a.limit_secs))
