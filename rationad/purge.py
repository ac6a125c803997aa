"""Purging the internal repartition topic: what the group has committed there is deleted (Kafka's DeleteRecords), as
Kafka Streams purges its repartition topics.

A forwarded line's input offset is committed once the internal topic has it, so from then on the internal topic is
its only copy: it must stay there until the session stage has judged it, however long the model is blocked or the
daemon is down. The topic is therefore created without a time limit (``repartition.retention_ms = -1``) and kept
small by deleting, after a commit (at most every ``PURGE_INTERVAL_SECS``), the records before the committed offset of
each internal partition this member committed. That is safe whoever owns the partition next: it starts at the
committed offset. A purge that fails (a broker or an ACL refusing DeleteRecords, which needs the DELETE operation on
the topic) is logged and counted and tried again at the next interval; meanwhile the topic grows (a finite
``retention_ms``, if set, still applies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from rationad.config import KafkaConfig
from rationad.kafka import common_kwargs
from rationad.tasks import cancel_all

log = structlog.get_logger("rationad.purge")

PURGE_INTERVAL_SECS = 30.0  # Kafka Streams' repartition.purge.interval.ms
PURGE_TIMEOUT_SECS = 15.0  # one DeleteRecords round (and the admin client's start), then it is tried again later


def _admin(kafka_cfg: KafkaConfig) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(request_timeout_ms=int(PURGE_TIMEOUT_SECS * 1000), **common_kwargs(kafka_cfg))


class Purger:
    """Deletes committed records of ``topic`` in the background; ``offer`` never waits for the broker."""

    def __init__(self, kafka_cfg: KafkaConfig, topic: str, metrics: Any,
                 admin_factory: Callable[[], Any] | None = None) -> None:
        self.topic = topic
        self.metrics = metrics
        self._factory = admin_factory or (lambda: _admin(kafka_cfg))
        self._admin: Any = None
        self._purged: dict[Any, int] = {}  # partition -> offset records were deleted before
        self._last = time.monotonic()  # of the last purge started (the first comes an interval after the start)
        self._task: asyncio.Task | None = None

    def offer(self, committed: Mapping[Any, int | None]) -> None:
        """After a commit: ``committed`` maps partitions (``TopicPartition``) to the offsets just committed. Starts a
        purge of this topic's partitions that moved, unless one is running or the last began under the interval."""
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        if now - self._last < PURGE_INTERVAL_SECS:
            return
        todo = {tp: off for tp, off in committed.items()
                if tp.topic == self.topic and off is not None and off > self._purged.get(tp, 0)}
        if not todo:
            return
        self._last = now
        self._task = asyncio.create_task(self._purge(todo), name="repartition-purge")

    async def _purge(self, todo: dict[Any, int]) -> None:
        from aiokafka.admin.records_to_delete import RecordsToDelete

        failed: dict[int, str] = {}
        try:
            if self._admin is None:
                self._admin = self._factory()
                await asyncio.wait_for(self._admin.start(), PURGE_TIMEOUT_SECS)
            # One partition a request: aiokafka raises for the whole call when any partition has no leader or
            # answers an error, so one bad partition would hold back every other one's purge.
            for tp, off in sorted(todo.items(), key=lambda kv: kv[0].partition):
                try:
                    await asyncio.wait_for(self._admin.delete_records(
                        {tp: RecordsToDelete(off)}, timeout_ms=int(PURGE_TIMEOUT_SECS * 1000)), PURGE_TIMEOUT_SECS)
                except Exception as exc:  # noqa: BLE001 - this partition's records stay, tried again later
                    failed[tp.partition] = repr(exc)
                    self.metrics.repartition_purges.labels("error").inc()
                else:
                    self._purged[tp] = off
                    self.metrics.repartition_purges.labels("ok").inc()
        except Exception as exc:  # noqa: BLE001 - no client: every partition's records stay
            failed = {tp.partition: repr(exc) for tp in todo}
            self.metrics.repartition_purges.labels("error").inc(len(failed))
        if failed:
            log.warning("repartition_purge_failed", topic=self.topic, partitions=sorted(failed),
                        error=next(iter(failed.values())),
                        action=f"tried again in {PURGE_INTERVAL_SECS:g} s; the topic keeps growing meanwhile")
            await self._close_admin()

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await asyncio.wait_for(admin.close(), 5.0)
            except Exception:  # noqa: BLE001 - closing a client that never connected
                pass

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])
        await self._close_admin()
