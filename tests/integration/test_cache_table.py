"""The durable verdict cache on a real broker: written by one daemon life, recovered by the next."""

from __future__ import annotations

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
