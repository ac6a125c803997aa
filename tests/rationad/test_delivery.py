"""Delivery's contract as properties: whatever order outputs close, fail, are retried and are acknowledged in, a
commit never passes the first offset of an output that is not acknowledged, and every hold is released once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from hypothesis import given, settings
from hypothesis import strategies as st

from rationad.delivery import Delivery, Output, Undeliverable, is_retriable
from rationad.dlq import DeadLetter, fit, record_bytes
from rationad.metrics import Metrics
from rationad.offsets import PartitionOffsets
from tests.rationad.fakes import FakeProducer


def delivery(producer=None, fatal=None, max_message_bytes=1_000_000) -> Delivery:
    async def no_sleep(_secs):
        await asyncio.sleep(0)

    return Delivery(dlq_topic="dlq", max_message_bytes=max_message_bytes, metrics=Metrics(),
                    on_fatal=fatal or (lambda msg: None), producer=producer, sleep=no_sleep)


@given(
    n=st.integers(1, 40),
    acks=st.permutations(list(range(40))),
    commit_points=st.sets(st.integers(0, 40)),
    open_from=st.one_of(st.none(), st.integers(0, 39)),
)
@settings(max_examples=200, deadline=None)
def test_commits_never_pass_an_unacknowledged_output(n, acks, commit_points, open_from):
    d = delivery()
    offsets = PartitionOffsets()
    holds = []
    for o in range(n):
        offsets.consumed(o)
        holds.append(d.hold(offsets, o))
    order = [i for i in acks if i < n]
    committed = None
    for step, i in enumerate(order):
        holds[i].release()
        if step in commit_points:
            off = Delivery.committable({"tp": (offsets, open_from)}).get("tp")
            if off is not None:
                unacked = [h.offset for h in holds if not h.released]
                assert not unacked or off <= min(unacked)
                assert open_from is None or off <= open_from
                assert committed is None or off > committed
                offsets.mark_committed(off)
                committed = off
    assert d.held == 0
    final = Delivery.committable({"tp": (offsets, open_from)}).get("tp")
    expected = n if open_from is None else min(n, open_from)
    assert (final if final is not None else committed) == expected


def test_a_hold_released_twice_is_a_bug_not_a_silent_miscount():
    d = delivery()
    offsets = PartitionOffsets()
    offsets.consumed(0)
    a, b = d.hold(offsets, 0), d.hold(offsets, 0)
    a.release()
    with pytest.raises(RuntimeError):
        a.release()
    assert offsets.committable(None) == 0  # b still holds offset 0
    b.release()
    assert offsets.committable(None) == 1


def test_retriable_and_fatal_errors_are_told_apart():
    from aiokafka.errors import ClusterAuthorizationFailedError, RecordTooLargeError, UnknownError

    assert is_retriable(KafkaConnectionError())
    assert is_retriable(OSError("reset"))
    assert not is_retriable(MessageSizeTooLargeError())
    assert not is_retriable(RecordTooLargeError())
    # the cluster's refusals, not the record's (review): an ACL missing or revoked, an unknown broker error
    assert is_retriable(TopicAuthorizationFailedError())
    assert is_retriable(ClusterAuthorizationFailedError())
    assert is_retriable(UnknownError())


async def test_a_record_the_broker_refuses_as_invalid_is_dead_lettered_not_retried_for_ever():
    """Found by review (2026-12-07), failing before its fix: INVALID_RECORD (error 87: a record without a key sent to
    a compacted topic, or one a broker's validation refused) has no class in aiokafka 0.14 and read as UnknownError,
    retried every 30 s for ever: no dead letter, no stop, the partition's commit held at it."""
    from aiokafka.errors import for_code

    assert for_code(87).errno == 87 and not is_retriable(for_code(87)())
    producer = FakeProducer(fail=lambda rec: for_code(87)() if rec.topic == "out" else None)
    d = delivery(producer)
    offsets = PartitionOffsets()
    offsets.consumed(0)
    letters = []

    def dead_letter(err):
        letters.append(err)
        return DeadLetter(b"k", b"event", [], "undeliverable")

    assert await d.event(d.hold(offsets, 0), Output("out", b"k", b"event", []), fallback=dead_letter) is False
    assert "InvalidRecordError" in str(letters[0])
    assert [s.topic for s in producer.sent] == ["dlq"] and producer.attempts == 2  # once each: no retry
    assert Delivery.committable({"tp": (offsets, None)}).get("tp") == 1


async def test_a_record_without_a_key_refused_as_invalid_holds_its_offsets():
    """Found by review of the fix above (2026-12-07), failing on it: a record without a key (a repartition pack)
    refused as INVALID_RECORD is refused for the topic's settings (compacted), not for what it is: dead-lettered,
    every pack was committed past unjudged. It is retried, holding its offsets, until the topic takes it."""
    from aiokafka.errors import for_code

    refusals = [for_code(87)() for _ in range(4)]
    producer = FakeProducer(fail=lambda rec: refusals.pop() if refusals and rec.topic == "internal" else None)
    d = delivery(producer)
    offsets = PartitionOffsets()
    offsets.consumed(0)
    hold = d.hold(offsets, 0)
    forwarding = asyncio.create_task(d.forward([(hold, [Output("internal", None, b"pack", [])])],
                                               fallback=lambda out, err: pytest.fail(f"dead-lettered: {err}")))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not forwarding.done() and Delivery.committable({"tp": (offsets, None)}).get("tp") in (None, 0)
    await forwarding
    assert [s.topic for s in producer.sent] == ["internal"]
    assert Delivery.committable({"tp": (offsets, None)}).get("tp") == 1


async def test_send_waits_out_retriable_errors_then_succeeds():
    failures = [KafkaConnectionError(), KafkaConnectionError()]
    producer = FakeProducer(fail=lambda rec: failures.pop() if failures else None)
    d = delivery(producer)
    await d.send(Output("out", b"k", b"v", []))
    assert producer.attempts == 3 and len(producer.sent) == 1 and d.stuck_secs == 0


async def test_send_raises_undeliverable_at_once_for_a_non_retriable_error():
    producer = FakeProducer(fail=lambda rec: MessageSizeTooLargeError())
    with pytest.raises(Undeliverable):
        await delivery(producer).send(Output("out", b"k", b"v", []))
    assert producer.attempts == 1


async def test_an_output_topic_the_acl_refuses_holds_its_offsets_until_the_write_is_granted():
    """Found by review: TopicAuthorizationFailed (a Write ACL missing, revoked, or still propagating) was a refusal of
    the record: every event (and, on the repartition topic, every line) was dead-lettered and its input committed
    past, while readiness stayed green. It is the cluster's refusal: the send is retried, holding the offsets."""
    refusals = [TopicAuthorizationFailedError() for _ in range(5)]
    producer = FakeProducer(fail=lambda rec: refusals.pop() if refusals and rec.topic == "out" else None)
    d = delivery(producer)
    offsets = PartitionOffsets()
    offsets.consumed(0)
    hold = d.hold(offsets, 0)
    waiting = asyncio.create_task(d.event(hold, Output("out", b"k", b"event", []),
                                          fallback=lambda err: pytest.fail(f"dead-lettered: {err}")))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done() and Delivery.committable({"tp": (offsets, None)}).get("tp") in (None, 0)
    assert await waiting is True  # the grant arrived: delivered, nothing dead-lettered
    assert [s.topic for s in producer.sent] == ["out"] and producer.attempts == 6
    assert Delivery.committable({"tp": (offsets, None)}).get("tp") == 1


@given(value=st.binary(max_size=50_000), key=st.one_of(st.none(), st.binary(max_size=3_000)),
       hdr=st.binary(max_size=30_000), limit=st.integers(16_384, 40_000))
@settings(max_examples=100, deadline=None)
def test_fit_always_fits_and_says_when_it_cut(value, key, hdr, limit):
    dl = DeadLetter(key, value, [("trace", hdr), ("rationad-error-type", b"too_large")], "too_large")
    out = fit(dl, limit)
    assert record_bytes(out.key, out.value, out.headers) <= limit
    h = dict(out.headers)
    if out is dl:
        assert "rationad-truncated" not in h
    else:
        assert h["rationad-truncated"] == b"true" and h["rationad-original-bytes"] == str(len(value)).encode()
        assert h["rationad-error-type"] == b"too_large"
        assert value.startswith(out.value)


async def test_a_rejected_producer_state_replaces_the_producer_and_resends_the_record():
    """After an output topic is deleted and recreated, noida-db rejects the idempotent producer's continued sequence
    (OutOfOrderSequenceNumber): the record is fine, the producer is not. It used to be dead-lettered as undeliverable."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    old = FakeProducer(fail=lambda rec: OutOfOrderSequenceNumber())
    new = FakeProducer()
    stopped = []
    old.stop = lambda: stopped.append(True) or asyncio.sleep(0)

    async def new_producer():
        return new

    d = delivery(old)
    d.new_producer = new_producer
    offsets = PartitionOffsets()
    offsets.consumed(0)
    hold = d.hold(offsets, 0)
    delivered = await d.event(hold, Output("out", b"k", b"event", []), fallback=lambda err: pytest.fail(err))
    assert delivered and [s.value for s in new.sent] == [b"event"] and old.sent == []
    assert d.producer is new and d.generation == 1 and stopped == [True] and hold.released


async def test_a_replaced_producer_slow_to_stop_is_left_to_finish_and_holds_no_send():
    """Left from 2026-12-07, failing before its fix: a replaced producer's stop was cut at 10 s, which cancelled it
    inside aiokafka's stop (its sender task and connections stayed for good, and a second stop does nothing), and
    every send waited those 10 s behind the replacement."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    old, new = FakeProducer(fail=lambda rec: OutOfOrderSequenceNumber()), FakeProducer()
    flushed, cancelled = asyncio.Event(), []

    async def slow_stop():
        try:
            await flushed.wait()  # its batches expire, or drain, some time later
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    old.stop = slow_stop

    async def new_producer():
        return new

    d = delivery(old)
    d.new_producer = new_producer
    await asyncio.wait_for(d.send(Output("out", b"k", b"event", [])), 1)  # not behind the old one's stop
    assert [s.value for s in new.sent] == [b"event"] and len(d._retiring) == 1
    flushed.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert not d._retiring and not cancelled


async def test_a_send_caught_in_the_replaced_producer_is_resent_on_the_new_one():
    """Found by review (2026-12-06), failing before its fix: a send still inside the old producer (waiting for
    metadata or room in a batch) when another send's state error replaced it got aiokafka's ProducerClosed from the
    old one's stop(), which is not retriable: its event went to the dead-letter topic and its offset was committed."""
    from aiokafka.errors import OutOfOrderSequenceNumber, ProducerClosed

    class Old:
        def __init__(self):
            self.closed = asyncio.Event()

        async def send(self, topic, value=None, key=None, headers=None, partition=None):
            if value == b"A":
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(OutOfOrderSequenceNumber())
                return fut
            await self.closed.wait()  # as aiokafka's add_message waiting for room, until the accumulator closes
            raise ProducerClosed()

        async def stop(self):
            self.closed.set()

    new = FakeProducer()

    async def new_producer():
        return new

    d = delivery(Old())
    d.new_producer = new_producer
    offsets = PartitionOffsets()
    offsets.consumed(1)
    waiting = asyncio.create_task(d.event(d.hold(offsets, 1), Output("out", b"k", b"B", []),
                                          fallback=lambda err: pytest.fail(err)))
    await asyncio.sleep(0)
    assert await d.event(d.hold(offsets, 0), Output("out", b"k", b"A", []), fallback=lambda err: pytest.fail(err))
    assert await waiting
    assert sorted(s.value for s in new.on("out")) == [b"A", b"B"] and new.on("dlq") == []


async def test_a_producer_rejected_again_and_again_is_replaced_with_a_backoff():
    """Found by review (2026-12-06): after a replacement the send retried at once, so a broker rejecting every new
    producer's state too made the daemon start producers in a tight loop."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    made, slept = [], []

    async def new_producer():
        made.append(FakeProducer(fail=(lambda rec: OutOfOrderSequenceNumber()) if len(made) < 4 else None))
        return made[-1]

    async def sleep(secs):
        slept.append(secs)

    d = delivery(FakeProducer(fail=lambda rec: OutOfOrderSequenceNumber()))
    d.new_producer = new_producer
    d._sleep = sleep
    await d.send(Output("out", b"k", b"v", []))
    assert len(made) == 5 and [s.value for s in made[-1].sent] == [b"v"]
    assert len(slept) == 4 and slept == sorted(slept) and slept[0] > 0  # every replacement after the first waits


async def test_many_sends_rejected_by_every_producer_replace_it_one_backoff_after_another():
    """Found by review (2026-12-06) of the per-send backoff: 50 sends failing in turn each replaced the producer on
    its own schedule (28 producers in a second); the backoff is the delivery's, shared by every send."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    made, slept = [], []

    async def new_producer():
        made.append(FakeProducer(fail=(lambda rec: OutOfOrderSequenceNumber()) if len(made) < 5 else None))
        return made[-1]

    async def sleep(secs):
        slept.append(secs)
        await asyncio.sleep(0)

    d = delivery(FakeProducer(fail=lambda rec: OutOfOrderSequenceNumber()))
    d.new_producer = new_producer
    d._sleep = sleep
    await asyncio.gather(*(d.send(Output("out", b"k", b"%d" % i, [])) for i in range(50)))
    assert len(made) == 6 and len(made[-1].sent) == 50
    replacement_waits = [x for x in slept if x >= 0.1]
    assert len(replacement_waits) == 5 and replacement_waits == sorted(replacement_waits)  # each after the first


async def test_stuck_counts_from_the_oldest_send_still_waiting():
    never = asyncio.get_running_loop().create_future()

    class Hanging(FakeProducer):
        async def send(self, topic, value=None, key=None, headers=None):
            return never

    d = delivery(Hanging())
    task = asyncio.create_task(d.send(Output("out", b"k", b"v", [])))
    await asyncio.sleep(0.2)
    assert d.stuck_secs >= 0.15
    never.set_result(None)
    await task
    assert d.stuck_secs == 0


async def test_a_failure_to_start_the_replacement_producer_is_retried_not_leaked():
    """Found by review (2026-12-03), failing before its fix: the broker unreachable while a producer is replaced
    (after UnknownProducerId) escaped ``send``, and the forward's hold was never released (its partition wedged)."""
    from aiokafka.errors import UnknownProducerId

    old = FakeProducer(fail=lambda rec: UnknownProducerId())
    new = FakeProducer()
    calls = []

    async def new_producer():
        calls.append(1)
        if len(calls) == 1:
            raise KafkaConnectionError("Unable to bootstrap from [('kafka', 9092)]")
        return new

    d = delivery(old)
    d.new_producer = new_producer
    d._sleep = lambda s: asyncio.sleep(0)
    offsets = PartitionOffsets()
    offsets.consumed(0)
    hold = d.hold(offsets, 0)
    await asyncio.wait_for(d.forward([(hold, [Output("internal", b"k", b"v", [], 0)])], lambda o, e: []), 5)
    assert hold.released and len(calls) == 2 and len(new.sent) == 1

