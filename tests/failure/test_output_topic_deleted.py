"""A produce failure: the output topic is deleted under a running daemon (``vllm-server`` backend) on a broker that
does not auto-create topics, and created again later (issue 13, "How we will know").

The daemon first judges a third of the stream, so its producer has delivered to the output topic before the topic
goes (a producer that never wrote to the old topic starts the new one at sequence 0 and would hide the failure
below). Then the rest of the stream arrives while the topic is missing. aiokafka retries a send to a missing topic
inside its ``request_timeout_ms`` (40 s by default: UnknownTopicOrPartition from the broker, then a metadata wait once
it knows the topic is gone) and only then fails it, with a retriable error; ``delivery.Delivery`` retries, counts
``rationad_produce_stuck_seconds`` from that first failure, and ``/readyz`` fails 10 s later: judging + 40 s + 10 s
after the rest arrives (86 s measured on 2 loaded cores). Meanwhile the daemon must stay alive, commit nothing past
the sessions it could not deliver, and dead-letter nothing; once the topic is back every block gets its outcome, on
the output topic, the commits reach the input's end, ``/readyz`` answers 200 and SIGTERM exits 0.

Fails on main as of a6f46ce, at its last assertion only: after the topic is recreated every pending event fails with
OutOfOrderSequenceNumber (non-retriable), ``Delivery.event`` takes that for "the broker can never take this record"
and dead-letters it (``undeliverable_event``), while ``/readyz`` is green again. The daemon's producer is idempotent
and its sequence for the partition continues on the new topic; noida-db 0.2.3 then wants sequence 0 (measured with a
bare aiokafka producer, which then failed every later send to the partition too), whereas Kafka accepts any sequence
from a producer it has no state for (``ProducerAppendInfo.checkSequence``), and aiokafka cannot reset a partition's
sequence. A producer-state error is not a property of the record: a new producer (new producer id) delivers the
events on both brokers.

Its own noida-db broker (``auto.create.topics.enable`` switched off with AlterConfigs), so the shared one keeps
auto-creating; noida-db 0.2.3 implements DeleteTopics (the topic leaves the metadata at once)."""

import asyncio
import json
import time

import pytest

from rationad.broker import LocalBroker, create_topics, free_port
from tests.failure.support import (
    Sampler,
    collect_outcomes,
    events,
    inconsistent_ids,
    metric,
    missing_keys,
    new_stream,
    readyz,
    uncovered_lines,
    wait_until,
)
from tests.integration.harness import DaemonProcess, collect, committed_vs_end, produce, read_to_end, write_config

pytestmark = pytest.mark.integration

SESSIONS = 12
# judging the first session of the rest + aiokafka's request_timeout_ms (40 s) + PRODUCE_STUCK_NOT_READY_SECS (10 s);
# one model call took up to 2 min on a 2-core AVX2 machine (float32), so the bounds below are generous: they are
# waits for a condition, not sleeps, and cost nothing when the daemon is quick
NOT_READY_WITHIN_SECS = 400
SETTLE_SECS = 600


async def _admin(bootstrap: str, *, auto_create: bool | None = None, delete: list[str] = ()) -> list[str]:
    """Switch the broker's topic auto-creation and/or delete topics; return the broker's topics afterwards."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if auto_create is not None:
            value = "true" if auto_create else "false"
            await admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1",
                                                      {"auto.create.topics.enable": value})])
        if delete:
            await admin.delete_topics(list(delete))
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _dead_letters(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(error type, key) of every record on the dead-letter topic."""
    return [(dict(r.headers).get("rationad-error-type", b"").decode(), (r.key or b"").decode())
            for r in asyncio.run(read_to_end(bootstrap, topic))]


def test_output_topic_deleted_stalls_without_loss_then_recovers(model, vllm_server, tmp_path):
    with LocalBroker(data_dir=tmp_path / "broker") as b:
        asyncio.run(_admin(b.bootstrap, auto_create=False))
        stream = new_stream(b.bootstrap, SESSIONS, prefix="deleted", partitions=2)
        third = len(stream.lines) // 3
        asyncio.run(produce(b.bootstrap, stream.topic, stream.records(0, third)))
        port = free_port()
        cfg = write_config(tmp_path / "c.toml", bootstrap=b.bootstrap, topic=stream.topic, group=stream.group,
                           model=model, server_url=vllm_server.url, port=port)
        # The durable verdict cache is not under test (its faust group would only lengthen the start).
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log", env={"RATIONAD_CACHE__DURABLE": "false"}).start()
        alive = lambda: daemon.proc.poll() is None
        sampler = None
        try:
            assert wait_until(lambda: readyz(port) == 200, 180, alive=alive), daemon.log()[-3000:]
            # Everything before the deletion is delivered and committed: the producer knows the topic.
            warm = asyncio.run(committed_vs_end(b.bootstrap, stream.topic, stream.group, wait_secs=SETTLE_SECS))
            assert all(c == e for c, e in warm.values()), (warm, daemon.log()[-3000:])
            warm_events = events(asyncio.run(read_to_end(b.bootstrap, stream.out)))
            assert warm_events, daemon.log()[-3000:]

            topics = asyncio.run(_admin(b.bootstrap, delete=[stream.out]))
            assert stream.out not in topics and stream.dlq in topics, topics
            t_del = time.monotonic()
            sampler = Sampler(lambda: (round(time.monotonic() - t_del, 1), readyz(port),
                                       metric(port, "rationad_produce_stuck_seconds")), interval=1.0)
            asyncio.run(produce(b.bootstrap, stream.topic, stream.records(third)))
            assert wait_until(lambda: readyz(port) == 503, NOT_READY_WITHIN_SECS, alive=alive), \
                (sampler.seen[::5], daemon.log()[-3000:])
            t_not_ready = time.monotonic() - t_del
            time.sleep(3)  # a few commit intervals (200 ms) while stuck
            assert alive(), daemon.log()[-3000:]
            during = asyncio.run(committed_vs_end(b.bootstrap, stream.topic, stream.group))
            dead_during = _dead_letters(b.bootstrap, stream.dlq)
            topics = asyncio.run(_admin(b.bootstrap))
            assert stream.out not in topics, f"the output topic came back by itself: {topics}"
            stuck = metric(port, "rationad_produce_stuck_seconds")

            asyncio.run(create_topics(b.bootstrap, {stream.out: 1}))
            t_back = time.monotonic() - t_del
            rest_keys = {k for k, _ in stream.lines[third:]}
            evs, _ = collect_outcomes(stream, timeout=SETTLE_SECS, keys=rest_keys)
            final = asyncio.run(committed_vs_end(b.bootstrap, stream.topic, stream.group, wait_secs=SETTLE_SECS))
            assert wait_until(lambda: readyz(port) == 200, 60, alive=alive), daemon.log()[-3000:]
            t_ready = time.monotonic() - t_del
            evs = events(asyncio.run(read_to_end(b.bootstrap, stream.out)))
            dead = _dead_letters(b.bootstrap, stream.dlq)
            inputs = asyncio.run(collect(b.bootstrap, stream.topic, lambda got: len(got) >= len(stream.lines), 60))
            code = daemon.terminate()
        finally:
            if sampler is not None:
                sampler.stop()
            daemon.kill()
        log = daemon.log()
        print(f"deleted at 0 s; /readyz 503 at {t_not_ready:.0f} s (stuck {stuck} s); recreated at {t_back:.0f} s; "
              f"ready again at {t_ready:.0f} s; samples (t, readyz, stuck): {sampler.seen[::10]}")

        assert code == 0, log[-3000:]
        # The sends waited (aiokafka's own retries, then ours); none was given up as undeliverable. noida-db rejects the
        # idempotent producer's continued sequence on the recreated topic: the daemon replaces its producer then.
        assert "event_undeliverable" not in log, log[-3000:]
        assert stuck is not None and stuck > 10, stuck
        # While the topic was missing, no partition's commit passed the first line of a session still awaiting its
        # output (every block of the rest had one, bar those the model stage dead-lettered for their own answers).
        dead_keys = {k for _, k in dead_during}
        for p, (committed, end) in during.items():
            waiting = [r.offset for r in inputs if r.partition == p and r.offset >= warm[p][1]
                       and r.key.decode() not in dead_keys]
            assert waiting and committed is not None and committed <= min(waiting) < end, (p, during, warm)

        # After the topic came back: every block of the rest has an outcome, every line of it is covered, commits at
        # the end. (The warm third's events went with the deleted topic.)
        assert all(c == e for c, e in final.values()), (final, log[-3000:])
        dead_sessions = [json.loads(r.value)["session"] for r in asyncio.run(read_to_end(b.bootstrap, stream.dlq))
                         if dict(r.headers).get("rationad-error-stage") == b"model"]
        rest = type(stream)(stream.bootstrap, stream.topic, stream.lines[third:],
                            {k: stream.labels[k] for k in rest_keys})
        assert not missing_keys(rest, evs, dead_sessions), (missing_keys(rest, evs, dead_sessions), log[-3000:])
        assert not inconsistent_ids(evs), inconsistent_ids(evs)
        rest_lines = {(k, p, o) for k, p, o in uncovered_lines(stream, evs, dead_sessions)
                      if o >= warm[p][1]}
        assert not rest_lines, sorted(rest_lines)[:20]

        # Nothing was dead-lettered because the topic was missing, then or after it came back: a missing topic and the
        # producer's state on the recreated topic are not properties of the events.
        assert not [d for d in dead if d[0] == "undeliverable_event"], (dead, log[-3000:])
        assert "event_undeliverable" not in log, log[-3000:]
