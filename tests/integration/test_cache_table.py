"""The durable verdict cache on a real broker: written by one daemon life, recovered by the next."""

from __future__ import annotations

import os
import uuid

import pytest

from rationad.cache import VerdictCache
from rationad.cache_table import ChangelogStore
from rationad.config import KafkaConfig

pytestmark = pytest.mark.integration


async def test_changelog_store_survives_a_restart_and_drops_evicted(broker):
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"cache-{uuid.uuid4().hex[:8]}")
    first = VerdictCache(3, store=ChangelogStore(kafka, namespace="m@1/p1"))
    assert await first.start() == 0
    for k in "abcd":  # a is evicted: its tombstone must win at recovery
        first.put(k, f"<think>{k}</think>\n<answer>normal</answer>")
    await first.aclose()

    again = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@1/p1"))
    assert await again.start() == 3
    assert again.get("a") is None and again.get("d").startswith("<think>d")
    await again.aclose()

    other_model = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@2/p1"))
    assert await other_model.start() == 0  # a new model version never reuses old verdicts
    await other_model.aclose()


async def test_each_model_identity_has_its_own_changelog_so_a_replica_holds_only_its_model_s_entries(broker):
    """Found by review, failing before its fix: every model version's entries went to one changelog topic and the
    memory:// store recovered all of them, so each model upgrade added up to cache.max_bytes per replica for ever
    (the old model's entries were only filtered out when read)."""
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"ns-{uuid.uuid4().hex[:8]}")
    old = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@1/p1"))
    await old.start()
    for k in "abc":
        old.put(k, f"<think>{k}</think>\n<answer>normal</answer>")
    await old.aclose()
    new_store = ChangelogStore(kafka, namespace="m@2/p1")
    new = VerdictCache(10, store=new_store)
    try:
        assert await new.start() == 0
        assert len(new_store._table) == 0  # nothing of the old model is held in memory
        new.put("d", "<think>d</think>\n<answer>anomalous</answer>")
    finally:
        await new.aclose()
    assert new_store.changelog_topic != old.store.changelog_topic
    assert new_store.changelog_topic.startswith(f"{kafka.group_id}-verdicts-cache-")
    again = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@1/p1"))  # a rollback finds its verdicts
    try:
        assert await again.start() == 3 and again.get("d") is None
    finally:
        await again.aclose()


@pytest.mark.parametrize(("key", "value"), [(b'"m@1/p1/emptied"', b""), (b"m@1/p1/rawkey", b'"x"')],
                         ids=["empty value", "key not JSON"])
async def test_a_record_faust_cannot_decode_does_not_stall_recovery(broker, key, value):
    """Found by review (2026-12-03), failing before its fix: faust's JSON serializers could not decode such a record
    (an empty value written with kcat), recovery never finished, and compaction keeps it: every start waited the whole
    recovery timeout and ran without the durable cache."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"bad-{uuid.uuid4().hex[:8]}")
    first = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@1/p1"))
    await first.start()
    first.put("good", "<think>L1 fine.</think>\n<answer>normal</answer>")
    await first.aclose()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(first.store.changelog_topic, key=key, value=value)
    finally:
        await producer.stop()
    again = VerdictCache(10, store=ChangelogStore(kafka, namespace="m@1/p1"))
    try:
        recovered = await asyncio.wait_for(again.start(), 30)  # a clean recovery takes a second or two
    finally:
        await again.aclose()
    assert recovered == 1 and again.get("good") is not None


async def test_a_start_that_times_out_leaves_nothing_running(broker):
    """Found by review (2026-12-03), failing before its fix: the faust app was remembered only once started, so the
    daemon's ``aclose`` after a recovery timeout stopped nothing: its consumer, fetcher and producer ran on unowned."""
    import asyncio

    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"cancel-{uuid.uuid4().hex[:8]}")
    before = set(asyncio.all_tasks())
    store = ChangelogStore(kafka, namespace="m@1/p1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(VerdictCache(10, store=store).start(), 0.3)  # the daemon's recovery timeout, scaled
    await asyncio.wait_for(store.aclose(), 10)
    await asyncio.sleep(3)
    left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert store._table.app.should_stop and not left, sorted({t.get_coro().__qualname__ for t in left})[:10]


async def test_the_store_leaves_nothing_in_the_working_directory(broker, tmp_path, monkeypatch):
    """Found in the repository root after test runs (``g-kill9-...-verdicts-data``): faust made its data folder
    ``<app id>-data`` in the working directory, which a daemon with a read-only working directory cannot write. The
    table lives in memory (``memory://``); the folder is a temporary one, removed at close."""
    monkeypatch.chdir(tmp_path)
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"wd-{uuid.uuid4().hex[:8]}")
    store = ChangelogStore(kafka, namespace="m@1/p1")
    cache = VerdictCache(3, store=store)
    try:
        await cache.start()
        cache.put("a", "<think>a</think>\n<answer>normal</answer>")
        assert list(tmp_path.iterdir()) == []
        datadir = store._datadir.name
    finally:
        await cache.aclose()
    assert list(tmp_path.iterdir()) == [] and not os.path.exists(datadir)
