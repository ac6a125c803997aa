"""The daemon's delivery paths with a scripted consumer, a fake producer and a fake model (pure logic; the real
broker and vLLM are in tests/integration and tests/failure). Each test drives a path that broke in review
(issue 13) and failed on the code before its fix."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.structs import TopicPartition

import rationad.daemon as daemon_mod
import rationad.model_stage as model_stage
import rationad.tasks as tasks_mod
from rationad.config import ModelConfig, Settings
from rationad.daemon import Daemon
from rationad.model.base import ModelError
from rationad.model.server import ServerClient
from tests.rationad.fakes import ANOMALOUS, FakeConsumer, FakeModel, FakeProducer, Rec

TP = TopicPartition("logs", 0)


async def until(cond, secs: float) -> None:
    """Poll ``cond`` every 10 ms until it holds or ``secs`` pass (the assertions after it say what must hold)."""
    for _ in range(round(secs / 0.01)):
        await asyncio.sleep(0.01)
        if cond():
            return


def settings(**sections) -> Settings:
    base = {
        "input": {"dialect": "generic", "key_regex": r"session=(\w+)"},
        "judge": {"level": "session"},  # template level: tests/rationad/test_template_stage.py
        "sessions": {"mode": "fixed", "window_lines": 2},
        "cache": {"enabled": False},
        "server": {"enabled": False},
        "output": {"emit_normal": True},
        "model": {"retry_backoff_secs": 0.0},
        "delivery": {"commit_interval_ms": 10, "drain_timeout_secs": 2},
    }
    for k, v in sections.items():
        if k == "sessions" and v.get("mode") == "session":
            base[k] = {}  # the fixed window's size would be refused with session windows
        base[k] = {**base.get(k, {}), **v}
    return Settings(**base)


def line(key: str, text: str = "INFO routine work") -> bytes:
    return f"{text} session={key}".encode()


async def run_until(d: Daemon, cond, timeout: float = 10.0) -> int:
    task = asyncio.create_task(d.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    try:
        while not cond():
            if task.done():
                break
            if loop.time() > end:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)
    finally:
        d.request_stop()
        code = await asyncio.wait_for(task, 20)
    return code


def make(s: Settings, batches, *, model=None, producer=None) -> tuple[Daemon, FakeConsumer, FakeProducer]:
    """A daemon whose Kafka clients are the fakes (the module's factories are replaced for the test)."""
    consumer = FakeConsumer(batches, [TP])
    producer = producer or FakeProducer()
    seen = {}

    def producer_factory(cfg, **kw):
        seen.update(kw)
        if producer.max_request_size is None:
            producer.max_request_size = kw.get("max_request_size", 1_048_576)
        return producer

    async def topics_exist(kafka_cfg, keyed, **kw):
        return None

    _patch.setattr("rationad.topics.require_topics", topics_exist)
    _patch.setattr(daemon_mod, "make_consumer", lambda cfg, **kw: consumer)
    _patch.setattr(daemon_mod, "make_producer", producer_factory)
    d = Daemon(s, client=model or FakeModel())
    d.producer_kwargs = seen
    return d, consumer, producer


def final_commit(consumer: FakeConsumer) -> int | None:
    return consumer.committed_offset(TP)


# ---- item 1: revocation in the middle of a batch --------------------------------------------------------------
async def test_revocation_mid_batch_never_commits_past_a_session_closed_in_that_batch(monkeypatch):
    """A window opened at offset 0 closes at offset 1 (the second batch); the loop yields at its 500th record and the
    partition is revoked there. The commit made on revocation must not pass offset 0: that session has no output."""
    s = settings()
    first = {TP: [Rec(0, line("a"))]}
    second = {TP: [Rec(1, line("a"))] + [Rec(o, line(f"k{o}")) for o in range(2, 700)]}
    d, consumer, producer = make(s, [first, second])
    revoked = []
    real_sleep = asyncio.sleep

    async def sleep(secs, *a, **kw):
        if secs == 0 and not revoked and d._parts.get(TP) is not None and consumer.batches == []:
            revoked.append(True)
            await d._on_revoked([TP])
        return await real_sleep(secs, *a, **kw)

    monkeypatch.setattr(daemon_mod.asyncio, "sleep", sleep)
    await run_until(d, lambda: bool(revoked), timeout=10)
    assert revoked
    assert consumer.commits, "the revocation commits what is accounted for"
    assert all(c[TP] <= 0 for c in consumer.commits if TP in c), consumer.commits


async def test_a_revoked_partition_is_marked_before_its_commit_and_the_commit_keeps_its_queued_session():
    """Found by review (2026-12-04): the partition was marked revoked only after the revocation's commit returned
    (up to 5 s), so its queued sessions were judged and produced meanwhile, duplicates of the new owner's. Marked
    before: and the commit still stops at the queued session's first offset (its hold is taken into account)."""
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d._on_assigned([TP])
    part = d._parts[TP]
    for o in range(4):
        part.offsets.consumed(o)
    part.offsets.hold(2)  # a closed session (offsets 2-3) queued for the model
    during = []
    real_commit = consumer.commit

    async def commit(offsets):
        if not during:  # the revocation's commit, in flight: the queued session is skipped (its hold released)
            during.append(part.revoked)
            part.offsets.release(2)
            d._last_commit = 0.0
            await d._maybe_commit()  # a periodic commit meanwhile must not pass it (it did: kill -9 test, same day)
        await real_commit(offsets)

    consumer.commit = commit
    await d._on_revoked([TP])
    assert during == [True] and TP not in d._parts
    assert all(c.get(TP, 0) <= 2 for c in consumer.commits) and consumer.commits[-1] == {TP: 2}, consumer.commits


async def test_a_session_waiting_for_a_call_slot_is_not_judged_once_its_partition_moved():
    """Found by review (2026-12-04), failing before its fix: the batcher checked revocation before waiting for a free
    call slot (``model.max_concurrency``), not after; a session of a partition revoked meanwhile was still judged and
    produced (a duplicate of the new owner's)."""
    gate = asyncio.Event()
    prompts = []

    class Slow(FakeModel):
        async def generate(self, conversations, **kw):
            prompts.extend(c[-1]["content"] for c in conversations)
            if any("session=a" in c[-1]["content"] for c in conversations):
                await gate.wait()
            return await super().generate(conversations, **kw)

    s = settings(model={"max_concurrency": 1, "max_batch_size": 1, "batch_wait_ms": 0, "retry_backoff_secs": 0.0})
    recs = [Rec(0, line("a")), Rec(1, line("a")), Rec(2, line("b")), Rec(3, line("b"))]
    d, consumer, producer = make(s, [{TP: recs}], model=Slow())
    task = asyncio.create_task(d.run())
    await until(lambda: prompts and d.stage.queue.empty(), 5)  # a's call is in flight, b waits for the slot
    assert len(prompts) == 1 and "session=a" in prompts[0] and d.stage.queue.empty()
    await d._on_revoked([TP])
    gate.set()
    await asyncio.sleep(0.3)
    d.request_stop()
    await asyncio.wait_for(task, 20)
    assert not any("session=b" in p for p in prompts), prompts
    # a's verdict came after the revocation: the new owner judges it (found by review, 2026-12-06: it was produced
    # anyway, under the event id the new owner gives a window of the same key and offset that may hold more lines)
    assert producer.on("rationad.anomalies") == [] and producer.on("rationad.dlq") == []


# ---- item 2: produces that can never succeed ------------------------------------------------------------------
async def test_dead_letter_larger_than_the_producer_allows_is_cut_to_fit_and_the_partition_moves_on():
    s = settings(output={"max_message_bytes": 16_384})
    big = b"\xff" + b"x" * 60_000  # invalid UTF-8: a dead letter carrying the whole 60 KB value
    d, consumer, producer = make(s, [{TP: [Rec(0, big), Rec(1, line("a")), Rec(2, line("a"))]}],
                                 producer=FakeProducer(max_request_size=20_000))
    await run_until(d, lambda: final_commit(consumer) == 3)
    assert d.producer_kwargs["max_request_size"] == 16_384
    (dl,) = producer.on("rationad.dlq")
    h = dict(dl.headers)
    assert h["rationad-truncated"] == b"true" and h["rationad-original-bytes"] == str(len(big)).encode()
    assert h["rationad-error-type"] == b"invalid_utf8" and len(dl.value) < 16_384
    assert dl.value == big[: len(dl.value)]


async def test_a_record_the_parser_fails_on_is_dead_lettered_and_the_partition_moves_on(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a parser bug (a JSON timestamp "\x1c1700000000" raised
    ValueError) passed the call site, which caught only BadRecord: the daemon exited, and again at each restart on
    the same record, and every replica the partition moved to did the same. Any exception of a record's parse
    dead-letters that record (``parse_failed``)."""
    from tests.rationad.fakes import parser_bug_on

    parser_bug_on(monkeypatch)
    d, consumer, producer = make(settings(), [{TP: [Rec(0, line("a")), Rec(1, b"boom"), Rec(2, line("a"))]}])
    await run_until(d, lambda: final_commit(consumer) == 3)
    (dl,) = producer.on("rationad.dlq")
    h = dict(dl.headers)
    assert (h["rationad-error-type"], dl.value) == (b"parse_failed", b"boom")
    assert b"ValueError" in h["rationad-error-reason"] and h["rationad-source-offset"] == b"1"


async def test_dead_letter_the_broker_rejects_as_too_large_is_cut_further():
    s = settings(sessions={"window_lines": 20})
    huge = b"\n".join(line("a", "ERROR " + "y" * 3000) for _ in range(20))

    def fail(rec):
        return RecordTooLargeError("broker limit") if len(rec.value or b"") > 30_000 else None

    model = FakeModel(lambda text: "babble")  # malformed answers: the session is dead-lettered with its lines
    d, consumer, producer = make(s, [{TP: [Rec(0, huge)] + [Rec(o, line("b")) for o in range(1, 21)]}],
                                 model=model, producer=FakeProducer(fail=fail))
    await run_until(d, lambda: final_commit(consumer) == 21)
    bodies = {orjson.loads(r.value)["session"]["key"]: (orjson.loads(r.value), dict(r.headers))
              for r in producer.on("rationad.dlq")}
    body, h = bodies["a"]
    assert h["rationad-truncated"] == b"true" and 0 < body["session"]["lines_kept"] < 20
    assert body["session"]["line_count"] == 20


async def test_event_the_broker_never_accepts_goes_to_the_dead_letter_topic_instead():
    s = settings()

    def fail(rec):
        return MessageSizeTooLargeError("too large") if rec.topic == "rationad.anomalies" else None

    d, consumer, producer = make(s, [{TP: [Rec(0, line("a", "ERROR disk")), Rec(1, line("a", "ERROR disk"))]}],
                                 producer=FakeProducer(fail=fail))
    await run_until(d, lambda: final_commit(consumer) == 2)
    (dl,) = producer.on("rationad.dlq")
    assert dict(dl.headers)["rationad-error-type"] == b"undeliverable_event"
    assert orjson.loads(dl.value)["raw_completion"] == ANOMALOUS


async def test_a_dead_letter_topic_that_can_never_take_one_stops_the_daemon_without_committing_past_it():
    s = settings()

    def fail(rec):  # too large even cut to the smallest size (a refusal of an ACL is retried instead: test_delivery)
        return RecordTooLargeError() if rec.topic == "rationad.dlq" else None

    d, consumer, producer = make(s, [{TP: [Rec(0, b"\xff"), Rec(1, line("a")), Rec(2, line("a"))]}],
                                 producer=FakeProducer(fail=fail))
    code = await run_until(d, lambda: False if not d._stop.is_set() else True, timeout=10)
    assert code == 1
    assert final_commit(consumer) in (None, 0)


# ---- item 3: unexpected errors are bounded and isolated -------------------------------------------------------
async def test_a_session_that_keeps_failing_is_dead_lettered_after_max_attempts_and_the_rest_flow():
    s = settings(delivery={"max_attempts": 2})

    def answer(text):
        if "poison" in text:
            raise RuntimeError("tokenizer exploded")
        return ANOMALOUS if "ERROR" in text else "<think>L1 x1 fine.</think>\n<answer>normal</answer>"

    recs = [Rec(0, line("p", "INFO poison")), Rec(1, line("p", "INFO poison")),
            Rec(2, line("q", "ERROR x")), Rec(3, line("q", "ERROR x"))]
    d, consumer, producer = make(s, [{TP: recs}], model=FakeModel(answer))
    await run_until(d, lambda: final_commit(consumer) == 4)
    (dl,) = producer.on("rationad.dlq")
    body = orjson.loads(dl.value)
    assert dict(dl.headers)["rationad-error-type"] == b"judge_failed" and "tokenizer exploded" in body["error"]
    assert body["attempts"] == 2
    events = [orjson.loads(e.value) for e in producer.on("rationad.anomalies")]
    assert [e["session"]["key"] for e in events] == ["q"]


# ---- item 4: a failure while emitting resolves its hold -------------------------------------------------------
async def test_an_exception_while_building_the_event_dead_letters_the_session(monkeypatch):
    s = settings()
    real = model_stage.build_event

    def build_event(session, *a, **kw):
        if session.key == "bad":
            raise KeyError("evidence")
        return real(session, *a, **kw)

    monkeypatch.setattr(model_stage, "build_event", build_event)
    recs = [Rec(0, line("bad")), Rec(1, line("bad")), Rec(2, line("ok")), Rec(3, line("ok"))]
    d, consumer, producer = make(s, [{TP: recs}])
    await run_until(d, lambda: final_commit(consumer) == 4)
    (dl,) = producer.on("rationad.dlq")
    assert dict(dl.headers)["rationad-error-type"] == b"emit_failed"
    assert d.delivery.held == 0


# ---- item 5: a misconfigured model is not a property of a session ---------------------------------------------
async def test_model_auth_error_pauses_consumption_and_dead_letters_nothing():
    s = settings()
    state = {"calls": 0, "fixed": False}

    def answer(text):
        state["calls"] += 1
        if not state["fixed"]:
            raise ModelError("HTTP 401: invalid API key", kind="config")
        return ANOMALOUS

    model = FakeModel(answer)
    recs = [Rec(0, line("a")), Rec(1, line("a")), Rec(2, line("b")), Rec(3, line("b"))]
    d, consumer, producer = make(s, [{TP: recs}], model=model)
    task = asyncio.create_task(d.run())
    await until(lambda: state["calls"] >= 2 and consumer.paused, 5)
    ready, why = d._ready()
    assert consumer.paused and not ready and "misconfigured" in why
    assert producer.on("rationad.dlq") == [] and final_commit(consumer) in (None, 0)
    consumer.batches.append({TP: [Rec(4, line("c")), Rec(5, line("c"))]})
    await asyncio.sleep(0.3)
    assert len(consumer.batches) == 1, "no more input is fetched while the model is misconfigured"
    state["fixed"] = True
    await until(lambda: final_commit(consumer) == 6, 10)
    d.request_stop()
    assert await task == 0
    assert final_commit(consumer) == 6 and producer.on("rationad.dlq") == []
    assert sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")) == ["a", "b", "c"]


async def test_a_server_that_rejects_every_request_pauses_consumption_and_dead_letters_nothing(monkeypatch):
    """Found by review: a 400 that no request can avoid (a vLLM server started with --max-logprobs below the 10 the
    daemon asks for) dead-lettered every session as model_rejected while /readyz stayed green. A rejected session is
    now dead-lettered only when the model answers a minimal request; otherwise the model is blocked."""
    s = settings()
    state = {"calls": 0, "fixed": False}

    def answer(text):
        state["calls"] += 1
        if not state["fixed"]:
            raise ModelError("HTTP 400: Requested sample logprobs of 10, which is greater than max allowed: 5",
                             kind="rejected")
        return ANOMALOUS

    monkeypatch.setattr(daemon_mod, "MODEL_HEALTH_INTERVAL_SECS", 0.05)
    model = FakeModel(answer)

    async def verify():  # the server lists its model and accepts the key: healthy by every check but a request
        pass

    model.verify = verify
    recs = [Rec(0, line("a")), Rec(1, line("a")), Rec(2, line("b")), Rec(3, line("b"))]
    d, consumer, producer = make(s, [{TP: recs}], model=model)
    task = asyncio.create_task(d.run())
    await until(lambda: state["calls"] >= 4 and consumer.paused, 5)
    for _ in range(20):  # and the health checks (every 0.05 s here) do not clear it
        ready, why = d._ready()
        assert consumer.paused and not ready and "rejects every request" in why, why
        await asyncio.sleep(0.02)
    assert producer.on("rationad.dlq") == []
    state["fixed"] = True
    await until(lambda: final_commit(consumer) == 4, 10)
    d.request_stop()
    assert await task == 0
    assert final_commit(consumer) == 4 and producer.on("rationad.dlq") == []
    assert sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")) == ["a", "b"]


async def test_a_worker_that_swallows_its_cancellation_does_not_wedge_the_stop(monkeypatch):
    """Found when a test hung in 1 of 10 runs on a loaded machine (2026-12-05), failing before its fix: Python 3.11's
    asyncio.wait_for (in the model health check) can swallow a cancellation that arrives as its call completes
    (CPython gh-86296); the health loop then slept on and the stop waited for it for ever. Here a health check
    swallows the first cancellation it meets, as wait_for does in that race."""
    monkeypatch.setattr(daemon_mod, "MODEL_HEALTH_INTERVAL_SECS", 0.001)
    monkeypatch.setattr(tasks_mod, "STOP_CANCEL_WAIT_SECS", 0.1)
    d, consumer, producer = make(settings(), [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}])
    swallowed = []

    async def check_model():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)

    monkeypatch.setattr(d, "_check_model", check_model)
    task = asyncio.create_task(d.run())
    await until(lambda: final_commit(consumer) == 2, 5)
    d.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert swallowed and final_commit(consumer) == 2


async def test_no_task_of_the_daemon_outlives_its_stop(monkeypatch):
    """Found by a second review (2026-12-05), failing before its fix: the drain cancelled the model calls in flight,
    which freed the call slot, and the model loop (stopped only after the drain) started the next batch: a call made
    after the final commit, still running when run() returned."""
    monkeypatch.setattr(tasks_mod, "STOP_CANCEL_WAIT_SECS", 0.1)

    class Hanging(FakeModel):
        async def generate(self, conversations, **kw):
            self.calls += 1
            await asyncio.sleep(3600)  # slower than the drain deadline

    s = settings(model={"max_concurrency": 1, "max_batch_size": 1, "batch_wait_ms": 0, "retry_backoff_secs": 0.0},
                 delivery={"commit_interval_ms": 10, "drain_timeout_secs": 0.3})
    model = Hanging()
    d, consumer, producer = make(s, [{TP: [Rec(i, line(k)) for i, k in enumerate("aabbcc")]}], model=model)
    task = asyncio.create_task(d.run())
    await until(lambda: model.calls >= 1 and d.stage.queue.qsize() >= 1, 5)
    d.request_stop()
    assert await asyncio.wait_for(task, 20) == 0
    alive = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert alive == [] and not d._tasks


async def test_a_refused_key_found_by_the_health_check_fails_readiness_before_any_session(monkeypatch):
    monkeypatch.setattr(daemon_mod, "MODEL_HEALTH_INTERVAL_SECS", 0.05)
    model = FakeModel()
    state = {"refused": True}

    async def verify():
        if state["refused"]:
            raise ModelError("model.api_key: HTTP 401", kind="config")

    model.verify = verify
    d, consumer, producer = make(settings(), [], model=model)
    task = asyncio.create_task(d.run())
    await until(lambda: d.stage.blocked, 2)
    assert not d._ready()[0] and "api_key" in d._ready()[1] and consumer.paused
    state["refused"] = False
    await until(lambda: d._ready()[0], 2)
    assert d._ready() == (True, "ready")
    d.request_stop()
    assert await task == 0


# ---- item 6: a dead engine stops the daemon (its supervisor restarts it) --------------------------------------
async def test_dead_engine_exits_non_zero_holds_its_sessions_and_reports_unhealthy():
    s = settings()

    def answer(text):
        raise ModelError("EngineDeadError: engine core died", kind="dead")

    recs = [Rec(0, line("a")), Rec(1, line("a")), Rec(2, line("b"))]
    d, consumer, producer = make(s, [{TP: recs}], model=FakeModel(answer))
    code = await run_until(d, lambda: d._stop.is_set(), timeout=10)
    assert code == 1
    assert producer.sent == []
    assert final_commit(consumer) in (None, 0)
    healthy, why = d._healthy()
    assert not healthy and "dead" in why and d.stage.dead


# ---- item 10: one byte budget over all partitions ------------------------------------------------------------
async def test_open_sessions_over_all_partitions_stay_within_the_byte_budget_oldest_first():
    tp1 = TopicPartition("logs", 1)
    s = settings(sessions={"window_lines": 100}, delivery={"max_open_bytes": 2_000})
    batches = [{TP: [Rec(o, line(f"a{o}")) for o in range(5)]},
               {tp1: [Rec(o, line(f"b{o}")) for o in range(5)]}]
    d, consumer, producer = make(s, batches)
    consumer.tps = [TP, tp1]
    await run_until(d, lambda: len(producer.on("rationad.anomalies")) >= 5)
    closed = [(orjson.loads(e.value)["session"]["key"], orjson.loads(e.value)["session"]["close_reason"])
              for e in producer.on("rationad.anomalies")]
    # A line costs its text plus 300 bytes: five one-line sessions fit in 2,000 bytes, ten do not. When partition
    # 1's five open, partition 0's five (opened first) are evicted, oldest first, and partition 1's stay open.
    assert sorted(closed) == [(f"a{o}", "evicted") for o in range(5)]
    assert d.metrics.sessions_open_bytes._value.get() <= 2_000


async def test_over_the_byte_budget_the_session_holding_the_most_bytes_closes_first():
    """Found by review (2026-12-07), failing before its fix: over the budget the oldest sessions closed, so one key
    writing long lines made every other key's sessions close early, cut mid-life, while its own stayed open. The
    largest closes first; the others stay open."""
    tp1 = TopicPartition("logs", 1)
    s = settings(sessions={"window_lines": 100}, delivery={"max_open_bytes": 3_000})
    batches = [{TP: [Rec(o, line(f"a{o}")) for o in range(5)]},
               {tp1: [Rec(0, line("big", "INFO " + "x" * 1_500))]}]
    d, consumer, producer = make(s, batches)
    consumer.tps = [TP, tp1]
    await run_until(d, lambda: len(producer.on("rationad.anomalies")) >= 1)
    closed = [(orjson.loads(e.value)["session"]["key"], orjson.loads(e.value)["session"]["close_reason"])
              for e in producer.on("rationad.anomalies")]
    assert closed == [("big", "evicted")]
    assert d.metrics.sessions_open_bytes._value.get() <= 3_000
    assert d._parts[TP].sessionizer.open_count == 5


async def test_sessions_awaiting_a_verdict_are_bounded_in_bytes_too():
    """Evicted sessions become pending; with the model slow, pending sessions must not grow without bound in bytes
    (only their count was bounded: the memory benchmark reached 1.45 GiB with max_pending_sessions raised)."""
    gate = asyncio.Event()

    class Slow(FakeModel):
        async def generate(self, conversations, **kw):
            await gate.wait()
            return await super().generate(conversations, **kw)

    s = settings(sessions={"window_lines": 1}, delivery={"max_open_bytes": 3_000, "max_pending_sessions": 1_000})
    batches = [{TP: [Rec(o, line(f"k{o}", "INFO " + "z" * 400)) for o in range(b * 5, b * 5 + 5)]} for b in range(6)]
    d, consumer, producer = make(s, batches, model=Slow())
    task = asyncio.create_task(d.run())
    await until(lambda: consumer.paused, 3)
    assert consumer.paused and d.delivery.held < 1_000 and d.delivery.held_bytes >= 3_000
    assert consumer.batches, "input stopped while sessions' bytes were over the budget"
    gate.set()
    await until(lambda: final_commit(consumer) == 30, 5)
    d.request_stop()
    assert await task == 0 and final_commit(consumer) == 30


async def test_sessions_of_one_key_on_two_partitions_are_counted_and_warned_once(monkeypatch):
    warned = []

    class Log:
        def __getattr__(self, level):
            return lambda event, **kw: warned.append(event) if level == "warning" else None

    monkeypatch.setattr(daemon_mod, "log", Log())
    tp1 = TopicPartition("logs", 1)
    s = settings(sessions={"window_lines": 2})
    batches = [{TP: [Rec(o, line(k)) for o, k in enumerate(["blk_7", "blk_7", "blk_8", "blk_8", "blk_9"])]},
               {tp1: [Rec(o, line(k)) for o, k in enumerate(["blk_7", "blk_7", "blk_8", "blk_8", "blk_9"])]}]
    d, consumer, producer = make(s, batches)
    consumer.tps = [TP, tp1]
    await run_until(d, lambda: len(producer.on("rationad.anomalies")) >= 4)
    assert d.metrics.split_sessions._value.get() == 2  # blk_9's one-line sessions are not counted
    assert warned.count("input_not_keyed_by_session") == 1


# ---- item 7: lag from the committed offset --------------------------------------------------------------------
async def test_committed_lag_is_exported_beside_the_position_lag():
    d, consumer, producer = make(settings(sessions={"window_lines": 100}), [{TP: [Rec(o, line("a")) for o in range(3)]}])
    consumer.highwater = lambda tp: 10
    consumer.position = lambda tp: asyncio.sleep(0, result=3)
    task = asyncio.create_task(d.run())
    await until(lambda: consumer.commits, 1)
    await d._update_lag()
    d.request_stop()
    await task
    lag = d.metrics.committed_lag.labels("logs", "0")._value.get()
    assert d.metrics.consumer_lag.labels("logs", "0")._value.get() == 7
    assert lag == 10, "the open session starting at 0 keeps the committed offset at 0"


async def test_the_lag_of_a_paused_partition_grows_with_the_topic():
    """Found by review (2026-12-07): aiokafka's highwater() is the last fetch response's mark and a paused partition
    is not fetched, so under backpressure (the model slow or blocked) both lags froze where the pause began while the
    topic grew, and the lag alerts could not fire. The end offsets are asked of the brokers each round."""
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d._on_assigned([TP])
    d._parts[TP].offsets.committed = 3
    consumer.position = lambda tp: asyncio.sleep(0, result=5)
    consumer.highwater = lambda tp: 5  # frozen: no fetch since the pause
    end = [5]
    consumer.end_offsets = lambda tps: asyncio.sleep(0, result={tp: end[0] for tp in tps})
    await d._update_lag()
    end[0] = 900
    await d._update_lag()
    assert d.metrics.consumer_lag.labels("logs", "0")._value.get() == 895
    assert d.metrics.committed_lag.labels("logs", "0")._value.get() == 897

    async def unreachable(tps):
        raise ConnectionError("no broker")

    consumer.end_offsets = unreachable  # the lookup failing: the fetched mark, as before
    await d._update_lag()
    assert d.metrics.consumer_lag.labels("logs", "0")._value.get() == 0


async def test_a_partition_revoked_during_a_lag_lookup_is_not_exported_again():
    """Found by review (2026-12-07): the committed-offset lookup of a partition that had committed nothing yet was
    awaited, the partition revoked meanwhile (its gauges removed), and then its gauges set again: the old owner
    exported a frozen lag for ever."""
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d._on_assigned([TP])
    consumer.position = lambda tp: asyncio.sleep(0, result=5)
    consumer.highwater = lambda tp: 8
    asked = asyncio.Event()
    go = asyncio.Event()

    async def committed(tp):
        asked.set()
        await go.wait()
        return 3

    consumer.committed = committed
    lookup = asyncio.create_task(d._update_lag())
    await asked.wait()
    await d._on_revoked([TP])
    go.set()
    await lookup
    exported = {tuple(s.labels.values()) for g in (d.metrics.consumer_lag, d.metrics.committed_lag)
                for m in g.collect() for s in m.samples}
    assert ("logs", "0") not in exported


def _age_daemon(monkeypatch, written: float | None = None):
    """A daemon with partition ``TP`` assigned and a clock the test moves: (daemon, consumer, part, clock, age()).
    ``written``: the broker time ``record_times`` reads on the side for a committed offset nothing was fetched at
    (its calls are noted in ``d.side_reads``)."""
    clock = [1000.0]
    monkeypatch.setattr(daemon_mod.time, "monotonic", lambda: clock[0])

    reads = []

    async def record_times(cfg, offsets, timeout_secs):
        reads.append(dict(offsets))
        return {tp: written for tp in offsets} if written is not None else {}

    monkeypatch.setattr(daemon_mod, "record_times", record_times, raising=False)
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d.side_reads = reads
    d._on_assigned([TP])
    return d, consumer, d._parts[TP], clock, lambda: d.metrics.committed_age.labels("logs", "0")._value.get()


async def test_the_committed_offset_standing_still_with_records_past_it_is_exported_as_an_age(monkeypatch):
    """Found by review (2026-12-06): with repartitioning, a commit pinned by a blocked model loses the internal
    topic's records at its retention (a day by default) whatever their number, which the record-count lag alert
    cannot see on a quiet partition; the age of the committed offset can."""
    d, consumer, part, clock, age = _age_daemon(monkeypatch)
    part.offsets.consumed(4)  # records 3-4 read, held by the blocked model (position 5 says they were read)
    part.offsets.committed = 3
    consumer.position = lambda tp: asyncio.sleep(0, result=5)
    high = [5]
    consumer.highwater = lambda tp: high[0]
    await d._update_lag()
    clock[0] += 7200
    await d._update_lag()
    assert age() == 7200  # stuck at 3 for two hours with records 3-4 waiting
    part.offsets.committed = 4
    await d._update_lag()
    assert age() == 0  # it moved
    part.offsets.committed, high[0] = 5, 5
    clock[0] += 7200
    await d._update_lag()
    assert age() == 0  # nothing waits past it: a quiet partition is not stalled


async def test_a_transactional_input_read_to_its_end_marker_is_not_stalled(monkeypatch):
    """Found by review (2026-12-07): a transaction's end marker is the last offset of a quiet transactional input and
    no record the daemon reads, so the committed offset stays one below the end for good and its age grew until the
    critical alert said records waited to be lost. Read to the end with everything read committed, nothing waits."""
    d, consumer, part, clock, age = _age_daemon(monkeypatch)
    part.offsets.consumed(6)  # the last line read: offset 6; 7 is the commit marker, the end is 8
    part.offsets.committed = 7
    consumer.position = lambda tp: asyncio.sleep(0, result=8)
    consumer.highwater = lambda tp: 8
    await d._update_lag()
    clock[0] += 24_000
    await d._update_lag()
    assert age() == 0
    consumer.position = lambda tp: asyncio.sleep(0, result=7)  # a record at 7 not read yet: it waits
    await d._update_lag()
    clock[0] += 7200
    await d._update_lag()
    assert age() == 7200


async def test_the_committed_age_of_a_partition_never_fetched_counts_from_its_record_s_time(monkeypatch):
    """Found by review: a partition assigned while input is paused (the model blocked across a restart, or a
    rebalance then) is never fetched, so the age started at 0 at every restart (the k8s startup probe and systemd's
    start timeout restart a daemon whose model is blocked every 10 minutes) and the 6 h stall alert could never fire
    in the outage it is for. The time of the record at the committed offset is read on the side."""
    wall = 100_000.0
    monkeypatch.setattr(daemon_mod.time, "time", lambda: wall)
    d, consumer, part, clock, age = _age_daemon(monkeypatch, written=wall - 7200)
    part.offsets.committed = 3  # the group's offset; nothing fetched since the assignment (paused)
    consumer.position = lambda tp: asyncio.sleep(0, result=3)
    consumer.highwater = lambda tp: 10
    await d._update_lag()
    assert age() == 7200
    clock[0] += 60
    await d._update_lag()
    assert age() == 7260
    assert d.side_reads == [{TP: 3}]  # once, at the first round


async def test_partitions_never_fetched_are_read_on_the_side_together(monkeypatch):
    """Found by review of the above: one side consumer a partition, one after another, each up to the lookup's
    timeout against a hung bootstrap host, held the model's health checks (the same loop) for minutes."""
    d, consumer, part, clock, age = _age_daemon(monkeypatch, written=None)
    tps = [TopicPartition("logs", p) for p in range(3)]
    consumer.tps = tps
    d._on_assigned(tps[1:])
    for tp in tps:
        d._parts[tp].offsets.committed = 3
    consumer.position = lambda tp: asyncio.sleep(0, result=3)
    consumer.highwater = lambda tp: 10
    await d._update_lag()
    assert d.side_reads == [{tp: 3 for tp in tps}]
    assert age() == 0  # no time read: counted from now


async def test_the_committed_age_survives_a_reassignment_and_leaves_with_the_partition(monkeypatch):
    """Found by review (2026-12-06) of the gauge above: a new assignment (a restart, a rebalance) started the age at
    0 although the commit had stood still for hours, so restarts more often than the alert's 6 h hid a stall; and a
    replica that lost the partition kept exporting its frozen age. The age starts from the broker timestamp of the
    record at the committed offset, the first one read, and a revoked partition's gauges are removed."""
    wall = [100_000.0]
    monkeypatch.setattr(daemon_mod.time, "time", lambda: wall[0])
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d._on_assigned([TP])
    part = d._parts[TP]
    part.offsets.committed = 3
    part.first_read = (3, wall[0] - 7200)  # the record at the committed offset was written two hours ago
    consumer.position = lambda tp: asyncio.sleep(0, result=5)
    consumer.highwater = lambda tp: 5
    await d._update_lag()
    age = d.metrics.committed_age.labels("logs", "0")._value.get()
    assert 7199 <= age <= 7201
    await d._on_revoked([TP])
    assert ("logs", "0") not in {tuple(s.labels.values()) for m in d.metrics.committed_age.collect() for s in m.samples}


# ---- item 14: a missing output topic fails the start, and a failed start leaves nothing running -------------
async def test_missing_output_topic_fails_start_naming_the_key_and_closes_the_model():
    from rationad.config import ConfigError

    model = FakeModel()
    closed = []
    model.aclose = lambda: closed.append(True) or asyncio.sleep(0)
    d, consumer, producer = make(settings(), [], model=model)

    async def missing(kafka_cfg, keyed, **kw):
        raise ConfigError("output.dlq_topic: topic 'rationad.dlq' does not exist")

    _patch.setattr("rationad.topics.require_topics", missing)
    with pytest.raises(ConfigError, match="output.dlq_topic"):
        await d.run()
    assert closed == [True] and consumer.listener is None


# ---- backpressure counts dead letters too ---------------------------------------------------------------------
async def test_unacknowledged_dead_letters_count_towards_backpressure():
    s = settings(delivery={"max_pending_sessions": 4})
    release = asyncio.Event()

    class SlowDlq(FakeProducer):
        async def send(self, topic, value=None, key=None, headers=None):
            if topic == "rationad.dlq":
                await release.wait()
            return await super().send(topic, value, key, headers)

    producer = SlowDlq()
    batches = [{TP: [Rec(o, b"\xff") for o in range(0, 10)]}, {TP: [Rec(10, b"\xff")]}]
    d, consumer, producer = make(s, batches, producer=producer)
    task = asyncio.create_task(d.run())
    await until(lambda: consumer.paused, 3)
    assert consumer.paused and len(consumer.batches) == 1
    release.set()
    await until(lambda: final_commit(consumer) == 11, 5)
    d.request_stop()
    assert await task == 0
    assert final_commit(consumer) == 11


_patch = pytest.MonkeyPatch()


@pytest.fixture(autouse=True)
def _undo_patches():
    yield
    _patch.undo()


@pytest.fixture(autouse=True)
def _quiet_logs():
    from rationad.logs import configure

    try:
        configure("warning", "console")
    except TypeError:
        pass


def test_the_byte_budget_drops_lines_carried_for_revisions_before_it_closes_a_session():
    from rationad.daemon import _Part
    from rationad.records import LogLine
    from rationad.windows import Sessionizer

    s = settings(sessions={"mode": "session", "gap_secs": 1_000, "max_open_secs": 10},
                 delivery={"max_open_bytes": 2_000})
    d, _, _ = make(s, [])
    assert d.spec.carry_context  # session-level judging reads the earlier lines
    w = Sessionizer(d.spec, topic=TP.topic, partition=TP.partition)
    d._parts = {TP: _Part(w)}
    submitted = []
    d._submit = lambda sessions, part, now: submitted.extend(sessions)
    for o in range(4):  # four keys closed by max_open: their lines are carried for their next revisions
        w.add(LogLine(f"k{o}", "INFO x", "INFO x " + "y" * 100, offset=o), 0.0)
    assert len(w.tick(10.0)) == 4 and w.open_count == 0
    w.add(LogLine("new", "INFO x", "INFO x " + "y" * 100, offset=9), 10.0)
    assert w.open_bytes > 2_000
    d._enforce_byte_budget(10.0)
    # Within budget again by forgetting the oldest carried lines; the open session stays open.
    assert submitted == [] and w.open_count == 1 and w.open_bytes <= 2_000
    assert list(w._carried) == ["k1", "k2", "k3"] and list(w._revisions) == ["k0", "k1", "k2", "k3"]


# ---- found by review (2026-12-03): each failed before its fix ----------------------------------------------------
async def test_records_fetched_before_a_rebalance_do_not_let_the_new_part_commit_past_dropped_sessions(monkeypatch):
    """An eager rebalance during an await of one batch revokes every partition (dropping TP1's open window at offset
    0) and assigns them again: TP1's records of that batch, fetched before it, must not go into TP1's new state,
    whose commit would then pass the dropped window."""
    s = settings()  # fixed windows of 2 lines: one line keeps its window open
    tp0, tp1 = TopicPartition("logs", 0), TopicPartition("logs", 1)
    first = {tp1: [Rec(0, line("a"))]}
    second = {tp0: [Rec(o, line(f"k{o}")) for o in range(0, 700)],  # tp0 first: the loop yields inside it
              tp1: [Rec(1, line("x"))]}
    d, consumer, producer = make(s, [first, second])
    consumer.tps = [tp0, tp1]
    rebalanced = []
    real_sleep = asyncio.sleep

    async def sleep(secs, *a, **kw):
        if secs == 0 and not rebalanced and consumer.batches == [] and tp1 in d._parts:
            rebalanced.append(True)
            await d._on_revoked([tp0, tp1])
            d._on_assigned([tp0, tp1])
        return await real_sleep(secs, *a, **kw)

    monkeypatch.setattr(daemon_mod.asyncio, "sleep", sleep)
    await run_until(d, lambda: bool(rebalanced), timeout=10)
    assert all(c[tp1] <= 0 for c in consumer.commits if tp1 in c), consumer.commits


def _undecodable_then_rebalance(refetch, after=()):
    """A daemon on partitions [tp1, tp0] (fixed windows of 2 lines) whose tp1 holds line 'a' at offset 0 open; its
    next fetch raises UnicodeDecodeError, and the recovery's refetch of one partition is ``refetch(d, tp)`` (it may
    rebalance); ``after``: the batches fetched once it rebalanced."""
    s = settings()
    tp0, tp1 = TopicPartition("logs", 0), TopicPartition("logs", 1)
    d, consumer, producer = make(s, [{tp1: [Rec(0, line("a"))]}])
    consumer.tps = [tp1, tp0]
    state = {"raised": False, "rebalanced": False, "after": list(after)}

    async def start():  # assigned in the order tp1, tp0: the recovery refetches tp1 first
        await consumer.listener.on_partitions_assigned([tp1, tp0])

    real_getmany = consumer.getmany

    async def getmany(*tps, timeout_ms=0, max_records=None):
        if not tps:
            if not consumer.batches and not state["raised"] and tp1 in d._parts \
                    and d._parts[tp1].offsets.next_offset == 1:
                state["raised"] = True
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
            if state["rebalanced"] and state["after"]:
                return state["after"].pop(0)
            return await real_getmany(timeout_ms=timeout_ms, max_records=max_records)
        if state["rebalanced"]:
            return {}
        return await refetch(d, state, *tps)

    async def position(tp):  # a partition assigned again starts from the group's offset, as aiokafka's does
        if state["rebalanced"]:
            return max((c[tp] for c in consumer.commits if tp in c), default=0)
        return {tp1: 1, tp0: 0}[tp]

    async def seek_to_beginning(*tps):
        return None

    consumer.start, consumer.getmany, consumer.position = start, getmany, position
    consumer.seek, consumer.seek_to_beginning = (lambda tp, offset: None), seek_to_beginning
    consumer.highwater = lambda tp: 100
    return d, consumer, producer, state, tp0, tp1


async def test_records_refetched_around_an_undecodable_one_before_a_rebalance_do_not_go_to_the_new_part():
    """Found by review (2026-12-06), failing before its fix: the recovery from an undecodable record refetches each
    partition in turn; a rebalance while it waits on a later one revoked TP1 (dropping its open window at offset 0)
    and assigned it again, and TP1's records refetched before it went into the new state, whose commit then passed
    the dropped window."""
    async def refetch(d, state, tp):
        if tp.partition == 1:
            return {tp: [Rec(1, line("x"))]}  # fetched for tp1's old assignment
        state["rebalanced"] = True  # an eager rebalance while tp0's refetch waits
        tp1 = TopicPartition("logs", 1)
        await d._on_revoked([tp1, tp])
        state["at"] = asyncio.get_running_loop().time()
        d._on_assigned([tp1, tp])
        return {}

    d, consumer, _, state, _, tp1 = _undecodable_then_rebalance(refetch)
    loop = asyncio.get_running_loop()
    await run_until(d, lambda: loop.time() > state.get("at", loop.time()) + 1.5, timeout=5)  # commits run meanwhile
    assert state["rebalanced"] and all(c[tp1] <= 0 for c in consumer.commits if tp1 in c), consumer.commits


async def test_records_refetched_for_a_partition_assigned_again_during_its_own_refetch_go_to_its_new_state():
    """Found by review (2026-12-06) of the fix above, failing before this one: aiokafka waits out a rebalance inside
    a partition's own refetch, then returns records of the new assignment (from the committed offset); dropping them
    with the old assignment's lost them (the position was past them, and the new state's commit passed them)."""
    async def refetch(d, state, tp):
        if tp.partition != 1:
            return {}
        state["rebalanced"] = True  # the rebalance completes while tp1's own refetch waits
        tp0 = TopicPartition("logs", 0)
        await d._on_revoked([tp, tp0])
        d._on_assigned([tp, tp0])
        return {tp: [Rec(0, line("a")), Rec(1, line("a"))]}  # the new assignment's, from the committed 0

    after = [{TopicPartition("logs", 1): [Rec(2, line("y")), Rec(3, line("y"))]}]
    d, consumer, producer, _, _, tp1 = _undecodable_then_rebalance(refetch, after)
    await run_until(d, lambda: any(c.get(tp1, 0) >= 4 for c in consumer.commits), timeout=5)
    judged = sorted((e["session"]["first_offset"], e["session"]["last_offset"])
                    for e in (orjson.loads(r.value) for r in producer.on("rationad.anomalies")))
    assert (0, 1) in judged and (2, 3) in judged, (judged, consumer.commits)


def test_partitions_assigned_while_input_is_paused_are_paused():
    """aiokafka's new partition states start unpaused: after a rebalance during backpressure the daemon pauses them
    again, or input would be read without bound while outputs wait."""
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d._paused = True
    d._on_assigned([TP])
    assert TP in consumer.paused


async def test_a_stop_while_the_broker_is_unreachable_exits_cleanly_and_soon():
    """Found by review (2026-12-03), failing before its fix: aiokafka's commit retries for ever while the group
    coordinator is unknown, and the producer's flush waits for its batches; a SIGTERM then never ended in an exit (the
    supervisor kills the process). The fakes hang as they do."""
    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 1})
    d, consumer, producer = make(s, [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}])
    down = asyncio.Event()
    real_commit = consumer.commit

    async def commit(offsets):
        if down.is_set():
            await asyncio.Event().wait()  # the coordinator unreachable
        await real_commit(offsets)

    async def flush():
        if down.is_set():
            await asyncio.Event().wait()

    consumer.commit, producer.flush = commit, flush
    task = asyncio.create_task(d.run())
    await until(lambda: final_commit(consumer) == 2, 5)
    assert final_commit(consumer) == 2
    down.set()
    await asyncio.sleep(0.2)
    d.request_stop()
    assert await asyncio.wait_for(task, 12) == 0  # the main loop's commit (5 s at most), then a 1 s drain



async def test_a_pause_for_backpressure_does_not_close_open_sessions_by_their_gap():
    """Found by review (2026-12-05): while the input was paused (sessions awaiting a slow model) the windows took the
    wall clock for quiet and closed every open session whose gap passed, though its next lines waited in Kafka."""
    gate = asyncio.Event()

    class Slow(FakeModel):
        async def generate(self, conversations, **kw):
            await gate.wait()
            return await super().generate(conversations, **kw)

    def rec(o, key, ts):
        return Rec(o, orjson.dumps({"message": "INFO routine work", "key": key, "ts": ts}))

    s = settings(input={"format": "json", "json_key_field": "key", "timestamp_field": "ts", "key_regex": None,
                        "repartition": "never"},
                 sessions={"mode": "session", "gap_secs": 60, "max_lines": 2, "max_open_secs": 3600},
                 delivery={"max_pending_sessions": 1})
    batches = [{TP: [rec(0, "p", 1000), rec(1, "p", 1000), rec(2, "a", 1000)]}, {TP: [rec(3, "a", 1001)]}]
    d, consumer, producer = make(s, batches, model=Slow())
    wall = [1_000_000.0]
    d.clock = lambda: wall[0]
    task = asyncio.create_task(d.run())
    await until(lambda: consumer.paused, 3)
    assert consumer.paused  # p's session (closed by max_lines) awaits the model; a's is open
    for _ in range(10):  # ten minutes of wall clock pass while paused
        wall[0] += 60
        await asyncio.sleep(0.05)
    assert d._parts[TP].sessionizer.open_count == 1, "a's session was closed by a gap that was a pause"
    gate.set()
    await until(lambda: final_commit(consumer) == 4, 5)
    d.request_stop()
    assert await task == 0
    a = [orjson.loads(m.value) for m in producer.on(s.output.topic) if orjson.loads(m.value)["session"]["key"] == "a"]
    assert len(a) == 1 and a[0]["session"]["line_count"] == 2


async def test_a_position_lookup_that_hangs_on_one_partition_leaves_the_others_lag_measured(monkeypatch):
    """Found by review (2026-12-05): a position lookup that timed out (an offset reset waiting on that partition's
    leader alone) ended the round, and every partition after it kept a stale lag."""
    monkeypatch.setattr(daemon_mod, "LAG_LOOKUP_SECS", 0.2)
    stuck, fine = TopicPartition("logs", 1), TopicPartition("logs", 2)
    d, consumer, _ = make(settings(), [])
    consumer.tps = [TP, stuck, fine]

    async def position(tp):
        if tp == stuck:
            await asyncio.Event().wait()
        return 3

    consumer.position, consumer.highwater = position, (lambda tp: 10)
    task = asyncio.create_task(d.run())
    await until(lambda: fine in d._parts, 3)
    d._parts = {stuck: d._parts[stuck], fine: d._parts[fine]}  # the stuck partition first
    await asyncio.wait_for(d._update_lag(), 2)
    assert d.metrics.consumer_lag.labels("logs", "2")._value.get() == 7
    d.request_stop()
    assert await task == 0


async def test_a_stop_during_a_group_rebalance_drains_and_exits():
    """Seen in CI (tests/failure/test_rebalance.py, 2026-12-05), failing before its fix: while the group reassigns
    partitions, aiokafka 0.14's ``getmany`` waits for the new assignment with no timeout (``Fetcher.fetched_records``
    ignores ``timeout_ms`` then); a SIGTERM in that wait never reached the drain, and the records already closed into
    sessions were neither judged nor committed. The fake's fetch hangs as aiokafka's does."""
    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 2})
    d, consumer, producer = make(s, [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}])
    rebalancing = asyncio.Event()
    real_getmany = consumer.getmany
    fetches = 0

    async def getmany(timeout_ms=0, max_records=None):
        nonlocal fetches
        fetches += 1
        if rebalancing.is_set():
            await asyncio.Event().wait()  # reassignment_in_progress: no new assignment comes
        return await real_getmany(timeout_ms, max_records)

    consumer.getmany = getmany
    task = asyncio.create_task(d.run())
    await until(lambda: final_commit(consumer) == 2, 5)
    assert final_commit(consumer) == 2
    rebalancing.set()
    seen = fetches
    await until(lambda: fetches > seen, 2)  # the main loop is inside the hanging fetch
    d.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert [e for e in producer.on(s.output.topic)], "the session closed before the stop was emitted"


@pytest.mark.parametrize("hang", ["refetch", "committed"])
async def test_a_stop_during_the_recovery_from_an_undecodable_record_drains_and_exits(hang):
    """Found by review (2026-12-05), failing before its fix: after a record aiokafka cannot decode, the daemon rewinds
    and fetches around it with calls that wait for ever during a rebalance (``getmany`` of one partition) or while the
    coordinator is unknown (``committed``); they were not raced against the stop, so a SIGTERM then never drained."""
    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 2})
    d, consumer, producer = make(s, [])
    calls = 0

    async def getmany(*tps, timeout_ms=0, max_records=None):
        nonlocal calls
        calls += 1
        if tps:  # fetch_around's refetch of one partition
            await asyncio.Event().wait()
        if calls == 3:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        await asyncio.sleep(0.01)
        return {}

    async def committed(tp):
        if hang == "committed":
            await asyncio.Event().wait()
        return None

    async def position(tp):
        return 0

    async def seek_to_beginning(*tps):
        return None

    consumer.getmany, consumer.committed, consumer.position = getmany, committed, position
    consumer.seek, consumer.seek_to_beginning = (lambda tp, offset: None), seek_to_beginning
    consumer.highwater = lambda tp: 5
    task = asyncio.create_task(d.run())
    await until(lambda: calls >= 3, 3)
    await asyncio.sleep(0.1)  # inside the recovery's hanging call
    assert not task.done()
    d.request_stop()
    assert await asyncio.wait_for(task, 5) == 0


async def test_lag_lookups_that_hang_do_not_stall_the_health_loop(monkeypatch):
    """Found by review (2026-12-05), failing before its fix: a partition that never committed had its committed offset
    looked up every 10 s; aiokafka retries that for as long as the coordinator is unknown, and the health loop (the
    model's health checks with it) stopped there."""
    monkeypatch.setattr(daemon_mod, "LAG_LOOKUP_SECS", 0.2)
    d, consumer, _ = make(settings(), [])

    async def committed(tp):
        await asyncio.Event().wait()

    consumer.committed = committed
    task = asyncio.create_task(d.run())
    await until(lambda: TP in d._parts, 3)
    await asyncio.wait_for(d._update_lag(), 2)
    d.request_stop()
    assert await task == 0


async def test_an_unexpected_error_mid_batch_still_sends_the_dead_letters_held_before_it(monkeypatch):
    """Found by review (2026-12-03), failing before its fix: the dead letters of a batch were sent after the batch's
    loop, so an unexpected error in a later record left their holds unsent: the drain waited its whole budget and the
    committed offset stayed before a record whose dead letter was ready. (A bug in windowing: one in a parser costs
    its record only, a ``parse_failed`` dead letter.)"""
    from rationad.windows import Sessionizer

    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 5})
    d, consumer, producer = make(s, [{TP: [Rec(0, b"\xff bad"), Rec(1, line("a"))]}])
    real_add = Sessionizer.add

    def add(self, ln, now):
        if ln.offset == 1:
            raise RuntimeError("a bug in windowing")
        return real_add(self, ln, now)

    monkeypatch.setattr(Sessionizer, "add", add)
    started = time.monotonic()
    code = await asyncio.wait_for(d.run(), 20)
    assert code == 1  # the main loop failed: the supervisor restarts the daemon
    assert [dict(x.headers)["rationad-error-type"] for x in producer.on("rationad.dlq")] == [b"invalid_utf8"]
    assert time.monotonic() - started < 4, "the drain had nothing to wait for"


async def test_a_restarted_replica_continues_its_own_catalog_counts(monkeypatch):
    """With a static member id the catalog name is stable (``daemon._instance``): at start the replica reads its own
    records back, so its counts continue; another replica's records are not its to continue."""
    from rationad import catalog
    from rationad.catalog import TemplateStat
    from rationad.templates import template_id

    s = settings(judge={"level": "template"}, kafka={"group_id": "g", "group_instance_id": "pod-0"})
    d, _, _ = make(s, [])

    def stat(template, instance, count):
        return TemplateStat(template=template, verdict="normal", source="model", rationale="", model_version="1",
                            count=count, first_seen=5.0, last_seen=6.0, instance=instance)

    async def read_stats(kafka, topic, timeout_secs=30):
        return [stat("disk {*} ok", "g:pod-0", 41), stat("fan {*} ok", "g:pod-1", 7), stat("fan {*} ok", "h:pod-0", 3)]

    monkeypatch.setattr(catalog, "read_stats", read_stats)
    await d._carry_catalog_counts()
    book = d.templates.book
    assert book.observe("disk 3 ok", 30.0).count == 42
    assert book.observe("fan 1 ok", 30.0).count == 1
    assert template_id("disk {*} ok") == book.observe("disk 4 ok", 31.0).id


async def test_a_wall_clock_stepped_back_does_not_hold_sessions_open_past_max_open_secs():
    """Found by review, failing before its fix: the windows' processing-time bounds read time.time(), so a system
    clock stepped back an hour kept every open session open an hour past sessions.max_open_secs (pinning the committed
    offset). The daemon's clock (rationad.clock) goes on at the monotonic pace."""
    from rationad.clock import SteadyClock

    s = settings(sessions={"mode": "session", "gap_secs": 100_000, "max_open_secs": 10},
                 input={"repartition": "never"})
    d, consumer, producer = make(s, [{TP: [Rec(0, line("a"))]}])
    t = {"wall": 1_000_000.0, "mono": 0.0}
    d.clock = SteadyClock(wall=lambda: t["wall"], mono=lambda: t["mono"])

    def opened_then_step_back() -> bool:
        part = d._parts.get(TP)
        if part is not None and part.sessionizer.open_count == 1 and t["mono"] == 0.0:
            t["wall"], t["mono"] = t["wall"] - 3_600, 11.0  # 11 s later by the monotonic clock
        return final_commit(consumer) == 1

    await run_until(d, opened_then_step_back, timeout=10)
    assert [orjson.loads(e.value)["session"]["close_reason"] for e in producer.on(s.output.topic)] == ["max_open"]



@pytest.mark.parametrize("records", [1, 3])
async def test_a_dead_letter_the_broker_refuses_stops_without_waiting_out_the_drain_budget(records):
    """Found by review (2026-12-04), failing before its fix: an undeliverable dead letter stops the daemon (exit 1)
    and its hold can never clear, but the drain waited for it until drain_timeout_secs (30 s by default) on every
    such stop. Now it waits only for the holds that can still clear. With several in one fetch (a later review,
    failing before its fix), the first refusal left the others' holds neither released nor counted stuck."""
    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 8})

    def fail(rec):
        return RecordTooLargeError() if rec.topic == s.output.dlq_topic else None

    recs = [Rec(o, b"\xff" + bytes([o])) for o in range(records)]
    d, consumer, producer = make(s, [{TP: recs}], producer=FakeProducer(fail=fail))
    t0 = time.monotonic()
    code = await run_until(d, lambda: d._stop.is_set(), timeout=10)
    assert code == 1 and d.delivery.held == d.delivery.stuck == records
    assert time.monotonic() - t0 < 4, "the drain waited its whole budget for a hold that cannot clear"
    assert final_commit(consumer) in (None, 0)  # nothing committed past the undelivered dead letter


class _Served(FakeModel):
    """A vllm-server client named by the model its server lists, learnt at start (``ServerClient.start``)."""

    def __init__(self, served: str) -> None:
        super().__init__()
        self.name, self._served = "vllm-server", served

    async def start(self) -> None:
        self.name = self._served


class _Late(FakeModel):
    """A vllm-server client whose server is down at start: it names its model on the third ask."""

    def __init__(self, served: str) -> None:
        super().__init__()
        self.name, self._served, self.model, self.asked = "vllm-server", served, None, 0

    async def discover(self) -> str:
        self.asked += 1
        if self.asked < 3:
            raise ModelError("model.server_url: connection refused", kind="outage")
        self.model = self.name = self._served
        return self._served


async def test_a_server_down_at_start_is_waited_for_when_its_model_name_is_the_identity(monkeypatch):
    """Found by review (2026-12-05), failing before its fix: the identity was read once at start; with the server
    still down it was the placeholder's ('vllm-server') for the whole run, so a session read again after a restart
    (the server up by then) came out under another event id, and the verdict cache took the shared placeholder's."""
    s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1", "retry_backoff_secs": 0.0})
    sleeps = []
    real_sleep = asyncio.sleep

    async def quick(secs, *a):
        sleeps.append(secs)
        await real_sleep(0)

    d, consumer, producer = make(s, [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}], model=_Late("model-b"))
    monkeypatch.setattr(daemon_mod.asyncio, "sleep", quick)
    try:
        code = await run_until(d, lambda: producer.on(s.output.topic))
    finally:
        monkeypatch.undo()
    assert code == 0 and d.client.asked == 3 and [x for x in sleeps if x >= 1][:2] == [1.0, 2.0]  # backoff
    (ev,) = [orjson.loads(m.value) for m in producer.on(s.output.topic)]
    assert ev["model"]["name"] == "model-b" and d.model.name == "model-b"


async def test_a_stop_while_waiting_for_the_model_s_name_exits_at_once():
    s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1", "retry_backoff_secs": 0.0})
    d, consumer, producer = make(s, [], model=_Late("never"))
    producer_started = False

    async def start():
        nonlocal producer_started
        producer_started = True

    producer.start = start
    d.client.asked = -10**6  # the server never answers
    task = asyncio.create_task(d.run())
    await until(lambda: d.client.asked > -10**6, 3)
    d.request_stop()
    assert await asyncio.wait_for(task, 3) == 0
    assert consumer.listener is None and not producer_started  # it joined no group, started no producer


class _Loading(FakeModel):
    """A client whose start never ends (an in-process engine loading); records its start and close."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.closed = asyncio.Event(), 0

    async def start(self) -> None:
        self.started.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed += 1


def _unanswering_server() -> tuple[ServerClient, asyncio.Event, list[int]]:
    """A real vllm-server client, with no served_model_name, whose server never answers: its start asks for the
    model's name (up to 4 x model.request_timeout_secs with a server down)."""
    import httpx

    asked, closed = asyncio.Event(), []

    async def never(request):
        asked.set()
        await asyncio.Event().wait()

    cfg = ModelConfig(backend="vllm-server", server_url="http://127.0.0.1:1")
    client = ServerClient(cfg, transport=httpx.MockTransport(never))
    real_aclose = client.aclose

    async def aclose():
        closed.append(1)
        await real_aclose()

    client.aclose = aclose
    return client, asked, closed


@pytest.mark.parametrize("backend", ["vllm-engine", "vllm-server"])
async def test_a_stop_while_the_model_starts_ends_the_start_at_once_and_closes_the_client(backend):
    """Known since 2026-12 and failing before its fix: a stop (SIGTERM) while the model client started was seen only
    once the start ended: an in-process engine's load (minutes) or a vllm-server client asking a down server for its
    model's name (up to 4 x 120 s), past the supervisor's grace period (55 s)."""
    s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1", "retry_backoff_secs": 0.0})
    if backend == "vllm-engine":
        model = _Loading()
        began, closed = model.started, lambda: model.closed
    else:
        model, began, calls = _unanswering_server()
        closed = lambda: len(calls)  # noqa: E731
    d, consumer, producer = make(s, [], model=model)
    producer_started = False

    async def start():
        nonlocal producer_started
        producer_started = True

    producer.start = start
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(began.wait(), 3)
    d.request_stop(signal="SIGTERM")
    assert await asyncio.wait_for(task, 2) == 0  # a requested stop's exit code
    assert closed() == 1  # the half-started client is closed
    assert consumer.listener is None and not producer_started and not consumer.commits


async def test_a_server_that_refuses_us_fails_start_naming_the_keys_when_its_name_is_the_identity():
    """A refused key or a server listing no model cannot be waited out: start-up fails with the keys to fix."""
    from rationad.config import ConfigError

    class Refused(_Late):
        async def discover(self) -> str:
            raise ModelError("model.api_key: the server refused it (401)", kind="config")

    s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1", "retry_backoff_secs": 0.0})
    d, _, _ = make(s, [], model=Refused("x"))
    with pytest.raises(ConfigError, match="model.served_model_name"):
        await asyncio.wait_for(d.run(), 5)


async def test_a_served_model_found_at_start_gives_the_identity_of_that_model():
    """Found by review: with neither model.served_model_name nor model.path, the identity (verdict-cache namespace,
    event ids, events' model name) was read before the client learnt the served model's name, so every model behind
    the URL shared it: a restarted daemon recovered another model's verdicts as cache hits."""
    s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1", "retry_backoff_secs": 0.0},
                 cache={"enabled": True, "durable": True}, judge={"level": "template"})
    identities = []
    for served in ("model-a", "model-b"):
        d = Daemon(s, client=_Served(served))
        await d.client.start()
        d._identify_model()
        assert d.model.name == served and d.stage.model is d.model and d.templates.model is d.model
        identities.append((d.model.version, d.cache.store.namespace))
    assert identities[0][0] != identities[1][0] and identities[0][1] != identities[1][1]


def test_the_durable_cache_namespace_follows_what_shapes_a_cached_answer():
    """Found by review: the durable cache was keyed by the prompt and the model identity only, so after an operator
    turned on model.constrain_output (or raised max_new_tokens), the changelog still served answers with ungrounded
    citations (or cut rationales) as hits, without the model call or the repairs a miss gets."""
    from rationad.judge import ANSWER_POLICY

    def namespace(**model):
        s = settings(model={"backend": "vllm-server", "server_url": "http://127.0.0.1:1",
                            "served_model_name": "m", **model}, cache={"enabled": True, "durable": True})
        return Daemon(s, client=FakeModel())._namespace()

    base = namespace()
    assert base == namespace()  # a restart with the same settings finds its verdicts
    assert len({base, namespace(constrain_output=False), namespace(max_new_tokens=512),
                namespace(temperature=0.7)}) == 4
    _patch.setattr("rationad.judge.ANSWER_POLICY", ANSWER_POLICY + 1)
    assert namespace() != base  # the daemon's repairs changed


async def test_a_durable_cache_without_faust_fails_start_naming_the_key(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: ``cache.durable = true`` (the default) on an install
    without faust-streaming (the systemd guide's) ran on an in-memory cache only, with a warning: every restart judged
    everything again, and no replica shared a verdict. Start fails naming the key, as check-config does."""
    import sys

    from rationad.config import ConfigError

    monkeypatch.setitem(sys.modules, "faust", None)  # import faust raises ImportError
    d, _, _ = make(settings(cache={"enabled": True, "durable": True}), [])
    with pytest.raises(ConfigError, match="cache.durable: needs faust-streaming"):
        await asyncio.wait_for(d.run(), 5)


async def test_a_health_port_already_in_use_fails_start_naming_the_keys():
    """Found by review (2026-12-06), failing before its fix: a port in use (or a host not on this machine) ended
    ``run`` with a raw OSError traceback and exit status 1, which the service restarts for ever."""
    import socket

    from rationad.config import ConfigError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        s = settings(server={"enabled": True, "host": "127.0.0.1", "port": taken.getsockname()[1]})
        d, _, _ = make(s, [])
        with pytest.raises(ConfigError, match="server.host / server.port"):
            await asyncio.wait_for(d.run(), 5)
    finally:
        taken.close()


async def test_a_stop_during_the_verdict_cache_recovery_ends_the_start_there():
    """Found by review (2026-12-06), failing before its fix: a stop while the durable cache recovered (up to 120 s:
    a broker down, a static member's old session) waited for the recovery, then the start went on: the producer
    started and the consumer joined the group after the stop, past the supervisor's grace period."""
    from rationad.cache import VerdictCache

    class SlowStore:
        namespace = "x"

        async def start(self):
            await asyncio.sleep(30)

        def items(self):
            return []

        async def aclose(self):
            pass

    s = settings()
    d, consumer, producer = make(s, [])
    d.cache = VerdictCache(10, store=SlowStore())
    task = asyncio.create_task(d.run())
    await asyncio.sleep(0.3)  # recovering
    d.request_stop(signal="SIGTERM")
    await asyncio.wait_for(task, 5)
    assert d.producer is None and d.consumer is None and consumer.listener is None


async def test_a_stop_with_the_broker_unreachable_closes_within_the_drain_budget_and_the_close_budget(monkeypatch):
    """Found by review (2026-12-06), failing before its fix: after the drain budget, each close step got 30 s, and
    aiokafka's producer stop waits for pending batches to expire (40 s): a stop took twice the drain budget, past the
    supervisor's grace period. The Kafka clients now share ``CLOSE_SECS``."""
    import time

    import rationad.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "CLOSE_SECS", 2.0, raising=False)
    s = settings(delivery={"commit_interval_ms": 10, "drain_timeout_secs": 1})
    d, consumer, producer = make(s, [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}])

    async def never_acknowledged(*a, **k):
        return asyncio.get_running_loop().create_future()

    async def hang(*a, **k):
        await asyncio.Event().wait()

    producer.send, producer.flush, producer.stop, consumer.commit, consumer.stop = (never_acknowledged, hang, hang,
                                                                                    hang, hang)
    task = asyncio.create_task(d.run())
    await until(lambda: d.delivery.held > 0, 5)
    t0 = time.monotonic()
    d.request_stop()
    await asyncio.wait_for(task, 20)
    # a periodic commit in flight gives up after 5 s, the drain 1 s, flush and final commit a second each at least,
    # then the closes share 2 s (a second each at least): about 11 s (before the fix: 30 s for each hanging close)
    assert time.monotonic() - t0 < 15


async def test_a_session_event_citing_many_long_lines_is_cut_to_fit_not_dead_lettered():
    """Found by review (2026-12-06), failing before its fix: session events were sent whole, and one citing many
    rows of long lines was over output.max_message_bytes: dead-lettered, the anomaly never reached consumers."""
    s = settings(output={"max_message_bytes": 16_384}, sessions={"window_lines": 10})
    recs = [Rec(o, line("a", f"ERROR worker {chr(65 + o)} failed " + "z" * 1_900)) for o in range(10)]
    refs = ", ".join(f"L{n}" for n in range(1, 11))
    model = FakeModel(lambda text: f"<think>{refs} report failures.</think>\n<answer>anomalous</answer>")
    d, consumer, producer = make(s, [{TP: recs}], model=model, producer=FakeProducer(max_request_size=16_384))
    await run_until(d, lambda: final_commit(consumer) == 10)
    assert producer.on("rationad.dlq") == []
    (ev,) = [orjson.loads(r.value) for r in producer.on("rationad.anomalies")]
    assert ev["verdict"] == "anomalous" and ev["evidence"][0]["ref"] == "L1"
    assert len(ev["evidence"]) + ev.get("omitted_evidence", 0) == 10


async def test_the_model_client_closes_last_without_taking_the_others_budget(monkeypatch):
    """Found by review (2026-12-06), failing before its fix: the model client (an in-process engine's join) closed
    third, and the time it took came out of the budget the cache, the labels and the health server share after it."""
    import rationad.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "CLOSE_SECS", 3.0, raising=False)
    s = settings()
    d, consumer, producer = make(s, [])
    order = []

    class Cache:
        store = None

        async def aclose(self):
            await asyncio.sleep(1.5)
            order.append("cache")

    real_close = d.client.aclose

    async def engine_close():
        await asyncio.sleep(2.0)
        order.append("model")
        await real_close()

    d.client.aclose = engine_close
    d.cache = Cache()
    await d._shutdown()
    assert order == ["cache", "model"]


async def test_a_rebalance_wait_is_no_stall_for_liveness_or_the_watchdog():
    """Found by review, failing before its fix: aiokafka's fetch waits out a rebalance whatever its timeout (up to
    the group's rebalance timeout, kafka.session_timeout_ms, and the revocation's commit), and the main loop, the
    only place that refreshed liveness and pinged the systemd watchdog, waited with it: a healthy daemon waiting on
    a member that did not rejoin was killed (and its own restart made the next rebalance wait again)."""
    import time

    d, _, _ = make(settings(kafka={"session_timeout_ms": 45_000}), [])
    pings = []
    d.notifier.watchdog = lambda: pings.append(time.monotonic())
    d._started = True
    d._last_loop = time.monotonic() - 70  # past server.stall_secs (60)
    assert not d._healthy()[0]
    await d._on_revoked([])  # a rebalance begins: the fetch waits for the next assignment
    assert d._healthy()[0]
    task = asyncio.create_task(d._watchdog_during_group_wait())
    await asyncio.sleep(1.2)
    assert pings  # pinged while the main loop waits on the group
    d._on_assigned([])
    n = len(pings)
    await asyncio.sleep(1.2)
    task.cancel()
    assert len(pings) == n and not d._healthy()[0]  # assigned: the main loop must run again
    d._group_wait_since = time.monotonic() - (2 * 45 + 5 + 10)  # a wait longer than a rebalance may take
    assert not d._healthy()[0]


def test_a_pending_session_holds_the_bytes_of_its_context_too():
    """Found by review, failing before its fix: a later revision's held bytes counted its own lines only, not the
    earlier revisions' lines it carries into its prompt (up to sessions.max_lines), outside the backpressure bound."""
    from rationad.daemon import _Part
    from rationad.records import LogLine, Session
    from rationad.windows import Sessionizer, line_bytes

    d, _, _ = make(settings(), [])
    part = _Part(Sessionizer(d.spec, topic=TP.topic, partition=TP.partition))
    d.stage.submit = lambda p: None
    context = [LogLine("k", "INFO x", "INFO x " + "y" * 1_000, offset=o) for o in range(5)]
    own = LogLine("k", "INFO z", "INFO z", offset=9)
    d._submit([Session(key="k", lines=[own], close_reason="max_open", revision=2, context=context)], part, 0.0)
    assert d.delivery.held_bytes == line_bytes(own) + sum(map(line_bytes, context))


def _slow_lines_on_8_partitions(per_partition: int, parsed: list | None = None):
    """(daemon, consumer, partitions): one fetch of ``per_partition`` one-line records on each of 8 partitions, each
    taking 5 ms to parse (noted in ``parsed``)."""
    import time as _time

    tps = [TopicPartition("logs", p) for p in range(8)]
    batch = {tp: [Rec(o, line(f"k{tp.partition}-{o}")) for o in range(per_partition)] for tp in tps}
    d, consumer, _ = make(settings(), [batch])
    consumer.tps = tps
    parse = d.parser.parse

    def slow(*a, **kw):
        _time.sleep(0.005)
        if parsed is not None:
            parsed.append(1)
        return parse(*a, **kw)

    d.parser.parse = slow
    return d, consumer, tps


async def _longest_loop_gap(d: Daemon, cond) -> float:
    """Run ``d`` until ``cond()``; the longest time the event loop went without running another task meanwhile."""
    import time as _time

    gaps = [0.0]

    async def ticker():
        last = _time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = _time.perf_counter()
            gaps.append(now - last)
            last = now

    t = asyncio.create_task(ticker())
    try:
        await run_until(d, cond, timeout=20)
    finally:
        t.cancel()
    return max(gaps)


async def test_slow_lines_spread_over_partitions_still_let_the_event_loop_run():
    """Found by review: yields came every 500 lines of one partition, so a batch of slow lines (template level masks
    each as it arrives, about 20 ms for a 60 KB one) spread over partitions, under 500 each, never yielded: 8
    partitions of 70 such lines held the loop 15 s, past the session timeout (the group dropped the member, and the
    next owner stalled on the same batch). Each line here takes 5 ms to parse; the loop must run every 50 ms or so."""
    d, _, _ = _slow_lines_on_8_partitions(40)  # 320 lines, 1.6 s
    held = await _longest_loop_gap(d, lambda: d.metrics.lines_parsed._value.get() >= 320)
    assert held < 0.5, f"the event loop was held {held:.2f} s"


async def test_slow_records_forwarded_over_partitions_still_let_the_event_loop_run():
    """Found by review of the fix above: the repartition hop yielded every 500 records of one partition, so long
    records spread over partitions, under 500 each, were routed for 12 s without a yield. Each record here takes 5 ms
    to route; the loop must run every 50 ms or so."""
    import time as _time

    s = settings(input={"repartition": "always"})
    tps = [TopicPartition("logs", p) for p in range(8)]
    batch = {tp: [Rec(o, line(f"k{tp.partition}-{o}")) for o in range(40)] for tp in tps}
    d, consumer, producer = make(s, [batch])
    consumer.tps = tps
    routed = []

    def slow(value, **kw):
        _time.sleep(0.005)
        routed.append(1)
        return [("k", value)]

    async def start_internal(*a, **kw):
        return 8

    _patch.setattr("rationad.topics.ensure_topic", start_internal)
    d.parser.route = slow
    held = await _longest_loop_gap(d, lambda: len(routed) >= 320)
    assert held < 0.5, f"the event loop was held {held:.2f} s"


async def test_a_stop_ends_the_batch_being_read_at_the_next_yield():
    """Found by review: a stop was noticed only once the whole fetched batch was read (at template level about 12 ms
    a 60 KB line: 12 s for one 4 MiB fetch a partition over 8 partitions), and a periodic commit that waits out an
    unreachable broker ran before the drain, so the drain's budget started late and the process outlived the
    supervisor's grace period. The batch now ends at the next yield, and the rest is read again by the next owner."""
    import time as _time

    parsed: list = []
    d, consumer, tps = _slow_lines_on_8_partitions(100, parsed)  # 800 lines, 4 s
    task = asyncio.create_task(d.run())
    await until(lambda: len(parsed) >= 20, 10)
    t0 = _time.monotonic()
    d.request_stop()
    assert await asyncio.wait_for(task, 20) == 0
    assert _time.monotonic() - t0 < 2.0, f"the stop waited {_time.monotonic() - t0:.1f} s for the batch"
    assert len(parsed) < 400
    for tp in tps:  # nothing committed past what was read
        assert (consumer.committed_offset(tp) or 0) <= sum(1 for _ in parsed)


def test_lines_dated_too_far_ahead_are_logged_once_a_minute_and_all_counted(monkeypatch):
    """Found by review (2026-12-07): a host whose clock says 2099 sent one warning per line (a log flood; the loop
    20 times slower). One warning a minute at most, saying how many lines since; the metric counts every one."""
    from types import SimpleNamespace

    warned = []  # the module's logger itself (capture_logs misses a logger cached by an earlier test's configure)
    monkeypatch.setattr(daemon_mod, "log", SimpleNamespace(warning=lambda event, **kw: warned.append((event, kw))))
    d, _, _ = make(settings(), [])
    line = SimpleNamespace(key="k", offset=1)
    for _ in range(1_000):
        d._on_future(line, 86_400 * 30)
    assert [(e, kw["lines"]) for e, kw in warned] == [("future_timestamp", 1)]
    assert d.metrics.late_lines.labels("future_untimed")._value.get() == 1_000
    d._future_warned -= 61
    d._on_future(line, 86_400 * 30)
    assert [kw["lines"] for _, kw in warned] == [1, 1_000]


def test_a_source_clock_stepped_back_is_warned_and_counted(monkeypatch):
    """The windows of an assigned partition tell the daemon when a source's clock stepped back (rationad.windows
    STEP_BACK_SECS): one warning naming where, by how much, and the metric."""
    from types import SimpleNamespace

    from rationad.records import LogLine

    warned = []
    monkeypatch.setattr(daemon_mod, "log", SimpleNamespace(warning=lambda event, **kw: warned.append((event, kw)),
                                                           info=lambda *a, **kw: None, debug=lambda *a, **kw: None))
    d, _, _ = make(settings(sessions={"mode": "session"}), [])
    d._on_assigned([TP])
    windows = d._parts[TP].sessionizer
    t0 = 1_700_000_000.0
    back = 3 * 86_400  # three days back at 20 s: every line after it late by its source's own time
    for i in range(0, 60, 2):
        ts = t0 + i - (back if i >= 20 else 0)
        windows.add(LogLine(key=f"k{i % 3}", message="m", raw="m", ts=ts, topic=TP.topic, partition=TP.partition,
                            offset=i), t0 + i)
    assert [(e, kw["topic"], kw["partition"], kw["back_secs"]) for e, kw in warned] == [
        ("source_clock_stepped_back", "logs", 0, back - 12)]  # from the line at 18 s to the late one at 30 s
    assert d.metrics.clock_steps._value.get() == 1


async def test_a_stop_while_forwarding_a_batch_that_ends_at_an_undecodable_record_commits_only_what_was_forwarded():
    """Found by review (2026-12-07), failing before its fix: a stop at one of the forward hop's yields left the rest of
    the batch unread, but the undecodable record after it was still dead-lettered and consumed, so the drain
    committed past the records between, never forwarded (701 of 1,200 here)."""
    from rationad.config import load_settings
    from rationad.repartition import Router, is_pack, source_of, unpack
    from rationad.undecodable import Undecodable

    d = Daemon(load_settings(input={"repartition": "always"}, cache={"enabled": False}, server={"enabled": False}),
               client=FakeModel())
    d._router = Router(4)
    d._on_assigned([TP])
    part = d._parts[TP]
    records = [Rec(o, f"081109 203615 148 INFO dfs.DataNode: Receiving block blk_{o} src: /10.0.0.1:1".encode())
               for o in range(1200)]

    async def fetch():  # what _fetch_around returns: the records before the undecodable one, and that one
        return {TP: records}, {TP: Undecodable(1200, "CorruptRecordException: crc")}

    forwarded, dead = set(), []

    async def forward(items, fallback):  # the internal topic acknowledges everything at once
        for hold, outs in items:
            for out in outs:
                if is_pack(out.headers):
                    forwarded.update(o for o, _, _ in unpack(out.value))
                else:
                    forwarded.add(int(source_of(out.headers)[2]))
            hold.release()

    async def dead_letters(items):
        for hold, _ in items:
            dead.append(hold.offset)
            hold.release()

    d._fetch = fetch
    d.delivery.forward, d.delivery.dead_letters = forward, dead_letters
    asyncio.get_running_loop().call_soon(d.request_stop)  # SIGTERM while the batch is routed
    await d._consume_once()
    await asyncio.sleep(0.05)  # the spawned sends complete
    commit = part.offsets.committable(part.sessionizer.min_open_offset())
    assert 0 < commit < 1200 and dead == []
    assert set(range(commit)) <= forwarded  # nothing committed that was not forwarded


async def test_a_block_found_by_the_health_check_stays_until_that_check_passes(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: the health check blocks input when the server's
    context is shorter than the prompts, and any short request answered lifted that block: readiness and input
    flipped every round, and long sessions were dead-lettered as model_rejected. Only the check passing lifts it."""
    monkeypatch.setattr(daemon_mod, "MODEL_HEALTH_INTERVAL_SECS", 0.05)
    model = FakeModel()
    state = {"short": True}

    async def verify():
        if state["short"]:
            raise ModelError("model.max_prompt_tokens + model.max_new_tokens: above the 600 the server serves",
                             kind="config")

    model.verify = verify
    d, consumer, producer = make(settings(), [], model=model)
    task = asyncio.create_task(d.run())
    await until(lambda: d.stage.blocked, 2)
    for _ in range(5):  # short requests answered between health rounds
        d.stage.answered()
        assert d.stage.blocked and "600" in d.stage.blocked and not d._ready()[0] and consumer.paused
        await asyncio.sleep(0.05)
    state["short"] = False
    await until(lambda: d._ready()[0], 2)
    assert d.stage.blocked is None
    d.request_stop()
    assert await task == 0


async def test_a_one_line_internal_record_that_fails_to_parse_is_dead_lettered_once():
    """Left by the last session, failing before its fix: a one-line internal record whose line fails to parse (a
    forwarder of another configuration during a rolling upgrade) was parsed before it was known as a re-read, so each
    copy forwarded again (a restart between the hops) was dead-lettered again, under the internal topic's offset."""
    from rationad.repartition import Packer, Router

    async def start_internal(*a, **kw):
        return 1

    _patch.setattr("rationad.topics.ensure_topic", start_internal)
    s = settings(input={"repartition": "always"})
    d, consumer, producer = make(s, [])
    itp = TopicPartition(d.internal, 0)
    packer = Packer(d.internal, "logs", 1, Router(1))
    packer.add([("a", b"x session=a\n  trace"), ("a", b"x session=a\n  trace")], 40)  # newlines: one-line records
    first, _ = packer.outputs()
    bad = [Rec(o, b"\xff\xfe not utf-8", first.key, first.headers) for o in range(2)]  # the same record, twice
    consumer.batches.append({itp: bad})
    consumer.tps = [itp]
    try:
        await run_until(d, lambda: consumer.committed_offset(itp) == 2)
    finally:
        _patch.undo()
    [dl] = producer.on(s.output.dlq_topic)
    assert dict(dl.headers)["rationad-error-type"] == b"invalid_utf8"
    assert (dict(dl.headers)["rationad-source-topic"], dict(dl.headers)["rationad-source-offset"]) == (b"logs", b"40")


async def test_a_source_writing_local_time_of_another_zone_joins_the_others_sessions_on_the_repartition_hop():
    """Left by the last session, failing before its fix: one input partition's host writes local time without a zone,
    two hours behind the others, and keeps sending. The internal partition's watermark (the minimum over sources)
    stayed two hours back, so no session closed by its gap (only by max_open_secs, wall clock), and that host's line
    of a block landed two hours from the block's other lines. Its stamps trail its records' Kafka timestamps by a
    time zone: it is read shifted (rationad.source_clocks), and the block's lines close together, by gap."""
    from rationad.repartition import Packer, Router

    async def start_internal(*a, **kw):
        return 1

    _patch.setattr("rationad.topics.ensure_topic", start_internal)
    _patch.setattr("rationad.source_clocks.CONFIRM_SECS", 0.0)
    s = settings(input={"dialect": "hdfs", "key_regex": None, "repartition": "always"},
                 sessions={"mode": "session", "gap_secs": 30, "max_open_secs": 3600})
    d, consumer, producer = make(s, [])
    itp = TopicPartition(d.internal, 0)
    t0 = int(time.time()) - 200  # read as written: the record times are this daemon's clock

    def hdfs(secs: float, block: str, what: str) -> bytes:
        stamp = time.strftime("%y%m%d %H%M%S", time.gmtime(secs))
        return f"{stamp} 148 INFO dfs.DataNode: {what} {block}".encode()

    def records(partition: int, behind: float, lines: list[tuple[float, str, str]]) -> list:
        out = []
        for i, (at, block, what) in enumerate(lines):  # one pack per input record (each its own fetch)
            packer = Packer(d.internal, "logs", partition, Router(1))
            packer.add([(block, hdfs(t0 + at - behind, block, what))], i, int((t0 + at + 2) * 1000))
            out += packer.outputs()
        return out

    on_time = records(0, 0, [(0, "blk_1", "Receiving block"), *((10 + 20 * i, f"blk_{9 + i}", "Receiving block")
                                                                for i in range(6))])
    behind = records(1, 7200, [(5, "blk_20", "Receiving block"), (15, "blk_21", "Receiving block"),
                               (21, "blk_1", "Received block"), *((35 + 20 * i, f"blk_{22 + i}", "Receiving block")
                                                                  for i in range(4))])
    mixed = [x for pair in zip(behind, on_time, strict=True) for x in pair]  # behind first: it sets the minimum
    consumer.batches.append({itp: [Rec(o, x.value, x.key, x.headers) for o, x in enumerate(mixed)]})
    consumer.tps = [itp]
    sessions = lambda: [orjson.loads(x.value)["session"] for x in producer.on(s.output.topic)  # noqa: E731
                        + producer.on(s.output.dlq_topic)]
    try:
        await run_until(d, lambda: any(x["key"] == "blk_1" for x in sessions()), timeout=15)
    finally:
        _patch.undo()
    [blk_1] = [x for x in sessions() if x["key"] == "blk_1"]
    assert (blk_1["line_count"], blk_1["close_reason"]) == (2, "gap")


async def test_a_daemon_started_while_its_model_server_is_down_says_it_started_and_is_not_ready():
    """Left by the last session, failing before its fix: READY=1 (systemd) and the startup probe (Kubernetes, on
    /readyz) waited for the model to answer, so a daemon started during a model-server outage was killed and
    restarted every 10 minutes (TimeoutStartSec, the probe's 60 x 10 s) for as long as it lasted, a rebalance of
    the group each time. Start-up is the daemon's own (/startedz, READY=1); the model's health is readiness."""
    import httpx

    def down(request):
        raise httpx.ConnectError("connection refused", request=request)

    cfg = ModelConfig(backend="vllm-server", server_url="http://127.0.0.1:1", served_model_name="m", max_retries=0)
    d, consumer, producer = make(settings(), [{TP: [Rec(0, line("a")), Rec(1, line("a"))]}],
                                 model=ServerClient(cfg, transport=httpx.MockTransport(down)))
    said: list[str] = []
    d.notifier.ready = lambda: said.append("READY=1")
    d.notifier.status = lambda text: said.append(f"STATUS={text}")
    seen: list = []

    def started_not_ready() -> bool:
        if "READY=1" not in said or d.stage.down_since is None:
            return False
        seen[:] = [d._started_check(), d._ready(), said[-1]]
        return seen[2].startswith("STATUS=running, not")

    await run_until(d, started_not_ready, timeout=10)
    assert seen == [(True, "started"), (False, "model unhealthy"), "STATUS=running, not ready: model unhealthy"]
    assert producer.on("rationad.anomalies") == [] and (consumer.committed_offset(TP) or 0) == 0


async def test_readiness_says_not_joined_between_a_revocation_and_the_next_assignment():
    """Found by review (2026-12-07), failing before its fix: joining was never undone, so while a rebalance waited on
    an assignment that did not come (a broker lost), /readyz said ready and rationad_ready stayed 1, where the docs
    say it means joined to the consumer group."""
    d, consumer, _ = make(settings(), [])
    d.consumer = consumer
    d.stage.answered(checked=True)  # the model healthy: only the group decides here
    d._on_assigned([TP])
    assert d._ready() == (True, "ready")
    await d._on_revoked([TP])
    assert d._ready() == (False, "consumer group not joined")
    d._on_assigned([TP])
    assert d._ready() == (True, "ready")
