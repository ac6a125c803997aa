"""Delivery: the one place that holds input offsets, produces events and dead letters, and decides what to commit.

The contract (at-least-once, commit after produce), written once:

    A partition's committed offset never passes (a) a record not yet consumed, (b) the first offset of a session
    still open in the windower, or (c) the first offset of any output that is not yet acknowledged by the broker.
    An output is *held* from the moment it exists (a session closes, a record is found undecodable) until the
    broker acknowledges it, its fallback dead letter is acknowledged, or the partition is revoked.

``offsets.PartitionOffsets`` is the per-partition arithmetic; a ``Hold`` is one output's claim on it, released
exactly once. Produce errors are sorted by what can help:

- retriable (broker down, leader moving, timeouts, a topic that is missing for now): wait and try again, for as
  long as it takes, with backoff; ``stuck_secs`` (the age of the oldest send not yet acknowledged) says so and
  readiness goes false meanwhile;
- a producer whose own state the broker no longer accepts (the idempotent producer's sequence after a topic was
  deleted and recreated, an expired producer id, a fenced epoch): that says nothing about the record, so the producer
  is replaced (a new producer id) and the record sent again;
- an event the broker can never take (too large, not allowed): the session goes to the dead-letter topic instead,
  with the error;
- a dead letter that is too large: cut to fit (headers say so: ``rationad-truncated``, ``rationad-original-bytes``);
- a dead letter refused for what it is, not its size (an invalid timestamp): nothing else can hold it, so
  ``on_fatal`` stops the daemon with a non-zero exit; the offset was never committed past it;
- any other refusal (an ACL missing or revoked, an old broker), of an event or a dead letter: retried with backoff,
  holding the offsets (``RECORD_ERRORS``, ``is_retriable``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, NamedTuple, Protocol

import structlog

from rationad.dlq import DeadLetter, fit
from rationad.metrics import Metrics
from rationad.offsets import PartitionOffsets

log = structlog.get_logger("rationad.delivery")

MAX_BACKOFF_SECS = 30.0
COMMIT_TIMEOUT_SECS = 5.0  # a commit normally takes milliseconds; one that hangs must not hold the main loop or a stop
MIN_DEAD_LETTER_BYTES = 4_096  # a dead letter is never cut below this: headers still say what it was
# Errors about the idempotent producer's own state, not about the record: a new producer (new id) clears them.
PRODUCER_STATE_ERRORS = frozenset({"OutOfOrderSequenceNumber", "UnknownProducerId", "InvalidProducerEpoch",
                                   "InvalidProducerIdMapping", "ProducerFenced"})


class Producer(Protocol):
    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None, partition: int | None = None
                   ) -> asyncio.Future: ...


class Undeliverable(Exception):
    """The broker can never accept this record as it is (non-retriable produce error)."""

    def __init__(self, topic: str, cause: BaseException) -> None:
        super().__init__(f"{topic}: {type(cause).__name__}: {cause}")
        self.topic = topic
        self.cause = cause

    @property
    def too_large(self) -> bool:
        return type(self.cause).__name__ in ("MessageSizeTooLargeError", "RecordTooLargeError")


# The broker's refusals of a record for what the record is: it can never take it as it is, so it is dead-lettered
# (cut to fit) and its input committed. Every other refusal is the broker's or the cluster's (an ACL missing or
# revoked: TopicAuthorizationFailed, ClusterAuthorizationFailed; UnknownError; an old broker): retried with backoff,
# holding the offsets (``stuck_secs`` fails readiness and RationadProduceFailing fires), never dead-lettered. A
# missing Write ACL on the output or repartition topic dead-lettered every event or line and committed past them.
RECORD_ERRORS = frozenset({"MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError",
                           "InvalidTimestampError", "CorruptRecordException", "InvalidMessageError",
                           "InvalidRecordError"})


def _know_invalid_record() -> None:
    """Teach aiokafka INVALID_RECORD (error 87: a record without a key sent to a compacted topic, one a broker's
    validation refused). aiokafka 0.14 has no class for it: read as ``UnknownError``, it was retried for ever, the
    partition's commit held at it, with no dead letter and no stop (review 2026-12-07)."""
    from aiokafka import errors

    if 87 not in errors.kafka_errors:
        class InvalidRecordError(errors.BrokerResponseError):
            errno = 87
            message = "INVALID_RECORD"
            description = "The broker refused the record: no key for a compacted topic, or its validation failed."

        errors.kafka_errors[87] = InvalidRecordError


_know_invalid_record()


def is_retriable(exc: BaseException, keyed: bool = True) -> bool:
    """Whether a failed send is tried again: anything but a refusal of the record itself (``RECORD_ERRORS``). A record
    without a key (``keyed`` False: repartition packs, some dead letters) refused as INVALID_RECORD is refused for
    the topic's settings (compacted), not for what it is: tried again, holding its offsets, as an ACL refusal is
    (dead-lettered, every pack of a compacted internal topic was committed past unjudged: review 2026-12-07)."""
    name = type(exc).__name__
    return name not in RECORD_ERRORS or (name == "InvalidRecordError" and not keyed)


class Hold:
    """One output's claim on its partition's committable offset; ``release`` once it is acknowledged."""

    __slots__ = ("offsets", "offset", "nbytes", "_delivery", "released")

    def __init__(self, delivery: Delivery, offsets: PartitionOffsets, offset: int, nbytes: int = 0) -> None:
        self._delivery = delivery
        self.offsets = offsets
        self.offset = offset
        self.nbytes = nbytes
        self.released = False

    def release(self) -> None:
        if self.released:  # a second release would free another output's hold on the same offset
            raise RuntimeError(f"hold on offset {self.offset} released twice")
        self.released = True
        self.offsets.release(self.offset)
        self._delivery._held -= 1
        self._delivery.held_bytes -= self.nbytes
        self._delivery.metrics.sessions_pending.set(self._delivery._held)


class Output(NamedTuple):
    """One record to produce (a tuple: the repartition hop makes many); ``partition`` None: the producer's
    partitioner chooses from the key."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None = None


class Delivery:
    """Holds, produces and commits for one consumer. ``producer`` may be set after construction (started late);
    ``new_producer`` builds and starts a replacement when the broker rejects the producer's own state."""

    def __init__(self, *, dlq_topic: str, max_message_bytes: int, metrics: Metrics,
                 on_fatal: Callable[[str], None], producer: Producer | None = None,
                 new_producer: Callable[[], Awaitable[Producer]] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.producer = producer
        self.new_producer = new_producer
        self.dlq_topic = dlq_topic
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.on_fatal = on_fatal
        self._sleep = sleep
        self._held = 0
        # Holds that can never clear: their dead letters (or the forwards that fell back to them) were undeliverable
        # and stopped the daemon (``on_fatal``). The drain waits for the others only.
        self.stuck = 0
        self.held_bytes = 0  # estimated bytes of the sessions behind the holds (backpressure bounds them)
        self._sending: dict[int, float] = {}  # send token -> monotonic start, until acknowledged or given up
        self._token = 0
        self._replacing: asyncio.Lock | None = None
        self.generation = 0  # how many times the producer was replaced
        # One backoff for every send: a replacement follows the last one by at least this, doubling while new
        # producers are rejected too, back to none once a record is acknowledged (not one backoff per send: many
        # sends failing in turn started producers in a burst)
        self._replace_wait = 0.0
        self._replaced_at: float | None = None
        self._retiring: set[asyncio.Task] = set()  # replaced producers' stops, left to finish

    # ---- holds ----------------------------------------------------------------------------------------------
    @property
    def held(self) -> int:
        """Outputs (sessions and dead letters) awaiting acknowledgement: what backpressure counts."""
        return self._held

    def hold(self, offsets: PartitionOffsets, offset: int, nbytes: int = 0) -> Hold:
        """Hold ``offset`` until the output is acknowledged; ``nbytes`` estimates the memory it keeps meanwhile."""
        offsets.hold(offset)
        self._held += 1
        self.held_bytes += nbytes
        self.metrics.sessions_pending.set(self._held)
        return Hold(self, offsets, offset, nbytes)

    @property
    def stuck_secs(self) -> float:
        """Age of the oldest send still waiting for its acknowledgement (0 when none is waiting)."""
        return time.monotonic() - min(self._sending.values()) if self._sending else 0.0

    def _start_send(self) -> int:
        self._token += 1
        self._sending[self._token] = time.monotonic()
        return self._token

    async def _replace_producer(self, failed: Producer | None, cause: BaseException) -> None:
        """Swap in a new producer (once for all the sends that saw ``failed`` fail)."""
        if self.new_producer is None:
            raise Undeliverable("(producer)", cause)
        if self._replacing is None:
            self._replacing = asyncio.Lock()
        async with self._replacing:
            if self.producer is not failed:  # another send replaced it already
                return
            if self._replaced_at is not None:
                wait = self._replace_wait - (time.monotonic() - self._replaced_at)
                if wait > 0:
                    await self._sleep(wait)
            log.warning("producer_replaced", error=f"{type(cause).__name__}: {cause}",
                        reason="the broker rejected the producer's own state (sequence, id or epoch)")
            self.producer = await self.new_producer()
            self.generation += 1
            self._replaced_at = time.monotonic()
            self._replace_wait = min(max(2 * self._replace_wait, 0.2), MAX_BACKOFF_SECS)
            if failed is not None:
                # Stopped beside the sends, to its end: its stop flushes what it holds (until those batches expire,
                # with the broker away). Cut at 10 s, it was cancelled inside aiokafka's stop, which counts as done:
                # its sender task and connections stayed for good; and every send waited those 10 s on the lock.
                task = asyncio.create_task(self._retire(failed.stop()), name="producer-retire")  # type: ignore
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(stopping: Awaitable[Any]) -> None:
        try:
            await stopping
        except Exception as exc:  # noqa: BLE001 - it is replaced: its failure to stop is only logged
            log.info("replaced_producer_stop_failed", error=f"{type(exc).__name__}: {exc}")

    # ---- producing ------------------------------------------------------------------------------------------
    async def send(self, out: Output) -> None:
        """Send and wait for the acknowledgement, retrying retriable errors for as long as it takes; raises
        ``Undeliverable`` when the broker can never take the record."""
        backoff = 0.2
        token = self._start_send()
        try:
            while True:
                producer = self.producer
                try:
                    assert producer is not None, "producer not started"
                    fut = await self._send(producer, out)
                    await fut
                    self._replace_wait = 0.0
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.metrics.errors.labels("produce", type(exc).__name__).inc()
                    if producer is not self.producer:  # replaced meanwhile (its stop() fails what it still held):
                        continue  # the error says nothing of this record; the new producer sends it
                    if type(exc).__name__ in PRODUCER_STATE_ERRORS:
                        try:
                            await self._replace_producer(producer, exc)
                        except (asyncio.CancelledError, Undeliverable):
                            raise
                        except Exception as start_exc:  # e.g. the broker unreachable for a moment: try again later
                            self.metrics.errors.labels("produce", type(start_exc).__name__).inc()
                            log.warning("producer_replace_failed", error=f"{type(start_exc).__name__}: {start_exc}",
                                        retry_in_secs=round(backoff, 2))
                            await self._sleep(backoff)
                            backoff = min(backoff * 2, MAX_BACKOFF_SECS)
                        continue
                    if not is_retriable(exc, keyed=out.key is not None):
                        raise Undeliverable(out.topic, exc) from exc
                    log.warning("produce_failed", topic=out.topic, error=f"{type(exc).__name__}: {exc}",
                                retry_in_secs=round(backoff, 2))
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECS)
        finally:
            self._sending.pop(token, None)

    async def event(self, hold: Hold, out: Output, fallback: Callable[[str], DeadLetter]) -> bool:
        """Deliver an event and release its hold; an event the broker can never take is replaced by the dead letter
        ``fallback(error)``. Returns True when the event itself was delivered."""
        try:
            await self.send(out)
        except Undeliverable as exc:
            log.error("event_undeliverable", topic=out.topic, error=str(exc), fallback="dead-letter topic")
            await self.dead_letter(hold, fallback(str(exc)))
            return False
        hold.release()
        return True

    async def dead_letter(self, hold: Hold | None, dl: DeadLetter) -> None:
        """Deliver one dead letter (cut to fit) and release its hold."""
        limit = self.max_message_bytes
        while True:
            fitted = fit(dl, limit)
            try:
                await self.send(Output(self.dlq_topic, fitted.key, fitted.value, fitted.headers))
                break
            except Undeliverable as exc:
                if exc.too_large and limit > MIN_DEAD_LETTER_BYTES:  # the broker's own limit is lower than ours
                    limit = max(MIN_DEAD_LETTER_BYTES, limit // 2)
                    log.warning("dead_letter_too_large", limit_bytes=limit, error=str(exc))
                    continue
                msg = f"dead letter cannot be delivered to {self.dlq_topic}: {exc}"
                log.critical("dead_letter_undeliverable", error=str(exc), topic=self.dlq_topic)
                if hold is not None:
                    self.stuck += 1
                self.on_fatal(msg)
                raise
        self.metrics.dlq_records.labels(dl.reason).inc()
        if hold is not None:
            hold.release()

    @staticmethod
    async def _send(producer: Producer, out: Output) -> asyncio.Future:
        if out.partition is None:
            return await producer.send(out.topic, value=out.value, key=out.key, headers=out.headers)
        return await producer.send(out.topic, value=out.value, key=out.key, headers=out.headers,
                                   partition=out.partition)

    async def _enqueue(self, out: Output) -> asyncio.Future | None:
        """Queue a send without waiting for it; None when it could not even be queued (then it is sent on its own)."""
        try:
            assert self.producer is not None, "producer not started"
            return await self._send(self.producer, out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.errors.labels("produce", type(exc).__name__).inc()
            return None

    async def _acked(self, fut: asyncio.Future | None) -> bool:
        """Did a queued send get its acknowledgement? (A failure is retried by the caller through ``send``.)"""
        if fut is None:
            return False
        try:
            await fut
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.errors.labels("produce", type(exc).__name__).inc()
            return False

    async def dead_letters(self, items: Sequence[tuple[Hold, DeadLetter]]) -> None:
        """A batch of dead letters, enqueued in order and then awaited (a task per record would make thousands of
        sends race for the producer's buffer); any that fails goes through ``dead_letter`` on its own."""
        token = self._start_send()
        try:
            queued = []
            for hold, dl in items:
                fitted = fit(dl, self.max_message_bytes)
                queued.append((hold, dl, await self._enqueue(Output(self.dlq_topic, fitted.key, fitted.value,
                                                                     fitted.headers))))
            refused: Undeliverable | None = None
            for hold, dl, fut in queued:
                if await self._acked(fut):
                    self.metrics.dlq_records.labels(dl.reason).inc()
                    hold.release()
                elif refused is not None:  # the dead-letter topic refuses records: this hold cannot clear either
                    self.stuck += 1
                else:
                    try:
                        await self.dead_letter(hold, dl)
                    except Undeliverable as exc:  # counted stuck; the others are still settled before it is raised
                        refused = exc
            if refused is not None:
                raise refused
        finally:
            self._sending.pop(token, None)

    async def forward(self, items: Sequence[tuple[Hold, Sequence[Output]]],
                      fallback: Callable[[Output, str], list[DeadLetter]]) -> None:
        """The repartition hop: send every output of every item, then release the items' holds once all of their
        outputs are acknowledged. Outputs with a partition go in one batch per partition and batch size, in order
        (one future per batch, not per record). An output whose send failed is sent again on its own; one the broker
        can never take becomes the dead letters ``fallback(output, error)``, so the input record is accounted for
        either way."""
        token = self._start_send()
        try:
            queued: list[tuple[Sequence[Output], asyncio.Future | None]] = []
            if not hasattr(self.producer, "create_batch"):  # a producer without batches: one send per output
                for _, outs in items:
                    queued.extend([([out], await self._enqueue(out)) for out in outs])
            else:
                by_partition: dict[tuple[str, int | None], list[Output]] = {}
                for _, outs in items:
                    for out in outs:
                        by_partition.setdefault((out.topic, out.partition), []).append(out)
                for (topic, partition), outs in by_partition.items():
                    if partition is None:
                        queued.extend([([out], await self._enqueue(out)) for out in outs])
                    else:
                        queued.extend(await self._enqueue_batches(topic, partition, outs))
            for outs, fut in queued:
                if await self._acked(fut):
                    continue
                for out in outs:
                    try:
                        await self.send(out)
                    except Undeliverable as exc:
                        log.error("repartition_undeliverable", topic=out.topic, error=str(exc))
                        try:
                            for dl in fallback(out, str(exc)):
                                await self.dead_letter(None, dl)
                        except Undeliverable:  # the dead-letter topic too: these holds never clear
                            self.stuck += len(items)
                            raise
            for hold, _ in items:
                hold.release()
        finally:
            self._sending.pop(token, None)

    async def _enqueue_batches(self, topic: str, partition: int, outs: list[Output]
                               ) -> list[tuple[Sequence[Output], asyncio.Future | None]]:
        """``outs`` in as few producer batches as fit, queued without waiting; a None future means "send each
        output of it on its own" (a record larger than a batch, or a batch the producer would not queue)."""
        producer = self.producer
        assert producer is not None, "producer not started"
        queued: list[tuple[Sequence[Output], asyncio.Future | None]] = []
        i, n = 0, len(outs)
        while i < n:
            batch = producer.create_batch()
            start = i
            while i < n:
                o = outs[i]
                if batch.append(timestamp=None, key=o.key, value=o.value, headers=o.headers) is None:
                    break
                i += 1
            if i == start:
                queued.append((outs[i:i + 1], None))
                i += 1
                continue
            try:
                fut = await producer.send_batch(batch, topic, partition=partition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels("produce", type(exc).__name__).inc()
                fut = None
            queued.append((outs[start:i], fut))
        return queued

    # ---- commits --------------------------------------------------------------------------------------------
    @staticmethod
    def committable(parts: dict[Hashable, tuple[PartitionOffsets, int | None]]) -> dict[Hashable, int]:
        """``{tp: offset}`` to commit now, from each partition's offsets and its smallest open-session offset."""
        out = {}
        for tp, (offsets, open_min) in parts.items():
            off = offsets.committable(open_min)
            if off is not None:
                out[tp] = off
        return out

    async def commit(self, consumer: Any, parts: dict[Hashable, tuple[PartitionOffsets, int | None]],
                     timeout: float = COMMIT_TIMEOUT_SECS) -> bool:
        """Commit what is accounted for; False when the commit failed or took longer than ``timeout`` (aiokafka
        retries for ever while the group coordinator is unknown): it is retried at the next interval."""
        from aiokafka.structs import OffsetAndMetadata

        offsets = self.committable(parts)
        if not offsets or consumer is None:
            return True
        try:
            await asyncio.wait_for(consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()}),
                                   timeout)
        except Exception as exc:
            self.metrics.commits.labels("error").inc()
            log.warning("commit_failed", error=str(exc))
            return False
        for tp, off in offsets.items():
            parts[tp][0].mark_committed(off)
        self.metrics.commits.labels("ok").inc()
        return True
