"""The daemon's template-level judging (``judge.level = "template"``): lines in, template verdicts, window events out.

- ``observe`` (every parsed line, as it arrives): the line's template is counted, and a template with no verdict yet
  is queued for the model at once (not when its window closes), as a one-row template session through the same
  ``ModelStage`` (batching, retries, failure policy) and ``Judge`` (constrained answers, the durable verdict cache
  keyed by model and prompt version, one call for identical templates in flight). A restart or a new replica
  therefore asks the cache, not the model, for every template already judged.
- ``close`` (a window closed, its offsets held as usual): decided at once when all its templates have a verdict (no
  model call), else held until the last one arrives. The window is anomalous when any template is (the event lists
  them, see ``events.build_template_event``); a template the model could not judge was dead-lettered with the
  reason and does not count.
- ``on_label``: an operator's label (``rationad label``, followed by ``labels.LabelBook``) wins over the model's
  verdict for every window decided after it, and settles windows waiting for that template.
- ``publish``: templates whose counts or verdicts changed go to ``judge.templates_topic`` (``rationad templates``).

A template judgement holds no input offset: its ``Hold`` is on a private ``PartitionOffsets`` that is never
committed, so it only counts as pending work for backpressure and drain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from rationad.catalog import TemplateStat, encode_stat
from rationad.clock import steady
from rationad.config import Settings
from rationad.delivery import Delivery, Hold, Output, Undeliverable, is_retriable
from rationad.dlq import DeadLetter, poison_session, session_dead_letter
from rationad.events import ModelInfo, build_template_event, encode_to_fit, fit_template_event, headers
from rationad.judge import Judgement
from rationad.metrics import Metrics
from rationad.model_stage import ModelStage, Pending, Result
from rationad.offsets import PartitionOffsets
from rationad.records import LogLine, Session
from rationad.template_book import Decision, TemplateBook, TemplateState, TemplateUse, template_session
from rationad.templates import template_id

log = structlog.get_logger("rationad")

CATALOG_INTERVAL_SECS = 10.0
CACHE_KEEP_SECS = 600.0  # a served template's verdict-cache entry is kept (made recent, written again) this often


def _never() -> bool:
    return False


@dataclass(slots=True, eq=False)
class _Window:
    session: Session
    uses: list[TemplateUse]
    hold: Hold
    closed_at: float
    is_revoked: Callable[[], bool]
    done: bool = False
    waits: set[str] = field(default_factory=set)  # the templates it is filed under in ``TemplateStage._waiting``


class TemplateStage:
    def __init__(self, settings: Settings, stage: ModelStage, delivery: Delivery, model: ModelInfo, metrics: Metrics,
                 source: str, *, spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task],
                 instance: str, clock: Callable[[], float] = steady) -> None:
        self.s = settings
        self.stage = stage
        self.delivery = delivery
        self.model = model
        self.metrics = metrics
        self.source = source
        self._spawn = spawn
        self.instance = instance
        # The daemon's clock (rationad.clock), the one lines are observed by: a failure's time and the retry that
        # follows it are read from the same clock, which never steps back.
        self.clock = clock
        self.book = TemplateBook(settings.cache.max_entries, settings.cache.max_bytes)
        self._offsets = PartitionOffsets()  # template judgements hold no input offset (never committed)
        # template text -> windows waiting for its verdict (not by id: ids can be made to collide, TemplateBook)
        self._waiting: dict[str, list[_Window]] = {}
        self.waiting_windows = 0

    # ---- lines and windows ----------------------------------------------------------------------------------
    def observe(self, line: LogLine, now: float) -> None:
        st = self.book.observe(line.message, now)
        line.template = st.template
        if st.verdict is None and self.book.needs_model(st, now):
            self._judge(st, now, line)
        elif st.label is not None and st.model_verdict is None and not st.looked_up:
            # A labelled template is never sent to the model (its label decides), but the model's verdict stays
            # shown beside the label (``rationad templates``, events' ``model_verdict``): read once from the verdict
            # cache, which keeps it while the label stands (``_keep_cached``). After a restart the catalog showed
            # every labelled template as "pending" (review 2026-12-07).
            st.looked_up = True
            try:
                r = self.stage.judge.cached(template_session(st.template))
            except Exception as exc:  # noqa: BLE001 - what is shown beside a label, never the line's judging
                log.warning("template_cache_lookup_failed", template_id=st.id, error=repr(exc))
                r = None
            if r is not None:
                self._store(st.template, r)

    def close(self, session: Session, hold: Hold, now: float, is_revoked: Callable[[], bool]) -> None:
        """A window closed (its hold taken): decide it now or when its last template's verdict arrives."""
        uses = self.book.uses(session)
        decision = self.book.decide(uses)
        if decision is not None:
            self.metrics.windows_decided.labels("known").inc()
            self._emit(session, decision, hold, now, is_revoked)
            return
        w = _Window(session, uses, hold, now, is_revoked)
        self._wait(w, now)
        self.waiting_windows += 1
        self.metrics.windows_waiting.set(self.waiting_windows)

    def _wait(self, w: _Window, now: float) -> None:
        """File ``w`` under every template it waits for (once each); send those nobody is judging to the model."""
        for u in w.uses:
            st = u.state
            if st.known:
                continue
            if st.template not in w.waits:
                w.waits.add(st.template)
                self._waiting.setdefault(st.template, []).append(w)
            if self.book.needs_model(st, now):  # e.g. forgotten while the window was open, or its label cleared
                self._judge(st, now, u.lines[0])

    def _judge(self, st: TemplateState, now: float, example: LogLine | None = None) -> None:
        """Send ``st`` to the model; ``example``, the line that sent it, is named by its dead letter if it fails."""
        self.book.start_judging(st)
        hold = self.delivery.hold(self._offsets, 0, st.nbytes)
        self.stage.submit(Pending(template_session(st.template, example=example), hold, now, _never,
                                  settle=self._settled))

    # ---- verdicts ------------------------------------------------------------------------------------------
    async def _settled(self, p: Pending, r: Result) -> None:
        """The model stage's result for one template: store it, settle the windows waiting for it."""
        tid = p.session.key
        template = p.session.lines[0].message  # template_session: one row, the template
        now = self.clock()
        try:
            # The windows waiting for a failed template are decided before its dead letter is sent: it is retried for
            # as long as the dead-letter topic takes, and they (and their partition's commit) waited all that time
            # (review 2026-12-07); its own hold is on offsets never committed.
            if isinstance(r, DeadLetter):
                self.book.judged(template, None, "", failed=r.reason, now=now)
                self.metrics.template_judgements.labels("failed").inc()
                self._resolve(template)
                await self.delivery.dead_letter(p.hold, r)
            elif not r.ok:
                self.book.judged(template, None, "", failed=r.answer.error or "malformed_answer", now=now)
                self.metrics.template_judgements.labels("failed").inc()
                log.warning("malformed_template_answer", template_id=tid, error=r.answer.error, attempts=r.attempts)
                self._resolve(template)
                await self.delivery.dead_letter(p.hold, poison_session(r))
            else:
                st = self._store(template, r)
                self.metrics.template_judgements.labels("cached" if r.cached else "model").inc()
                p.hold.release()
                if st is not None and st.verdict == "anomalous":
                    log.info("anomalous_template", template_id=tid, template=st.template[:200],
                             rationale=st.rationale[:200], cached=r.cached, score=r.score)
        finally:
            self._resolve(template)

    def _store(self, template: str, r: Judgement) -> TemplateState | None:
        """The model's judgement of ``template`` (from the model or the verdict cache) into the book."""
        return self.book.judged(template, r.verdict_at(self.s.judge.threshold_template), r.answer.rationale,
                                cached=r.cached, score=r.score, answer_verdict=r.answer.verdict,
                                problems=r.answer.problems, ungrounded=r.answer.ungrounded_refs,
                                unsupported=r.answer.unsupported)

    def on_label(self, tid: str, label) -> None:
        """An operator's label arrived (or was cleared): it decides later windows, and waiting ones now."""
        changed = self.book.set_label(tid, label)
        log.info("operator_label", template_id=tid, verdict=label.verdict if label else None,
                 by=label.by if label else None, held=bool(changed))
        for st in changed:
            if st.verdict is None and self.book.needs_model(st, now := self.clock()):
                self._judge(st, now)  # a cleared (or replaced) label on a template the model never judged
        for template in [t for t in self._waiting if template_id(t) == tid]:
            self._resolve(template)

    def _resolve(self, template: str) -> None:
        waiting = self._waiting.pop(template, None)
        if not waiting:
            return
        now = self.clock()
        for w in waiting:
            if w.done:
                continue
            w.waits.discard(template)
            self.book.refresh(w.uses)  # labels given (or cleared) since it closed count, also for evicted templates
            decision = self.book.decide(w.uses)
            if decision is None:  # it still waits: for this template (a label cleared) or another one
                self._wait(w, now)
                continue
            w.done = True
            self.waiting_windows -= 1
            self.metrics.windows_decided.labels("waited").inc()
            self._emit(w.session, decision, w.hold, w.closed_at, w.is_revoked, waited=True)
        self.metrics.windows_waiting.set(self.waiting_windows)

    # ---- events --------------------------------------------------------------------------------------------
    def _emit(self, session: Session, decision: Decision, hold: Hold, closed_at: float,
              is_revoked: Callable[[], bool], *, waited: bool = False) -> None:
        # rationad_session_latency_seconds{cache}: "miss" for a window that waited for a template's model call (what
        # RationadSlowVerdicts watches), "hit" for one decided at its close from templates already known
        how = "miss" if waited else "hit"
        if is_revoked():  # the partition's new owner decides it again (its offset was never committed)
            hold.release()
            return
        if decision.verdict != "anomalous" and not self.s.output.emit_normal:
            hold.release()
            self.metrics.end_to_end_latency.labels(how).observe(max(0.0, steady() - closed_at))
            return
        # Built now, from the templates as they were when the window was decided: a label landing before the send
        # must not give an event whose templates contradict its verdict.
        value = b""
        try:
            event: dict | Exception = build_template_event(session, decision, self.model, source=self.source,
                                                           max_rationale_chars=self.s.output.max_rationale_chars,
                                                           threshold=self.s.judge.threshold_template)
            event, value = encode_to_fit(event, session.key.encode(), self.s.output.max_message_bytes,
                                         fit_template_event)
        except Exception as exc:  # noqa: BLE001 - dead-lettered by _deliver, with the window's hold
            event = exc
        self._spawn(self._deliver(session, event, value, hold, closed_at, how), "template-event")

    async def _deliver(self, session: Session, event: dict | Exception, value: bytes, hold: Hold, closed_at: float,
                       how: str = "hit") -> None:
        """Produce ``event`` (JSON-encoded as ``value``); an exception in its place dead-letters the window."""
        try:
            if isinstance(event, Exception):
                raise event
            out = Output(self.s.output.topic, session.key.encode(), value, headers(event))

            def fallback(error: str) -> DeadLetter:
                return session_dead_letter(session, "undeliverable_event", error)

            if await self.delivery.event(hold, out, fallback):
                self.metrics.events_produced.labels(event["verdict"]).inc()
                if event["verdict"] == "anomalous":
                    log.info("anomaly", id=event["id"], key=session.key, lines=len(session.lines),
                             judge_level="template", templates=[t["id"] for t in event["templates"]],
                             rationale=event["rationale"][:200])
            self.metrics.end_to_end_latency.labels(how).observe(max(0.0, steady() - closed_at))
        except (asyncio.CancelledError, Undeliverable):
            raise
        except Exception as exc:  # building or sending the event failed in our own code: dead-letter the window
            if hold.released:
                raise
            error = f"{type(exc).__name__}: {exc}"
            self.metrics.errors.labels("emit", type(exc).__name__).inc()
            log.error("emit_failed", key=session.key, error=error, exc_info=exc)
            await self.delivery.dead_letter(hold, session_dead_letter(session, "emit_failed", error))

    # ---- catalog -------------------------------------------------------------------------------------------
    def catalog_records(self) -> list[tuple[TemplateState, bytes, bytes]]:
        """(template, key, value) for ``judge.templates_topic`` of every template changed since the last call, those
        forgotten since with changes first (``TemplateBook.unpublished``). A record that cannot be encoded costs
        only itself (logged), not the round."""
        out = []
        by_source: dict[str, int] = {"model": 0, "operator": 0, "pending": 0}
        changed = self.book.take_unpublished()
        for st in self.book.states():
            by_source[st.source] = by_source.get(st.source, 0) + 1
            if st.dirty:
                changed.append(st)
        now = self.clock()
        for st in changed:
            st.dirty = False
            self._keep_cached(st, now)
            try:
                key, value = encode_stat(stat_of(st, self.model.version, self.instance))
            except Exception as exc:  # noqa: BLE001 - one template's record, not the others'
                self.metrics.errors.labels("catalog", type(exc).__name__).inc()
                log.warning("template_catalog_record_unwritable", template_id=st.id, error=repr(exc))
                continue
            out.append((st, key, value))
        for source, n in by_source.items():
            self.metrics.templates_known.labels(source).set(n)
        return out

    def _keep_cached(self, st: TemplateState, now: float) -> None:
        """A template the book serves from its own verdict (its lines never ask the cache again) keeps its verdict
        cache entry, at most every ``CACHE_KEEP_SECS``: the cache evicted its least recently judged entries, the
        busiest templates first, and the eviction removed them from the durable table too, so a restart or a new
        replica asked the model again for them (review 2026-12-07)."""
        if st.model_verdict is None or st.judging:  # (a labelled template's too: it is what is shown beside it)
            return
        if st.kept_at is not None and now - st.kept_at < CACHE_KEEP_SECS:
            return
        st.kept_at = now
        try:
            self.stage.judge.keep_cached(template_session(st.template))
        except Exception as exc:  # noqa: BLE001 - the cache's upkeep, never the catalog's round
            log.warning("template_cache_keep_failed", template_id=st.id, error=repr(exc))

    async def publish(self, producer) -> int:
        """Send the changed templates to the catalog topic; best effort (the catalog is for people, not for
        delivery), but a record not written is sent again next round (``TemplateBook.unpublish``): a rare
        template may never change again."""
        records = self.catalog_records()
        if not records:
            return 0
        if producer is None:
            for st, _, _ in records:
                self.book.unpublish(st)
            return 0
        futures, failed = [], []
        for st, k, v in records:
            try:  # a record the producer refuses at once (over its size limit) costs only itself, not the rest
                futures.append((st, await producer.send(self.s.judge.templates_topic, key=k, value=v)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed.append(exc)
                if is_retriable(exc):  # not a record the broker can never take (too large)
                    self.book.unpublish(st)
        results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        for (st, _), r in zip(futures, results, strict=True):
            if isinstance(r, BaseException):
                failed.append(r)
                if is_retriable(r):
                    self.book.unpublish(st)
        if failed:
            self.metrics.errors.labels("catalog", type(failed[0]).__name__).inc(len(failed))
            log.warning("template_catalog_not_written", failed=len(failed), error=repr(failed[0]))
        return len(records) - len(failed)

    async def run_catalog(self, producer_of: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(CATALOG_INTERVAL_SECS)
            try:
                await self.publish(producer_of())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never let the catalog stop judging
                log.warning("template_catalog_failed", error=repr(exc))


def stat_of(st: TemplateState, model_version: str, instance: str) -> TemplateStat:
    """The catalog record of a template: what the model said of it (an operator's label lives in its own topic and
    ``rationad templates`` lays it over this, so the model's verdict stays visible and a cleared label leaves none)."""
    now = time.time()
    # served normal on void evidence: the rationale the model wrote ends "anomalous", so the catalog says why
    why = f" [{st.problems[-1]}]" if st.unsupported and st.problems else ""
    return TemplateStat(template=st.template, verdict=st.model_verdict,  # type: ignore[arg-type]
                        source="model" if st.model_verdict is not None else "pending", rationale=st.rationale + why,
                        model_version=model_version, count=st.count, first_seen=st.first_seen or now,
                        last_seen=st.last_seen or now, instance=instance)
