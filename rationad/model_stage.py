"""The model stage: closed sessions in, one output each (event or dead letter) handed to delivery.

Sessions are micro-batched (``model.max_batch_size`` within ``model.batch_wait_ms``, ``model.max_concurrency``
batches in flight) through ``Judge``. What a failure means is decided here, once:

- ``ModelError`` kind ``outage`` (5xx, timeouts, connection refused): the batch waits and is retried with backoff;
- kind ``config`` (401/403/404): no session is at fault, so none is dead-lettered; ``blocked`` says why, the
  daemon pauses consumption and fails ``/readyz``, and the batch is retried with backoff until the model answers;
- kind ``rejected`` (a request the model refuses for its own content): the batch is split and only the rejected
  session goes to the dead-letter topic;
- kind ``dead`` (the in-process engine died): ``on_dead`` stops the daemon; the batch stays held, so nothing is
  committed past it and the restarted daemon judges it;
- any other exception (a bug, a poison session): the batch is split, and a session that keeps failing alone is
  dead-lettered after ``delivery.max_attempts``;
- a failure while building or sending an event dead-letters that session; nothing passes silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from rationad.clock import steady
from rationad.config import Settings
from rationad.delivery import Delivery, Hold, Output, Undeliverable
from rationad.dlq import DeadLetter, poison_session, session_dead_letter
from rationad.events import ModelInfo, build_event, encode_to_fit, fit_session_event, headers
from rationad.judge import Judge, Judgement
from rationad.metrics import Metrics
from rationad.model.base import ModelError
from rationad.records import Session

log = structlog.get_logger("rationad")

MAX_BACKOFF_SECS = 30.0
# Consecutive outage failures of a batch before its sessions are judged one by one, and of one session before the
# model is probed: a request that fails for one prompt only (a 500, a timeout, an empty 2xx for it) must not hold its
# batch-mates, nor its partition, for ever.
OUTAGE_SPLIT_AFTER = 3
# A session whose requests the server keeps refusing as "later" (429, 408, 503) is charged an attempt only after this
# long: a rate limit that refuses every real request is waited out like an outage, one that always refuses one
# session's request ends in a dead letter (model_failed) instead of pinning the partition.
BUSY_PATIENCE_SECS = 600.0
MIN_PROMPT_TOKENS = 256  # the smallest model.max_prompt_tokens (rationad.config): a refused session is cut down to it
PROBE_TOKENS = 4  # the probe (``Judge.probe_request``) is shaped like a real request, and short

Result = Judgement | DeadLetter


def cut_harder(session: Session, default_budget: int, exc: Exception) -> bool:
    """A session the model refused while it answers the probe is sent again with half its prompt budget (down to
    ``MIN_PROMPT_TOKENS``; ``Judge.view`` reads ``session.extra["max_prompt_tokens"]``, and the event id names it)
    before it is blamed: without the model's tokenizer (``tokenizer.json`` at ``model.path``) its size is an estimate,
    which random letters (ids, tokens, base64) beat up to three times, and a prompt over the server's context was
    dead-lettered as model_rejected instead of judged on fewer rows (review 2026-12-07). Only after the probe is
    answered: a server refusing every request cut every session in flight for good (review of that change). Whether
    it was cut. Replay does the same (``rationad.replay.judge_refused_alone``)."""
    budget = int(session.extra.get("max_prompt_tokens", default_budget))
    if budget <= MIN_PROMPT_TOKENS:
        return False
    session.extra["max_prompt_tokens"] = max(MIN_PROMPT_TOKENS, budget // 2)
    log.warning("session_refused_cut_harder", key=session.key[:200], error=str(exc),
                max_prompt_tokens=session.extra["max_prompt_tokens"])
    return True
Settle = Callable[[list[tuple["Pending", Result]]], Coroutine[Any, Any, None]]


class EngineDead(Exception):
    """The model cannot serve again in this process; the batch stays held and the daemon stops."""


class _Lane:
    """Requests to the model share the lane; a suspect session's request (``ModelStage._judge``) has it alone: no
    other request of this stage is in flight while it is, so a server that drops it has dropped it alone. A request
    waiting to go alone goes before shared ones that come after it."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._alone and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._alone and not self._shared)
            finally:
                self._waiting -= 1
                self._cond.notify_all()  # (cancelled while it waited: the shared requests it held back go on)
            self._alone = True
        try:
            yield
        finally:
            async with self._cond:
                self._alone = False
                self._cond.notify_all()


@dataclass(slots=True, eq=False)
class Pending:
    """A closed session awaiting its verdict; ``is_revoked()`` is true once its partition moved to another owner."""

    session: Session
    hold: Hold
    closed_at: float
    is_revoked: Callable[[], bool]
    attempts: int = 0
    # What to do with the result instead of emitting the session's event (template judgements: store the verdict).
    settle: Callable[[Pending, Result], Coroutine[Any, Any, None]] | None = None


class ModelStage:
    def __init__(self, settings: Settings, judge: Judge, delivery: Delivery, model: ModelInfo, metrics: Metrics, *,
                 spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task],
                 on_dead: Callable[[str], None], on_state: Callable[[], None]) -> None:
        self.s = settings
        self.judge = judge
        self.delivery = delivery
        self.model = model
        self.metrics = metrics
        self._spawn = spawn
        self._on_dead = on_dead
        self._on_state = on_state  # readiness may have changed
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._sem = asyncio.Semaphore(settings.model.max_concurrency)
        self.ok = False  # the last health check or call succeeded
        self.down_since: float | None = None  # monotonic time the model became unhealthy
        self.blocked: str | None = None  # why the model cannot be used now (misconfigured, dead)
        # Blocked because real requests fail although the server looks healthy: only an answered request clears it
        # (the health check's model listing cannot vouch for it).
        self.blocked_by_requests = False
        # Blocked by what the health check found in the server's model listing (a key refused, the model not served,
        # a context shorter than the prompts): only that check passing clears it. One short request answered proves
        # nothing of long ones: it lifted such a block every round, readiness flapped and long sessions were
        # dead-lettered as model_rejected (review 2026-12-07).
        self.blocked_by_check = False
        self.dead: str | None = None  # the model cannot serve again in this process
        self._lane = _Lane()
        self._resets = 0  # shared requests (and probes) whose connection the server dropped: it died on its own

    def submit(self, p: Pending) -> None:
        self.queue.put_nowait(p)

    # ---- batching -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        max_batch = self.s.model.max_batch_size
        wait = self.s.model.batch_wait_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + wait
            while len(batch) < max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            live = self._unrevoked(batch)
            if not live:
                continue
            await self._sem.acquire()
            live = self._unrevoked(live)  # a partition may have moved while every call slot was busy
            if not live:
                self._sem.release()
                continue
            task = self._spawn(self.process(live), "judge-batch")
            task.add_done_callback(lambda _t: self._sem.release())

    @staticmethod
    def _unrevoked(batch: list[Pending]) -> list[Pending]:
        """The sessions whose partition is still ours; the others' holds are released: the new owner judges them
        (their offsets were never committed)."""
        live = []
        for p in batch:
            if p.is_revoked():
                p.hold.release()
            else:
                live.append(p)
        return live

    async def process(self, batch: list[Pending]) -> None:
        try:
            results = await self._judge(batch, settle=self._settle_all)
        except EngineDead:
            return  # held, never committed past: the restarted daemon judges them
        await self._settle_all(results)

    async def _settle_all(self, results: list[tuple[Pending, Result]]) -> None:
        outcomes = await asyncio.gather(*(self._settle(p, r) for p, r in results), return_exceptions=True)
        for o in outcomes:
            if isinstance(o, BaseException) and not isinstance(o, Undeliverable):
                raise o

    # ---- judging ------------------------------------------------------------------------------------------
    async def _judge(self, batch: list[Pending], settle: Settle | None = None) -> list[tuple[Pending, Result]]:
        """The batch's results; with ``settle``, a batch split to judge its sessions one by one has each settled as
        soon as its own result is in (``_split``), and only the rest is returned."""
        backoff = max(self.s.model.retry_backoff_secs, 0.1)
        outages = 0
        busy_since: float | None = None  # the first of this call's failures the server called temporary
        # A lone session whose request lost its connection (``ModelError.dropped``): its request may be what takes
        # the server down (a reset, then refused while it restarts), which no probe sent after it can ever tell (a
        # server or engine back at once answers it). It is sent again only once a probe is answered, alone (no other
        # request of this stage in flight: a crash drops every connection, and innocent batch-mates in flight beside
        # the culprit were charged too), and when it then loses its connection again, it is charged an attempt,
        # unless a shared request sent while the server was not known down was dropped since its previous send
        # alone (the server dies on its own too: a crash loop is an outage) (review
        # 2026-12-07: such a session was retried for ever, taking the server down every 30 s, its partition never
        # committed). Behind a reverse proxy a reset and a refusal are both 502 (dropped): requests sent while the
        # server is known down are not evidence that it died on its own, and after an outage the sessions it split
        # are sent alone once each.
        suspect = False
        resets_at: int | None = None  # ``_resets`` when this session was last sent alone
        while True:
            if suspect and not await self._model_answers(batch[0]):
                await asyncio.sleep(backoff * (0.5 + random.random()))  # down: wait for it, as in any outage
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)
                continue
            was_suspect, suspect = suspect, False
            crashed_alone = False
            try:
                try:
                    async with self._lane.alone() if was_suspect else self._lane.shared():
                        # A suspect is sent alone only if a probe sent alone right before it is answered: one that
                        # waited for the lane behind the culprit found the server down the culprit's crash left
                        # (behind a proxy: 502 at once, read as dropped) and was charged in its place (CI run,
                        # 2026-12-07: an innocent session dead-lettered under load).
                        if was_suspect and not await self._probe(batch[0]):
                            result = None
                        else:
                            if was_suspect:  # no shared request dropped since its last send alone
                                crashed_alone, resets_at = resets_at == self._resets, self._resets
                            up = self.down_since is None
                            result = await self.judge.judge_many([p.session for p in batch])
                except ModelError as exc:
                    if exc.dropped and up and not was_suspect:
                        self._resets += 1
                    raise
                if result is None:
                    suspect = True  # not sent: down, wait for it, as in any outage
                else:
                    if not all(j.cached for j in result):  # the model answered this batch (verdicts from the cache
                        self.answered()  # vouch for nothing: a block set by rejected requests must stay)
                    return list(zip(batch, result, strict=True))
            except asyncio.CancelledError:
                raise
            except ModelError as exc:
                self.metrics.errors.labels("model", type(exc).__name__).inc()
                if exc.kind == "dead":
                    # The in-process engine died DEATHS_WITHOUT_ANSWER times with nothing answered, or could not be
                    # built again (a death alone is an outage: rationad.model.engine builds it again); named, so the
                    # sessions in flight can be found in the log across the restarts that follow.
                    log.error("engine_died_judging", sessions=[
                        f"{p.session.topic}:{p.session.partition}@{p.session.first_offset} {p.session.key[:80]!r}"
                        for p in batch[:20]], more=max(0, len(batch) - 20))
                    self.dead = f"model engine dead: {exc}"
                    self.block(self.dead, action="stopping")
                    self._on_dead(self.dead)
                    raise EngineDead(str(exc)) from exc
                if exc.kind == "rejected":
                    if len(batch) > 1:
                        return await self._split(batch, settle)
                    if self.blocked_by_check or await self._server_unfit():
                        # the health check found the server unfit (a context shorter than the prompts): a request
                        # it refuses is not the session's fault; it waits for the check to pass (review 2026-12-07)
                        pass
                    elif await self._model_answers(batch[0]):  # this session's request is at fault
                        p = batch[0]
                        if not cut_harder(p.session, self.s.model.max_prompt_tokens, exc):  # (else: sent again cut)
                            log.warning("session_rejected_by_model", key=p.session.key, error=str(exc))
                            return [(p, session_dead_letter(p.session, "model_rejected", str(exc),
                                                            attempts=p.attempts + 1))]
                    else:
                        # the probe is rejected too (e.g. a server started with --max-logprobs below the
                        # daemon's): no session is at fault, none is dead-lettered; input pauses until it is fixed
                        self.block(f"model rejects every request: {exc}", by_requests=True)
                elif exc.kind == "config":
                    # A filter in front of the server (a WAF's default deny) refuses a request for its content with
                    # 403, as a rotated key is refused: the probe request tells them apart. It answered: the key
                    # and URL are good and this content is refused, so the session alone is dead-lettered (its
                    # batch-mates judged) instead of the whole daemon paused and the batch retried for ever.
                    if self.blocked_by_check:
                        pass  # the health check's block holds: nobody's fault, retried once it passes
                    elif not await self._model_answers(batch[0]):
                        # by requests: a listing of models allowed where requests are refused (path-scoped auth, a
                        # WAF) lifted it every health round, and readiness flapped
                        self.block(f"model misconfigured: {exc}", by_requests=True)
                    elif len(batch) > 1:
                        return await self._split(batch, settle)
                    else:
                        p = batch[0]
                        log.warning("session_refused_by_model_server", key=p.session.key, error=str(exc))
                        return [(p, session_dead_letter(p.session, "model_rejected", str(exc),
                                                        attempts=p.attempts + 1))]
                else:
                    self.unhealthy()
                    log.warning("model_unavailable", error=str(exc), retry_in_secs=round(backoff, 2))
                    outages += 1
                    if outages >= OUTAGE_SPLIT_AFTER:
                        if len(batch) > 1:
                            log.warning("judge_batch_outage", error=str(exc), sessions=len(batch),
                                        action="judging each session on its own")
                            return await self._split(batch, settle)
                        # The model is up and this session's own request fails. When the server says "later"
                        # (429, 408, 503), not before BUSY_PATIENCE_SECS of it: a token limiter lets the probe's one
                        # token through while it refuses every real request; past that, a request it always refuses
                        # must not pin its partition for ever.
                        if exc.busy:
                            busy_since = busy_since if busy_since is not None else steady()
                        patient = exc.busy and steady() - busy_since < BUSY_PATIENCE_SECS
                        # A dropped request is charged only when it was alone (``crashed_alone``): a server or an
                        # in-process engine back at once (a rebuild answers the probe right after the crash) said
                        # nothing of which request took it down, and innocent sessions in flight beside the culprit
                        # were charged and dead-lettered (found when a rebuild took no time). Nor does a request the
                        # client never sent (``unsent``: the in-process engine being built again, or dead before it
                        # was sent), whatever the probe after it finds (a rebuild ended before the probe)
                        answers = (not patient and not exc.dropped and not exc.unsent
                                   and await self._model_answers(batch[0]))
                        if answers or (crashed_alone and exc.dropped):
                            p = batch[0]
                            p.attempts += 1
                            log.warning("session_fails_while_model_answers" if answers else
                                        "session_request_takes_model_down", key=p.session.key,
                                        attempts=p.attempts, error=str(exc))
                            if p.attempts >= self.s.delivery.max_attempts:
                                return [(p, session_dead_letter(p.session, "model_failed", str(exc),
                                                                attempts=p.attempts))]
                        suspect = exc.dropped
            except Exception as exc:  # a bug or a poison session: isolate it, bound its attempts, keep the rest
                self.metrics.errors.labels("judge", type(exc).__name__).inc()
                error = f"{type(exc).__name__}: {exc}"
                if len(batch) > 1:
                    log.warning("judge_batch_failed", error=error, sessions=len(batch),
                                action="judging each session on its own")
                    return await self._split(batch, settle)
                p = batch[0]
                p.attempts += 1
                log.warning("judge_failed", key=p.session.key, attempts=p.attempts, error=error, exc_info=exc)
                if p.attempts >= self.s.delivery.max_attempts:
                    return [(p, session_dead_letter(p.session, "judge_failed", error, attempts=p.attempts))]
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF_SECS)

    async def _server_unfit(self) -> bool:
        """Before a rejected session is blamed: does the server's own check (``verify``, where the client has one)
        find it unfit for every request (a context shorter than the prompts)? Then the stage is blocked by the check.
        The health round's check alone came too late: before the first round, after a server restart, or timed out
        behind busy requests, and long sessions were dead-lettered as model_rejected (review 2026-12-07)."""
        verify = getattr(self.judge.client, "verify", None)
        if verify is None:
            return False
        try:
            await asyncio.wait_for(verify(), self.s.model.health_timeout_secs)
        except ModelError as exc:
            if exc.kind == "config":
                self.block(f"model misconfigured: {exc}", by_check=True)
                return True
        except Exception:  # noqa: BLE001 - cannot tell: the probe decides, as before
            return False
        return False

    async def _model_answers(self, like: Pending) -> bool:
        """Does the model answer a request shaped like the real ones (system prompt, a quoted one-line session, the
        answer regex, a continued start: ``Judge.probe_request``) now? Tells a session whose own request keeps
        failing from an outage, or from a server or filter that refuses every real request, during which no session
        is dead-lettered. Shaped like ``like``'s request: a template of the template-level task, or a session."""
        async with self._lane.shared():
            return await self._probe(like)

    async def _probe(self, like: Pending) -> bool:
        """``_model_answers``' probe, in whatever part of the lane its caller holds."""
        conversation, regex = self.judge.probe_request(templated=bool(like.session.extra.get("templated")))
        up = self.down_since is None
        try:
            await self.judge.client.generate([conversation], max_tokens=PROBE_TOKENS, temperature=0.0, regex=regex)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: not known to answer
            if isinstance(exc, ModelError) and exc.dropped and up:
                self._resets += 1
            return False
        self.answered()  # a request answered: a block set because requests were rejected is over
        return True

    async def _split(self, batch: list[Pending], settle: Settle | None) -> list[tuple[Pending, Result]]:
        """Each session judged on its own; with ``settle``, each settled as soon as its own result is in: a
        batch-mate answered at once no longer waits for another's retries (600 s and more for one the server keeps
        calling busy), nor does its partition's commit (review 2026-12-07)."""
        async def alone(p: Pending) -> list[tuple[Pending, Result]]:
            results = await self._judge([p])
            if settle is None:
                return results
            await settle(results)
            return []

        parts = await asyncio.gather(*(alone(p) for p in batch))
        return [r for part in parts for r in part]

    # ---- model state --------------------------------------------------------------------------------------
    def block(self, reason: str, action: str = "consumption paused; retrying with backoff", *,
              by_requests: bool = False, by_check: bool = False) -> None:
        """The model cannot be used and no session is at fault: the daemon pauses input and fails /readyz."""
        if self.blocked != reason:
            log.error("model_blocked", reason=reason, action=action)
        self.blocked = reason
        self.blocked_by_requests = by_requests
        self.blocked_by_check = by_check
        self.metrics.model_blocked.set(1)
        self._on_state()

    def answered(self, *, checked: bool = False) -> None:
        """A call succeeded, or (``checked``) the health check's look at the model listing passed."""
        if self.dead or (self.blocked_by_check and not checked):
            return
        if self.blocked or not self.ok:
            log.info("model_recovered", was=self.blocked or "unavailable")
        self.blocked = None
        self.blocked_by_requests = self.blocked_by_check = False
        self.ok = True
        self.down_since = None
        self.metrics.model_blocked.set(0)
        self._on_state()

    def unhealthy(self) -> None:
        self.ok = False
        if self.down_since is None:
            self.down_since = time.monotonic()
        self._on_state()

    # ---- outputs ------------------------------------------------------------------------------------------
    async def _settle(self, p: Pending, r: Result) -> None:
        """Turn one result into its output (event or dead letter); delivery releases the session's hold."""
        if p.settle is not None:
            await p.settle(p, r)
            return
        if p.is_revoked():  # its partition moved while it was judged: the new owner re-reads and judges it, and a
            p.hold.release()  # window closed there later may hold more lines under the same event id
            log.info("verdict_dropped_for_revoked_partition", key=p.session.key, topic=p.session.topic,
                     partition=p.session.partition, first_offset=p.session.first_offset)
            return
        try:
            if isinstance(r, DeadLetter):
                await self.delivery.dead_letter(p.hold, r)
                return
            j = r
            if not j.ok:
                log.warning("malformed_answer", key=p.session.key, error=j.answer.error, attempts=j.attempts)
                await self.delivery.dead_letter(p.hold, poison_session(j))
                return
            event = build_event(p.session, j.view, j.answer, self.model, cached=j.cached,
                                max_rationale_chars=self.s.output.max_rationale_chars, score=j.score,
                                threshold=self.s.judge.session_threshold(p.session.unfinished))
            if event["verdict"] == "anomalous" or self.s.output.emit_normal:
                # rows of long lines cited by the dozen are cut to fit
                event, value = encode_to_fit(event, p.session.key.encode(), self.s.output.max_message_bytes,
                                             fit_session_event)
                out = Output(self.s.output.topic, p.session.key.encode(), value, headers(event))

                def fallback(error: str) -> DeadLetter:
                    return session_dead_letter(p.session, "undeliverable_event", error, raw_completion=j.answer.raw,
                                               attempts=j.attempts)

                if await self.delivery.event(p.hold, out, fallback):
                    self.metrics.events_produced.labels(event["verdict"]).inc()
                    if event["verdict"] == "anomalous":
                        log.info("anomaly", id=event["id"], key=p.session.key, lines=len(p.session.lines),
                                 cached=j.cached, score=j.score, rationale=event["rationale"][:200])
            else:
                p.hold.release()
            self.metrics.end_to_end_latency.labels("hit" if j.cached else "miss").observe(steady() - p.closed_at)
        except (asyncio.CancelledError, Undeliverable):
            raise
        except Exception as exc:  # building or sending the output failed in our own code: dead-letter the session
            if p.hold.released:
                raise
            error = f"{type(exc).__name__}: {exc}"
            self.metrics.errors.labels("emit", type(exc).__name__).inc()
            log.error("emit_failed", key=p.session.key, error=error, exc_info=exc)
            await self.delivery.dead_letter(p.hold, session_dead_letter(p.session, "emit_failed", error))
