"""The daemon: Kafka log topics -> parsed lines -> sessions -> model -> verdict events, at least once.

``Daemon`` composes ingest (aiokafka ``getmany`` -> dialect parser -> per-partition windows), the model stage
(micro-batches through ``Judge``) and delivery (``delivery.Delivery``: holds, produces, commits, with the
at-least-once contract in its docstring), and owns the lifecycle: start -> consume loop -> drain -> stop.
Per-line work stays on aiokafka's batched path (see README: faust's per-event path is slower).

What a model failure means is decided in ``model_stage.py``; what a produce failure means in ``delivery.py``. A
record that cannot be parsed goes to the dead-letter topic; a dead in-process engine, or a dead letter the broker can
never accept, stops the daemon with exit code 1 after committing what is accounted for (systemd or Kubernetes
restart it); nothing is ever committed past an output that was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from rationad import __version__, stop_signals
from rationad.cache import VerdictCache
from rationad.clock import steady
from rationad.config import ConfigError, Settings
from rationad.delivery import COMMIT_TIMEOUT_SECS, Delivery, Hold, Output, Undeliverable
from rationad.dialects import BGL_STREAM_KEY, BadRecord, bad_record_of, make_parser
from rationad.dlq import DeadLetter, bad_record
from rationad.health import HealthServer
from rationad.judge import Judge, answer_settings, model_info
from rationad.key_spread import KeySpread
from rationad.kafka import make_consumer, make_producer, record_times
from rationad.metrics import Metrics
from rationad.model.base import ModelClient, ModelError, make_client
from rationad.model_stage import EngineDead, ModelStage, Pending
from rationad.neighbours import Known
from rationad.offsets import PartitionOffsets
from rationad.purge import Purger
from rationad.repartition import (
    PACK_BYTES, Packer, Router, SeenLines, SharedTexts, is_pack, own_lines, pack_source, source_of, source_repeat,
    source_time, unpack,
)
from rationad.records import Session
from rationad.source_clocks import SourceClocks
from rationad.systemd import Notifier
from rationad.tasks import cancel_all
from rationad.template_stage import TemplateStage
from rationad.undecodable import DECODE_ERRORS, Undecodable, fetch_around, rewind
from rationad.windows import Sessionizer, line_bytes, resolve_spec

log = structlog.get_logger("rationad")

MODEL_HEALTH_INTERVAL_SECS = 10.0
POSITION_PEEK_SECS = 0.05  # reading the consumer's position past non-records waits for no offset reset
LAG_LOOKUP_SECS = 5.0  # a lag lookup (position, committed offset) that takes longer is given up
GC_YOUNG_ALLOCATIONS = 50_000  # allocations between young-generation collections (CPython's default: 700)
YIELD_EVERY_LINES = 500  # lines parsed (or records routed) between yields to the event loop
# ... or this much time, whichever comes first: template-level judging masks every line as it arrives (about 20 ms for
# a 60 KB one), so 500 long hostile lines held the loop for seconds, and lines spread over partitions never yielded
YIELD_SECS = 0.05
CACHE_RECOVERY_TIMEOUT_SECS = 120.0  # a durable cache that cannot be recovered in time is skipped, not waited for
PRODUCE_STUCK_NOT_READY_SECS = 10.0  # outputs unacknowledged this long make /readyz fail
FUTURE_WARN_EVERY_SECS = 60  # a line dated too far ahead is logged once in this time at most (the metric counts all)
MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
# After the drain budget, closing the Kafka clients, the cache and the servers shares this many seconds; the model
# client closes last, in ENGINE_CLOSE_SECS at most (an in-process engine's join): the supervisor's grace period must
# exceed the drain budget plus these plus about 10 s (a periodic commit in flight, minimum seconds of the final
# steps; docs/operations.md, "Stopping").
CLOSE_SECS = 10.0
ENGINE_CLOSE_SECS = 20.0
# An in-process engine built again after its core died (rationad.model.engine) is not a stall for this long: the
# startup probe's budget (loading takes 30-70 s on 2 CPU cores, minutes for a large model)
ENGINE_REBUILD_SECS = 600.0
MAX_BATCH_BYTES = 1024 * 1024
BUDGET_LOW_WATER = 0.9  # over delivery.max_open_bytes, sessions close down to this share of it


def _instance(settings: Settings) -> str:
    """This process's name in the template catalog, where each name writes its own counts and the catalog sums them.
    With a static member id (``kafka.group_instance_id``: one live process per id within its group) the group and
    that id: a restart continues its counts from the catalog and writes the same keys. Without one, host and start
    time: each process counts since it started, under keys of its own (the compacted topic keeps them all)."""
    import socket

    if settings.kafka.group_instance_id:
        return f"{settings.kafka.group_id}:{settings.kafka.group_instance_id}"
    return f"{socket.gethostname()}@{int(time.time() * 1000)}"


def collect_less() -> None:
    """The daemon's garbage-collection policy, set once it has started. Everything built so far (an in-process
    engine's torch and vLLM objects: millions) lives as long as the process: ``gc.freeze`` keeps it out of the cyclic
    collector's passes. Lines and sessions are acyclic and mostly long-lived (a session stays open until it closes),
    so CPython's default young-generation threshold (700 allocations) walks each of them again and again for nothing:
    collect every 50,000 instead (issue 15: collection was the largest per-line cost on the ingest path; this raised
    ingest 1.9x, BENCHMARKS.md section 1). Cyclic garbage (exception tracebacks, finished tasks) is still collected,
    only later."""
    import gc

    gc.freeze()
    gc.set_threshold(GC_YOUNG_ALLOCATIONS, 20, 10)


@dataclass(slots=True, eq=False)
class _Part:
    """State of one assigned partition."""

    sessionizer: Sessionizer
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    revoked: bool = False
    seen: SeenLines | None = None  # internal partitions: source lines already windowed (re-forwarded duplicates)
    clocks: SourceClocks | None = None  # internal partitions: sources read shifted by a time zone
    shared: SharedTexts | None = None  # internal partitions: lines of a text naming several keys, parsed once
    undecodable: tuple[int, int] | None = None  # (first, last) offsets of the latest run of undecodable records
    # (committed offset, monotonic time it was first seen with records past it): the committed age of the lag loop
    commit_seen: tuple[int | None, float] = (None, 0.0)
    # (offset, broker timestamp in seconds) of the first record read since assignment: the record at the group's
    # committed offset, whose age the committed age starts from (a restart does not make a stalled commit young)
    first_read: tuple[int, float | None] | None = None


class Daemon:
    def __init__(self, settings: Settings, client: ModelClient | None = None, metrics: Metrics | None = None) -> None:
        self.s = settings
        self.metrics = metrics or Metrics()
        self.parser = make_parser(settings.input)
        # Template-level judging reads each line's template alone: revisions need not carry earlier lines.
        self.spec = replace(resolve_spec(settings.sessions, settings.input.dialect),
                            carry_context=settings.judge_level() != "template")
        self.internal = settings.repartition_topic()  # the repartition topic, or None (input windowed as it is)
        self.client = client or make_client(settings.model)
        self.model = model_info(settings.model, self.client.name)
        self.cache = VerdictCache(settings.cache.max_entries, store=self._cache_store(),
                                  max_bytes=settings.cache.max_bytes) if settings.cache.enabled else None
        self.judge = Judge(self.client, settings.model, self.parser.source, cache=self.cache, metrics=self.metrics,
                           model=self.model)
        self.notifier = Notifier()
        self.consumer: Any = None
        self.producer: Any = None
        self.delivery = Delivery(dlq_topic=settings.output.dlq_topic,
                                 max_message_bytes=settings.output.max_message_bytes,
                                 metrics=self.metrics, on_fatal=self._fatal)
        self.health = HealthServer(
            self.metrics, settings.server.host, settings.server.port, healthy=self._healthy, ready=self._ready,
            started=self._started_check,
        )
        self._parts: dict[Any, _Part] = {}
        self._tasks: set[asyncio.Task] = set()
        self._router: Router | None = None  # the internal topic's partitioner, once its partition count is known
        self._last_yield = 0.0  # perf_counter time the consume loop last let the event loop run
        # deletes what the group committed on the internal topic (its only copy of a forwarded line until then)
        self._purger = Purger(settings.kafka, self.internal, self.metrics) if self.internal is not None else None
        self._pack_bytes = min(PACK_BYTES, settings.output.max_message_bytes // 2)
        self._topic_names: dict[bytes, str] = {}
        self._spread = KeySpread()  # sessions of one key on two partitions: the input is not keyed by session key
        self._warned_split = False
        self.stage = ModelStage(settings, self.judge, self.delivery, self.model, self.metrics, spawn=self._spawn,
                                on_dead=self._fatal, on_state=self._set_ready_metric)
        # judge.level = "template": lines' templates are judged once, windows decided from them (template_stage.py)
        self.templates: TemplateStage | None = None
        self.labels: Any = None  # labels.LabelBook: operator verdicts, followed from judge.labels_topic
        if settings.judge_level() == "template":
            self.templates = TemplateStage(settings, self.stage, self.delivery, self.model, self.metrics,
                                           self.parser.source, spawn=self._spawn, instance=_instance(settings),
                                           clock=lambda: self.clock())
        self._stop = asyncio.Event()
        self._stop_wait: asyncio.Future | None = None  # one waiter on _stop, raced by ``_until_stop``
        self._draining = False
        self._joined = False
        self._paused = False
        self._future_warned: float | None = None  # when a line dated too far ahead was last logged
        self._future_lines = 0  # such lines since
        self._last_loop = time.monotonic()
        # Since when the main loop waits on the consumer group (joining, or a rebalance: from the revocation to the
        # next assignment), None when it does not: aiokafka's fetch waits out a rebalance whatever its timeout, up to
        # the group's rebalance timeout (kafka.session_timeout_ms) and the revocation's commit. That wait is not a
        # stall: liveness and the systemd watchdog hold for it (a healthy daemon waiting on a member that did not
        # rejoin was killed, and its own restart made the next rebalance wait again).
        self._group_wait_since: float | None = None
        self.clock = steady  # the windows' wall clock, which never steps back (rationad.clock)
        self._last_commit = 0.0
        self._started = False  # the main loop has begun (start-up: model load, cache recovery, group join)
        self.exit_code = 0
        self.stop_signal: str | None = None  # the signal that asked for the stop, if one did

    # ---- health -------------------------------------------------------------------------------------------
    def _healthy(self) -> tuple[bool, str]:
        if self.stage.dead:
            return False, self.stage.dead
        if not self._started:
            return True, "starting"  # start-up is bounded by the startup probe / systemd's TimeoutStartSec
        age = time.monotonic() - self._last_loop
        if age > self.s.server.stall_secs and not self._waiting_on_group():
            return False, f"main loop stalled for {age:.0f}s"
        if self.s.model.backend == "vllm-engine" and self.stage.down_since is not None:
            down = time.monotonic() - self.stage.down_since
            rebuilding = getattr(self.client, "restarting_since", None)
            if rebuilding is not None and time.monotonic() - rebuilding < ENGINE_REBUILD_SECS:
                return True, f"in-process engine being built again after its core died ({down:.0f}s)"
            if down > self.s.server.stall_secs:  # the in-process engine is part of this process: restart it
                return False, f"in-process model unhealthy for {down:.0f}s"
        return True, f"main loop ran {age:.1f}s ago"

    def _started_check(self) -> tuple[bool, str]:
        """Start-up is done (the model client started, the main loop running), whatever the model's health: what
        the startup probe and systemd's ``READY=1`` wait for. A model server down or refusing the daemon is
        readiness's business: waiting for it here had the supervisor restart the daemon every 10 minutes for as long
        as the model stayed down (a rebalance of the group each time)."""
        return (True, "started") if self._started else (False, "starting")

    def _ready(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining"
        if not self._joined:
            return False, "consumer group not joined"
        if self.stage.blocked:
            return False, self.stage.blocked
        if not self.stage.ok:
            return False, "model unhealthy"
        stuck = self.delivery.stuck_secs
        if stuck > PRODUCE_STUCK_NOT_READY_SECS:
            return False, f"output not acknowledged for {stuck:.0f}s"
        return True, "ready"

    def _cache_store(self):
        if not (self.s.cache.enabled and self.s.cache.durable):
            return None
        from rationad.cache_table import ChangelogStore

        return ChangelogStore(self.s.kafka, namespace=self._namespace(),
                              replication_factor=self.s.repartition.replication_factor)

    def _namespace(self) -> str:
        m, g = self.model, self.s.model
        shaped = answer_settings(g.constrain_output, g.max_new_tokens, g.temperature)
        return f"{m.name}@{m.version}/{m.prompt_version}/{shaped}"

    async def _await_model_name(self) -> None:
        """Where the daemon's identity (event ids, the verdict cache's namespace, events' model name) is the name the
        server lists (no ``model.served_model_name``, no manifest naming the model), start-up waits until the server
        has said it, retrying with backoff: a server still down at start left the placeholder's identity for the
        whole run, and a session read again after a restart came out under another event id."""
        discover = getattr(self.client, "discover", None)
        if discover is None or getattr(self.client, "model", None) is not None:
            return
        if model_info(self.s.model, "a") == model_info(self.s.model, "b"):  # the manifest names it: no need
            return
        self.notifier.status("waiting for the model server to name its model")
        delay = 1.0
        while not self._stop.is_set():
            try:
                done, _ = await self._until_stop(discover(), "model name discovery")
                if done:
                    return
            except ModelError as exc:
                if exc.kind == "config":  # a refused key, a server listing no model: no retry mends it
                    raise ConfigError(f"{exc}: the served model's name is this daemon's identity (its event ids and "
                                      "verdict cache), and the server does not say it; fix model.server_url / "
                                      "model.api_key, or set model.served_model_name") from exc
                log.warning("model_name_unknown", error=str(exc), retry_in_secs=delay,
                            why="the served model's name is this daemon's identity (model.served_model_name unset)")
            await self._until_stop(asyncio.sleep(delay), "model name discovery")
            delay = min(2 * delay, 30.0)

    def _identify_model(self) -> None:
        """The model's identity once the client has started: a vllm-server client with neither
        ``model.served_model_name`` nor ``model.path`` learns the served model's name from the server, and an identity
        read before, from its placeholder name, would be the same for every model behind the URL (one verdict-cache
        namespace, the same event ids)."""
        info = model_info(self.s.model, self.client.name)
        if info == self.model:
            return
        self.model = self.stage.model = info
        if self.templates is not None:
            self.templates.model = info
        if self.cache is not None and self.cache.store is not None:
            self.cache.store.namespace = self._namespace()  # not started yet: it recovers this model's topic
        self._publish_build_info()
        log.info("model_identified", model=info.name, model_version=info.version)

    def _publish_build_info(self) -> None:
        m = self.model
        self.metrics.build_info.info({"version": __version__, "model": m.name, "model_version": m.version,
                                      "prompt_version": m.prompt_version})

    def _set_ready_metric(self) -> tuple[bool, str]:
        """Readiness as ``_ready`` says it, set in the metric too."""
        ready = self._ready()
        self.metrics.ready.set(1 if ready[0] else 0)
        self.metrics.produce_stuck.set(self.delivery.stuck_secs)
        return ready

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def request_stop(self, **why) -> None:
        """Drain and stop (SIGTERM/SIGINT, a fatal error); ``why`` goes into the log line."""
        if not self._stop.is_set():
            self.stop_signal = why.get("signal")  # what asked for the stop, when a signal did (``rationad demo``)
            log.info("stop_requested", **why)
            self.notifier.stopping()
            self._draining = True
            self._set_ready_metric()
            self._stop.set()

    def _fatal(self, reason: str) -> None:
        """Something this process cannot get past: drain, commit what is accounted for, exit non-zero."""
        log.error("fatal", reason=reason, action="stopping; the supervisor restarts the daemon")
        self.exit_code = 1
        self.request_stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, functools.partial(self.request_stop, signal=sig.name))
            except (NotImplementedError, RuntimeError):
                pass
        early = stop_signals.received()
        if early is not None:  # stopped while Python was still importing or reading the config: nothing to undo
            self.request_stop(signal=early, during="start-up")
            return self.exit_code
        self._publish_build_info()
        try:
            await self._start()
        except BaseException:  # a failed start leaves no engine, client or server behind (the CLI reports it)
            await self._shutdown()
            raise
        return await self._serve()

    async def _start(self) -> None:
        if self.s.server.enabled:
            try:
                await self.health.start()
            except OSError as exc:  # a name that does not resolve, an address not on this host, a port in use
                raise ConfigError(f"server.host / server.port: cannot listen on {self.s.server.host}:"
                                  f"{self.s.server.port}: {exc}") from None
            log.info("health_server_started", host=self.s.server.host, port=self.health.port)
        self.notifier.status("starting model")
        # Raced against a stop as the later steps are: an in-process engine loads for tens of seconds to minutes, and a
        # vllm-server client asks a server that is down for its model's name for up to 4 x model.request_timeout_secs;
        # a SIGTERM meanwhile waited that out, past the supervisor's grace period. The shutdown closes what the
        # abandoned start opened (``client.aclose``; an engine still loading in its thread is shut down when it ends).
        if not await self._step(self.client.start(), "model start"):
            return
        await self._await_model_name()
        if self._stop.is_set():  # stopped while waiting for the model: join nothing, create nothing
            return
        self._identify_model()
        if self.cache is not None and self.cache.store is not None and not self._stop.is_set():
            self.notifier.status("recovering verdict cache")
            try:
                done, recovered = await self._until_stop(
                    asyncio.wait_for(self.cache.start(), CACHE_RECOVERY_TIMEOUT_SECS), "verdict cache recovery")
                if not done:  # stopped while recovering (up to CACHE_RECOVERY_TIMEOUT_SECS): the shutdown closes it
                    return
                self.metrics.cache_entries.set(recovered)
            except ConfigError:  # cache.durable without faust-streaming: said at start, not run without silently
                raise
            except Exception as exc:  # the cache is an optimisation: run without its durable store rather than stall
                log.warning("verdict_cache_unavailable", error=repr(exc), fallback="in-memory cache only")
                self.metrics.errors.labels("cache", type(exc).__name__).inc()
                store, self.cache.store = self.cache.store, None
                try:
                    await asyncio.wait_for(store.aclose(), 10)
                except Exception:
                    pass
        # Each later step can wait on the broker (for as long as its request timeout, or longer): a stop requested
        # meanwhile ends the start there, and nothing after it joins or creates anything.
        if not await self._step(self._check_model(), "model check"):
            return
        if self._stop.is_set():
            return
        done, self.producer = await self._until_stop(self._new_producer(), "producer start")
        if not done:
            return
        self.delivery.producer = self.producer
        self.delivery.new_producer = self._new_producer
        if not await self._step(self._check_topics(), "topic check"):
            return
        topics = list(self.s.input.topics)
        if self.internal is not None:
            from rationad.topics import ensure_topic

            r = self.s.repartition
            done, n = await self._until_stop(ensure_topic(
                self.s.kafka, self.internal, key="repartition.topic", partitions=r.partitions,
                like=self.s.input.topics, replication_factor=r.replication_factor, retention_ms=r.retention_ms,
                max_message_bytes=self.s.output.max_message_bytes),
                "repartition topic")
            if not done:
                return
            topics.append(self.internal)
            self._router = Router(n)
            self._topic_names = {t.encode(): t for t in self.s.input.topics}
            log.info("repartitioning", topic=self.internal, partitions=n,
                     why=f"input.repartition = {self.s.input.repartition!r}")
        if self.templates is not None and not await self._step(self._start_templates(), "template topics and labels"):
            return
        if self._stop.is_set():
            return
        self.consumer = make_consumer(self.s.kafka, max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES)
        from aiokafka import ConsumerRebalanceListener

        daemon = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await daemon._on_revoked(revoked)

            async def on_partitions_assigned(self, assigned):
                daemon._on_assigned(assigned)

        self.consumer.subscribe(topics=topics, listener=_Listener())
        if not await self._step(self.consumer.start(), "consumer start"):
            return
        collect_less()
        log.info("daemon_started", topics=list(self.s.input.topics), group=self.s.kafka.group_id,
                 model=self.model.name, model_version=self.model.version, dialect=self.s.input.dialect)

    async def _start_templates(self) -> None:
        """Template-level judging: the labels and catalog topics exist (compacted), the operator labels are loaded
        and followed."""
        from rationad.labels import LabelBook
        from rationad.topics import ensure_compacted_topic

        j = self.s.judge
        rf = self.s.repartition.replication_factor
        for key, topic, expiring in (("judge.labels_topic", j.labels_topic, False),
                                     ("judge.templates_topic", j.templates_topic, True)):  # the catalog may expire
            await ensure_compacted_topic(self.s.kafka, topic, key=key, replication_factor=rf, expiring=expiring)
        assert self.templates is not None
        self.labels = LabelBook(self.s.kafka, j.labels_topic, on_change=self._on_label)
        await self.labels.start()
        for label in self.labels.labels():
            self.templates.book.set_label(label.id, label)
            self._label_neighbour(label.id, label)
        if self.s.kafka.group_instance_id:  # a restart continues this replica's catalog counts (``_instance``)
            await self._carry_catalog_counts()
        log.info("judging_templates", labels=len(self.labels), labels_topic=j.labels_topic,
                 templates_topic=j.templates_topic)

    async def _carry_catalog_counts(self) -> None:
        from rationad.catalog import read_stats

        assert self.templates is not None
        try:
            stats = await read_stats(self.s.kafka, self.s.judge.templates_topic)
        except Exception as exc:  # the catalog is for people: counts restart rather than the daemon not starting
            log.warning("template_counts_not_carried", topic=self.s.judge.templates_topic, error=repr(exc))
            return
        own = {st.id: (st.count, st.first_seen) for st in stats if st.instance == self.templates.instance}
        self.templates.book.carry_counts(own)
        log.info("template_counts_carried", templates=len(own), instance=self.templates.instance)

    def _on_label(self, tid: str, label: Any) -> None:
        self._label_neighbour(tid, label)
        assert self.templates is not None
        self.templates.on_label(tid, label)

    def _label_neighbour(self, tid: str, label: Any) -> None:
        """A model trained with labelled neighbours also sees operators' labels among them."""
        if self.judge.neighbours is None:
            return
        try:
            known = label and Known(label.template, label.verdict, label.reason or "labelled by an operator",
                                    "operator")
        except ValueError as exc:  # the label still decides its template; it only cannot be a neighbour
            log.warning("label_not_a_neighbour", template_id=tid, error=str(exc))
            return
        self.judge.neighbours.set_operator(tid, known)

    async def _new_producer(self):
        size = self.s.output.max_message_bytes
        # Batches up to 1 MiB (aiokafka's default is 16 KiB): the repartition hop sends a partition's lines of a fetch
        # as one batch, and a producer batch waits for the one before it to be sent.
        producer = make_producer(self.s.kafka, max_request_size=size, max_batch_size=min(size, MAX_BATCH_BYTES))
        try:
            await producer.start()
        except BaseException:  # failed, or abandoned for a stop (``_until_stop``): close what it opened
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
            raise
        self.producer = producer
        return producer

    async def _check_topics(self) -> None:
        """The output and dead-letter topics must exist (or be auto-created): otherwise every produce would wait for
        ever. A broker that cannot be asked is not a reason to refuse to start (the producer is already connected)."""
        from rationad.topics import TopicCheckError, require_topics

        try:
            await require_topics(self.s.kafka, {"output.topic": self.s.output.topic,
                                                "output.dlq_topic": self.s.output.dlq_topic},
                                 max_message_bytes=self.s.output.max_message_bytes, unkeyed=["output.dlq_topic"])
        except TopicCheckError as exc:
            log.warning("topic_check_skipped", error=str(exc))

    async def _serve(self) -> int:
        workers = [
            asyncio.create_task(self.stage.run(), name="model-loop"),
            asyncio.create_task(self._health_loop(), name="model-health"),
        ]
        if self.templates is not None:
            workers.append(asyncio.create_task(self.templates.run_catalog(lambda: self.producer), name="catalog"))
        workers.append(asyncio.create_task(self._watchdog_during_group_wait(), name="group-wait-watchdog"))
        said: str | None = None  # the STATUS= last sent
        self._started = True
        self._last_loop = time.monotonic()
        if not self._joined:
            self._group_wait_since = self._last_loop
        try:
            while not self._stop.is_set():
                await self._consume_once()
                self._last_loop = time.monotonic()
                self.notifier.watchdog()
                ready, why = self._set_ready_metric()
                status = "running" if ready else f"running, not ready: {why}"
                if said is None:
                    self.notifier.ready()
                if status != said:
                    self.notifier.status(status)
                    said = status
                if not self._stop.is_set():  # stopping: the drain commits (a periodic one could wait out the broker)
                    await self._maybe_commit()
                for w in workers:  # a worker that died would wedge the daemon silently: stop loudly instead
                    if w.done() and not w.cancelled() and w.exception() is not None:
                        raise RuntimeError(f"worker {w.get_name()} failed") from w.exception()
        except Exception as exc:
            if type(exc).__name__ in ("NoOffsetForPartitionError", "OffsetOutOfRangeError"):
                log.error("no_valid_offset", error=str(exc), setting=f"kafka.auto_offset_reset = "
                          f"{self.s.kafka.auto_offset_reset!r}", action="reset the group's offsets, or set "
                          "auto_offset_reset to earliest or latest (docs/operations.md)")
            else:
                log.exception("main_loop_failed")
            self.exit_code = 1
        finally:
            await self._drain()
            await cancel_all(workers)
            # The model loop ran until now: a batch it started after the drain cancelled the others goes too.
            await cancel_all(list(self._tasks))
            await self._shutdown()
        return self.exit_code

    async def _drain(self) -> None:
        """Stop fetching, finish in-flight sessions under the deadline, flush, commit what is accounted for."""
        self._draining = True
        self.notifier.stopping()
        deadline = time.monotonic() + self.s.delivery.drain_timeout_secs
        log.info("draining", pending=self.delivery.held, deadline_secs=self.s.delivery.drain_timeout_secs)
        while self.delivery.held > self.delivery.stuck and time.monotonic() < deadline and not self.stage.dead:
            self._last_loop = time.monotonic()
            self.notifier.watchdog()
            await asyncio.sleep(0.05)
        if self.delivery.held:
            log.warning("drain_unfinished", unfinished_outputs=self.delivery.held,
                        reason=self.stage.dead or ("undeliverable dead letters"
                                                   if self.delivery.held <= self.delivery.stuck else "deadline passed"))
        await cancel_all(list(self._tasks))
        if self.templates is not None:
            try:  # best effort, within the drain budget
                await asyncio.wait_for(self.templates.publish(self.producer),
                                       max(1.0, min(10.0, deadline - time.monotonic())))
            except Exception as exc:
                log.warning("template_catalog_not_written", error=repr(exc))
        # Flush and the final commit get what is left of the drain budget (a second at least): with the broker
        # unreachable neither ends on its own, and the supervisor would kill the process instead of a clean exit.
        if self.producer is not None:
            try:
                await asyncio.wait_for(self.producer.flush(), max(1.0, deadline - time.monotonic()))
            except Exception:
                log.exception("producer_flush_failed")
        await self._maybe_commit(force=True, timeout=max(1.0, deadline - time.monotonic()))

    async def _shutdown(self) -> None:
        """Close everything; the Kafka clients, the cache and the servers share ``CLOSE_SECS`` (half a second each
        at least): with the broker unreachable, aiokafka's producer stop waits for its pending batches to expire
        (``request_timeout_ms``, 40 s) and each step used to get 30 s, so a stop could take twice the drain budget
        and be killed by the supervisor. The model client closes last, in its own ``ENGINE_CLOSE_SECS``."""
        if self._stop_wait is not None:
            await cancel_all([self._stop_wait])
        end = time.monotonic() + CLOSE_SECS
        if self._purger is not None:  # a purge in flight is given up: each partition's next commit purges again
            await self._purger.aclose()
        for closer, own in (
            (self.consumer.stop() if self.consumer else None, None),
            (self.producer.stop() if self.producer else None, None),
            (self.cache.aclose() if self.cache is not None else None, None),
            (self.labels.aclose() if self.labels is not None else None, None),
            (self.health.stop(), None),
            (self.client.aclose(), ENGINE_CLOSE_SECS),  # last: its own budget, never what the others left
        ):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer, own if own is not None else max(0.5, end - time.monotonic()))
            except Exception:
                log.exception("shutdown_step_failed")
        log.info("stopped", exit_code=self.exit_code)

    # ---- tasks --------------------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        """No task failure passes silently. The tasks resolve their own holds (event, dead letter or fatal stop);
        an exception that reaches here is a bug, logged and counted, and its output stays held (never committed)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, (Undeliverable, EngineDead)):
            self.metrics.errors.labels("task", type(exc).__name__).inc()
            log.error("task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    # ---- partitions ---------------------------------------------------------------------------------------
    def _waiting_on_group(self) -> bool:
        """The main loop waits on the consumer group (``_group_wait_since``), within what a rebalance may take: its
        join and sync phases (each up to the rebalance timeout, kafka.session_timeout_ms) and the revocation's commit,
        with 10 s to spare. Longer is a stall."""
        since = self._group_wait_since
        bound = 2 * self.s.kafka.session_timeout_ms / 1000 + COMMIT_TIMEOUT_SECS + 10.0
        return since is not None and time.monotonic() - since < bound

    async def _watchdog_during_group_wait(self) -> None:
        """Pings the systemd watchdog while the main loop waits on the group (the main loop pings otherwise)."""
        while True:
            await asyncio.sleep(1.0)
            if self._waiting_on_group():
                self.notifier.watchdog()

    def _on_assigned(self, assigned) -> None:
        self._group_wait_since = None
        for tp in assigned:
            self._parts[tp] = _Part(Sessionizer(self.spec, topic=tp.topic, partition=tp.partition,
                                                on_late=self._on_late, on_future=self._on_future,
                                                on_step=self._on_step),
                                    seen=SeenLines() if tp.topic == self.internal else None,
                                    clocks=SourceClocks() if tp.topic == self.internal else None,
                                    shared=SharedTexts() if tp.topic == self.internal else None)
        self._joined = True
        if self._paused:  # the consumer's new partition states start unpaused: backpressure holds for them too
            self.consumer.pause(*assigned)
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    def _on_step(self, line, back_secs: float) -> None:
        # Rare (10 s of nothing but late lines; a source mixing clocks, once an hour at most) and worth a look: a
        # host's clock set back, an old file shipped again, or a host far behind the others on its partition.
        self.metrics.clock_steps.inc()
        log.warning("source_clock_stepped_back", topic=line.topic, partition=line.partition, key=line.key,
                    offset=line.offset, source=None if line.source is None else f"{line.source[0]}:{line.source[1]}",
                    back_secs=round(back_secs), note="event time follows the source's clock from here")

    def _on_late(self, line, lateness_secs: float) -> None:
        # Late lines are never dropped: they are judged in a window of their key's late lines.
        self.metrics.late_lines.labels("own_window").inc()
        log.debug("late_line", key=line.key, offset=line.offset, lateness_secs=round(lateness_secs, 3))

    def _on_future(self, line, ahead_secs: float) -> None:
        # A timestamp too far ahead of the wall clock would close every open session: the line is taken as untimed.
        # Said once a minute at most, with the count since (a host whose clock says 2099 sent a warning per line:
        # a log flood, and the loop slowed 20 times; review), and counted in the metric every time.
        self.metrics.late_lines.labels("future_untimed").inc()
        self._future_lines += 1
        now = time.monotonic()
        if self._future_warned is None or now - self._future_warned >= FUTURE_WARN_EVERY_SECS:
            log.warning("future_timestamp", key=line.key, offset=line.offset, ahead_secs=round(ahead_secs),
                        max_future_secs=self.s.sessions.max_future_secs, lines=self._future_lines,
                        note=f"one warning a {FUTURE_WARN_EVERY_SECS} s at most; lines counts those since the last")
            self._future_warned, self._future_lines = now, 0

    async def _on_revoked(self, revoked) -> None:
        self._group_wait_since = time.monotonic()  # a rebalance begins: the fetch waits until the next assignment
        self._joined = False  # not ready until assigned again (review 2026-12-07: /readyz said ready for good)
        parts = {tp: self._parts[tp] for tp in revoked if tp in self._parts}
        # Open sessions are dropped, not judged, and queued ones are skipped from now on, also while the commit below
        # is in flight (it may take seconds; marked after it, they were produced in the meantime, duplicates of the
        # new owner's): the new owner re-reads them from the committed offset, which never passed them (its offsets
        # are taken when the commit is called, before a skipped session releases its hold). Verdicts that come back
        # after this are dropped too (``ModelStage._settle``); outputs already being produced finish (duplicates
        # downstream carry the same event id).
        # They leave ``_parts`` at once too: a periodic commit during this one must not see them, since a skipped
        # session releases its hold and such a commit would pass it (the kill -9 test with repartitioning found that).
        for tp, part in parts.items():
            part.revoked = True
            self._parts.pop(tp, None)
            self._spread.drop(tp)
            self.metrics.forget_partition(tp.topic, tp.partition)  # its new owner reports it
        await self._commit(parts)
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    # ---- consuming ----------------------------------------------------------------------------------------
    def _over_pending(self, half: bool = False) -> bool:
        """Too many outputs, or too many bytes of closed sessions, await a verdict or an acknowledgement, or the model
        is blocked: input must wait. ``half``: whether paused input must still wait, above half of either bound or
        blocked (it resumes at half, not at the bound, so that it does not pause again at the next record)."""
        held, held_bytes, blocked = self.delivery.held, self.delivery.held_bytes, self.stage.blocked
        limit, budget = self.s.delivery.max_pending_sessions, self.s.delivery.max_open_bytes
        if half:
            return held > limit // 2 or held_bytes > budget // 2 or bool(blocked)
        return held >= limit or held_bytes >= budget or bool(blocked)

    def _backpressure(self) -> None:
        """Pause input while too many outputs, or too many bytes of closed sessions, await a verdict or an
        acknowledgement (or the model is blocked); resume at half (``_over_pending``). Sessions closed early by the
        open-bytes budget become pending: bounding pending bytes by the same budget keeps all sessions within twice
        it."""
        if not self._paused and self._over_pending():
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            log.info("consumption_paused", pending=self.delivery.held, pending_bytes=self.delivery.held_bytes,
                     blocked=self.stage.blocked)
        elif self._paused and not self._over_pending(half=True):
            self.consumer.resume(*self.consumer.assignment())
            self._paused = False
            self.metrics.paused.set(0)
            log.info("consumption_resumed", pending=self.delivery.held)

    async def _step(self, aw: Coroutine[Any, Any, Any], what: str) -> bool:
        """Whether ``aw``, a step of the start, ran to its end (``_until_stop``); False, without running it, when a
        stop was requested before it."""
        if self._stop.is_set():
            aw.close()
            return False
        return (await self._until_stop(aw, what))[0]

    async def _until_stop(self, aw: Coroutine[Any, Any, Any], what: str) -> tuple[bool, Any]:
        """``(True, its result)`` of ``aw``, or ``(False, None)`` when a stop is requested first (``aw`` is cancelled).
        For the consumer's calls that can wait for ever: while the group reassigns partitions, aiokafka's ``getmany``
        waits for the new assignment with no timeout (``Fetcher.fetched_records``: ``timeout_ms`` counts only after
        it), and ``committed`` retries while the coordinator is unknown; a stop requested then must still reach the
        drain. Cancelling a fetch loses nothing: records are taken from aiokafka's buffer only after its last wait,
        and nothing fetched is committed unaccounted."""
        task = asyncio.ensure_future(aw)
        if self._stop_wait is None:
            self._stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((task, self._stop_wait), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return True, task.result()
        await cancel_all([task])
        log.info("abandoned_for_stop", what=what)
        return False, None

    async def _fetch(self) -> tuple[dict, dict[Any, Undecodable] | None]:
        """(the next records, the undecodable record of each partition where one was found), or nothing once a stop
        is requested (``_until_stop``)."""
        try:
            _, batch = await self._until_stop(self.consumer.getmany(
                timeout_ms=200, max_records=self.s.kafka.fetch_max_records), "fetch")
            return batch or {}, None
        except DECODE_ERRORS:  # a record aiokafka cannot decode: found, stepped past, dead-lettered by the caller
            parts = {tp: p for tp, p in self._parts.items() if not p.revoked}
            done, got = await self._until_stop(self._fetch_around(parts), "undecodable record recovery")
            return got if done else ({}, None)

    async def _fetch_around(self, parts: dict[Any, _Part]) -> tuple[dict, dict[Any, Undecodable]]:
        def held(tp) -> bool:  # not revoked meanwhile (a partition assigned again starts from the group's offset)
            return self._parts.get(tp) is parts[tp] and not parts[tp].revoked

        def owner(tp) -> _Part | None:  # the partition's state now (a new one once it was assigned again)
            part = self._parts.get(tp)
            return part if part is not None and not part.revoked else None

        live = {tp: p.offsets.next_offset for tp, p in parts.items()}
        await rewind(self.consumer, live, self.s.kafka.auto_offset_reset, held)  # other partitions' records were lost
        # a partition revoked while a later one was refetched (and perhaps assigned again, its new state starting
        # from the committed offset) keeps none of what was fetched for its old assignment, and what was fetched
        # for its new one goes to its new state
        return await fetch_around(self.consumer, list(live), self.s.kafka.fetch_max_records, held, owner)

    async def _consume_once(self) -> None:
        self._backpressure()
        batch, bad = await self._fetch()
        now = self.clock()
        parse = self.parser.parse
        dead: list[tuple[Hold, DeadLetter]] = []
        forwards: list[tuple[Hold, list[Output]]] = []
        # Each partition's state as it was when these records were fetched: a rebalance during an await below
        # revokes it (and may assign the partition again, with fresh state that must not take records fetched
        # before it: they are fetched again from the committed offset).
        fetched = [(tp, self._parts.get(tp), records) for tp, records in batch.items()]
        self._last_yield = time.perf_counter()
        full = False  # the pending limit was reached mid-batch: the rest of the batch waits in Kafka
        try:
            for tp, part, records in fetched:
                if part is None or part.revoked:
                    continue
                full = full or self._stop.is_set()  # a stop: the rest of the batch is read again by whoever is next
                if full:  # fetched again once consumption resumes (an undecodable record too: it is past it now)
                    first = records[0].offset if records else bad[tp].offset if bad and tp in bad else None
                    if first is not None:
                        self.consumer.seek(tp, first)
                    continue
                if part.first_read is None and records:
                    stamp = getattr(records[0], "timestamp", None)
                    part.first_read = (records[0].offset, stamp / 1000 if isinstance(stamp, int) and stamp > 0
                                       else None)
                if self.internal is not None and tp.topic != self.internal:
                    # the undecodable record after them only when every record before it was read (review: a stop
                    # mid-batch dead-lettered and consumed it, and the drain committed the records between, never
                    # forwarded)
                    if await self._forward(tp, part, records, dead, forwards) and bad and tp in bad:
                        self._dead_undecodable(tp, part, bad[tp], dead)
                    continue
                add = part.sessionizer.add
                observe = self.templates.observe if self.templates is not None else None
                topic, partition, seen = tp.topic, tp.partition, part.seen  # the per-record loop is the hot path
                lines_n = since_yield = read = 0
                for rec in records:
                    # a pack carries many lines: count lines, not records
                    if since_yield >= YIELD_EVERY_LINES or time.perf_counter() - self._last_yield >= YIELD_SECS:
                        since_yield = 0
                        # Let heartbeats, health checks and sends run: a large batch of long or hostile lines can take
                        # seconds to parse, and a blocked loop loses the group membership. Everything closed so far is
                        # already held, so a revocation here commits nothing past it.
                        part.offsets.consumed(rec.offset - 1)
                        await asyncio.sleep(0)
                        self._last_yield = time.perf_counter()
                        if part.revoked:  # the rest of this batch belongs to the partition's new owner
                            break
                        if self._over_pending() or self._stop.is_set():
                            # One fetch can hold thousands of records, each of thousands of lines: at template level
                            # every new template is a pending judgement, and checked only between fetches one batch
                            # of distinct lines queued hundreds of thousands past the limit (gigabytes). The rest
                            # waits in Kafka; ``_backpressure`` pauses input until half the limit is left. A stop
                            # likewise ends the batch here: the drain's budget starts now, not after the batch.
                            self.consumer.seek(tp, rec.offset)
                            full = True
                            break
                    since_yield += 1
                    read += 1
                    try:
                        if seen is None:
                            lines = parse(rec.value, topic=topic, partition=partition, offset=rec.offset)
                        elif is_pack(rec.headers):
                            lines = self._pack_lines(tp, part, rec, dead)
                        else:
                            lines = self._own_lines(tp, part, rec, dead)
                    except Exception as exc:  # noqa: BLE001 - a parser bug costs the record (``bad_record_of``)
                        exc = bad_record_of(exc)
                        dl = bad_record(rec.key, rec.value, rec.headers, error_type=exc.reason, reason=str(exc),
                                        topic=topic, partition=partition, offset=rec.offset)
                        dead.append((self.delivery.hold(part.offsets, rec.offset), dl))
                        continue
                    lines_n += len(lines)
                    if len(lines) > 1:
                        since_yield += len(lines) - 1
                    for line in lines:
                        if observe is not None:
                            observe(line, now)  # a new template goes to the model now, not when its window closes
                        closed = add(line, now)
                        if closed:  # held the moment they close, before anything can yield
                            self._submit(closed, part, now)
                else:
                    if records:
                        part.offsets.consumed(records[-1].offset)
                    if bad and tp in bad:
                        self._dead_undecodable(tp, part, bad[tp], dead)
                if read:  # a batch stopped midway (revoked, or at the pending limit) is counted as far as it was read
                    self.metrics.records_received.labels(tp.topic).inc(read)
                    self.metrics.lines_parsed.inc(lines_n)
            if full:
                self._backpressure()
            else:
                await self._read_past_non_records(batch.keys() | (bad.keys() if bad else set()))
            for part in self._parts.values():  # paused, the lines that would follow wait in Kafka: no quiet time
                self._submit(part.sessionizer.tick(now, paused=self._paused), part, now)
            self._enforce_byte_budget(now)
            self.metrics.sessions_open.set(sum(p.sessionizer.open_count for p in self._parts.values()))
        finally:  # what this batch held is sent even if a later record failed unexpectedly: nothing waits for it
            if dead:
                self._spawn(self.delivery.dead_letters(dead), "dead-letters")
            if forwards:
                self._spawn(self.delivery.forward(forwards, self._unforwardable), "repartition")

    async def _read_past_non_records(self, fetched) -> None:
        """Offsets the consumer stepped past without returning a record, on partitions with nothing in this fetch:
        a transaction's commit or abort marker, an aborted transaction's records (``read_committed``), offsets that
        compaction removed. They hold no line, so they count as read, and the commit reaches the partition's end
        (before, a quiet transactional input stayed committed one short of its end for good: lag 1 on every partition,
        in the daemon's gauges and in ``kafka-consumer-groups``). Safe here: only this loop fetches, and every record
        fetched before was read (a batch cut short is sought back and skipped: ``full``)."""
        if self._paused or self._stop.is_set() or self.consumer is None:
            return
        for tp, part in list(self._parts.items()):
            if part.revoked or tp in fetched:
                continue
            read = part.offsets.next_offset
            try:  # no wait when the position is known, the case here; a reset in progress is not waited for
                high = self.consumer.highwater(tp)
                if high is None or (read is not None and read >= high):
                    continue
                pos = await asyncio.wait_for(self.consumer.position(tp), POSITION_PEEK_SECS)
            except Exception:  # a timeout too; unassigned meanwhile (IllegalStateError)
                continue
            if self._parts.get(tp) is part and not part.revoked and (read is None or pos > read):
                part.offsets.consumed(pos - 1)

    def _dead_undecodable(self, tp, part: _Part, u: Undecodable, dead: list) -> None:
        """A record aiokafka could not decode (``rationad.undecodable``), after the records before it: a dead letter
        naming where it is (its bytes could not be read), held like any other. A record right after one is read in
        the same batch, which aiokafka cannot read past the bad one: its dead letter names the run's first record."""
        run = part.undecodable
        first = run[0] if run is not None and u.offset == run[1] + 1 else u.offset
        part.undecodable = (first, u.offset)
        reason = u.error if first == u.offset else (
            f"{u.error} (after undecodable record {first}: a record of its batch, which cannot be read past it, "
            "or undecodable itself)")
        dl = bad_record(None, None, [], error_type="undecodable_record", reason=reason, topic=tp.topic,
                        partition=tp.partition, offset=u.offset)
        dead.append((self.delivery.hold(part.offsets, u.offset), dl))
        part.offsets.consumed(u.offset)
        self.metrics.records_received.labels(tp.topic).inc()

    # ---- repartitioning (rationad/repartition.py) ------------------------------------------------------------
    async def _forward(self, tp, part: _Part, records, dead: list, forwards: list) -> bool:
        """Input records -> packs of lines per internal partition (``Packer``); the input offset is held from the
        first forwarded record of the batch until every record built from it is acknowledged. Whether every record
        was read (not a revocation or a stop: the rest is read again from the committed offset)."""
        route = self.parser.route
        assert self._router is not None and self.internal is not None
        packer = Packer(self.internal, tp.topic, tp.partition, self._router, self._pack_bytes)
        first: int | None = None
        read = 0
        whole = True
        for n, rec in enumerate(records, start=1):
            # every 500 records or 50 ms (the time shared with the batch's other partitions: review found a batch of
            # long records over many partitions, under 500 each, routed for 12 s without a yield)
            if n % YIELD_EVERY_LINES == 0 or time.perf_counter() - self._last_yield >= YIELD_SECS:
                if first is not None:  # what is packed so far is held from here on
                    forwards.append(self._forward_hold(part, first, packer.outputs()))
                    first = None
                part.offsets.consumed(rec.offset - 1)  # everything before it is held (forwarded or dead-lettered)
                await asyncio.sleep(0)
                self._last_yield = time.perf_counter()
                if part.revoked or self._stop.is_set():  # a stop: the rest is forwarded after the restart
                    whole = False
                    break
            read += 1
            try:
                routes = route(rec.value, topic=tp.topic, partition=tp.partition, offset=rec.offset)
            except Exception as exc:  # noqa: BLE001 - a parser bug costs the record (``bad_record_of``)
                exc = bad_record_of(exc)
                dl = bad_record(rec.key, rec.value, rec.headers, error_type=exc.reason, reason=str(exc),
                                topic=tp.topic, partition=tp.partition, offset=rec.offset)
                dead.append((self.delivery.hold(part.offsets, rec.offset), dl))
                continue
            if first is None:
                first = rec.offset
            packer.add(routes, rec.offset, getattr(rec, "timestamp", None))
        else:
            if records:
                part.offsets.consumed(records[-1].offset)
        if first is not None:
            forwards.append(self._forward_hold(part, first, packer.outputs()))
        if read:
            self.metrics.records_received.labels(tp.topic).inc(read)
            self.metrics.lines_repartitioned.inc(packer.lines)
        return whole and not part.revoked

    def _forward_hold(self, part: _Part, first: int, outs: list[Output]) -> tuple[Hold, list[Output]]:
        """The hold on ``first`` for packed ``outs``, with the bytes they keep until acknowledged: backpressure
        counted none, and an internal topic refusing writes (an ACL, a partition without a leader) let
        ``delivery.max_pending_sessions`` fetches of packs, about 0.5 GiB, pile up unseen by
        ``delivery.max_open_bytes`` (review 2026-12-07)."""
        nbytes = sum(len(o.value or b"") + len(o.key or b"") for o in outs)
        return self.delivery.hold(part.offsets, first, nbytes), outs

    def _own_lines(self, tp, part: _Part, rec, dead: list) -> list:
        """The lines of a one-line internal record that belong to its key, unless this partition already windowed
        it; each carries its source position (``LogLine.source``). One that fails to parse is dead-lettered with its
        source position, once: a re-read copy is known before it is parsed."""
        key = rec.key.decode("utf-8", "surrogateescape") if rec.key else ""
        source = source_of(rec.headers)
        pos = None
        if source is not None:
            try:
                pos = (self._topic_names.get(source[0]) or source[0].decode(), int(source[1]), int(source[2]))
            except ValueError:
                pass  # not ours to interpret: windowed by its place on the internal topic only
        # One input record may send several lines of one key as one-line records (``Packer.add``), identical ones
        # too: each is told apart by its value and by how many copies of it the record held before it.
        if pos is not None and not part.seen.first_time((pos, key, hash(rec.value), source_repeat(rec.headers))):
            self.metrics.errors.labels("repartition", "duplicate_line").inc()
            return []
        try:
            own = self._parse_own(tp, part, (pos, rec.value), key, rec.value, rec.offset)
        except Exception as exc:  # noqa: BLE001 - a parser bug costs the line (``bad_record_of``)
            exc = bad_record_of(exc)
            if pos is None:
                raise exc from None
            if self._first_dead(part, pos, rec.value, source_repeat(rec.headers)):
                dl = bad_record(rec.key, rec.value, [], error_type=exc.reason, reason=str(exc), topic=pos[0],
                                partition=pos[1], offset=pos[2])
                dead.append((self.delivery.hold(part.offsets, rec.offset), dl))
            return []
        for x in own:
            x.source = pos
        if pos is not None:
            self._shift(part, pos[:2], rec.headers, own)
        return own

    def _parse_own(self, tp, part: _Part, ident: tuple, key: str, value: bytes, offset: int) -> list:
        """The lines of ``key`` in a forwarded line (``SharedTexts``: a line naming several keys is parsed once for
        all of this partition's); ``ident``: its source position (None: not known) and bytes."""
        def parse() -> list:
            return self.parser.parse(value, topic=tp.topic, partition=tp.partition, offset=offset)

        router, partition = self._router, tp.partition
        if part.shared is None or router is None:
            return own_lines(parse(), key)
        return part.shared.own(ident if ident[0] is not None else (offset, value), key, offset, parse,
                               lambda k: router.key(k)[1] == partition)

    def _shift(self, part: _Part, source: tuple[str, int], headers, lines: list) -> None:
        """Read ``lines`` of ``source`` shifted by its clock's time zone, if it is off by one (``SourceClocks``)."""
        assert part.clocks is not None
        stamps = [x.ts for x in lines if x.ts is not None]
        shift, taken = part.clocks.shift(source, source_time(headers), (min(stamps), max(stamps)) if stamps else None,
                                         self.clock())
        if taken is not None:
            self.metrics.clock_shifts.inc()
            log.warning("source_clock_shifted", source=f"{source[0]}:{source[1]}", shift_secs=round(taken),
                        note="its stamps are a time zone off its records' Kafka timestamps: read shifted from here "
                             "(a host writing local time without a zone?)" if taken else
                             "its stamps agree with its records' Kafka timestamps again: read as they are")
        if shift:
            for x in lines:
                if x.ts is not None:
                    x.ts += shift

    def _pack_lines(self, tp, part: _Part, rec, dead: list) -> list:
        """The lines of a pack (``repartition.unpack``), each parsed, kept for its own key and given its source
        position, less those this partition already windowed (``SeenLines.windowed``: by offset range); a line that
        fails is dead-lettered on its own with its source position, held at the pack's offset."""
        source = pack_source(rec.headers)
        try:
            entries = unpack(rec.value)
            if source is None:
                raise ValueError("no source topic and partition headers")
            src_topic = self._topic_names.get(source[0]) or source[0].decode()
            src_partition = int(source[1])
        except ValueError as exc:
            raise BadRecord("bad_pack", f"internal record is not a pack: {exc}") from None
        offset = rec.offset
        first, last = min(e[0] for e in entries), max(e[0] for e in entries)
        # A pack holds lines of one fetch (at most kafka.fetch_max_records records). One spanning more offsets (a
        # compacted input's gaps, or a corrupt or forged index) is not remembered as a range, which would hide every
        # later line of its source inside it: its lines are told apart one by one, as one-line records are.
        wide = last - first >= self.s.kafka.fetch_max_records
        # Lines inside ranges windowed before are duplicates; a wide pack, or one overlapping a wide one (a
        # transactional input's full fetch is wide, a re-read of its tail is not), is also told apart line by line.
        seen = part.seen.windowed(source, first, last, remember=not wide)
        by_line = wide or part.seen.wide(source, first, last)
        if wide:
            part.seen.remember_wide(source, first, last)
        copies: dict[tuple, int] = {}
        failed: dict[tuple, int] = {}  # (position, key, value) -> copies of it that failed before, in this pack
        out: list = []
        for src_offset, key, value in entries:
            if seen and any(a <= src_offset <= b for a, b in seen):
                self.metrics.errors.labels("repartition", "duplicate_line").inc()
                continue
            pos = (src_topic, src_partition, src_offset)
            if by_line:
                ident = (pos, key, hash(value))
                repeat = copies[ident] = copies.get(ident, -1) + 1
                if not part.seen.first_time((*ident, repeat)):
                    self.metrics.errors.labels("repartition", "duplicate_line").inc()
                    continue
            try:
                own = self._parse_own(tp, part, (pos, value), key, value, offset)
            except Exception as exc:  # noqa: BLE001 - a parser bug costs the line, not the pack (``bad_record_of``)
                exc = bad_record_of(exc)
                ident = (pos, key, hash(value))
                repeat = failed[ident] = failed.get(ident, -1) + 1
                if self._first_dead(part, pos, value, repeat):
                    dl = bad_record(key.encode("utf-8", "surrogatepass"), value, [], error_type=exc.reason,
                                    reason=str(exc), topic=src_topic, partition=src_partition, offset=src_offset)
                    dead.append((self.delivery.hold(part.offsets, offset), dl))
                continue
            for x in own:
                x.source = pos
            out.extend(own)
        if out:
            self._shift(part, (src_topic, src_partition), rec.headers, out)
        return out

    @staticmethod
    def _first_dead(part: _Part, pos: tuple, value: bytes, repeat: int) -> bool:
        """Whether the forwarded line ``value`` from input position ``pos`` (its ``repeat``-th copy for one key) is
        dead-lettered for the first time in this partition: a line naming N sessions crosses the hop once per key,
        and a parse that fails fails for each (review 2026-12-07: up to N dead letters, max_keys_per_line, of one
        line)."""
        return part.seen.first_time((pos, hash(value), repeat, "dead"))

    def _unforwardable(self, out: Output, error: str) -> list[DeadLetter]:
        """Dead letters for an internal record the broker can never take: one per line it carries."""
        if is_pack(out.headers):
            source = pack_source(out.headers) or (b"", b"-1")
            return [bad_record(key.encode("utf-8", "surrogatepass"), value, [], error_type="undeliverable_repartition",
                               reason=error, topic=source[0].decode(), partition=int(source[1]), offset=offset)
                    for offset, key, value in unpack(out.value)]
        h = dict(out.headers)
        return [bad_record(out.key, out.value, [], error_type="undeliverable_repartition", reason=error,
                           topic=h["rationad-source-topic"].decode(),
                           partition=int(h["rationad-source-partition"]), offset=int(h["rationad-source-offset"]))]

    def _enforce_byte_budget(self, now: float) -> None:
        """Open sessions over all partitions stay within ``delivery.max_open_bytes``: the lines carried for later
        revisions go first (``Sessionizer.drop_contexts``), then the sessions holding the most bytes close early (the
        oldest of equal ones). Oldest first, a few keys writing long lines (hostile or verbose: ``sessions.max_lines``
        lines of 64 KiB) made every other key's sessions close early, cut mid-life, while they stayed open (review
        2026-12-07); largest first, they close themselves and the fewest sessions are cut. Sessions close down to
        ``BUDGET_LOW_WATER`` of the budget: finding the largest reads every open session, which each batch over the
        budget did again (60 ms at 100,000 sessions)."""
        budget = self.s.delivery.max_open_bytes
        parts = list(self._parts.values())
        total = sum(p.sessionizer.open_bytes for p in parts)
        for p in parts:
            if total <= budget:
                break
            total -= p.sessionizer.drop_contexts(total - budget)
        if total > budget:
            sizes = [(-held, opened, i, wid) for i, p in enumerate(parts)
                     for held, opened, wid in p.sessionizer.open_sizes()]
            heapq.heapify(sizes)
            while sizes and total > budget * BUDGET_LOW_WATER:
                _, _, i, wid = heapq.heappop(sizes)
                part = parts[i]
                before = part.sessionizer.open_bytes
                session = part.sessionizer.evict(wid, "evicted")
                if session is not None:
                    self._submit([session], part, now)
                    total -= before - part.sessionizer.open_bytes
        self.metrics.sessions_open_bytes.set(total)

    def _submit(self, sessions: list[Session], part: _Part, now: float) -> None:
        revoked = lambda: part.revoked  # noqa: E731
        for s in sessions:
            # One constant key on every partition is no split; nor is the one-line copy of a line that names several
            # sessions (an HDFS delete naming 100 blocks sits on one block's partition): only multi-line sessions count.
            if len(s.lines) > 1 and s.key != BGL_STREAM_KEY:
                self._check_split(s)
            # its earlier revisions' lines too (up to sessions.max_lines): held with it until its event is acknowledged
            nbytes = sum(map(line_bytes, s.lines)) + sum(map(line_bytes, s.context))
            hold = self.delivery.hold(part.offsets, s.first_offset, nbytes)
            self.metrics.sessions_closed.labels(s.close_reason).inc()
            if self.templates is not None:
                self.templates.close(s, hold, now, revoked)
            else:
                self.stage.submit(Pending(s, hold, now, revoked))

    def _check_split(self, s: Session) -> None:
        other = self._spread.seen((s.topic, s.partition), s.key)
        if other is None:
            return
        self.metrics.split_sessions.inc()
        if not self._warned_split:
            self._warned_split = True
            log.warning("input_not_keyed_by_session", key=s.key, partitions=[f"{other[0]}:{other[1]}",
                        f"{s.topic}:{s.partition}"], metric="rationad_split_sessions_total",
                        action="sessions are judged as fragments: key the input records by the session key "
                        "(docs/operations.md, Input topics)")

    # ---- model health and lag -----------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        # Not ``while True``: Python 3.11's wait_for can swallow the cancellation that stops it (CPython gh-86296),
        # and a loop that went on past the stop kept the event loop from closing (a test run hung in teardown).
        while not self._stop.is_set():
            await asyncio.sleep(MODEL_HEALTH_INTERVAL_SECS)
            if self._stop.is_set():  # stopped while it slept: no new lookups (the lag's side reads) from here on
                return
            await self._check_model()
            self._set_ready_metric()
            await self._update_lag()

    async def _check_model(self) -> None:
        try:
            ok = await asyncio.wait_for(self.client.check_health(), self.s.model.health_timeout_secs)
        except Exception:
            ok = False
        self.metrics.model_healthy.set(1 if ok else 0)
        if not ok:
            self.stage.unhealthy()
            return
        verify = getattr(self.client, "verify", None)  # the server backend: are our key and model name accepted?
        if verify is not None:
            try:
                await asyncio.wait_for(verify(), self.s.model.health_timeout_secs)
            except ModelError as exc:
                if exc.kind == "config":
                    self.stage.block(f"model misconfigured: {exc}", by_check=True)
                return
            except Exception:
                return
            if self.stage.blocked and not self.stage.blocked_by_requests:  # listing models proves no request works
                self.stage.answered(checked=True)
        if not self.stage.ok and not self.stage.blocked:  # a health probe alone cannot clear a misconfiguration
            self.stage.ok = True
            self.stage.down_since = None

    async def _update_lag(self) -> None:
        if self.consumer is None:
            return
        parts = list(self._parts.items())
        # The end offsets asked of the brokers, once a round: aiokafka's highwater() is the mark of the last fetch
        # response, and a paused partition (backpressure: a slow or blocked model) is not fetched, so the lag froze at
        # its value when the pause began while the topic grew, and the lag alerts stayed silent in the outage they
        # are for. highwater() is the fallback when the lookup fails.
        try:
            ends = await asyncio.wait_for(self.consumer.end_offsets([tp for tp, _ in parts]), LAG_LOOKUP_SECS)
        except Exception:
            ends = {}
        side: dict[Any, tuple[_Part, int, tuple[str, str]]] = {}  # committed offsets whose record's time to read
        for tp, part in parts:
            try:
                high = ends.get(tp)
                if high is None:
                    high = self.consumer.highwater(tp)
                # aiokafka's lookups can wait for as long as a broker is unreachable: bounded, so that the health
                # loop (the model's health checks) goes on
                pos = await asyncio.wait_for(self.consumer.position(tp), LAG_LOOKUP_SECS)
            except Exception:  # a timeout too: an offset reset waiting on this partition's leader alone
                continue
            try:
                committed = part.offsets.committed
                if committed is None:
                    committed = await asyncio.wait_for(self.consumer.committed(tp), LAG_LOOKUP_SECS)
            except TimeoutError:  # the group coordinator, everyone's: the round ends
                return
            except Exception:
                continue
            if high is None or part.revoked or self._parts.get(tp) is not part:
                continue  # revoked during a lookup: its gauges were removed, not to be exported again, frozen
            labels = (tp.topic, str(tp.partition))
            self.metrics.consumer_lag.labels(*labels).set(max(0, high - pos))
            if committed is not None:
                self.metrics.committed_lag.labels(*labels).set(max(0, high - committed))
                # how long the committed offset has stood still with records past it: a partition whose commit is
                # pinned (a model blocked for a day) loses its records at the topic's retention, whatever their count
                now = time.monotonic()
                # read to the end and everything read committed: what lies past the committed offset is no record (a
                # transaction's end marker, never a line), nothing waits there
                drained = pos >= high and (part.offsets.next_offset is None or committed >= part.offsets.next_offset)
                if committed >= high or drained or part.commit_seen[0] != committed:
                    since = now
                    first = part.first_read
                    written = None
                    if part.commit_seen[0] is None and first is not None and first[0] == committed and first[1]:
                        written = first[1]  # the record there was written then
                    elif part.commit_seen[0] is None and committed < high and not drained:
                        # Nothing fetched there since the assignment (input paused: a model blocked across a restart
                        # or a rebalance): read the record's time on the side, or the age started again at 0 with
                        # every restart and the stall alert never fired in the outage it is for (review). All such
                        # partitions at once, below, within one lookup's time: the model's health checks wait.
                        side[tp] = (part, committed, labels)
                        continue
                    if written:
                        since = now - max(0.0, time.time() - written)
                    part.commit_seen = (committed, since)
                self.metrics.committed_age.labels(*labels).set(round(now - part.commit_seen[1], 1))
        if side:
            written_at = await record_times(self.s.kafka, {tp: c for tp, (_, c, _) in side.items()}, LAG_LOOKUP_SECS)
            now = time.monotonic()
            for tp, (part, committed, labels) in side.items():
                if part.revoked or self._parts.get(tp) is not part or part.commit_seen[0] is not None:
                    continue
                written = written_at.get(tp)
                part.commit_seen = (committed, now - max(0.0, time.time() - written) if written else now)
                self.metrics.committed_age.labels(*labels).set(round(now - part.commit_seen[1], 1))

    # ---- commits ------------------------------------------------------------------------------------------
    async def _maybe_commit(self, force: bool = False, timeout: float = COMMIT_TIMEOUT_SECS) -> None:
        now = time.monotonic()
        if not force and (now - self._last_commit) * 1000 < self.s.delivery.commit_interval_ms:
            return
        self._last_commit = now
        await self._commit(dict(self._parts), timeout)

    async def _commit(self, parts: dict[Any, _Part], timeout: float = COMMIT_TIMEOUT_SECS) -> None:
        done = await self.delivery.commit(
            self.consumer, {tp: (p.offsets, p.sessionizer.min_open_offset()) for tp, p in parts.items()}, timeout
        )
        if done and self._purger is not None:
            self._purger.offer({tp: p.offsets.committed for tp, p in parts.items()})
