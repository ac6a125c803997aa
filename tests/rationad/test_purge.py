"""``rationad.purge`` against a fake admin client: what is deleted, when, and what a refusal does. The real broker
(DeleteRecords on noida-db) is in tests/integration/test_repartition.py."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import TopicPartition

from rationad import purge
from rationad.config import KafkaConfig
from rationad.metrics import Metrics

INTERNAL = "g-repartition"


class FakeAdmin:
    def __init__(self, refuse: Exception | None = None, hang: bool = False):
        self.refuse, self.hang = refuse, hang
        self.deleted: list[dict[TopicPartition, int]] = []
        self.started = self.closed = 0

    async def start(self):
        self.started += 1

    async def close(self):
        self.closed += 1

    async def delete_records(self, records, timeout_ms=None):
        if self.hang:
            await asyncio.sleep(3600)
        if self.refuse is not None:
            raise self.refuse
        self.deleted.append({tp: r.before_offset for tp, r in records.items()})
        return {tp: r.before_offset for tp, r in records.items()}


def _purger(admin: FakeAdmin) -> tuple[purge.Purger, Metrics]:
    m = Metrics()
    return purge.Purger(KafkaConfig(bootstrap_servers="kafka:9092"), INTERNAL, m, admin_factory=lambda: admin), m


async def _settle(p: purge.Purger) -> None:
    if p._task is not None:
        await p._task


def _count(m: Metrics, result: str) -> float:
    return m.repartition_purges.labels(result)._value.get()


async def test_only_the_internal_topics_committed_offsets_that_moved_are_deleted(monkeypatch):
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)
    admin = FakeAdmin()
    p, m = _purger(admin)
    i0, i1, logs = TopicPartition(INTERNAL, 0), TopicPartition(INTERNAL, 1), TopicPartition("logs", 0)
    p.offer({i0: 5, i1: None, logs: 100})  # an input partition is never purged; a partition not committed neither
    await _settle(p)
    p.offer({i0: 5, i1: 0})  # nothing moved (offset 0 deletes nothing): no request
    await _settle(p)
    p.offer({i0: 9, i1: 3})
    await _settle(p)
    assert admin.deleted == [{i0: 5}, {i0: 9}, {i1: 3}]
    assert admin.started == 1 and _count(m, "ok") == 3  # one a partition


async def test_a_purge_waits_for_the_interval_and_for_the_one_in_flight():
    admin = FakeAdmin()
    p, _ = _purger(admin)
    i0 = TopicPartition(INTERNAL, 0)
    p.offer({i0: 4})  # the first an interval after the start
    assert p._task is None
    p._last -= purge.PURGE_INTERVAL_SECS
    p.offer({i0: 5})
    p.offer({i0: 6})  # one in flight: not a second
    await _settle(p)
    p.offer({i0: 7})  # under PURGE_INTERVAL_SECS since the last: waits for a later commit
    await _settle(p)
    assert admin.deleted == [{i0: 5}]
    p._last -= purge.PURGE_INTERVAL_SECS
    p.offer({i0: 8})
    await _settle(p)
    assert admin.deleted == [{i0: 5}, {i0: 8}]


async def test_a_refused_purge_is_counted_and_tried_again_with_a_new_client(monkeypatch):
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)
    admins = [FakeAdmin(refuse=RuntimeError("TopicAuthorizationFailedError")), FakeAdmin()]
    made = iter(admins)
    m = Metrics()
    p = purge.Purger(KafkaConfig(bootstrap_servers="kafka:9092"), INTERNAL, m, admin_factory=lambda: next(made))
    i0 = TopicPartition(INTERNAL, 0)
    p.offer({i0: 5})
    await _settle(p)
    assert _count(m, "error") == 1 and admins[0].closed == 1  # the failed client is closed, not reused
    p.offer({i0: 5})  # the same offset again: the records are still there
    await _settle(p)
    assert admins[1].deleted == [{i0: 5}] and _count(m, "ok") == 1


async def test_a_purge_that_hangs_is_given_up_and_close_does_not_wait_for_it(monkeypatch):
    monkeypatch.setattr(purge, "PURGE_TIMEOUT_SECS", 0.2)
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)
    admin = FakeAdmin(hang=True)
    p, m = _purger(admin)
    p.offer({TopicPartition(INTERNAL, 0): 5})
    await asyncio.wait_for(_settle(p), 5)
    assert _count(m, "error") == 1
    admin2 = FakeAdmin(hang=True)
    p2, _ = _purger(admin2)
    p2.offer({TopicPartition(INTERNAL, 0): 5})
    await asyncio.sleep(0)
    await asyncio.wait_for(p2.aclose(), 5)
    assert p2._task.done() and admin2.closed == 1


@pytest.mark.parametrize("committed", [{}, {TopicPartition("logs", 0): 3}])
async def test_nothing_to_purge_starts_nothing(committed, monkeypatch):
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)
    admin = FakeAdmin()
    p, _ = _purger(admin)
    p.offer(committed)
    assert p._task is None and admin.started == 0


async def test_a_partition_that_cannot_be_purged_does_not_hold_back_the_others(monkeypatch):
    # Found by review: aiokafka raises for the whole DeleteRecords call when any partition has no leader (a broker
    # down, replication 1) or answers an error, and the purger kept that partition in every round: none was purged.
    monkeypatch.setattr(purge, "PURGE_INTERVAL_SECS", 0.0)

    class OneLeaderDown(FakeAdmin):
        async def delete_records(self, records, timeout_ms=None):
            if any(tp.partition == 1 for tp in records):
                raise RuntimeError("LeaderNotAvailableError")
            return await super().delete_records(records, timeout_ms)

    admin = OneLeaderDown()
    p, m = _purger(admin)
    i0, i1, i2 = (TopicPartition(INTERNAL, n) for n in range(3))
    p.offer({i0: 5, i1: 7, i2: 9})
    await _settle(p)
    assert sorted(tp.partition for d in admin.deleted for tp in d) == [0, 2]
    assert _count(m, "ok") == 2 and _count(m, "error") == 1
    p.offer({i0: 5, i1: 7, i2: 9})  # only the one left is tried again
    await _settle(p)
    assert _count(m, "error") == 2 and _count(m, "ok") == 2
