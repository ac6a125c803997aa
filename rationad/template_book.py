"""Template-level judging (``judge.level = "template"``): each distinct line template is judged once, and a window's
verdict follows from its lines' templates. Pure logic, no I/O; shared by the daemon (``rationad.template_stage``) and
``rationad replay --level template``.

A line's template is the masked message of ``rationad.templates.to_template``: stateless, so every replica and every
restart agrees on it (no drain3 clustering on top, whose cluster ids depend on what a process saw first). A message
that masks to nothing is its own template. ``TemplateBook`` keeps one ``TemplateState`` per template: the model's
verdict and rationale once judged, the operator's label if any (it wins), and counts for the catalog. It is bounded:
past ``max_templates``, or ``max_bytes`` of template text, of templates with a verdict, the least recently seen one
is forgotten (it costs a verdict-cache lookup when it comes back, not a model call). Templates waiting for the model
are not forgotten and do not count: the input's backpressure bounds them (each holds its text's bytes while it is
judged); counted, a few huge ones pending pushed every judged template out.

A window (any closed ``Session``) is decided by ``decide``: anomalous when any of its templates is; ``None`` while a
template it holds has no verdict yet (the caller holds the window until ``TemplateBook`` says the template is known).
A template the model could not judge (dead-lettered) does not make a window anomalous; the decision lists it.

A template's verdict is the model's answer at ``judge.threshold_template`` (its ``score`` against the threshold,
decided by the caller); ``answer_verdict`` keeps the answer the model wrote. A window's score is the maximum of its
templates' (the any-anomalous rule: at any threshold the window is anomalous exactly when its highest-scoring
template is), an operator's label counting as 1 (anomalous) or 0 (normal).
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rationad.answer import ranked_score
from rationad.records import LogLine, Session
from rationad.templates import template_id, to_template

if TYPE_CHECKING:
    from rationad.labels import Label

DEFAULT_MAX_TEMPLATES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # of template text (a template can be as long as a record: 64 KiB)
FAILED_RETRY_SECS = 600.0  # a template the model could not judge is tried again when seen this much later


def template_of(message: str) -> str:
    """The template a line is judged by (its masked message; the message itself if that masks to nothing)."""
    return to_template(message) or message.strip() or message


def template_session(template: str, source_key: str = "", example: LogLine | None = None) -> Session:
    """The template-level task's input: one row, the template itself (the prompt the model was trained on);
    ``example``, a line of it as read (named by its dead letter, ``rationad.dlq.session_dead_letter``)."""
    tid = template_id(template)
    line = LogLine(key=tid, message=template, raw=template)
    extra: dict = {"templated": True}
    if example is not None:
        extra["example"] = example
    return Session(key=tid, lines=[line], close_reason="template", topic=source_key, source_id=tid, extra=extra)


@dataclass(slots=True)
class TemplateState:
    template: str
    id: str
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    model_verdict: str | None = None  # the model's verdict at the threshold
    answer_verdict: str | None = None  # the answer the model wrote (its greedy answer)
    score: float | None = None  # P(anomalous) at the model's answer word; None for an answer without logprobs
    rationale: str = ""
    problems: tuple[str, ...] = ()  # what the template refutes in the rationale (``rationad.faithful``)
    unsupported: bool = False  # the answer was anomalous on void evidence (``rationad.faithful``): served normal
    ungrounded: tuple[str, ...] = ()  # refs of the rationale that are not the template's own row (``L1``)
    cached: bool = False
    failed: str | None = None  # why the model could not judge it (dead-lettered)
    failed_at: float = 0.0
    kept_at: float | None = None  # when its verdict-cache entry was last kept (``TemplateStage.catalog_records``)
    label: Label | None = None
    judging: bool = False  # sent to the model (``TemplateBook.start_judging``)
    looked_up: bool = False  # labelled: its model verdict was looked for in the verdict cache (``TemplateStage``)
    dirty: bool = True  # changed since the catalog last heard of it
    unsettled: bool = False  # counted by the book as not evictable (no verdict yet, or being judged)
    # What its text takes in memory, measured once when it is added: ``sys.getsizeof`` grows later for a non-ASCII
    # string once a UTF-8 copy of it is cached (orjson encoding it for the catalog), and the book's count drifted.
    nbytes: int = 0

    @property
    def verdict(self) -> str | None:
        return self.label.verdict if self.label is not None else self.model_verdict

    @property
    def source(self) -> str:
        if self.label is not None:
            return "operator"
        return "model" if self.model_verdict is not None else "pending"

    @property
    def known(self) -> bool:
        """Can a window holding it be decided? (A verdict, or the model's failure to give one while no retry is in
        flight: a window closing during the retry waits for its answer, which decided no event of the window holding
        the very line that sent it again: review 2026-12-07.)"""
        return self.verdict is not None or (self.failed is not None and not self.judging)

    @property
    def reason(self) -> str:
        return self.label.reason if self.label is not None else self.rationale

    @property
    def window_score(self) -> float | None:
        """What this template adds to a window's score: a label's 1 or 0, 0 for an answer served normal on void
        evidence (no threshold makes it anomalous), else the model's score; 1 for an anomalous answer without a score
        (it decides the window as a label does: the window's score was its other templates', below the threshold of
        an anomalous verdict; review 2026-12-07), nothing for a normal one."""
        if self.label is not None:
            return 1.0 if self.label.verdict == "anomalous" else 0.0
        if self.model_verdict is None:
            return None
        if self.score is None:
            return 1.0 if self.model_verdict == "anomalous" else None
        return ranked_score(self.score, self.unsupported)

    @property
    def written_verdict(self) -> str | None:
        """The verdict at the model's own answer (a label still wins)."""
        return self.label.verdict if self.label is not None else self.answer_verdict


@dataclass(slots=True)
class TemplateUse:
    """One template of one window: its state and the window's lines of it."""

    state: TemplateState
    lines: list[LogLine] = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    verdict: str  # "anomalous" | "normal"
    uses: list[TemplateUse]  # every template of the window, in order of first appearance
    unjudged: list[str]  # ids of templates the model could not judge
    score: float | None = None  # the maximum of its templates' scores (labels count 1 or 0); None: none scored
    model_verdict: str | None = None  # the window's verdict from the answers the model wrote (labels still win)

    @property
    def anomalous(self) -> list[TemplateUse]:
        return [u for u in self.uses if u.state.verdict == "anomalous"]


class TemplateBook:
    def __init__(self, max_templates: int = DEFAULT_MAX_TEMPLATES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_templates = max_templates
        self.max_bytes = max_bytes
        self.bytes = 0  # memory of the templates' text held (``sys.getsizeof``: 1, 2 or 4 bytes a character)
        # templates held that may not be forgotten (waiting or being judged), and their characters
        self._unsettled = 0
        self._unsettled_bytes = 0
        self._states: OrderedDict[str, TemplateState] = OrderedDict()  # by template text, least recently seen first
        # The same states by template id, for listings and labels only: a 12-digit id can be made to collide (about
        # 2^24 hashes), so verdicts and waiting windows go by the template text. Of two templates sharing an id, the
        # last one seen is listed here; a label applies to the template whose text it names.
        self._ids: dict[str, TemplateState] = {}
        self._labels: dict[str, Label] = {}  # by template id, also for templates not (or no longer) held
        # (count, first_seen) of templates not held: forgotten ones, and a restarted replica's from its catalog
        # records (``carry_counts``), so the counts it publishes keep growing (at most ``max_templates``).
        # A forgotten template's failure (why, when) travels with it too, so that it is not sent to the model again
        # before ``FAILED_RETRY_SECS`` only because it was evicted meanwhile.
        self._carried: OrderedDict[str, tuple[int, float, str | None, float]] = OrderedDict()
        # Templates forgotten (or whose catalog record failed to send) with changes the catalog has not heard of:
        # the next round publishes them (a rare template's verdict forgotten before the round, or lost to one failed
        # send, was never listed by ``rationad templates``). At most ``max_templates`` and ``max_bytes`` of their text,
        # the oldest given up first (bounded by count alone, a catalog topic refusing writes held up to 100,000
        # forgotten templates of up to 64 KB each: gigabytes past ``cache.max_bytes``; review 2026-12-07).
        self._unpublished: deque[TemplateState] = deque()
        self.unpublished_bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, tid: str) -> TemplateState | None:
        return self._ids.get(tid)

    def states(self) -> list[TemplateState]:
        return list(self._states.values())

    def state(self, template: str) -> TemplateState:
        """The state of ``template``, created if new (not counted as seen)."""
        st = self._states.get(template)
        if st is None:
            tid = template_id(template)
            st = TemplateState(template, tid, label=self._label_of(tid, template), nbytes=sys.getsizeof(template))
            if self._carried:
                st.count, st.first_seen, st.failed, st.failed_at = self._carried.pop(tid, (0, 0.0, None, 0.0))
            self._states[template] = st
            self._ids[tid] = st
            self.bytes += st.nbytes
            self._settle(st)
            self._bound()
        return st

    def observe(self, message: str, now: float) -> TemplateState:
        """A line of ``message`` arrived at ``now`` (wall clock): its template's state, counted."""
        template = template_of(message)
        st = self._states.get(template)
        if st is None:
            st = self.state(template)
            st.first_seen = st.first_seen or now
        else:
            self._states.move_to_end(template)
        st.count += 1
        st.last_seen = now
        st.dirty = True
        return st

    def needs_model(self, st: TemplateState, now: float) -> bool:
        """Should ``st`` be sent to the model now? (Not labelled, not judged, not in flight; a failure is retried
        after ``FAILED_RETRY_SECS``.)"""
        if st.judging or st.label is not None or st.model_verdict is not None:
            return False
        return st.failed is None or now - st.failed_at >= FAILED_RETRY_SECS

    def _label_of(self, tid: str, template: str) -> Label | None:
        label = self._labels.get(tid)
        return label if label is not None and label.template == template else None

    def judged(self, template: str, verdict: str | None, rationale: str, *, cached: bool = False,
               failed: str | None = None, now: float = 0.0, score: float | None = None,
               answer_verdict: str | None = None, problems: tuple[str, ...] = (),
               ungrounded: tuple[str, ...] = (), unsupported: bool = False) -> TemplateState | None:
        """The model's answer for ``template`` (or, with ``failed``, why there is none): ``verdict`` at the
        threshold, ``answer_verdict`` the answer it wrote (default: ``verdict``), ``score`` its P(anomalous)."""
        st = self._states.get(template)
        if st is None:
            return None
        st.judging = False
        st.dirty = True
        if failed is not None:
            st.failed, st.failed_at = failed, now
            self._settle(st)
            return st
        st.model_verdict, st.rationale, st.cached, st.failed = verdict, rationale, cached, None
        self._settle(st)
        st.answer_verdict = answer_verdict if answer_verdict is not None else verdict
        st.score = score
        st.problems = problems
        st.unsupported = unsupported
        st.ungrounded = ungrounded
        return st

    def set_label(self, tid: str, label: Label | None) -> list[TemplateState]:
        """An operator's label for ``tid`` (None clears it); the states held here whose label changed: the labelled
        template's, and that of a template whose label on the same id this one replaced (a crafted id collision: the
        labels topic keeps one label an id, so a restarted replica would have the earlier template unlabelled while
        this one went on applying the replaced label)."""
        changed: list[tuple[TemplateState | None, Label | None]] = []
        old = self._labels.pop(tid, None) if label is None else self._labels.get(tid)
        if label is None:
            changed.append((self._states.get(old.template) if old is not None else self._ids.get(tid), None))
        else:
            self._labels[tid] = label
            changed.append((self._states.get(label.template), label))
            if old is not None and old.template != label.template:
                changed.append((self._states.get(old.template), None))
        out = []
        for st, given in changed:
            if st is None:
                continue
            st.label = given
            st.dirty = True
            if self._states.get(st.template) is st:
                self._settle(st)
            out.append(st)
        return out

    def start_judging(self, st: TemplateState) -> None:
        """``st`` is sent to the model: it is not forgotten until its answer (or failure) comes back."""
        st.judging = True
        if self._states.get(st.template) is st:
            self._settle(st)

    def _settle(self, st: TemplateState) -> None:
        """Count ``st`` (held here) as evictable or not, after a change of its verdict, label or judging."""
        unsettled = st.judging or not st.known
        if unsettled != st.unsettled:
            sign = 1 if unsettled else -1
            self._unsettled += sign
            self._unsettled_bytes += sign * st.nbytes
            st.unsettled = unsettled
            if not unsettled:  # one more that counts: the least recently seen may have to make room
                self._bound()

    def uses(self, session: Session) -> list[TemplateUse]:
        """The window's templates, in order of first appearance, each with the window's lines of it (the daemon
        counted them as seen when they arrived; replay does not count)."""
        by_template: dict[str, TemplateUse] = {}
        for line in session.lines:
            template = line.template or template_of(line.message)
            use = by_template.get(template)
            if use is None:
                use = by_template[template] = TemplateUse(self.state(template))
            use.lines.append(line)
        return list(by_template.values())

    def refresh(self, uses: list[TemplateUse]) -> None:
        """Point a waiting window's uses at the states the book holds now. A template evicted since the window closed
        is not reached by ``set_label``: its state takes the label given since (or none), and when that leaves it
        without a verdict (a label cleared on a template the model never judged) the template is held again, to be
        judged."""
        for u in uses:
            st = u.state
            held = self._states.get(st.template)
            if held is st:
                continue
            if held is not None:
                u.state = held
                continue
            st.label = self._label_of(st.id, st.template)
            if not st.known:
                u.state = self.state(st.template)

    @staticmethod
    def decide(uses: list[TemplateUse]) -> Decision | None:
        """The window's verdict from its templates' verdicts; None while any template is not known yet."""
        if any(not u.state.known for u in uses):
            return None
        anomalous = any(u.state.verdict == "anomalous" for u in uses)
        unjudged = [u.state.id for u in uses if u.state.verdict is None]
        scores = [x for u in uses if (x := u.state.window_score) is not None]
        written = any(u.state.written_verdict == "anomalous" for u in uses)
        return Decision("anomalous" if anomalous else "normal", uses, unjudged, score=max(scores, default=None),
                        model_verdict="anomalous" if written else "normal")

    def _bound(self) -> None:
        while (len(self._states) - self._unsettled > self.max_templates
               or self.bytes - self._unsettled_bytes > self.max_bytes):
            # least recently seen first; one a window may wait for stays
            victim = next((st for st in self._states.values() if st.known and not st.judging), None)
            if victim is None:
                return
            del self._states[victim.template]
            if victim.dirty:
                self._hold_unpublished(victim)
            self.bytes -= victim.nbytes
            if self._ids.get(victim.id) is victim:
                del self._ids[victim.id]
            self._carry(victim.id, victim.count, victim.first_seen, victim.failed, victim.failed_at)

    def unpublish(self, st: TemplateState) -> None:
        """``st``'s catalog record was not written: publish it again next round (held or forgotten since)."""
        st.dirty = True
        if self._states.get(st.template) is not st:
            self._hold_unpublished(st)

    def _hold_unpublished(self, st: TemplateState) -> None:
        self._unpublished.append(st)
        self.unpublished_bytes += st.nbytes
        while len(self._unpublished) > self.max_templates or self.unpublished_bytes > self.max_bytes:
            self.unpublished_bytes -= self._unpublished.popleft().nbytes  # the catalog is for people: best effort

    def take_unpublished(self) -> list[TemplateState]:
        """The forgotten templates whose changes the catalog has not heard of, oldest first; the book lets them go."""
        out = list(self._unpublished)
        self._unpublished.clear()
        self.unpublished_bytes = 0
        return out

    def carry_counts(self, counts: dict[str, tuple[int, float]]) -> None:
        """(count, first_seen) by template id, from this replica's catalog records: templates seen again continue
        from them."""
        for tid, (count, first_seen) in counts.items():
            self._carry(tid, count, first_seen)

    def _carry(self, tid: str, count: int, first_seen: float, failed: str | None = None,
               failed_at: float = 0.0) -> None:
        if count:
            self._carried[tid] = (count, first_seen, failed, failed_at)
            self._carried.move_to_end(tid)
            if len(self._carried) > self.max_templates:
                self._carried.popitem(last=False)


def pending_ids(uses: list[TemplateUse]) -> list[str]:
    """Ids of the templates a window still waits for."""
    return [u.state.id for u in uses if not u.state.known]
