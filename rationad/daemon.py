"""The daemon: Kafka log topics -> parsed lines -> sessions -> model -> verdict events, at least once.

Composition is in ``Daemon.__init__``; the lifecycle is ``run()``: start -> consume loop -> drain -> stop.

Delivery contract (see ``offsets.py``): an input offset is committed only after every event and dead letter produced
from the records before it is acknowledged by the broker, and never past the first offset of a session that is still
open. Per-line work stays on aiokafka's batched ``getmany`` path (see README: faust's per-event path is slower).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field

import structlog

from rationad import __version__
from rationad.cache import VerdictCache
from rationad.config import Settings
from rationad.dialects import BadRecord, make_parser
from rationad.dlq import DeadLetter, bad_record, poison_session
from rationad.events import build_event, encode, headers
from rationad.health import HealthServer
from rationad.judge import Judge, Judgement, model_info
from rationad.kafka import make_consumer, make_producer
from rationad.metrics import Metrics
from rationad.model.base import ModelClient, ModelError, make_client
from rationad.offsets import PartitionOffsets
from rationad.records import Session
from rationad.systemd import Notifier
from rationad.windows import Sessionizer, resolve_spec

log = structlog.get_logger("rationad")

MODEL_HEALTH_INTERVAL_SECS = 10.0
MAX_BACKOFF_SECS = 30.0
YIELD_EVERY_RECORDS = 500
CACHE_RECOVERY_TIMEOUT_SECS = 120.0  # a durable cache that cannot be recovered in time is skipped, not waited for


@dataclass(slots=True)
class _Part:
    """State of one assigned partition."""

    sessionizer: Sessionizer
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)


@dataclass(slots=True)
class _Pending:
    session: Session
    part: _Part
    closed_at: float


class Daemon:
    def __init__(self, settings: Settings, client: ModelClient | None = None, metrics: Metrics | None = None) -> None:
        self.s = settings
        self.metrics = metrics or Metrics()
        self.parser = make_parser(settings.input)
        self.spec = resolve_spec(settings.sessions, settings.input.dialect)
        self.client = client or make_client(settings.model)
        self.model = model_info(settings.model, self.client.name)
        self.cache = VerdictCache(settings.cache.max_entries, store=self._cache_store()) if settings.cache.enabled \
            else None
        self.judge = Judge(self.client, settings.model, self.parser.source, cache=self.cache, metrics=self.metrics)
        self.notifier = Notifier()
        self.consumer = None
        self.producer = None
        self.health = HealthServer(
            self.metrics, settings.server.host, settings.server.port, healthy=self._healthy, ready=self._ready
        )
        self._parts: dict = {}
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._pending = 0
        self._tasks: set[asyncio.Task] = set()
        self._sem = asyncio.Semaphore(settings.model.max_concurrency)
        self._stop = asyncio.Event()
        self._draining = False
        self._joined = False
        self._model_ok = False
        self._paused = False
        self._last_loop = time.monotonic()
        self._last_commit = 0.0
        self._started = False  # the main loop has begun (start-up: model load, cache recovery, group join)
        self.exit_code = 0

    # ---- health -------------------------------------------------------------------------------------------
    def _healthy(self) -> tuple[bool, str]:
        if not self._started:
            return True, "starting"  # start-up is bounded by the startup probe / systemd's TimeoutStartSec
        age = time.monotonic() - self._last_loop
        if age > self.s.server.stall_secs:
            return False, f"main loop stalled for {age:.0f}s"
        return True, f"main loop ran {age:.1f}s ago"

    def _ready(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining"
        if not self._joined:
            return False, "consumer group not joined"
        if not self._model_ok:
            return False, "model unhealthy"
        return True, "ready"

    def _cache_store(self):
        if not (self.s.cache.enabled and self.s.cache.durable):
            return None
        from rationad.cache_table import ChangelogStore

        m = self.model
        return ChangelogStore(self.s.kafka, namespace=f"{m.name}@{m.version}/{m.prompt_version}")

    def _set_ready_metric(self) -> None:
        self.metrics.ready.set(1 if self._ready()[0] else 0)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop_requested")
            self.notifier.stopping()
            self._draining = True
            self._set_ready_metric()
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        self.metrics.build_info.info(
            {"version": __version__, "model": self.model.name, "model_version": self.model.version,
             "prompt_version": self.model.prompt_version}
        )
        if self.s.server.enabled:
            await self.health.start()
            log.info("health_server_started", host=self.s.server.host, port=self.health.port)
        self.notifier.status("starting model")
        await self.client.start()
        if self.cache is not None and self.cache.store is not None and not self._stop.is_set():
            self.notifier.status("recovering verdict cache")
            try:
                recovered = await asyncio.wait_for(self.cache.start(), CACHE_RECOVERY_TIMEOUT_SECS)
                self.metrics.cache_entries.set(recovered)
            except Exception as exc:  # the cache is an optimisation: run without its durable store rather than stall
                log.warning("verdict_cache_unavailable", error=repr(exc), fallback="in-memory cache only")
                self.metrics.errors.labels("cache", type(exc).__name__).inc()
                store, self.cache.store = self.cache.store, None
                try:
                    await asyncio.wait_for(store.aclose(), 10)
                except Exception:
                    pass
        self._model_ok = await self._check_model()
        self.producer = make_producer(self.s.kafka)
        await self.producer.start()
        self.consumer = make_consumer(self.s.kafka, max_partition_fetch_bytes=4 * 1024 * 1024)
        from aiokafka import ConsumerRebalanceListener

        daemon = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await daemon._on_revoked(revoked)

            async def on_partitions_assigned(self, assigned):
                daemon._on_assigned(assigned)

        self.consumer.subscribe(topics=list(self.s.input.topics), listener=_Listener())
        await self.consumer.start()
        log.info("daemon_started", topics=list(self.s.input.topics), group=self.s.kafka.group_id,
                 model=self.model.name, model_version=self.model.version, dialect=self.s.input.dialect)
        workers = [
            asyncio.create_task(self._model_loop(), name="model-loop"),
            asyncio.create_task(self._health_loop(), name="model-health"),
        ]
        ready_sent = False
        self._started = True
        self._last_loop = time.monotonic()
        try:
            while not self._stop.is_set():
                await self._consume_once()
                self._last_loop = time.monotonic()
                self.notifier.watchdog()
                self._set_ready_metric()
                if not ready_sent and self._model_ok:
                    self.notifier.ready()
                    self.notifier.status("running")
                    ready_sent = True
                await self._maybe_commit()
        except Exception:
            log.exception("main_loop_failed")
            self.exit_code = 1
        finally:
            await self._drain()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._shutdown()
        return self.exit_code

    async def _drain(self) -> None:
        """Stop fetching, finish in-flight sessions under the deadline, flush, commit what is accounted for."""
        self._draining = True
        self.notifier.stopping()
        deadline = time.monotonic() + self.s.delivery.drain_timeout_secs
        log.info("draining", pending=self._pending, deadline_secs=self.s.delivery.drain_timeout_secs)
        while self._pending and time.monotonic() < deadline:
            self._last_loop = time.monotonic()
            self.notifier.watchdog()
            await asyncio.sleep(0.05)
        if self._pending:
            log.warning("drain_deadline_passed", unfinished_sessions=self._pending)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.producer is not None:
            try:
                await self.producer.flush()
            except Exception:
                log.exception("producer_flush_failed")
        await self._maybe_commit(force=True)

    async def _shutdown(self) -> None:
        for closer in (
            self.consumer.stop() if self.consumer else None,
            self.producer.stop() if self.producer else None,
            self.client.aclose(),
            self.cache.aclose() if self.cache is not None else None,
            self.health.stop(),
        ):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer, 30)
            except Exception:
                log.exception("shutdown_step_failed")
        log.info("stopped", exit_code=self.exit_code)

    # ---- partitions ---------------------------------------------------------------------------------------
    def _on_assigned(self, assigned) -> None:
        for tp in assigned:
            self._parts[tp] = _Part(Sessionizer(self.spec, topic=tp.topic, partition=tp.partition,
                                                on_late=self._on_late))
        self._joined = True
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    def _on_late(self, line, lateness_secs: float) -> None:
        # Late lines are never dropped: they are judged in a window of their own.
        self.metrics.late_lines.labels("own_window").inc()
        log.debug("late_line", key=line.key, offset=line.offset, lateness_secs=round(lateness_secs, 3))

    async def _on_revoked(self, revoked) -> None:
        await self._commit({tp: self._parts[tp] for tp in revoked if tp in self._parts})
        for tp in revoked:
            # Open sessions are dropped, not judged: the new owner re-reads them from the committed offset.
            self._parts.pop(tp, None)
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    # ---- consuming ----------------------------------------------------------------------------------------
    def _backpressure(self) -> None:
        limit = self.s.delivery.max_pending_sessions
        if not self._paused and self._pending >= limit:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            log.info("consumption_paused", pending=self._pending)
        elif self._paused and self._pending <= limit // 2:
            self.consumer.resume(*self.consumer.assignment())
            self._paused = False
            self.metrics.paused.set(0)
            log.info("consumption_resumed", pending=self._pending)

    async def _consume_once(self) -> None:
        self._backpressure()
        batch = await self.consumer.getmany(timeout_ms=200, max_records=self.s.kafka.fetch_max_records)
        now = time.time()
        parse = self.parser.parse
        dead: list[tuple[_Part, DeadLetter, int]] = []
        for tp, records in batch.items():
            part = self._parts.get(tp)
            if part is None:
                continue
            add = part.sessionizer.add
            closed: list[Session] = []
            lines_n = 0
            for n, rec in enumerate(records, start=1):
                if n % YIELD_EVERY_RECORDS == 0:
                    # Let heartbeats, health checks and sends run: a large batch of long or hostile lines can take
                    # seconds to parse, and a blocked loop loses the group membership.
                    await asyncio.sleep(0)
                try:
                    lines = parse(rec.value, topic=tp.topic, partition=tp.partition, offset=rec.offset)
                except BadRecord as exc:
                    dl = bad_record(rec.key, rec.value, rec.headers, error_type=exc.reason, reason=str(exc),
                                    topic=tp.topic, partition=tp.partition, offset=rec.offset)
                    dead.append((part, dl, rec.offset))
                    continue
                lines_n += len(lines)
                for line in lines:
                    closed.extend(add(line, now))
            if records:
                part.offsets.consumed(records[-1].offset)
                self.metrics.records_received.labels(tp.topic).inc(len(records))
                self.metrics.lines_parsed.inc(lines_n)
            self._submit(closed, part, now)
        for part in self._parts.values():
            self._submit(part.sessionizer.tick(now), part, now)
        self.metrics.sessions_open.set(sum(p.sessionizer.open_count for p in self._parts.values()))
        if dead:
            for part, dl, offset in dead:
                part.offsets.hold(offset)
            # One task per fetch batch, sending in order: a task per record makes thousands of sends race for the
            # same producer buffer and time out (a flood of malformed input would stall the dead-letter path).
            self._spawn(self._send_dead_letters(dead))

    def _submit(self, sessions: list[Session], part: _Part, now: float) -> None:
        for s in sessions:
            part.offsets.hold(s.first_offset)
            self._pending += 1
            self.metrics.sessions_closed.labels(s.close_reason).inc()
            self._queue.put_nowait(_Pending(s, part, now))
        self.metrics.sessions_pending.set(self._pending)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- model stage --------------------------------------------------------------------------------------
    async def _model_loop(self) -> None:
        max_batch = self.s.model.max_batch_size
        wait = self.s.model.batch_wait_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + wait
            while len(batch) < max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            await self._sem.acquire()
            task = asyncio.create_task(self._process(batch))
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), self._sem.release()))

    async def _judge_with_retry(self, batch: list[_Pending]) -> list[Judgement] | None:
        """Judge a batch, waiting out model outages; isolates sessions the model rejects outright."""
        backoff = max(self.s.model.retry_backoff_secs, 0.1)
        while True:
            try:
                result = await self.judge.judge_many([p.session for p in batch])
                if not self._model_ok:
                    log.info("model_recovered")
                self._model_ok = True
                return result
            except ModelError as exc:
                self.metrics.errors.labels("model", type(exc).__name__).inc()
                if not exc.retryable:
                    if len(batch) > 1:
                        for p in batch:
                            await self._process([p])
                        return None
                    p = batch[0]
                    log.warning("session_rejected_by_model", key=p.session.key, error=str(exc))
                    j = Judgement(p.session, self.judge.view(p.session), _rejected(str(exc)), cached=False, attempts=1)
                    await self._finish(p, dead=poison_session(j, "model_rejected"))
                    return None
                self._model_ok = False
                self._set_ready_metric()
                log.warning("model_unavailable", error=str(exc), retry_in_secs=round(backoff, 2))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never lose the batch on an unexpected error: count it, retry later
                self.metrics.errors.labels("model", type(exc).__name__).inc()
                log.exception("model_stage_error")
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF_SECS)

    async def _process(self, batch: list[_Pending]) -> None:
        judgements = await self._judge_with_retry(batch)
        if judgements is None:
            return
        await asyncio.gather(*(self._emit(p, j) for p, j in zip(batch, judgements, strict=True)))

    async def _emit(self, p: _Pending, j: Judgement) -> None:
        if not j.ok:
            log.warning("malformed_answer", key=p.session.key, error=j.answer.error, attempts=j.attempts)
            await self._finish(p, dead=poison_session(j))
            return
        event = build_event(p.session, j.view, j.answer, self.model, cached=j.cached,
                            max_rationale_chars=self.s.output.max_rationale_chars)
        if event["verdict"] == "anomalous" or self.s.output.emit_normal:
            await self._produce(self.s.output.topic, p.session.key.encode(), encode(event), headers(event))
            self.metrics.events_produced.labels(event["verdict"]).inc()
            if event["verdict"] == "anomalous":
                log.info("anomaly", id=event["id"], key=p.session.key, lines=len(p.session.lines),
                         cached=j.cached, rationale=event["rationale"][:200])
        self.metrics.end_to_end_latency.labels("hit" if j.cached else "miss").observe(time.time() - p.closed_at)
        self._release(p)

    async def _finish(self, p: _Pending, *, dead: DeadLetter) -> None:
        await self._produce(self.s.output.dlq_topic, dead.key, dead.value, dead.headers)
        self.metrics.dlq_records.labels(dead.reason).inc()
        self._release(p)

    def _release(self, p: _Pending) -> None:
        p.part.offsets.release(p.session.first_offset)
        self._pending -= 1
        self.metrics.sessions_pending.set(self._pending)

    async def _send_dead_letter(self, part: _Part, dl: DeadLetter, offset: int) -> None:
        await self._produce(self.s.output.dlq_topic, dl.key, dl.value, dl.headers)
        self.metrics.dlq_records.labels(dl.reason).inc()
        part.offsets.release(offset)

    async def _send_dead_letters(self, dead: list[tuple[_Part, DeadLetter, int]]) -> None:
        """Enqueue a batch of dead letters in order, then release each offset once its send is acknowledged;
        a send that fails is retried on its own until it is acknowledged (nothing is dropped)."""
        topic = self.s.output.dlq_topic
        sent: list[tuple[_Part, DeadLetter, int, asyncio.Future | None]] = []
        for part, dl, offset in dead:
            try:
                fut = await self.producer.send(topic, value=dl.value, key=dl.key, headers=dl.headers)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels("produce", type(exc).__name__).inc()
                fut = None
            sent.append((part, dl, offset, fut))
        for part, dl, offset, fut in sent:
            if fut is not None:
                try:
                    await fut
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.metrics.errors.labels("produce", type(exc).__name__).inc()
                    fut = None
            if fut is None:
                await self._send_dead_letter(part, dl, offset)
                continue
            self.metrics.dlq_records.labels(dl.reason).inc()
            part.offsets.release(offset)

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None, hdrs) -> None:
        """Send and wait for the broker's acknowledgement, retrying until it comes (nothing is dropped)."""
        backoff = 0.2
        while True:
            try:
                fut = await self.producer.send(topic, value=value, key=key, headers=hdrs)
                await fut
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels("produce", type(exc).__name__).inc()
                log.warning("produce_failed", topic=topic, error=str(exc), retry_in_secs=round(backoff, 2))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(MODEL_HEALTH_INTERVAL_SECS)
            self._model_ok = await self._check_model()
            self._set_ready_metric()
            await self._update_lag()

    async def _check_model(self) -> bool:
        try:
            ok = await asyncio.wait_for(self.client.check_health(), self.s.model.health_timeout_secs)
        except Exception:
            ok = False
        self.metrics.model_healthy.set(1 if ok else 0)
        return ok

    async def _update_lag(self) -> None:
        if self.consumer is None:
            return
        for tp in list(self._parts):
            try:
                high = self.consumer.highwater(tp)
                pos = await self.consumer.position(tp)
            except Exception:
                continue
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))

    # ---- commits ------------------------------------------------------------------------------------------
    async def _maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_commit) * 1000 < self.s.delivery.commit_interval_ms:
            return
        self._last_commit = now
        await self._commit(dict(self._parts))

    async def _commit(self, parts: dict) -> None:
        from aiokafka.structs import OffsetAndMetadata

        offsets = {}
        for tp, part in parts.items():
            off = part.offsets.committable(part.sessionizer.min_open_offset())
            if off is not None:
                offsets[tp] = (part, off)
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(off, "") for tp, (_, off) in offsets.items()})
        except Exception as exc:
            self.metrics.commits.labels("error").inc()
            log.warning("commit_failed", error=str(exc))
            return
        for part, off in offsets.values():
            part.offsets.mark_committed(off)
        self.metrics.commits.labels("ok").inc()


def _rejected(error: str):
    from rationad.answer import ParsedAnswer

    return ParsedAnswer(None, "", (), (), error, "")
