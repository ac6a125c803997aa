"""Stopping tasks: a cancellation swallowed once (Python 3.11's wait_for, gh-86296) or for ever never hangs a stop."""

from __future__ import annotations

import asyncio

import pytest

import rationad.tasks as tasks_mod
from rationad.tasks import cancel_all
from tests.rationad.fakes import swallows_one_cancellation


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(tasks_mod, "STOP_CANCEL_WAIT_SECS", 0.05)


async def swallows_always(stop: asyncio.Event, swallowed: list | None = None):
    while not stop.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed is not None:
                swallowed.append(1)


async def fails():
    raise RuntimeError("boom")


async def test_a_task_that_swallowed_one_cancellation_is_cancelled_again_and_ends():
    t = asyncio.create_task(swallows_one_cancellation())
    f = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([t, f]), 2)
    assert t.cancelled() and f.done()


async def test_a_task_that_never_ends_is_left_behind_after_the_rounds():
    stop = asyncio.Event()
    t = asyncio.create_task(swallows_always(stop))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([t]), 2)  # returns: the stop goes on without it
    assert not t.done()
    stop.set()
    t.cancel()
    await asyncio.wait({t}, timeout=1)


async def test_cancelled_itself_it_cancels_what_is_still_running_and_re_raises():
    stop, swallowed = asyncio.Event(), []
    t = asyncio.create_task(swallows_always(stop, swallowed))
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_all([t]))
    await asyncio.sleep(0.01)  # inside its first round: t swallowed one cancellation
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.sleep(0)
    assert len(swallowed) == 2  # ... and one more on the way out
    stop.set()
    t.cancel()
    await asyncio.wait({t}, timeout=1)
    assert t.done()
