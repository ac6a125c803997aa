"""Operator labels and the template catalog on a real broker (noida-db): ``rationad label`` (the CLI function)
writes a label that a ``LabelBook`` started before sees within seconds and a fresh one reads at start; a clear is a
tombstone both see; the catalog sums two replicas' stats; the state topics are created compacted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from rationad import cli
from rationad.catalog import TemplateStat, encode_stat, read_catalog
from rationad.config import ConfigError, KafkaConfig
from rationad.labels import Label, LabelBook, read_labels, write_label
from rationad.templates import template_id, to_template
from rationad.topics import _cleanup_policy, ensure_compacted_topic

pytestmark = pytest.mark.integration

LINE = "2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected"


async def _until(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` held; AssertionError past ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def _policy(kafka: KafkaConfig, topic: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        return await _cleanup_policy(admin, topic)
    finally:
        await admin.close()


async def test_labels_reach_a_running_book_and_a_fresh_one_and_clear(broker, tmp_path, capsys):
    ns = uuid.uuid4().hex[:8]
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    labels_topic, templates_topic = f"labels-{ns}", f"templates-{ns}"
    for topic, key in ((labels_topic, "judge.labels_topic"), (templates_topic, "judge.templates_topic")):
        assert await ensure_compacted_topic(kafka, topic, key=key) == 1
        assert await ensure_compacted_topic(kafka, topic, key=key) == 1  # exists: used as it is
        assert await _policy(kafka, topic) == "compact"

    # Two replicas' counts of one template, and a second template seen by one of them.
    tpl = to_template(LINE)
    stats = [TemplateStat(tpl, "anomalous", "model", "parity error", "m@1", 5, 100.0, 200.0, "r0"),
             TemplateStat(tpl, "anomalous", "model", "parity error", "m@1", 3, 50.0, 300.0, "r1"),
             TemplateStat("fan {*} ok", None, "pending", "", "m@1", 1, 10.0, 10.0, "r1")]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for s in [TemplateStat(tpl, None, "pending", "", "m@1", 1, 100.0, 100.0, "r0"), *stats]:
            key, value = encode_stat(s)
            await producer.send_and_wait(templates_topic, key=key, value=value)
    finally:
        await producer.stop()
    catalog = {s.template: s for s in await read_catalog(kafka, templates_topic)}
    assert (catalog[tpl].count, catalog[tpl].first_seen, catalog[tpl].last_seen) == (8, 50.0, 300.0)
    assert (catalog[tpl].verdict, catalog[tpl].instance, catalog["fan {*} ok"].count) == ("anomalous", "r0,r1", 1)

    changes: list = []
    running = LabelBook(kafka, labels_topic, on_change=lambda tid, lb: changes.append((tid, lb)))
    await running.start(timeout_secs=30)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[kafka]\nbootstrap_servers = '{broker.bootstrap}'\n"
                   f"[judge]\nlevel = 'template'\nlabels_topic = '{labels_topic}'\n"
                   f"templates_topic = '{templates_topic}'\n")
    base = ["--config", str(cfg)]
    try:
        # An unseen template is refused, and nothing is written.
        assert await asyncio.to_thread(cli.main, ["label", "fan 3 failed", "anomalous", "--reason", "x", *base]) == 2
        assert await read_labels(kafka, labels_topic) == []

        rc = await asyncio.to_thread(cli.main, ["label", LINE, "normal", "--reason", "corrected in hardware",
                                                "--by", "ada", *base])
        assert rc == 0
        tid = template_id(tpl)
        waited = await _until(lambda: running.get_id(tid) is not None, 5)
        label = running.get(tpl)
        assert (label.verdict, label.by, label.reason) == ("normal", "ada", "corrected in hardware")
        assert not label.forced
        assert changes == [(tid, label)] and waited < 5

        fresh = LabelBook(kafka, labels_topic)
        await fresh.start()
        assert fresh.labels() == [label]
        await fresh.aclose()

        capsys.readouterr()
        assert await asyncio.to_thread(cli.main, ["templates", "--source", "operator", *base]) == 0
        [row] = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
        assert (row["id"], row["verdict"], row["model_verdict"], row["count"]) == (tid, "normal", "anomalous", 8)

        assert await asyncio.to_thread(cli.main, ["label", tid, "--clear", *base]) == 0
        await _until(lambda: running.get_id(tid) is None, 5)
        assert changes[-1] == (tid, None)
        again = LabelBook(kafka, labels_topic)
        await again.start()
        assert again.labels() == []
        await again.aclose()
    finally:
        await running.aclose()


async def test_a_book_started_before_its_topic_exists_follows_it_once_created(broker):
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    topic = f"labels-{uuid.uuid4().hex[:8]}"
    book = LabelBook(kafka, topic)
    await book.start(timeout_secs=30)
    try:
        label = Label("never seen {*}", "anomalous", "page me", "bob", time.time(), forced=True)
        await write_label(kafka, topic, label)  # creates the topic, compacted
        assert await _policy(kafka, topic) == "compact"
        await _until(lambda: book.get_id(label.id) == label, 5)
        assert await read_labels(kafka, topic) == [label]
    finally:
        await book.aclose()


async def test_a_labels_record_aiokafka_cannot_decode_is_stepped_past_at_start_and_while_following(broker):
    """Found by review: a record whose header key is not UTF-8 (anyone who may write the topic can send one, and
    compaction keeps it) raised from every fetch: every template-level daemon failed its start, a running one stopped
    following labels, and ``rationad label --clear`` / ``templates`` failed. It is stepped past, as on the input."""
    from tests.integration.test_undecodable_record import _BadHeaderKey

    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    topic = f"labels-{uuid.uuid4().hex[:8]}"
    await ensure_compacted_topic(kafka, topic, key="judge.labels_topic")
    first = Label("disk {*} failed", "anomalous", "page me", "bob", time.time())
    later = Label("fan {*} slow", "normal", "known", "ada", time.time())
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()

    async def bad(n: int) -> None:
        batch = _BadHeaderKey(16_384, 0)
        batch.append(timestamp=None, key=b"x%d" % n, value=b"{}", headers=[("HK", b"v")])
        await (await p.send_batch(batch, topic, partition=0))

    try:
        await bad(0)
        await write_label(kafka, topic, first)
        book = LabelBook(kafka, topic)
        await book.start(timeout_secs=30)
        try:
            assert book.labels() == [first]
            await bad(1)
            await write_label(kafka, topic, later)
            await _until(lambda: book.get_id(later.id) == later, 10)
            assert book._follower.unreadable == 2
        finally:
            await book.aclose()
        assert {x.id for x in await read_labels(kafka, topic)} == {first.id, later.id}
    finally:
        await p.stop()


async def test_a_state_topic_that_is_not_compacted_is_refused(broker):
    from rationad.broker import create_topics

    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 1})
    with pytest.raises(ConfigError, match=rf"^judge\.labels_topic: topic '{topic}' has cleanup.policy=delete"):
        await ensure_compacted_topic(kafka, topic, key="judge.labels_topic")
