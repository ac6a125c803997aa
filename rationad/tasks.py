"""Stopping asyncio tasks so that a stop always completes.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives as its inner call completes (CPython
gh-86296): the cancelled task then goes on, and a stop that awaited it would wait for ever (seen as a daemon test that
hung 1 run in 10 on a loaded machine). ``cancel_all`` cancels again any task still running after
``STOP_CANCEL_WAIT_SECS`` and, after ``STOP_CANCEL_ROUNDS``, logs it and goes on without it.
"""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("rationad.tasks")

STOP_CANCEL_WAIT_SECS = 1.0
STOP_CANCEL_ROUNDS = 5


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again any that swallowed the cancellation; one that never
    ends is logged and left behind. Their exceptions are retrieved (as ``gather(return_exceptions=True)`` did). If the
    caller is cancelled meanwhile, the tasks still running are cancelled once more before it re-raises."""
    pending = {t for t in tasks if not t.done()}
    try:
        for _ in range(STOP_CANCEL_ROUNDS):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_CANCEL_WAIT_SECS)
        for t in pending:
            log.error("task_did_not_stop", task=t.get_name(), action="stopping without it")
    except asyncio.CancelledError:
        for t in pending:
            if not t.done():
                t.cancel()
        raise
    finally:
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()
