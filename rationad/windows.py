"""Windowing: parsed lines in, closed sessions out. Pure logic, no I/O; time comes in as arguments.

Two kinds of windows, per session key:

- **session** windows close when the key has been inactive for ``gap_secs`` of event time, when they reach
  ``max_lines``, or when a line would stretch them beyond ``max_span_secs``;
- **fixed** windows close after ``window_lines`` lines (count windows) or at the end of their ``window_secs``
  bucket of event time (time windows).

Event time is the line's own timestamp. A line without one takes its source's newest event time (the line before
it), or the partition's, moved on by the wall-clock time since that timed line arrived (as the watermark is), and
never moves event time; while no line of the partition has had a time, untimed lines
take their arrival time and so does the watermark (ingestion time: text without timestamps still closes a quiet
key's session after ``gap_secs``), and the sessions they open take the event time of the partition's first timed
line when it comes (a replayed file whose first line has no stamp). The
partition's *watermark* is the newest event time seen; when the partition goes quiet (no timed line arrives) the
watermark keeps moving with the wall clock, so a stream that stops still closes its sessions once the gap has passed
in wall-clock time. A pause of the caller's own input (backpressure: ``tick(now, paused=True)``) is not quiet: the
next lines wait in Kafka, and the wall clock it lasts moves neither the watermark nor the quiet flush.
A partition of the repartition topic merges lines of several input partitions (``LogLine.source``), each in its own
order but read at different speeds: its watermark is the *minimum* over those sources of each one's newest event time
(as Kafka Streams and Flink take the minimum over input partitions), so a source read ahead cannot close the sessions
whose lines a lagging source still holds. A source that sent nothing for ``SOURCE_IDLE_SECS`` of wall clock stops
holding the watermark back (Flink's idleness). Lines of a repartitioned session are ordered by (time, source offset,
source partition): lines of the same second keep the order they were written in.
``quiet_flush_secs`` (off by default) closes every open session after that much wall-clock quiet, for replays.

Out-of-order lines within ``allowed_lateness_secs`` of the watermark join their key's open window. A key may have
several windows open at once: a line newer than its key's window by more than the gap (or the span, or in a later
time bucket) opens a new one, but the earlier window stays open until the watermark (less the allowed lateness)
passes its close time, so a lagging source's lines, or lines within the allowed lateness, still join it; a line that
brings two open windows of its key within the gap of each other makes them one (within ``max_span_secs`` and
``max_lines``). A line later than that whose window has already closed is never dropped: it opens a window of its
key's late lines, which the key's next late lines join (within the gap and span) and which closes ``LATE_HOLD_SECS``
of wall clock later (reason ``late``), and the ``on_late`` callback hears how late it was. When every timed line of a
source has been late for ``STEP_BACK_SECS`` (by the source's own newest time: on-time lines of other hosts in the
partition break the run), its clock has stepped back (the end of daylight saving on zone-less local time, a shipper
sending an old file again): the source's event time follows its lines from then on, its late windows go on as
ordinary ones, and ``on_step`` hears by how much (before, every line of the repeated hour was a session of its own).
The windows opened before the step wait for its clock to come back to them, or for ``max_open_secs``. A line its key's
newest window takes is never late here (as on the fast path). A source whose clock leaps ahead of its own pace within
``STEP_MEMORY_SECS`` of a step mixes clocks (a lagging host whose partition's other hosts were quiet for the run): no
step is taken for it for ``MIXED_CLOCKS_SECS``.

A line stamped more than ``max_future_secs`` ahead of the wall clock (one HDFS line dated 2099) would close every open
session and leave each later line a session of its own: it is taken as untimed instead (its ``ts`` becomes None and it
takes the partition's current event time), never moves the watermark, and the ``on_future`` callback hears how far ahead
it was. A line within that bound keeps its time but moves its source's event time at most the allowed lateness past the
wall clock (``_ahead``), so a host whose clock jumped hours ahead cannot make the lines after it late either (those
stamped within a gap of the wall clock); a consumer far behind the wall clock (a backlog older than one gap) can still
be made late by such a line.

Memory is bounded by ``max_open_sessions``: when a new session would exceed it, the oldest-opened session closes
early (reason ``evicted``), which is also the one holding back the partition's committable offset. The caller can
bound bytes too: ``open_bytes`` estimates what the open sessions hold, and ``open_sizes`` with ``evict`` let it close
the sessions holding the most over all partitions (the daemon's byte budget).

Event time alone may never close a session (text without timestamps, a rare key of a count window, or HDFS blocks
that live for days) and an open session pins the committed offset: ``max_open_secs`` bounds, in wall-clock time from
the arrival of its first line, how long a session stays open (reason ``max_open``). More lines of its key later open
a new session with the next ``revision`` (a key's first session is revision 1), so the early verdict is followed by a
revised one on the same key. A revision carries the lines of the earlier ones as ``Session.context`` (at most
``max_lines`` in all, the earliest kept), and the model judges the lifecycle so far: judged alone, the later pieces of
a normal HDFS block (deletions, a reader's closed connection) look like failures. Carried lines count in
``open_bytes``; ``drop_contexts`` frees them first when the caller's byte budget is exceeded (a revision then is judged
on its own lines, as before).

Close reasons: ``gap``, ``max_lines``, ``span``, ``window_full``, ``window_end``, ``evicted``, ``quiet``,
``max_open``, plus whatever reason the caller passes to :meth:`Sessionizer.flush` (``end_of_input``, ``shutdown``)
or :meth:`Sessionizer.evict`.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from rationad.config import SessionsConfig
from rationad.key_spread import short_key
from rationad.records import LogLine, Session

Mode = Literal["session", "fixed"]

# A source (an input partition feeding a repartition-topic partition) quiet this long no longer holds the watermark.
SOURCE_IDLE_SECS = 30.0
# A key's late lines (their window already closed) gather in a window of their own for this long in wall-clock time,
# then it closes (reason ``late``): a lagging host or a buffering shipper gives one session per key and spell, not one
# per line.
LATE_HOLD_SECS = 30.0
# A source whose timed lines have all been late (each past its own window's close) for this long in wall-clock time,
# by its own newest time, has had its clock stepped back (the end of daylight saving on zone-less local time, a
# shipper replaying an old file): its event time follows its lines from then on. Shorter than ``LATE_HOLD_SECS``, so
# the late windows of the step's first lines are still open then and go on as ordinary windows.
STEP_BACK_SECS = 10.0
# A source whose clock leaps ahead of its own pace (by more than a session's close) within this long of a step back
# mixes clocks (a host lagging the others on its partition, which were quiet for STEP_BACK_SECS): no further step is
# taken for it for MIXED_CLOCKS_SECS (each one swung its event time back and forth by the lag).
STEP_MEMORY_SECS = 600.0
MIXED_CLOCKS_SECS = 3_600.0

# What one open line costs beyond its text, for ``Sessionizer.open_bytes``: the LogLine object (96 bytes with
# slots), the headers of its raw and message strings (49 bytes each), its time and offset objects, its session key
# string (one per parsed line) and the list slot. tracemalloc on typical HDFS lines measured about 500 bytes for a
# line of 210 characters of raw + message. Text is counted in characters, i.e. bytes for ASCII (non-ASCII text costs
# up to 4 bytes a character, so the estimate is low for it).
LINE_OVERHEAD_BYTES = 300

# Per-dialect defaults. HDFS: a session is a block's whole lifecycle; in the 2% sample of Loghub HDFS_v1 a block
# spans up to ~15 h with gaps up to ~13 h between its lines, hence a one-day gap and a two-day span.
_DEFAULTS: dict[str, dict[str, object]] = {
    "hdfs": {"mode": "session", "gap_secs": 86_400.0, "max_span_secs": 172_800.0, "max_lines": 20_000},
    "bgl": {"mode": "fixed", "window_lines": 100, "max_lines": 100},
    "generic": {"mode": "session", "gap_secs": 300.0, "max_span_secs": 3_600.0, "max_lines": 1_000},
}


@dataclass(frozen=True, slots=True)
class WindowSpec:
    mode: Mode
    gap_secs: float | None = None
    max_lines: int = 1_000
    max_span_secs: float | None = None
    window_lines: int | None = None
    window_secs: float | None = None
    allowed_lateness_secs: float = 0.0
    max_open_sessions: int = 100_000
    quiet_flush_secs: float | None = None
    max_open_secs: float | None = None  # wall-clock bound on how long a session stays open; None: no bound
    max_future_secs: float | None = None  # lines further ahead of the wall clock are untimed; None: no bound
    carry_context: bool = True  # session mode: revisions carry their key's earlier lines (session-level judging)

    def __post_init__(self) -> None:
        if self.mode == "session" and self.gap_secs is None:
            raise ValueError("sessions.gap_secs: session windows need an inactivity gap")
        if self.mode == "fixed" and self.window_lines is None and self.window_secs is None:
            raise ValueError("sessions.window_lines: fixed windows need window_lines or window_secs")


def resolve_spec(cfg: SessionsConfig, dialect: str) -> WindowSpec:
    """The configured window settings, with the dialect's defaults for every key left unset."""
    base = dict(_DEFAULTS.get(dialect, _DEFAULTS["generic"]))
    mode = cfg.mode or ("fixed" if (cfg.window_lines or cfg.window_secs) else base["mode"])
    # A key of the other mode would be silently ignored: refused, so the window the operator meant is the one run.
    if mode == "session" and (other := next((k for k in ("window_lines", "window_secs") if getattr(cfg, k) is not None),
                                            None)):
        raise ValueError(f"sessions.{other}: sizes fixed windows, but sessions.mode is 'session' (windows closed by "
                         "gap_secs): remove it, or set mode = 'fixed'")
    if mode == "fixed" and cfg.gap_secs is not None:
        raise ValueError("sessions.gap_secs: closes session windows, but the windows are fixed (sessions.mode "
                         f"{cfg.mode or 'unset, fixed by window_lines / window_secs'!s}): remove it, or set "
                         "mode = 'session' without window_lines and window_secs")
    if mode == "fixed" and cfg.max_span_secs is not None:
        raise ValueError("sessions.max_span_secs: bounds session windows, but the windows are fixed (sessions.mode "
                         f"{cfg.mode or 'unset, fixed by window_lines / window_secs'!s}): bound them by time with "
                         "window_secs, or remove it")
    if mode != base["mode"]:  # switching mode drops the other mode's defaults
        base = {"max_lines": base.get("max_lines", 1_000)}
    window_lines = cfg.window_lines if cfg.window_lines is not None else base.get("window_lines")
    if mode == "fixed" and cfg.window_secs is not None and cfg.window_lines is None:
        window_lines = None  # a time window was asked for: no count limit from the defaults
        base.pop("max_lines", None)  # nor a size bound that was the default count (bgl: 100)
    gap = cfg.gap_secs if cfg.gap_secs is not None else base.get("gap_secs")
    if mode == "session" and gap is None:
        gap = _DEFAULTS["generic"]["gap_secs"]
    max_lines = cfg.max_lines if cfg.max_lines is not None else base.get("max_lines", 1_000)
    if mode == "fixed" and window_lines is not None and cfg.max_lines is None:
        max_lines = window_lines
    return WindowSpec(
        mode=mode,  # type: ignore[arg-type]
        gap_secs=gap if mode == "session" else None,  # type: ignore[arg-type]
        max_lines=int(max_lines),  # type: ignore[arg-type]
        max_span_secs=cfg.max_span_secs if cfg.max_span_secs is not None else base.get("max_span_secs"),  # type: ignore[arg-type]
        window_lines=window_lines if mode == "fixed" else None,  # type: ignore[arg-type]
        window_secs=cfg.window_secs if mode == "fixed" else None,
        allowed_lateness_secs=cfg.allowed_lateness_secs,
        max_open_sessions=cfg.max_open_sessions,
        quiet_flush_secs=cfg.quiet_flush_secs,
        max_open_secs=cfg.max_open_secs,
        max_future_secs=cfg.max_future_secs,
    )


def _written_at(line: LogLine) -> tuple:
    """Where a repartitioned line was written: its source position; a line without one (an internal record missing
    its source headers) sorts by its own place."""
    src = line.source
    return (src[2], src[0], src[1]) if src is not None else (line.offset, line.topic, line.partition)


# Windows of one key open beside its newest (late ones waiting for the next tick, older ones a lagging source may
# still add to): each line of the key looks through them, so when one more would open past this many, the key's
# oldest closes first (8,000 late lines of one block in one fetch took 9.4 s, quadratic, past the service watchdog).
MAX_OLDER_PER_KEY = 64
SPLIT_KEYS = 4_096  # entries of ``Sessionizer._split`` before it is pruned to the newest offset


@dataclass(slots=True, eq=False)  # compared by identity (``in``/``remove`` on a key's older windows)
class _Open:
    key: str
    first_ts: float
    last_ts: float
    first_offset: int
    bucket: int | None = None  # fixed time windows: the window's index
    lines: list[LogLine] = field(default_factory=list)
    disordered: bool = False
    opened_at: float = 0.0  # wall clock when its first line arrived
    nbytes: int = 0  # estimate, see LINE_OVERHEAD_BYTES
    revision: int = 1
    part: int = 0  # lines of its key in earlier sessions at its first line's offset (Session.part)
    context: list[LogLine] = field(default_factory=list)  # the key's earlier revisions' lines (Session.context)
    context_bytes: int = 0
    by_arrival: bool = False  # opened while no line of the partition had a time: dated by arrival until one has
    wid: int = 0  # its place in ``Sessionizer._windows`` (opening order)
    cut: str | None = None  # an older window of its key: why a newer line did not join it ("gap", "span", ...)
    merged: bool = False  # took another window's lines: ``lines`` no longer in arrival order
    sched: int = 0  # seq of its live ``Sessionizer._deadlines`` entry (older entries for it are stale)
    late_until: float | None = None  # a window of late lines: wall clock at which it closes (``LATE_HOLD_SECS``)


def line_bytes(line: LogLine) -> int:
    """What one line counts against ``delivery.max_open_bytes`` (an estimate, see ``LINE_OVERHEAD_BYTES``). The lines
    of one line naming several sessions share its text and each counts it whole: a share each was undercounted by any
    factor once the other sharers closed (review 2026-12-07); counting a text once needs a count of its holders."""
    return len(line.raw) + len(line.message) + LINE_OVERHEAD_BYTES


LateCallback = Callable[[LogLine, float], None]  # (line, seconds behind the partition's event time)
FutureCallback = Callable[[LogLine, float], None]  # (line as received, seconds ahead of the wall clock)
StepCallback = Callable[[LogLine, float], None]  # (the line that showed it, seconds its source's clock went back)


def _ahead_bound(spec: WindowSpec) -> float | None:
    """See ``Sessionizer._ahead``: None without a future bound, or where time closes no window."""
    if spec.max_future_secs is None or not (spec.mode == "session" or spec.window_secs is not None):
        return None
    return spec.allowed_lateness_secs


class Sessionizer:
    """Open windows of one input partition. ``add``/``tick`` return the sessions they close."""

    _fast_path = True  # the in-order fast path of ``add`` (tests switch it off to compare it with the general path)

    def __init__(self, spec: WindowSpec, *, topic: str = "", partition: int = 0,
                 on_late: LateCallback | None = None, on_future: FutureCallback | None = None,
                 on_step: StepCallback | None = None) -> None:
        self.spec = spec
        self.topic = topic
        self.partition = partition
        self.on_late = on_late
        self.on_future = on_future
        self.on_step = on_step
        # Every open window by ``_Open.wid``: insertion order = opening order (oldest first). An OrderedDict, because
        # sessions leave from the front (evicted, max_open): a plain dict scans the freed slots at its front on every
        # next(iter(...)).
        self._windows: OrderedDict[int, _Open] = OrderedDict()
        self._wid = 0
        # key -> its newest open window (where its in-order lines go); key -> its older windows still open: a newer
        # line of the key came past the gap (or span, or time bucket) before the watermark had closed them, and a
        # lagging source's lines (or lines within the allowed lateness) may still join them.
        self._open: dict[str, _Open] = {}
        self._older: dict[str, list[_Open]] = {}
        # (event time at which it may close, seq, ``wid`` of the open session it was scheduled for): an entry whose
        # session has closed is stale. Numbers only: an entry can outlive its session until its due time (a day for
        # HDFS), and one that held the session pinned its lines and key outside the byte budget.
        self._deadlines: list[tuple[float, int, int]] = []
        self._seq = 0
        self._max_ts: float | None = None  # newest event time of any source (untimed lines take it)
        self._last_arrival: float | None = None  # wall clock of the newest line
        # Per source (None, or the (topic, partition) of a repartitioned line's input record): [newest event time or
        # None, wall clock of its newest line, wall clock of its newest timed line, wall clock since which its timed
        # lines have all been late or None, the newest of those late lines' times, wall clock of its last step back
        # within STEP_MEMORY_SECS or None, wall clock until which no step is taken for it or None]; ``_event_time`` is
        # the minimum of those newest event times. Event time moves on with the wall clock from the newest timed line
        # (untimed lines do not restart it: they move no event time); idleness counts from any line.
        self._sources: dict[object, list] = {}
        self._event_time: float | None = None
        self._paused_at: float | None = None  # wall clock of the last tick while the caller's input was paused
        self._held_secs = 0.0  # wall clock the caller's input has been paused, in all
        self._late_q: deque[tuple[float, int]] = deque()  # (``late_until``, ``wid``) of windows of late lines, in order
        self._open_bytes = 0
        # Keys whose last session closed by "max_open" -> that session's revision and first event time; bounded, oldest
        # forgotten first.
        self._revisions: OrderedDict[str | bytes, tuple[int, float]] = OrderedDict()  # keys by ``short_key``
        # Of those keys, the lines their next revision carries as context, and their bytes; oldest first.
        self._carried: OrderedDict[str | bytes, tuple[list[LogLine], int]] = OrderedDict()
        self._carry = spec.carry_context and spec.mode == "session"  # fixed windows stand alone
        # key -> (offset, lines of the key at that offset in its sessions closed so far), for the offset of each
        # key's last closed line: a session of the key opening at that offset (a record or pack whose lines of one
        # key fall in two sessions) is told apart by ``part``. Bounded: pruned to the newest offset past SPLIT_KEYS.
        self._split: dict[str | bytes, tuple[int, int]] = {}
        # Entries past which it is pruned next: twice what the last prune kept, so that keys that all stay (many keys
        # ending in one record) are pruned as often as a growing list is copied, not on every close.
        self._split_limit = SPLIT_KEYS
        # The in-order fast path of ``add``: ``_solo`` is the unrepartitioned source's entry of ``_sources`` while it
        # is the only one, else None (a repartitioned line finds its source's entry by its position). The limits below are the spec's, with
        # infinity for "no limit", so that one comparison each decides.
        self._solo: list | None = None
        if spec.mode != "session" or spec.gap_secs is None:
            self._fast_path = False  # fixed windows: a line's window is its bucket, the general path decides
        self._fast_gap = spec.gap_secs if spec.gap_secs is not None else -math.inf
        self._fast_span = spec.max_span_secs if spec.max_span_secs is not None else math.inf
        # How far past the wall clock a timed line may move its source's event time (None: as far as its stamp): the
        # allowed lateness, with a future bound, so that no single line within that bound (a host whose clock jumped
        # hours ahead) can make a line stamped at most one gap before the wall clock late. The line keeps its time,
        # and so do the untimed lines after it (``_ahead_raw``: the newest stamp past the bound, per source), until a
        # timed line of the source within the bound.
        self._ahead = _ahead_bound(spec)
        self._ahead_raw: dict[object, float] = {}
        self._fast_future = min(spec.max_future_secs if spec.max_future_secs is not None else math.inf,
                                self._ahead if self._ahead is not None else math.inf)
        self._fast_lines = min(spec.max_lines, spec.window_lines if spec.window_lines is not None else spec.max_lines)

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self._windows)

    @property
    def open_bytes(self) -> int:
        """Estimated bytes held by open sessions and the lines carried for the next revisions of keys closed by
        ``max_open``: ``line_bytes`` per line."""
        return self._open_bytes

    def oldest_opened_at(self) -> float | None:
        """Wall clock (the ``now`` given to ``add``) at which the oldest open session's first line arrived."""
        if not self._windows:
            return None
        return next(iter(self._windows.values())).opened_at

    def open_sizes(self) -> list[tuple[int, float, int]]:
        """(bytes it holds: its lines and the carried lines it was given, when it opened, its id) of each open
        session, for ``evict``."""
        return [(w.nbytes + w.context_bytes, w.opened_at, wid) for wid, w in self._windows.items()]

    def evict(self, wid: int, reason: str = "evicted") -> Session | None:
        """Close the open session ``wid`` (from ``open_sizes``) early; None when it is no longer open."""
        w = self._windows.get(wid)
        return None if w is None else self._close(w, reason)

    def evict_oldest(self, reason: str = "evicted") -> Session | None:
        """Close the oldest-opened session (the one holding back the committable offset); None when none is open."""
        if not self._windows:
            return None
        return self._close(next(iter(self._windows.values())), reason)

    def min_open_offset(self) -> int | None:
        """The smallest first offset over open sessions: the partition must not be committed past it."""
        if not self._windows:
            return None
        return min(s.first_offset for s in self._windows.values())

    def watermark(self, now: float) -> float | None:
        """Newest event time seen, moved on by the wall-clock time the partition has been quiet; with several
        sources, the minimum of that over the sources heard from in the last ``SOURCE_IDLE_SECS`` (or over all)."""
        if self._event_time is None:  # no line has had a time: untimed lines took their arrival, so does the watermark
            return None if self._last_arrival is None else now - self._held_secs
        if len(self._sources) == 1:
            st = next(iter(self._sources.values()))
            return st[0] + max(0.0, now - st[2])
        return min(ts + max(0.0, now - timed) for ts, timed in self._followed(now))

    def _followed(self, now: float) -> list[tuple[float, float]]:
        """(newest event time, arrival of the newest timed line) of the timed sources the watermark follows: those
        heard from in the last ``SOURCE_IDLE_SECS``, or all of them when every one is idle."""
        timed = [st for st in self._sources.values() if st[0] is not None]
        return [(st[0], st[2]) for st in timed if now - st[1] <= SOURCE_IDLE_SECS] or [(st[0], st[2]) for st in timed]

    def _untimed_ts(self, src: tuple | None, now: float) -> float:
        """The event time a line without one takes: its source's newest, moved on by the wall-clock time since that
        source's newest timed line (as the watermark moves: the lines of a stack trace keep their first line's time, a
        stream that stopped stamping its lines goes on in ingestion time), else the least of the sources the watermark
        follows, moved on alike, else its arrival (ingestion time, while no line here has had a time). It never moves
        event time itself."""
        st = self._sources.get(None if src is None else src[:2])
        if st is not None and st[0] is not None:
            raw = self._ahead_raw.get(None if src is None else src[:2])
            return (raw if raw is not None and raw > st[0] else st[0]) + max(0.0, now - st[2])
        if self._event_time is None:
            return now - self._held_secs  # arrival time, less the time input was paused (``tick(paused=True)``)
        return min(ts + max(0.0, now - timed) for ts, timed in self._followed(now))

    def _redate(self) -> None:
        """The partition's first timed line: sessions dated by arrival until now take the event time, so a replayed
        or lagging stream's lines join them and its watermark closes them."""
        t = self._event_time
        assert t is not None
        for cur in self._windows.values():
            if cur.by_arrival:
                cur.by_arrival = False
                cur.first_ts = cur.last_ts = t
                cur.bucket = self._bucket(t)
                self._schedule(cur)

    def _heard(self, source: object, ts: float | None, now: float) -> None:
        """A line of ``source`` arrived at ``now`` with event time ``ts`` (None: untimed)."""
        st = self._sources.get(source)
        if st is None:
            st = self._sources[source] = [None, now, now, None, None, None, None]
            self._solo = st if source is None and len(self._sources) == 1 else None
        st[1] = now
        if ts is not None:
            st[2] = now
        if ts is not None and (st[0] is None or ts > st[0]):
            old = st[0]
            st[0] = ts
            wm = self._event_time
            if wm is None or old is None or old <= wm:  # this source may have held the minimum: recompute it
                self._event_time = min(v[0] for v in self._sources.values() if v[0] is not None)

    # ---- input ----------------------------------------------------------------------------------------------
    def add(self, line: LogLine, now: float) -> list[Session]:
        """Add one line (``now`` is the wall clock); returns the sessions this closes."""
        ts = line.ts
        src = line.source
        # The common case, decided in a few comparisons: a timed line of an open session, not before its first line
        # and within its gap and span, not too far in the future, from a source already timed (the only source, or a
        # repartitioned line's source partition). Everything the general path below would do for it is done here
        # (written so that a NaN anywhere fails a test and takes the general path).
        st = self._solo if src is None else self._sources.get(src[:2])
        if st is not None and ts is not None and st[0] is not None and st[5] is None and self._fast_path:
            cur = self._open.get(line.key)
            if cur is not None and (not self._older or line.key not in self._older) and cur.first_ts <= ts \
                    and ts - cur.last_ts <= self._fast_gap \
                    and ts - cur.first_ts <= self._fast_span and cur.last_ts - cur.first_ts <= self._fast_span \
                    and ts - now <= self._fast_future:
                self._last_arrival = now
                st[1] = st[2] = now
                if st[3] is not None:  # a line of an open window: its source's clock has not stepped back
                    st[3] = None
                if self._ahead_raw:  # a timed line within the bound: the source's untimed lines follow it again
                    self._ahead_raw.pop(None if src is None else src[:2], None)
                if ts > st[0]:
                    if src is None:  # with one source, its newest time is also the newest overall and the event time
                        st[0] = self._max_ts = self._event_time = ts
                    else:  # as ``_heard``: the source may have held the minimum
                        old, st[0] = st[0], ts
                        if self._max_ts is None or ts > self._max_ts:
                            self._max_ts = ts
                        wm = self._event_time
                        if wm is None or old <= wm:
                            self._event_time = min(v[0] for v in self._sources.values() if v[0] is not None)
                if ts > cur.last_ts:
                    cur.last_ts = ts
                elif ts < cur.last_ts:  # within the session's span, before its newest line (merged sources)
                    cur.disordered = True
                if line.offset < cur.first_offset:
                    cur.first_offset = line.offset
                lines = cur.lines
                lines.append(line)
                size = len(line.raw) + len(line.message) + LINE_OVERHEAD_BYTES  # line_bytes, inlined: the hot path
                cur.nbytes += size
                self._open_bytes += size
                if len(lines) >= self._fast_lines:
                    return [self._close(cur, "max_lines")]
                return []
        spec = self.spec
        timed = True
        if ts is not None and ts != ts:  # NaN (no parser makes one): no time, as an untimed line; never stored
            line = replace(line, ts=None)
            ts = None
        if ts is not None and spec.max_future_secs is not None and ts - now > spec.max_future_secs:
            if self.on_future is not None:
                self.on_future(line, ts - now)
            line = replace(line, ts=None)  # judged as untimed: the session's times stay those of its other lines
            ts = None
            timed = False
        if ts is None:
            ts = self._untimed_ts(src, now)
            timed = False
        closed: list[Session] = []
        self._last_arrival = now
        wts = ts  # what the line tells event time (``_ahead``)
        if timed and self._ahead is not None and ts - now > self._ahead:
            wts = now + self._ahead
            key = None if src is None else src[:2]
            if ts > self._ahead_raw.get(key, -math.inf):
                self._ahead_raw[key] = ts
        elif timed and self._ahead_raw:  # within the bound: the source's untimed lines follow its timed lines again
            self._ahead_raw.pop(None if src is None else src[:2], None)
        if timed:
            self._step_watch(line, wts, now, (c := self._open.get(line.key)) is not None and self._fits(c, ts))
        if timed and (self._max_ts is None or wts > self._max_ts):
            self._max_ts = wts
        by_arrival = self._event_time is None
        self._heard(None if src is None else src[:2], wts if timed else None, now)
        if by_arrival and self._event_time is not None:
            by_arrival = False
            self._redate()
        cur = self._open.get(line.key)
        older = False  # the line opens a window older than its key's newest
        fits = cur is not None and self._fits(cur, ts)
        home = None
        if not fits and self._older and line.key in self._older and not self._continues_cut(line.key, cur, ts):
            # an older window of its key, still open: a lagging source's line, or a late one
            home = next((w for w in self._older[line.key] if self._fits(w, ts)), None)
        if home is not None:
            cur = home
        elif cur is not None and not fits:
            if self._is_older(cur, ts):
                # before the newest window: in a window beside it (below: of late lines, when the watermark has closed
                # its time already)
                cur, older = None, True
            elif self._waits(cur, now):
                # Newer than the key's window by more than the gap (span, bucket), but the watermark has not passed
                # that window's close time: a lagging source (or a line within the allowed lateness) may still add
                # to it, so it stays open beside the new one and ``tick`` closes it.
                cur.cut = self._reason_for(cur, ts)
                del self._open[line.key]
                closed += self._room_beside(line.key)
                self._older.setdefault(line.key, []).append(cur)
                self._schedule(cur)  # its close time may be earlier now (the end of its span)
                cur = None
            else:
                closed.append(self._close(cur, self._reason_for(cur, ts)))
                cur = None
        late = False
        if cur is None:
            if self._would_be_closed(ts, now):
                # It belongs to a window of this key that has already closed: never dropped, judged in a window of the
                # key's late lines (``LATE_HOLD_SECS``), beside its key's: it takes no revision, nor the lines carried
                # for the key's next one
                self._late(line, ts)
                older = late = True
            elif not older and self._revisions and (cut := self._revisions.get(short_key(line.key))) is not None \
                    and ts < cut[1]:
                older = True  # dated before the session max_open cut: not its continuation either
            if older:
                closed += self._room_beside(line.key)
            if len(self._windows) >= spec.max_open_sessions:
                closed.append(self._close(next(iter(self._windows.values())), "evicted"))
            cur = self._new(line, ts, now, by_arrival, older, late)
        if ts < cur.last_ts:
            cur.disordered = True
        cur.lines.append(line)
        size = line_bytes(line)
        cur.nbytes += size
        self._open_bytes += size
        cur.first_ts = min(cur.first_ts, ts)
        cur.last_ts = max(cur.last_ts, ts)
        cur.first_offset = min(cur.first_offset, line.offset)
        if cur.cut is not None:  # an older window's close time may have moved earlier (the end of its span)
            self._schedule(cur)
        if self._older and line.key in self._older and spec.mode == "session":
            cur = self._merge(cur)
        if len(cur.lines) >= spec.max_lines or (spec.window_lines is not None and len(cur.lines) >= spec.window_lines):
            closed.append(self._close(cur, "window_full" if spec.mode == "fixed" else "max_lines"))
        return closed

    def tick(self, now: float, *, paused: bool = False) -> list[Session]:
        """Close what time has closed: sessions open ``max_open_secs`` of wall-clock time, gaps and time windows
        past the watermark, or everything after quiet. ``paused``: the caller has stopped reading this partition
        (backpressure) and its next lines wait in Kafka: the wall clock since the previous tick is not quiet, so it
        moves neither the watermark nor the quiet flush (``max_open_secs`` still counts)."""
        if paused and self._paused_at is not None and now > self._paused_at:
            self._hold(now - self._paused_at)
        self._paused_at = now if paused else None
        if not self._windows:
            return []
        spec = self.spec
        closed: list[Session] = []
        if spec.max_open_secs is not None:
            # Opening order is arrival order, so only the front can be due: O(1) per tick plus one per close. (A wall
            # clock stepped backwards only delays a close.)
            limit = now - spec.max_open_secs
            while self._windows:
                cur = next(iter(self._windows.values()))
                if cur.opened_at > limit:
                    break
                # A key's older window is finished: its key's lines go on in the newer one (no revision follows).
                closed.append(self._close(cur, "max_open" if self._live(cur)
                                          else (cur.cut or "gap") if spec.mode == "session" else "window_end"))
            if not self._windows:
                return closed
        if spec.quiet_flush_secs is not None and self._last_arrival is not None \
                and now - self._last_arrival >= spec.quiet_flush_secs:
            return closed + self.flush("quiet")
        wm = self.watermark(now)
        if wm is None:
            return closed
        horizon = wm - spec.allowed_lateness_secs
        while self._late_q and self._late_q[0][0] <= now:  # windows of late lines whose time is up
            _, wid = self._late_q.popleft()
            cur = self._windows.get(wid)
            if cur is None or cur.late_until is None:  # closed, merged away, or no longer late
                continue
            cur.late_until = None
            due = self._deadline(cur)
            if due is not None and due < horizon:
                closed.append(self._close(cur, "late"))
            else:  # its source's clock stepped back meanwhile (``_step_back``): an ordinary window from now on
                cur.cut = None
                self._schedule(cur)
        while self._deadlines and self._deadlines[0][0] < horizon:
            _, seq, wid = heapq.heappop(self._deadlines)
            cur = self._windows.get(wid)
            if cur is None or seq != cur.sched or cur.late_until is not None:  # closed, merged away, rescheduled, or
                continue  # a window of late lines (closed above when its time is up)
            due = self._deadline(cur)
            if due is None or due >= horizon:
                if due is not None:
                    cur.sched = self._next_seq()
                    heapq.heappush(self._deadlines, (due, cur.sched, wid))
                continue
            closed.append(self._close(cur, (cur.cut or "gap") if spec.mode == "session" else "window_end"))
        return closed

    def _hold(self, secs: float) -> None:
        """Take ``secs`` of wall clock out of every quiet measure: the sources' arrivals (the watermark's advance and
        their idleness), the last arrival (the quiet flush) and the arrival time untimed lines take move on by it."""
        for st in self._sources.values():
            st[1] += secs
            st[2] += secs
            for i in (3, 5, 6):  # the late run, the step remembered and the mixed-clocks hold count unpaused time
                if st[i] is not None:
                    st[i] += secs
        if self._last_arrival is not None:
            self._last_arrival += secs
        self._held_secs += secs  # the arrival-time clock of untimed lines, while no line has had a time

    def flush(self, reason: str) -> list[Session]:
        """Close every open session (end of input, shutdown, quiet stream)."""
        closed = [self._close(cur, reason) for cur in list(self._windows.values())]
        self._deadlines.clear()
        self._late_q.clear()
        return closed

    # ---- internals ------------------------------------------------------------------------------------------
    def _bucket(self, ts: float) -> int | None:
        return math.floor(ts / self.spec.window_secs) if self.spec.window_secs else None

    def _fits(self, cur: _Open, ts: float) -> bool:
        spec = self.spec
        if spec.mode == "fixed":
            return spec.window_secs is None or self._bucket(ts) == cur.bucket
        assert spec.gap_secs is not None
        if ts - cur.last_ts > spec.gap_secs or cur.first_ts - ts > spec.gap_secs:
            return False
        if spec.max_span_secs is not None and max(ts, cur.last_ts) - min(ts, cur.first_ts) > spec.max_span_secs:
            return False
        return True

    def _is_older(self, cur: _Open, ts: float) -> bool:
        if self.spec.mode == "fixed":
            return cur.bucket is not None and (self._bucket(ts) or 0) < cur.bucket
        return ts < cur.first_ts

    def _late(self, line: LogLine, ts: float) -> None:
        if self.on_late is not None and self._max_ts is not None:
            self.on_late(line, self._max_ts - ts)

    def _reason_for(self, cur: _Open, ts: float) -> str:
        spec = self.spec
        if spec.mode == "fixed":
            return "window_end"
        assert spec.gap_secs is not None
        return "gap" if ts - cur.last_ts > spec.gap_secs else "span"

    def _would_be_closed(self, ts: float, now: float) -> bool:
        """Would a window holding only a line at ``ts`` already be past its close time? Measured at the event time of
        the sources the watermark follows (``_followed``): an idle source far behind held every line back from being
        late, so a lagging host's lines were one-line sessions closed at the next tick (review 2026-12-07)."""
        if self._event_time is None:
            return False
        et = self._event_time if len(self._sources) == 1 else min(t for t, _ in self._followed(now))
        return self._past(ts, et)

    def _past(self, ts: float, event_time: float) -> bool:
        """Would a window holding only a line at ``ts`` be past its close time at ``event_time``?"""
        spec = self.spec  # what ``_deadline`` gives for such a window, without building one
        if spec.mode == "session":
            assert spec.gap_secs is not None
            due = ts + spec.gap_secs
        elif spec.window_secs:
            due = (math.floor(ts / spec.window_secs) + 1) * spec.window_secs
        else:
            return False
        return due < event_time - spec.allowed_lateness_secs

    def _step_watch(self, line: LogLine, ts: float, now: float, joins: bool) -> None:
        """A timed line at ``ts`` of its source (``joins``: its key's newest window takes it, as on the fast path):
        late by the source's own newest time, or not. When all of them have been late for ``STEP_BACK_SECS``, the
        source's clock stepped back: ``_step_back``. A leap ahead soon after a step: the source mixes clocks."""
        st = self._sources.get(None if line.source is None else line.source[:2])
        if st is None or st[0] is None:
            return
        if st[5] is not None:  # stepped back lately (the fast path sends its lines here meanwhile)
            if now - st[5] > STEP_MEMORY_SECS:
                st[5] = None
            elif self._past(st[0] + max(0.0, now - st[2]), ts):  # ahead of its own pace by a session's close
                st[5], st[6] = None, now + MIXED_CLOCKS_SECS
        if joins or not self._past(ts, st[0]):
            st[3] = None
        elif st[6] is not None and now < st[6]:  # mixed clocks: its late lines are late, not a clock stepped back
            st[3] = None
        elif st[3] is None:
            st[3], st[4] = now, ts
        else:
            st[4] = max(st[4], ts)
            if now - st[3] >= STEP_BACK_SECS:
                self._step_back(line, st, now)

    def _step_back(self, line: LogLine, st: list, now: float) -> None:
        """The source's clock went back: its newest event time becomes its late lines' newest, so the watermark
        follows its clock again. Nothing closes sooner for it (a watermark that goes back only delays closes): the
        windows opened before the step wait for the source's clock to come back to them, or for ``max_open_secs``;
        the key's lines after the step gather in a window beside (its late window, which is no longer past its
        close and goes on as an ordinary one)."""
        back = st[0] - st[4]
        st[0], st[3], st[4], st[5] = st[4], None, None, now
        self._ahead_raw.pop(None if line.source is None else line.source[:2], None)
        times = [v[0] for v in self._sources.values() if v[0] is not None]
        self._event_time, self._max_ts = min(times), max(times)
        if self.on_step is not None:
            self.on_step(line, back)

    def _deadline(self, cur: _Open, older: bool | None = None) -> float | None:
        """When ``cur`` may close; ``older``: as one of its key's older windows (default: whether it is one)."""
        spec = self.spec
        if older is None:
            older = cur.cut is not None
        if spec.mode == "session":
            assert spec.gap_secs is not None
            if older and spec.max_span_secs is not None:  # an older window: no line past its span joins
                return min(cur.last_ts + spec.gap_secs, cur.first_ts + spec.max_span_secs)
            return cur.last_ts + spec.gap_secs
        if spec.window_secs is not None and cur.bucket is not None:
            return (cur.bucket + 1) * spec.window_secs
        return None  # count windows close on size only (or on quiet/flush)

    def _schedule(self, cur: _Open) -> None:
        """Remember when ``cur`` may close; ``tick`` re-checks (a session's deadline moves with its last line)."""
        due = self._deadline(cur)
        if due is None:
            return
        if len(self._deadlines) > 2 * len(self._windows) + 1_024:  # drop entries of sessions closed meanwhile
            self._deadlines = [d for d in self._deadlines
                               if (w := self._windows.get(d[2])) is not None and d[1] == w.sched]
            heapq.heapify(self._deadlines)
        cur.sched = self._next_seq()
        heapq.heappush(self._deadlines, (due, cur.sched, cur.wid))

    def _continues_cut(self, key: str, cur: _Open | None, ts: float) -> bool:
        """A line of ``key`` dated from the start of its session that ``max_open`` cut, while the key has no newest
        window: the continuation, which opens the newest window with the next revision and the carried lines (a
        window opened meanwhile by a line dated before the cut, a delayed source's, took every later line: judged
        as a finished session, revision 1 without context, and the chain broke)."""
        return cur is None and bool(self._revisions) and (cut := self._revisions.get(short_key(key))) is not None \
            and ts >= cut[1]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new(self, line: LogLine, ts: float, now: float, by_arrival: bool, older: bool, late: bool = False) -> _Open:
        """Open a window for ``line``: its key's newest, or (``older``) one dated before the newest, or (``late``)
        one for the key's late lines, closed ``LATE_HOLD_SECS`` from now."""
        key = line.key
        self._wid += 1
        cur = _Open(key, ts, ts, line.offset, bucket=self._bucket(ts), opened_at=now,
                    part=self._part_at(key, line.offset), by_arrival=by_arrival, wid=self._wid)
        self._windows[cur.wid] = cur
        if late:
            cur.cut, cur.late_until = "late", now + LATE_HOLD_SECS
            self._late_q.append((cur.late_until, cur.wid))
        if older:  # a window of its own beside the newer one, revision 1
            self._older.setdefault(key, []).append(cur)
        else:
            if self._revisions or self._carried:
                kept = short_key(key)
                cur.revision = self._revisions.pop(kept, (0, 0.0))[0] + 1
                if kept in self._carried:
                    cur.context, cur.context_bytes = self._carried.pop(kept)
            self._open[key] = cur
        self._schedule(cur)
        return cur

    def _room_beside(self, key: str) -> list[Session]:
        """Before one more window of ``key`` opens beside its newest: its oldest such window closes when it has
        ``MAX_OLDER_PER_KEY`` (as ``tick`` would close it, only sooner; a line that would have joined it is judged
        late, on its own)."""
        waiting = self._older.get(key)
        if not waiting or len(waiting) < MAX_OLDER_PER_KEY:
            return []
        oldest = waiting[0]
        return [self._close(oldest, (oldest.cut or "gap") if self.spec.mode == "session" else "window_end")]

    def _waits(self, cur: _Open, now: float) -> bool:
        """Once a newer line has not joined ``cur``: is ``cur``'s close time, as an older window, still ahead of the
        watermark (less the allowed lateness)?"""
        due = self._deadline(cur, older=True)
        wm = self.watermark(now)
        return due is not None and wm is not None and due >= wm - self.spec.allowed_lateness_secs

    def _merge(self, cur: _Open) -> _Open:
        """Session windows of ``cur``'s key that ``cur`` now reaches within the gap (a lagging line between two of
        them) become one: the earlier-opened one takes the other's lines, within ``max_span_secs`` and
        ``max_lines``. Returns the window the line is in."""
        spec = self.spec
        assert spec.gap_secs is not None
        span = spec.max_span_secs if spec.max_span_secs is not None else math.inf
        key = cur.key
        while True:
            group = self._older.get(key, [])
            newest = self._open.get(key)
            other = next((w for w in ([newest] if newest is not None else []) + group
                          if w is not cur and w.first_ts - cur.last_ts <= spec.gap_secs
                          and cur.first_ts - w.last_ts <= spec.gap_secs
                          and max(w.last_ts, cur.last_ts) - min(w.first_ts, cur.first_ts) <= span
                          and len(w.lines) + len(cur.lines) <= spec.max_lines), None)
            if other is None:
                return cur
            keep, gone = (cur, other) if cur.wid < other.wid else (other, cur)
            # The longer list takes the shorter's lines; ``_session`` puts them back in arrival order when it closes.
            if len(keep.lines) >= len(gone.lines):
                keep.lines.extend(gone.lines)
            else:
                gone.lines.extend(keep.lines)
                keep.lines = gone.lines
            keep.merged = keep.disordered = True
            if gone.late_until is None and keep.late_until is not None:  # late lines and others: not late as a whole
                keep.late_until, keep.cut = None, gone.cut
            keep.first_ts, keep.last_ts = min(keep.first_ts, gone.first_ts), max(keep.last_ts, gone.last_ts)
            keep.first_offset = min(keep.first_offset, gone.first_offset)
            keep.nbytes += gone.nbytes
            if gone.revision > keep.revision:  # the later revision of a key closed by max_open: its chain goes on
                keep.revision, gone.revision = gone.revision, keep.revision
                keep.context, gone.context = gone.context, keep.context
                keep.context_bytes, gone.context_bytes = gone.context_bytes, keep.context_bytes
            self._open_bytes -= gone.context_bytes  # one context stands
            del self._windows[gone.wid]
            self._unlink(gone)
            if newest is gone:  # the merged window is now its key's newest
                self._unlink(keep)
                self._open[key] = keep
                keep.cut = None
            self._schedule(keep)
            cur = keep

    def _unlink(self, cur: _Open) -> None:
        """Take ``cur`` out of its key's newest or older windows."""
        key = cur.key
        if self._open.get(key) is cur:
            del self._open[key]
            return
        group = self._older.get(key)
        if group is not None and cur in group:
            group.remove(cur)
            if not group:
                del self._older[key]

    def _part_at(self, key: str, offset: int) -> int:
        """``Session.part`` of a session of ``key`` beginning at record ``offset``: the lines of the key there that
        closed sessions took and that its open windows hold, so no two of its sessions there share an event id."""
        n = self._taken(key, offset)
        for w in ([self._open[key]] if key in self._open else []) + self._older.get(key, []):
            if w.merged:
                n += sum(1 for x in w.lines if x.offset == offset)
            else:  # in arrival order: the lines of the newest record are its last
                for x in reversed(w.lines):
                    if x.offset != offset:
                        break
                    n += 1
        return n

    def _live(self, cur: _Open) -> bool:
        """Whether ``cur`` is where its key's lines go on: its newest window, or an older one (opened for lines dated
        before a ``max_open`` cut) while the key has no newer window and ``cur`` was not cut beside one. Cut by
        ``max_open``, such a window is unfinished and its revision follows (review: a key whose first line was stamped
        ahead, or whose zone-less local clock went back an hour, had its 600 s cuts closed as "gap", judged finished,
        each revision 1 without the lines before)."""
        return self._open.get(cur.key) is cur or (cur.key not in self._open and cur.cut is None)

    def _close(self, cur: _Open, reason: str) -> Session:
        key = cur.key
        newest = self._live(cur)
        del self._windows[cur.wid]
        self._unlink(cur)
        self._open_bytes -= cur.nbytes + cur.context_bytes
        session = self._session(cur, reason)
        # the record (or pack) its last line came from: more of the key's lines may follow
        at = cur.lines[-1].offset if not cur.merged else max(x.offset for x in cur.lines)
        self._took(key, at, self._taken(key, at) + sum(1 for x in cur.lines if x.offset == at))
        # A later revision of this key may follow: remember its number (and its lines, unless it was evicted to bound
        # memory). Not for an older window of the key: its key's lines go on in the newer one.
        if session.unfinished and newest:
            kept = short_key(key)  # kept past the session: a key can be as long as a record
            # A window opened beside the key's cut (dated before it) and cut in turn adds to the chain, not replaces
            # it: it replaced the record with its revision 1 and its lines, and the lines before were gone from every
            # later revision (review 2026-12-07: one line of a block shipped late)
            rec = self._revisions.get(kept)
            chain = rec is not None and rec[0] >= cur.revision
            self._revisions[kept] = (rec[0], min(rec[1], cur.first_ts)) if chain else (cur.revision, cur.first_ts)
            self._revisions.move_to_end(kept)
            if len(self._revisions) > self.spec.max_open_sessions:
                gone, _ = self._revisions.popitem(last=False)
                self._open_bytes -= self._carried.pop(gone, ([], 0))[1]
            if self._carry and reason == "max_open":
                before = self._carried.get(kept, ([], 0))[0] if chain else []
                carried = (before + session.judged_lines)[: self.spec.max_lines]
                nbytes = sum(map(line_bytes, carried))
                self._open_bytes += nbytes - self._carried.pop(kept, ([], 0))[1]
                self._carried[kept] = (carried, nbytes)
        return session

    def drop_contexts(self, over: int) -> int:
        """Forget the carried lines of the keys that closed by ``max_open`` longest ago (their revision numbers
        stay) until ``over`` bytes are freed or none is left; returns the bytes freed."""
        freed = 0
        while self._carried and freed < over:
            freed += self._carried.popitem(last=False)[1][1]
        self._open_bytes -= freed
        return freed

    def _taken(self, key: str, offset: int) -> int:
        """Lines of ``key`` at record ``offset`` that closed sessions took (``Session.part`` of the next one there)."""
        prev = self._split.get(short_key(key)) if self._split else None
        return prev[1] if prev is not None and prev[0] == offset else 0

    def _took(self, key: str, offset: int, n: int) -> None:
        kept = short_key(key)
        prev = self._split.get(kept)
        if prev is not None and prev[0] > offset:  # a session closing after a late line of a newer record: the
            return  # newer record's count stands (that record can still be met; the older one cannot)
        self._split[kept] = (offset, n)
        if len(self._split) > self._split_limit:  # only the newest record's entries can still be met
            # (the newest of all entries, not this one's: sessions closing in reverse order of their last records
            # pruned nothing and rebuilt the whole dict on every close, a tick of seconds over 10,000 keys)
            newest = max(v[0] for v in self._split.values())
            self._split = {k: v for k, v in self._split.items() if v[0] >= newest}
            self._split_limit = max(SPLIT_KEYS, 2 * len(self._split))

    def _session(self, cur: _Open, reason: str) -> Session:
        lines = cur.lines if not cur.merged else sorted(cur.lines, key=lambda x: x.offset)  # back in arrival order
        if lines[0].source is not None or cur.disordered:
            # An untimed line sorts at the newest time of the lines that arrived before it (it was windowed at its
            # source's newest time), not at the session's first: it keeps its place after the lines written before it.
            newest, timed = cur.first_ts, []
            for x in lines:
                if x.ts is not None and x.ts > newest:
                    newest = x.ts
                timed.append((newest if x.ts is None else x.ts, x))
            if lines[0].source is not None:  # repartitioned: in the order the lines were written to their inputs
                timed.sort(key=lambda p: (p[0], *_written_at(p[1]), p[1].offset))
            else:
                timed.sort(key=lambda p: (p[0], p[1].offset))
            lines = [x for _, x in timed]
        return Session(key=cur.key, lines=lines, close_reason=reason, topic=self.topic, partition=self.partition,
                       revision=cur.revision, context=cur.context, part=cur.part)
