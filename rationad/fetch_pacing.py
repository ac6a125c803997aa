"""Client-side pacing of empty fetches, for brokers that answer a fetch at once when they have nothing to return.

Kafka holds a fetch that has no data for up to the consumer's ``fetch_max_wait_ms`` (a long poll), so an idle
consumer sends about two fetches a second. noida-db 0.2.3, the embedded default broker, answers at once instead, and
aiokafka's fetcher sends the next fetch as soon as the answer arrives: measured on a 2-core machine, one idle
consumer sent about 1,300 fetches a second, and a daemon waiting on its model burnt 45-75 % of a core that way
(its group consumer, the verdict cache's and the label follower's), CPU the model stage on the same machine needed.

:func:`pace_empty_fetches` makes an empty fetch answer that came back sooner than ``MIN_EMPTY_FETCH_SECS`` wait out
the rest before that node is fetched from again. Against a Kafka broker it never waits (an empty answer there takes
``fetch_max_wait_ms``, 500 ms by default); on a broker without long polls it bounds an idle consumer to ten fetches
a second per broker and adds at most 100 ms before new records are seen. It patches aiokafka's ``Fetcher`` (pinned:
``aiokafka==0.14.0``) once per process and applies to every aiokafka consumer in it, faust's included."""

from __future__ import annotations

import asyncio
import time

MIN_EMPTY_FETCH_SECS = 0.1
_MARK = "_rationad_paced"


def pace_empty_fetches() -> None:
    """Install the pacing (idempotent)."""
    from aiokafka.consumer.fetcher import Fetcher

    original = Fetcher._proc_fetch_request
    if getattr(original, _MARK, False):
        return

    async def paced(self, assignment, node_id, request):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        has_data = await original(self, assignment, node_id, request)
        if not has_data:  # the node stays "in flight" while this waits: no fetch goes to it meanwhile
            rest = MIN_EMPTY_FETCH_SECS - (time.monotonic() - t0)
            if rest > 0:
                try:
                    await asyncio.sleep(rest)
                except asyncio.CancelledError:  # closing or unassigned: the original ends such a task quietly too,
                    pass  # and ``Fetcher.close`` awaits it
        return has_data

    setattr(paced, _MARK, True)
    Fetcher._proc_fetch_request = paced
