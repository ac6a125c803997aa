"""Window logic, driven by explicit event times and an explicit wall clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationad.config import SessionsConfig
from rationad.records import LogLine
from rationad.windows import LATE_HOLD_SECS, LINE_OVERHEAD_BYTES, Sessionizer, WindowSpec, resolve_spec


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def advance(self, secs: float) -> float:
        self.now += secs
        return self.now


def line(key: str, ts: float | None, offset: int, msg: str = "m") -> LogLine:
    return LogLine(key=key, message=msg, raw=msg, ts=ts, offset=offset)


def session_spec(**kw) -> WindowSpec:
    base = dict(mode="session", gap_secs=10.0, max_lines=1000, max_span_secs=100.0)
    base.update(kw)
    return WindowSpec(**base)


def test_session_closes_after_gap_in_event_time():
    w = Sessionizer(session_spec())
    clock = Clock()
    assert w.add(line("a", 0, 0), clock.now) == []
    assert w.add(line("a", 5, 1), clock.now) == []
    assert w.add(line("b", 14, 2), clock.now) == []
    assert w.tick(clock.now) == []  # a's last line at 5, watermark 14: gap not yet exceeded
    w.add(line("b", 16, 3), clock.now)
    closed = w.tick(clock.now)
    assert [(s.key, s.close_reason, len(s.lines)) for s in closed] == [("a", "gap", 2)]
    assert w.open_count == 1 and w.min_open_offset() == 2


def test_a_line_after_the_gap_starts_a_new_session_of_the_same_key():
    w = Sessionizer(session_spec())
    w.add(line("a", 0, 0), 0)
    closed = w.add(line("a", 50, 1), 0)
    assert [(s.key, s.close_reason, s.first_offset) for s in closed] == [("a", "gap", 0)]
    assert w.min_open_offset() == 1


def test_max_lines_and_span_close():
    w = Sessionizer(session_spec(max_lines=3))
    out = [s for i in range(3) for s in w.add(line("a", i, i), 0)]
    assert [(s.close_reason, len(s.lines)) for s in out] == [("max_lines", 3)]
    w = Sessionizer(session_spec(max_span_secs=20.0))
    out = [s for i in range(6) for s in w.add(line("a", i * 8, i), 0)]
    assert [(s.close_reason, len(s.lines)) for s in out] == [("span", 3)]


def test_quiet_stream_closes_once_the_gap_passes_in_wall_clock():
    w = Sessionizer(session_spec(gap_secs=30.0))
    clock = Clock()
    w.add(line("a", 1_226_246_400, 0), clock.now)  # event times from 2008, wall clock now: only the gap matters
    assert w.tick(clock.advance(29)) == []
    closed = w.tick(clock.advance(2))
    assert [(s.key, s.close_reason) for s in closed] == [("a", "gap")]


def test_quiet_flush_closes_everything():
    w = Sessionizer(session_spec(gap_secs=86_400.0, quiet_flush_secs=5.0))
    clock = Clock()
    w.add(line("a", 0, 0), clock.now)
    w.add(line("b", 1, 1), clock.now)
    assert w.tick(clock.advance(4)) == []
    assert sorted((s.key, s.close_reason) for s in w.tick(clock.advance(1))) == [("a", "quiet"), ("b", "quiet")]
    assert w.open_count == 0 and w.min_open_offset() is None


def test_out_of_order_within_lateness_joins_and_is_sorted():
    late: list[float] = []
    w = Sessionizer(session_spec(allowed_lateness_secs=5.0), on_late=lambda ln, by: late.append(by))
    w.add(line("a", 10, 0, "second"), 0)
    w.add(line("a", 8, 1, "first"), 0)
    (s,) = w.flush("end_of_input")
    assert [x.message for x in s.lines] == ["first", "second"]
    assert late == []


def test_late_line_of_a_closed_window_is_kept_and_reported():
    late: list[float] = []
    w = Sessionizer(session_spec(), on_late=lambda ln, by: late.append(by))
    w.add(line("a", 0, 0), 0)
    w.add(line("z", 100, 1), 0)
    assert [s.key for s in w.tick(0)] == ["a"]
    w.add(line("a", 1, 2), 0)  # a's window closed at 10; the line is 99 s late
    assert late == [99]
    w.add(line("a", 3, 3), 1)  # the key's next late line joins it
    assert [s.key for s in w.tick(LATE_HOLD_SECS - 1)] == ["z"]  # held for the key's late lines...
    closed = w.tick(LATE_HOLD_SECS)  # ... then closed: not lost, a session of its own
    assert [(s.key, s.close_reason, [x.offset for x in s.lines]) for s in closed] == [("a", "late", [2, 3])]


def test_line_older_than_the_open_window_is_its_own_late_session():
    late: list[float] = []
    w = Sessionizer(session_spec(), on_late=lambda ln, by: late.append(by))
    w.add(line("a", 100, 0), 0)
    assert w.add(line("a", 50, 1), 0) == []
    assert late == [50] and w.open_count == 2
    w.tick(0, paused=True)  # (paused: the open window's gap does not pass meanwhile)
    (s,) = w.tick(LATE_HOLD_SECS, paused=True)
    assert (s.key, s.close_reason, s.first_offset) == ("a", "late", 1)
    assert w.open_count == 1


def test_a_late_line_in_the_record_that_opened_its_keys_session_gets_its_own_event_id():
    """Found in review (2026-12-04), failing before its fix: a late line's own session always had part 0; in a
    multi-line record (or repartition pack) whose earlier line opened its key's session, both sessions had the same
    key, first offset, revision and part: one event id, and a consumer dropping duplicates lost one verdict."""
    from rationad.events import ModelInfo, event_id

    m = ModelInfo("m", "1")
    w = Sessionizer(session_spec())
    w.add(line("a", 100, 5, "opens"), 0)
    assert w.add(line("a", 50, 5, "late"), 0) == []  # the same record, dated before the open window
    w.add(line("a", 101, 5, "joins"), 0)
    w.tick(0, paused=True)
    (late,) = w.tick(LATE_HOLD_SECS, paused=True)
    (opened,) = w.flush("end_of_input")
    assert (late.close_reason, late.first_offset, late.part) == ("late", 5, 1)
    assert (opened.first_offset, opened.part, [x.message for x in opened.lines]) == (5, 0, ["opens", "joins"])
    assert event_id(late, m) != event_id(opened, m)

    w = Sessionizer(session_spec(max_lines=2))  # the record goes on after both: the next session there comes third
    out = [s for i, ts in enumerate((100, 50, 101, 102)) for s in w.add(line("a", ts, 5, f"m{i}"), 0)]
    out += w.tick(0, paused=True) + w.tick(LATE_HOLD_SECS, paused=True) + w.flush("end_of_input")
    assert [(s.close_reason, s.part, len(s.lines)) for s in out] == [("max_lines", 0, 2), ("late", 1, 1),
                                                                      ("end_of_input", 3, 1)]
    assert len({event_id(s, m) for s in out}) == 3


@pytest.mark.parametrize("spec, lines", [
    (session_spec(gap_secs=300.0), [("k", 1000, 5), ("k", 500, 10), ("k", 1400, 10)]),  # a gap after the late line
    (WindowSpec(mode="fixed", window_secs=60.0), [("k", 1000, 5), ("k", 900, 10), ("k", 1100, 10)]),  # a new bucket
    (session_spec(gap_secs=300.0, max_open_sessions=1),  # the key's session evicted by another key of the record
     [("k", 1000, 5), ("k", 500, 10), ("j", 1000, 10), ("k", 1000, 10)]),
])
def test_a_session_closing_after_a_late_line_of_a_newer_record_keeps_that_records_count(spec, lines):
    """Found by review (2026-12-04), failing before its fix: the late line's own session counted itself at record 10,
    then the key's open session (last line at 5) closed and put record 5's count in its place; the next session of
    the key beginning at record 10 got part 0, the late session's event id."""
    from rationad.events import ModelInfo, event_id

    w = Sessionizer(spec)
    out = [s for k, ts, off in lines for s in w.add(line(k, ts, off, f"{k}{off}@{ts}"), 0)] + w.flush("end_of_input")
    at10 = sorted((s.part, s.close_reason) for s in out if s.key == "k" and s.first_offset == 10)
    assert [p for p, _ in at10] == [0, 1], at10
    assert len({event_id(s, ModelInfo("m", "1")) for s in out}) == len(out)


def test_max_open_sessions_evicts_the_oldest_opened():
    w = Sessionizer(session_spec(max_open_sessions=2))
    w.add(line("a", 0, 0), 0)
    w.add(line("b", 1, 1), 0)
    w.add(line("a", 2, 2), 0)  # activity does not matter: a was opened first and holds the commit position
    (s,) = w.add(line("c", 3, 3), 0)
    assert (s.key, s.close_reason) == ("a", "evicted")
    assert w.open_count == 2 and w.min_open_offset() == 1


def test_fixed_count_windows():
    w = Sessionizer(WindowSpec(mode="fixed", window_lines=3, max_lines=3))
    out = [s for i in range(7) for s in w.add(line("stream", None, i + 1), 0)]
    assert [(s.first_offset, len(s.lines), s.close_reason) for s in out] == [(1, 3, "window_full"), (4, 3, "window_full")]
    (rest,) = w.flush("end_of_input")
    assert (rest.first_offset, len(rest.lines)) == (7, 1)


def test_fixed_time_windows_close_at_bucket_end():
    w = Sessionizer(WindowSpec(mode="fixed", window_secs=60.0, max_lines=10_000))
    clock = Clock()
    w.add(line("n1", 0, 0), clock.now)
    w.add(line("n1", 59, 1), clock.now)
    (s,) = w.add(line("n1", 61, 2), clock.now)
    assert (len(s.lines), s.close_reason) == (2, "window_end")
    w.add(line("n2", 70, 3), clock.now)
    assert w.tick(clock.now) == []
    (s,) = w.add(line("n2", 121, 4), clock.now)  # n2 moves to [120, 180): its [60, 120) window closes
    assert (s.key, s.first_offset, s.close_reason) == ("n2", 3, "window_end")
    (s,) = w.tick(clock.now)  # the watermark (121) passed the end of n1's [60, 120) window
    assert (s.key, s.first_offset, s.close_reason) == ("n1", 2, "window_end")
    assert w.open_count == 1


def test_resolve_spec_dialect_defaults_and_overrides():
    hdfs = resolve_spec(SessionsConfig(), "hdfs")
    assert (hdfs.mode, hdfs.gap_secs, hdfs.max_span_secs, hdfs.max_lines) == ("session", 86_400.0, 172_800.0, 20_000)
    bgl = resolve_spec(SessionsConfig(), "bgl")
    assert (bgl.mode, bgl.window_lines) == ("fixed", 100)
    gen = resolve_spec(SessionsConfig(), "generic")
    assert (gen.mode, gen.gap_secs, gen.max_lines) == ("session", 300.0, 1_000)
    timed = resolve_spec(SessionsConfig(window_secs=300), "bgl")
    # Found by review (2026-12-03), failing before: a time window kept bgl's 100-line count as its size bound and
    # was cut every 100 lines; it takes the general bound (1000) unless max_lines is set.
    assert (timed.mode, timed.window_secs, timed.window_lines, timed.max_lines) == ("fixed", 300, None, 1_000)
    assert resolve_spec(SessionsConfig(window_secs=300, max_lines=50), "bgl").max_lines == 50
    counted = resolve_spec(SessionsConfig(window_lines=20), "hdfs")
    assert (counted.mode, counted.window_lines, counted.gap_secs) == ("fixed", 20, None)


def test_spec_rejects_incomplete_settings():
    with pytest.raises(ValueError, match="gap_secs"):
        WindowSpec(mode="session")
    with pytest.raises(ValueError, match="window_lines"):
        WindowSpec(mode="fixed")


def line_bytes(ln: LogLine) -> int:
    return len(ln.raw) + len(ln.message) + LINE_OVERHEAD_BYTES


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 400), st.integers(0, 3), st.booleans()),
                max_size=80),
       st.integers(1, 4), st.floats(0, 20), st.one_of(st.none(), st.floats(1, 8)), st.booleans())
def test_no_line_is_lost_and_offsets_bound_the_commit(events, max_open, lateness, max_open_secs, untimed):
    """Whatever the order and timing, every line comes out in exactly one session, and the committable position
    never passes the first offset of an open session; the byte estimate stays exact and revisions count up only
    after a "max_open" close (with its lines as context) or an eviction (without: memory is why it closed). Lines
    may come without a time (event time then never advances on its own), the wall clock may bound how long a session stays open, and the caller may evict the oldest at any time."""
    w = Sessionizer(session_spec(max_open_sessions=max_open, allowed_lateness_secs=lateness, max_lines=7,
                                 max_open_secs=max_open_secs))
    out = []
    clock = Clock()
    for offset, (key, ts, pause, evict) in enumerate(events):
        out.extend(w.add(line(key, None if untimed else float(ts), offset, "m" * (offset % 5)), clock.now))
        out.extend(w.tick(clock.advance(pause)))
        if evict and offset % 3 == 0:
            s = w.evict_oldest()
            assert s is not None or w.open_count == 0
            out.extend([s] if s is not None else [])
        open_min = w.min_open_offset()
        if open_min is not None:
            assert all(open_min <= ln.offset for s in w._windows.values() for ln in s.lines)
        assert w.open_count <= max_open
        # every open window is its key's newest or one of its older ones, once
        members = [id(x) for x in w._open.values()] + [id(x) for group in w._older.values() for x in group]
        assert sorted(members) == sorted(id(x) for x in w._windows.values())
        assert w.open_bytes == carried_bytes(w) + sum(line_bytes(ln) for s in w._windows.values() for ln in s.lines)
        if max_open_secs is not None and w.open_count:
            assert clock.now - w.oldest_opened_at() < max_open_secs
    out.extend(w.flush("end_of_input"))
    assert w.open_bytes == carried_bytes(w) and w.oldest_opened_at() is None and w.evict_oldest() is None
    w.drop_contexts(w.open_bytes)
    assert w.open_bytes == 0
    seen = sorted(ln.offset for s in out for ln in s.lines)
    assert seen == list(range(len(events)))
    assert all(len({ln.key for ln in s.lines}) == 1 for s in out)
    if max_open_secs is None:
        assert all(s.close_reason != "max_open" for s in out)
    # Each session's revision is 1, or one more than that of an earlier session of its key closed by "max_open"
    # (a key's older windows, kept open for late and lagging lines, close in any order with its newest), whose
    # lines and context it carries first (the earliest max_lines), or closed by "evicted", carrying none of them; a
    # first session carries none. A window opened beside a max_open cut (dated before it) and cut in turn adds its
    # lines to what the key's next revision carries, so a context holds at most max_lines earlier lines of its key,
    # each once.
    earlier: dict[str, list] = {}
    for s in out:
        if s.close_reason == "late":
            assert s.revision == 1
            continue
        before = earlier.get(s.key, [])
        if s.revision > 1:
            assert any(b.revision == s.revision - 1 and (
                b.close_reason == "max_open" and s.context[:len(b.context + b.lines)] == (b.context + b.lines)[:7]
                or b.close_reason == "evicted") for b in before), (s.key, s.revision)
            offsets = [ln.offset for ln in s.context]
            assert len(offsets) <= 7 and len(set(offsets)) == len(offsets)
            assert set(offsets) <= {ln.offset for b in before for ln in b.lines}
        else:
            assert s.context == []
        earlier.setdefault(s.key, []).append(s)


def carried_bytes(w: Sessionizer) -> int:
    """Bytes of the lines carried for later revisions: in open sessions, and for keys closed by max_open."""
    return (sum(line_bytes(ln) for s in w._windows.values() for ln in s.context)
            + sum(line_bytes(ln) for carried, _ in w._carried.values() for ln in carried))


# ---- far-future timestamps (issue 13, item 8) ---------------------------------------------------------------------

Y2099 = 4_070_908_800.0


def test_a_far_future_line_is_untimed_never_moves_the_watermark_and_is_reported():
    future: list[tuple[str, float]] = []
    late: list[float] = []
    w = Sessionizer(session_spec(max_future_secs=3_600.0), on_late=lambda ln, by: late.append(by),
                    on_future=lambda ln, ahead: future.append((ln.key, ahead)))
    clock = Clock(1_000_000.0)
    w.add(line("a", 999_990.0, 0), clock.now)
    w.add(line("b", 999_995.0, 1), clock.now)
    assert w.add(line("z", Y2099, 2), clock.now) == []  # before: every open session closed ("gap")
    assert future == [("z", Y2099 - clock.now)]
    assert w.watermark(clock.now) == 999_995.0
    assert w.tick(clock.now) == []
    assert w.add(line("a", 999_996.0, 3), clock.now) == []  # before: a one-line session of its own
    assert w.add(line("z", 999_997.0, 4), clock.now) == []  # joins the future line's session, which took event time
    assert w.add(line("c", clock.now + 3_600.0, 5), clock.now) == []  # within the bound: a time like any other
    assert future == [("z", Y2099 - clock.now)] and late == []
    closed = {s.key: s for s in w.flush("end_of_input")}
    assert [ln.offset for ln in closed["a"].lines] == [0, 3]
    assert [(ln.offset, ln.ts) for ln in closed["z"].lines] == [(2, None), (4, 999_997.0)]  # judged as untimed
    assert closed["z"].lines[0].raw == "m"


def test_a_line_hours_ahead_within_the_bound_does_not_make_the_lines_after_it_late():
    """Found by review: a line 23 h ahead (within the default max_future_secs of a day) moved event time 23 h past
    the wall clock, and every later line was late, each a one-line session, until the wall clock caught up. A source
    now moves event time at most one gap (plus allowed lateness) past the wall clock; the line keeps its own time."""
    late: list[float] = []
    w = Sessionizer(resolve_spec(SessionsConfig(), "generic"), on_late=lambda ln, by: late.append(by))
    clock = Clock(1_000_000.0)
    w.add(line("a", clock.now, 0), clock.now)
    w.add(line("x", clock.now + 82_800.0, 1), clock.now)  # a clock that jumped
    closed = []
    for i in range(6):
        now = clock.advance(1.0)
        closed += w.add(line("b", now, 2 + i), now) + w.tick(now)
    assert late == [] and [s.key for s in closed if s.key == "b"] == []
    assert w.watermark(clock.now) <= clock.now + 300.0
    done = {s.key: s for s in closed + w.flush("end_of_input")}
    assert len(done["b"].lines) == 6 and done["x"].lines[0].ts == 1_000_000.0 + 82_800.0


def test_a_line_hours_ahead_does_not_split_a_stream_stamped_a_little_behind_the_wall_clock():
    """Found by review of the fix above: with event time allowed one gap past the wall clock, every session whose
    lines were stamped even 2 s before the wall clock (any real ingest delay) closed at once, a line each."""
    late: list[float] = []
    w = Sessionizer(resolve_spec(SessionsConfig(), "generic"), on_late=lambda ln, by: late.append(by))
    clock = Clock(1_000_000.0)
    closed = []
    for i in range(10):
        now = clock.advance(1.0)
        closed += w.add(line("a", now - 2.0, 2 * i), now) + w.add(line("x", now + 3_600.0, 2 * i + 1), now)
        closed += w.tick(now)
    assert late == [] and [s.key for s in closed] == []
    done = {s.key: s for s in w.flush("end_of_input")}
    assert len(done["a"].lines) == 10 and len(done["x"].lines) == 10


def test_an_untimed_line_after_a_line_hours_ahead_joins_its_session():
    w = Sessionizer(resolve_spec(SessionsConfig(), "generic"), on_late=lambda ln, by: pytest.fail("late"))
    now = 1_000_000.0
    w.add(line("a", now, 0), now)
    w.add(line("x", now + 3_600.0, 1), now)
    w.add(line("x", None, 1), now)  # a continuation line of the same record
    done = {s.key: s for s in w.flush("end_of_input")}
    assert len(done["x"].lines) == 2


def test_untimed_lines_follow_the_timed_lines_after_a_line_hours_ahead():
    """Found by review (2026-12-06), failing before its fix: the stamp of a line hours ahead (past the lateness bound)
    dated every later untimed line of its source, however many timed lines came after it, so an untimed line of a
    key an hour into its session was dated 20 h ahead: a one-line session of its own, and the key's session cut."""
    w = Sessionizer(resolve_spec(SessionsConfig(), "generic"), on_late=lambda ln, by: pytest.fail("late"))
    clock = Clock(1_000_000.0)
    now = clock.advance(1.0)
    closed = w.add(line("x", now + 20 * 3_600.0, 0), now)  # a host whose clock is 20 h ahead
    for i in range(1, 61):
        now = clock.advance(1.0)
        closed += w.add(line("a", now, i), now) + w.tick(now)
    closed += w.add(line("a", None, 61), clock.advance(1.0))  # a line of a without a time of its own
    closed += w.flush("end_of_input")
    assert sorted((s.key, len(s.lines)) for s in closed) == [("a", 61), ("x", 1)]
    # the same with the line ahead in the middle of a's session (a's later lines take the in-order fast path)
    w = Sessionizer(resolve_spec(SessionsConfig(), "generic"), on_late=lambda ln, by: pytest.fail("late"))
    closed = []
    for i in range(60):
        now = clock.advance(1.0)
        if i == 10:
            closed += w.add(line("x", now + 20 * 3_600.0, 100), now)
        closed += w.add(line("a", now, i), now) + w.tick(now)
    closed += w.add(line("a", None, 61), clock.advance(1.0))
    closed += w.flush("end_of_input")
    assert sorted((s.key, len(s.lines)) for s in closed) == [("a", 61), ("x", 1)]


def test_a_far_future_first_line_does_not_set_the_event_time():
    w = Sessionizer(session_spec(max_future_secs=0.0), on_future=lambda ln, ahead: None)
    w.add(line("z", 1_000_001.0, 0), 1_000_000.0)
    assert w.watermark(1_000_000.0) == 1_000_000.0  # the line's arrival (ingestion time), not its stamp
    w.add(line("a", 500.0, 1), 1_000_000.0)  # old event times (a replayed file) are not judged late against it
    assert w.watermark(1_000_000.0) == 500.0 and w.open_count == 2


def test_without_a_future_bound_far_future_times_are_taken_as_they_are():
    w = Sessionizer(session_spec())
    w.add(line("a", 0.0, 0), 0)
    w.add(line("z", Y2099, 1), 0)
    assert [(s.key, s.close_reason) for s in w.tick(0)] == [("a", "gap")]


# ---- processing-time bound and revisions (issue 13, item 7) -------------------------------------------------------


def test_untimed_session_closes_after_max_open_secs_of_wall_clock_from_its_first_arrival():
    w = Sessionizer(session_spec(gap_secs=1_000.0, max_span_secs=None, max_open_secs=600.0))
    clock = Clock()
    opened = clock.now
    w.add(line("a", None, 0), clock.now)  # generic text without timestamps: within its gap, a key stays open
    w.add(line("b", None, 1), clock.advance(100))
    for i in range(2, 6):
        w.add(line("a", None, i), clock.advance(100))  # activity does not matter: arrival of the first line does
        assert w.tick(clock.now) == []
    assert w.oldest_opened_at() == opened
    assert w.tick(opened + 599.9) == []
    (s,) = w.tick(opened + 600)
    assert (s.key, s.close_reason, s.revision, [ln.offset for ln in s.lines]) == ("a", "max_open", 1, [0, 2, 3, 4, 5])
    assert w.oldest_opened_at() == opened + 100 and w.min_open_offset() == 1
    (s,) = w.tick(opened + 700)
    assert (s.key, s.close_reason) == ("b", "max_open")


def test_rare_key_of_a_count_window_closes_after_max_open_secs():
    w = Sessionizer(WindowSpec(mode="fixed", window_lines=3, max_lines=3, max_open_secs=60.0))
    clock = Clock()
    w.add(line("rare", None, 0), clock.now)
    for i in range(1, 10):
        w.add(line("busy", None, i), clock.advance(1))
    assert w.min_open_offset() == 0  # the rare key pins the committable offset ...
    (s,) = w.tick(clock.advance(51))
    assert (s.key, s.close_reason) == ("rare", "max_open")  # ... for max_open_secs at most
    assert w.min_open_offset() is None


def test_more_lines_after_a_max_open_close_make_the_next_revision():
    w = Sessionizer(session_spec(gap_secs=1_000.0, max_span_secs=None, max_open_secs=10.0))
    clock = Clock()
    revs = []
    for _ in range(3):
        w.add(line("a", None, len(revs)), clock.now)
        (s,) = w.tick(clock.advance(10))
        revs.append((s.close_reason, s.revision, [x.offset for x in s.context], [x.offset for x in s.lines]))
    # Each revision is judged with the lines of the ones before it (its context), and holds only its own offsets.
    assert revs == [("max_open", 1, [], [0]), ("max_open", 2, [0], [1]), ("max_open", 3, [0, 1], [2])]
    assert w.open_bytes == 3 * line_bytes(line("a", None, 0))  # carried for revision 4
    w.add(line("b", None, 3), clock.now)
    w.add(line("a", None, 4), clock.now)
    (b, a) = w.flush("end_of_input")
    assert (b.revision, a.revision) == (1, 4)
    assert ([x.offset for x in a.judged_lines], b.context) == ([0, 1, 2, 4], [])
    assert w.open_bytes == 0  # a close of another reason ends the series: nothing is carried
    w.add(line("a", None, 5), clock.now)  # the revision series ended with a close of another reason
    (a,) = w.flush("end_of_input")
    assert (a.revision, a.context) == (1, [])


def test_carried_lines_are_bounded_by_max_lines_and_dropped_first_under_the_byte_budget():
    w = Sessionizer(session_spec(gap_secs=1_000.0, max_span_secs=None, max_open_secs=10.0, max_lines=3))
    clock = Clock()
    for rev in range(3):
        for i in range(2):
            w.add(line("a", None, 2 * rev + i), clock.now)
        (s,) = w.tick(clock.advance(10))
    assert s.revision == 3 and [x.offset for x in s.context] == [0, 1, 2]  # the earliest max_lines are kept
    w.add(line("b", None, 9), clock.now)
    held = w.open_bytes
    freed = w.drop_contexts(1)
    assert freed == 3 * line_bytes(line("a", None, 0)) and w.open_bytes == held - freed
    w.add(line("a", None, 10), clock.now)
    (a,) = [s for s in w.flush("end_of_input") if s.key == "a"]
    assert (a.revision, a.context) == (4, [])  # the numbering goes on; the revision is judged on its own lines


def test_fixed_windows_carry_nothing_and_a_template_level_spec_neither():
    for spec in (WindowSpec(mode="fixed", window_lines=10, max_open_secs=1.0),
                 session_spec(max_open_secs=1.0, carry_context=False)):
        w = Sessionizer(spec)
        clock = Clock()
        w.add(line("a", None, 0), clock.now)
        w.tick(clock.advance(1))
        w.add(line("a", None, 1), clock.now)
        (s,) = w.tick(clock.advance(1))
        assert (s.revision, s.context, w.open_bytes) == (2, [], 0)


def test_revision_memory_is_bounded():
    w = Sessionizer(session_spec(max_open_secs=1.0, max_open_sessions=3))
    clock = Clock()
    for i, key in enumerate("abcde"):
        w.add(line(key, None, i), clock.now)
        w.tick(clock.advance(1))
    assert len(w._revisions) == 3 and list(w._revisions) == ["c", "d", "e"]
    w.add(line("a", None, 5), clock.now)  # forgotten: a fresh series
    w.add(line("e", None, 6), clock.now)
    assert [(s.key, s.revision) for s in w.flush("x")] == [("a", 1), ("e", 2)]


def test_max_open_check_in_tick_looks_only_at_the_oldest_sessions():
    w = Sessionizer(WindowSpec(mode="fixed", window_lines=10, max_lines=10, max_open_sessions=200_000,
                               max_open_secs=600.0))
    clock = Clock()
    for i in range(100_000):
        w.add(line(f"k{i}", None, i), clock.now)
    import time

    start = time.perf_counter()
    for _ in range(10_000):
        assert w.tick(clock.advance(0.01)) == []
    assert time.perf_counter() - start < 1.0  # a scan of every open session per tick would take minutes
    closed = w.tick(clock.advance(600))
    assert len(closed) == 100_000 and w.open_count == 0 and w.open_bytes == 0


def test_resolve_spec_carries_the_wall_clock_bounds():
    spec = resolve_spec(SessionsConfig(), "generic")
    assert (spec.max_open_secs, spec.max_future_secs) == (600.0, 86_400.0)
    spec = resolve_spec(SessionsConfig(max_open_secs=30, max_future_secs=0), "bgl")
    assert (spec.max_open_secs, spec.max_future_secs) == (30.0, 0.0)
    assert (WindowSpec(mode="session", gap_secs=1).max_open_secs, WindowSpec(mode="session", gap_secs=1).max_future_secs) \
        == (None, None)  # a bare spec (tests, replay) has neither bound


# ---- byte accounting and eviction by age (issue 13, item 10) ------------------------------------------------------


def test_open_bytes_follow_adds_and_closes():
    w = Sessionizer(session_spec(max_lines=3))
    a = LogLine(key="a", message="x" * 10, raw="081109 x" * 3, ts=0.0, offset=0)
    b = LogLine(key="b", message="y", raw="yy", ts=1.0, offset=1)
    w.add(a, 0)
    w.add(b, 0)
    assert w.open_bytes == 10 + 24 + 1 + 2 + 2 * LINE_OVERHEAD_BYTES
    w.add(a, 0)
    w.add(a, 0)  # a's third line: max_lines closes it
    assert w.open_bytes == 1 + 2 + LINE_OVERHEAD_BYTES
    w.flush("end_of_input")
    assert w.open_bytes == 0


def test_evict_oldest_closes_the_oldest_opened_session():
    w = Sessionizer(session_spec())
    clock = Clock()
    assert w.evict_oldest() is None and w.oldest_opened_at() is None
    w.add(line("a", 0, 0), clock.now)
    w.add(line("b", 1, 1), clock.advance(5))
    w.add(line("a", 2, 2), clock.advance(5))  # activity does not matter: a was opened first
    assert w.oldest_opened_at() == clock.now - 10
    s = w.evict_oldest()
    assert (s.key, s.close_reason, len(s.lines)) == ("a", "evicted", 2)
    assert w.oldest_opened_at() == clock.now - 5 and w.min_open_offset() == 1
    assert w.open_bytes == line_bytes(line("b", 1, 1))
    s = w.evict_oldest(reason="memory")
    assert (s.key, s.close_reason) == ("b", "memory")
    assert w.evict_oldest() is None and w.open_bytes == 0


# ---- repartitioned lines: one watermark per source partition ---------------------------------------------------------
def sourced(key: str, ts: float | None, offset: int, src: int, src_offset: int, msg: str = "m") -> LogLine:
    return LogLine(key=key, message=msg, raw=msg, ts=ts, offset=offset, source=("logs", src, src_offset))


def test_a_source_read_ahead_does_not_close_sessions_a_lagging_source_still_feeds():
    w = Sessionizer(session_spec())
    now = 1_000.0
    w.add(sourced("a", 0, 0, src=0, src_offset=0), now)
    w.add(sourced("a", 1, 1, src=1, src_offset=0), now)
    w.add(sourced("b", 500, 2, src=0, src_offset=1), now)  # source 0 is read far ahead
    assert w.tick(now) == []  # source 1 is still at time 1: a stays open
    w.add(sourced("a", 3, 3, src=1, src_offset=1), now)  # ... and a's lagging line joins it
    w.add(sourced("c", 500, 4, src=1, src_offset=2), now)  # source 1 catches up: now a's gap has passed on both
    closed = w.tick(now)
    assert [(s.key, [x.offset for x in s.lines]) for s in closed] == [("a", [0, 1, 3])]


def test_a_newer_line_of_a_source_read_ahead_does_not_split_the_session_a_lagging_source_still_fills():
    """Found by review (2026-12-05), failing before its fix: a line of a key newer than its session by more than the
    gap closed that session at once, without the watermark; with repartitioned input the lagging source's later
    lines of the session were then late, each judged alone."""
    late: list[float] = []
    w = Sessionizer(session_spec(), on_late=lambda ln, by: late.append(by))
    now = 1_000.0
    w.add(sourced("a", 0, 0, src=0, src_offset=0), now)
    w.add(sourced("a", 1, 1, src=1, src_offset=0), now)
    assert w.add(sourced("a", 500, 2, src=0, src_offset=1), now) == []  # source 0 is read ahead: a's next session
    assert w.tick(now) == [] and w.min_open_offset() == 0  # source 1 is still at time 1
    w.add(sourced("a", 3, 3, src=1, src_offset=1), now)  # ... and a's lagging line joins the first session
    w.add(sourced("c", 500, 4, src=1, src_offset=2), now)  # source 1 catches up: the first session's gap has passed
    closed = w.tick(now)
    assert [(s.key, [x.offset for x in s.lines], s.close_reason) for s in closed] == [("a", [0, 1, 3], "gap")]
    assert late == [] and w.min_open_offset() == 2
    closed = w.flush("end_of_input")
    assert sorted((s.key, [x.offset for x in s.lines]) for s in closed) == [("a", [2]), ("c", [4])]


def test_a_line_within_the_allowed_lateness_joins_the_session_a_newer_line_left():
    late: list[float] = []
    w = Sessionizer(session_spec(allowed_lateness_secs=30.0), on_late=lambda ln, by: late.append(by))
    w.add(line("a", 0, 0), 0)
    assert w.add(line("a", 20, 1), 0) == []  # past a's gap (10), but within the lateness of the watermark
    w.add(line("a", 5, 2), 0)  # 15 s behind the watermark: it joins the first session, not one of its own
    w.add(line("z", 100, 3), 0)
    closed = w.tick(0)
    assert [(s.key, [x.offset for x in s.lines]) for s in closed] == [("a", [0, 2]), ("a", [1])]
    assert late == []


def test_a_lagging_line_that_bridges_two_open_sessions_of_its_key_makes_them_one():
    w = Sessionizer(session_spec(allowed_lateness_secs=60.0))
    w.add(line("a", 0, 0, "x"), 0)
    w.add(line("a", 18, 1, "z"), 0)  # 18 s after: a second window of a
    assert w.open_count == 2
    w.add(line("a", 9, 2, "y"), 0)  # within the gap of both
    assert w.open_count == 1 and w.open_bytes == sum(line_bytes(x) for x in (line("a", 0, 0, "x"),) * 3)
    (s,) = w.flush("end_of_input")
    assert ([x.message for x in s.lines], s.first_offset, s.revision, s.part) == (["x", "y", "z"], 0, 1, 0)


def test_an_older_window_waits_for_its_span_end_not_its_gap():
    w = Sessionizer(session_spec(gap_secs=10.0, max_span_secs=20.0, allowed_lateness_secs=5.0))
    for i, ts in enumerate((0, 8, 16, 22)):  # 22 would stretch the first session past its span
        assert w.add(line("a", ts, i), 0) == []
    w.add(line("a", 11, 4), 0)  # within the first session's span, past the second one's gap: joins the first
    w.add(line("z", 26, 5), 0)  # the watermark passes the first session's span end (20) + lateness
    closed = w.tick(0)
    # in time order
    assert [(s.key, [x.offset for x in s.lines], s.close_reason) for s in closed] == [("a", [0, 1, 4, 2], "span")]


# Found by review of the change above (2026-12-05), each failing before its fix.
def test_a_max_open_revision_goes_on_when_its_key_has_an_older_window_open():
    """The newest window closed by max_open while an older one was open: the next lines merged into the older
    window, and neither revision 2 nor the carried lines were ever emitted."""
    w = Sessionizer(session_spec(allowed_lateness_secs=60.0, max_open_secs=100.0))
    w.add(line("a", 100, 0), 0)
    w.add(line("a", 80, 1), 50)  # an older window, opened later
    (cut,) = w.tick(100)
    assert (cut.close_reason, cut.revision, [x.offset for x in cut.lines]) == ("max_open", 1, [0])
    w.add(line("a", 85, 2), 101)  # joins the older window
    w.add(line("a", 105, 3), 102)  # the key goes on: revision 2, carrying what max_open cut
    out = w.flush("end_of_input")
    got = sorted(([x.offset for x in s.lines], s.revision, [x.offset for x in s.context]) for s in out)
    assert got == [([1, 2], 1, []), ([3], 2, [0])]


def test_a_late_line_after_a_max_open_cut_leaves_the_revision_to_its_keys_next_line():
    """Found by review (2026-12-05), failing before its fix: a late line of a key cut by max_open took revision 2
    and the carried lines, closed by gap, and the key's next line restarted at revision 1 without context."""
    w = Sessionizer(session_spec(max_open_secs=5.0))
    w.add(line("a", 100, 0), 0)
    w.add(line("z", 100, 1), 0)
    assert sorted((s.key, s.close_reason) for s in w.tick(6)) == [("a", "max_open"), ("z", "max_open")]
    w.add(line("a", 50, 2), 7)  # late: its time closed long ago
    w.add(line("a", 101, 3), 7)  # the key goes on
    out = w.tick(7) + w.flush("end_of_input")
    got = sorted(([x.offset for x in s.lines], s.revision, [x.offset for x in s.context]) for s in out)
    assert got == [([2], 1, []), ([3], 2, [0])]


@pytest.mark.parametrize("fast", [True, False])
def test_the_fast_path_leaves_a_key_with_older_windows_to_the_general_path(fast):
    """Found by a second review (2026-12-05), failing before its fix: after a key's newest window closed by max_lines
    an earlier-stamped line opened a new newest window before its older one; the fast path added in-order lines to it
    and never merged the two, as the general path does."""
    w = Sessionizer(session_spec(max_lines=4, allowed_lateness_secs=30.0))
    w._fast_path = fast
    out = [s for i, ts in enumerate((100, 105, 120, 121, 122, 123, 88, 91)) for s in w.add(line("k", ts, i), 0)]
    out += w.flush("end_of_input")
    assert [(s.close_reason, [x.ts for x in s.lines]) for s in out] == [
        ("max_lines", [120, 121, 122, 123]), ("max_lines", [88, 91, 100, 105])]


def test_a_lagging_line_dated_before_a_max_open_cut_leaves_the_revision_to_the_keys_next_line():
    """Found by a second review (2026-12-05), failing before its fix: a lagging source's line of a key, dated before
    the session max_open had cut (but not late), took revision 2 and the carried lines."""
    w = Sessionizer(session_spec(max_open_secs=5.0))
    w.add(sourced("z", 70, 0, src=1, src_offset=0), 0)  # source 1 is behind
    w.add(sourced("k", 100, 1, src=0, src_offset=0), 0)
    w.add(sourced("k", 101, 2, src=0, src_offset=1), 1)
    out = w.tick(6)
    w.add(sourced("k", 80, 3, src=1, src_offset=1), 7)  # source 1's line of k, written before source 0's were read
    w.add(sourced("k", 102, 4, src=0, src_offset=2), 8)
    w.add(sourced("k", 103, 5, src=0, src_offset=3), 9)
    out += w.flush("end_of_input")
    got = [(s.revision, [x.ts for x in s.lines], [x.ts for x in s.context]) for s in out if s.key == "k"]
    assert sorted(got) == [(1, [80], []), (1, [100, 101], []), (2, [102, 103], [100, 101])]


def test_a_line_joins_its_keys_older_window_when_the_newest_has_closed():
    w = Sessionizer(WindowSpec(mode="fixed", window_secs=10.0, window_lines=3, max_lines=3,
                               allowed_lateness_secs=30.0))
    for i, ts in enumerate((5, 15, 16, 17)):  # bucket 1 full: closed; bucket 0's window is still open
        w.add(line("a", ts, i), 0)
    w.add(line("a", 7, 4), 0)
    w.add(line("z", 60, 5), 0)
    closed = w.tick(0)
    assert [(s.key, [x.offset for x in s.lines]) for s in closed] == [("a", [0, 4])]


def test_an_older_window_closed_by_max_open_is_finished_not_unfinished():
    w = Sessionizer(session_spec(allowed_lateness_secs=60.0, max_open_secs=100.0))
    w.add(line("a", 0, 0), 0)
    w.add(line("a", 20, 1), 1)  # past the gap: the first window waits for the watermark
    closed = w.tick(101.5)
    assert [(s.close_reason, s.unfinished) for s in closed] == [("gap", False), ("max_open", True)]


def test_an_older_windows_close_moves_earlier_with_a_line_before_it():
    w = Sessionizer(session_spec(gap_secs=10.0, max_span_secs=20.0, allowed_lateness_secs=30.0))
    for i, ts in enumerate((10, 18, 25, 40)):
        w.add(line("a", ts, i), 0)
    w.add(line("z", 55, 4), 0)
    assert w.tick(0) == []
    w.add(line("a", 8, 5), 0)  # the first window's span now ends at 28
    w.add(line("z", 59, 6), 0)  # horizon 29
    assert [(s.key, [x.offset for x in s.lines]) for s in w.tick(0)] == [("a", [5, 0, 1, 2])]


def test_windows_cut_and_bridged_keep_one_live_deadline_each():
    """Each cut and merge pushed another live deadline for the same window and tick re-pushed them all: the heap
    grew past its compaction bound and was rebuilt on every push (seconds for a few thousand keys)."""
    w = Sessionizer(session_spec(gap_secs=10.0, max_lines=1000, allowed_lateness_secs=100.0))
    offset = 0
    for r in range(3):
        for ts in (20.0 * (r + 1), 20.0 * (r + 1) - 10):  # past the gap (the window waits), then a bridging line
            for k in range(300):
                w.add(line(f"k{k}", ts, offset), 0)
                offset += 1
        w.tick(0)
    live = [d for d in w._deadlines if (x := w._windows.get(d[2])) is not None and d[1] == x.sched]
    assert w.open_count == 300 and len(live) == 300 and len({d[2] for d in live}) == 300


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 120), st.integers(0, 2), st.integers(0, 2)),
                max_size=60),
       st.floats(0, 40), st.integers(1, 3), st.lists(st.integers(0, 2), min_size=1, max_size=3))
def test_sessions_of_a_key_open_side_by_side_never_share_an_event_id(events, lateness, max_open, sources):
    """Lines of a record (a repartition pack) from several sources, in any time order: every line comes out once,
    and every session has an event id of its own."""
    from rationad.events import ModelInfo, event_id

    w = Sessionizer(session_spec(allowed_lateness_secs=lateness, max_open_sessions=max_open, max_lines=4))
    out, offset, now = [], 0, 0.0
    for i, (key, ts, src, step) in enumerate(events):
        offset += step  # lines of one record share its offset
        out += w.add(sourced(key, float(ts), offset, src=sources[i % len(sources)], src_offset=i), now)
        now += 1
        out += w.tick(now)
    out += w.flush("end_of_input")
    assert sorted(x.source[2] for s in out for x in s.lines) == list(range(len(events)))
    m = ModelInfo("m", "1")
    assert len({event_id(s, m) for s in out}) == len(out)


def test_one_source_alone_keeps_the_old_single_watermark():
    w = Sessionizer(session_spec())
    w.add(line("a", 0, 0), 0)
    w.add(line("b", 500, 1), 0)
    assert [s.key for s in w.tick(0)] == ["a"]


def test_an_idle_source_stops_holding_the_watermark_back():
    from rationad.windows import SOURCE_IDLE_SECS

    w = Sessionizer(session_spec(gap_secs=100.0, max_span_secs=1000.0))  # quiet progression alone: 100 s
    w.add(sourced("a", 0, 0, src=1, src_offset=0), 0.0)
    w.add(sourced("b", 0, 1, src=0, src_offset=0), 0.0)
    # b's first session stays open: source 1 (at event time 29 by quiet progression) may still add to it
    assert w.add(sourced("b", 500, 2, src=0, src_offset=1), SOURCE_IDLE_SECS - 1) == []
    assert w.tick(SOURCE_IDLE_SECS - 1) == []
    w.add(sourced("b", 501, 3, src=0, src_offset=2), SOURCE_IDLE_SECS + 1)  # source 1 silent for longer than the bound
    closed = w.tick(SOURCE_IDLE_SECS + 1)
    assert sorted((s.key, s.first_offset, s.close_reason) for s in closed) == [("a", 0, "gap"), ("b", 1, "gap")]


def test_repartitioned_lines_of_one_second_keep_the_order_they_were_written_in():
    # round-robin over 3 partitions: line i of the file is partition i % 3, offset i // 3; they arrive out of order
    w = Sessionizer(session_spec())
    arrivals = [5, 2, 0, 3, 1, 4]
    for internal, i in enumerate(arrivals):
        w.add(sourced("a", 7, internal, src=i % 3, src_offset=i // 3, msg=f"line {i}"), 0)
    (s,) = w.flush("end")
    assert [x.message for x in s.lines] == [f"line {i}" for i in range(6)]


def test_a_session_of_sourced_and_unsourced_lines_closes():
    """Found by review (2026-12-03), failing before its fix: an internal record without its source headers gives a
    line with no ``source``; a session holding it and repartitioned lines raised TypeError when it closed (a crash
    loop, since the record is read again after the restart)."""
    w = Sessionizer(WindowSpec(mode="session", gap_secs=100.0, max_lines=1000))
    a, b = line("k", 100.0, 0), line("k", 101.0, 1)
    a.source = ("in", 0, 5)
    w.add(a, 1_000.0)
    w.add(b, 1_000.0)
    assert [len(s.lines) for s in w.flush("shutdown")] == [2]


def test_the_deadline_heap_keeps_no_entry_of_a_closed_session_of_a_key_still_open():
    """Found by review (2026-12-03), failing before its fix: a busy key cut by ``max_lines`` reopens at once; the
    closed session's deadline entry was kept (and pushed again by ``tick``) for the new one, one per session, so the
    heap grew without bound (memory, and CPU at every tick)."""
    w = Sessionizer(WindowSpec(mode="session", gap_secs=100.0, max_lines=2))
    for i in range(6_000):
        w.add(line("hot", float(i), i), 1_000.0)
        if i % 100 == 0:
            w.tick(1_000.0)
    assert w.open_count <= 1
    assert len(w._deadlines) < 1_100, len(w._deadlines)  # compaction leaves the open session's own entries



# ---- lines without a time (found by review, 2026-12-03; each failing before its fix) ---------------------------------
def test_an_untimed_first_line_does_not_make_the_timed_lines_after_it_late():
    """An untimed first line (a stack-trace line naming a block, ahead of a replayed 2008 file) set the partition's
    event time to the wall clock: every timed line after it was late, a one-line session of its own."""
    late: list[float] = []
    w = Sessionizer(session_spec(), on_late=lambda ln, by: late.append(by))
    now = 1_000_000.0
    w.add(line("x", None, 0), now)
    for i, ts in enumerate((500.0, 501.0, 502.0), start=1):
        assert w.add(line("a", ts, i), now) == []
    assert late == [] and w.watermark(now) == 502.0
    closed = {s.key: s for s in w.flush("end_of_input")}
    assert [ln.offset for ln in closed["a"].lines] == [1, 2, 3]


def test_a_stream_without_timestamps_closes_a_quiet_key_on_its_gap_in_arrival_time():
    """Lines without times take their arrival time (ingestion time): a key gone quiet for ``gap_secs`` closes while
    other keys keep the partition busy. Before, every untimed line took the first one's arrival time, so event time
    never advanced and a quiet key stayed open until ``max_open_secs`` while the stream flowed."""
    w = Sessionizer(session_spec(gap_secs=300.0, max_span_secs=None))
    clock = Clock()
    w.add(line("a", None, 0), clock.now)
    closed = []
    for i in range(1, 5):
        w.add(line("b", None, i), clock.advance(100))
        closed += w.tick(clock.now)
    assert [(s.key, s.close_reason) for s in closed] == [("a", "gap")]
    assert w.open_count == 1


def test_untimed_lines_after_a_timed_one_do_not_freeze_the_watermark():
    """Found by review (2026-12-05), failing before its fix: an untimed line reset its source's last arrival, from
    which the watermark moves on with the wall clock, but not its event time; a stream of untimed lines after one
    timed line held the watermark at that line's time, and a key gone quiet stayed open until ``max_open_secs``."""
    w = Sessionizer(session_spec(gap_secs=10.0, max_span_secs=None))
    clock = Clock()
    w.add(line("a", 1000.0, 0), clock.now)
    closed = []
    for i in range(1, 30):  # key b's untimed lines, one a second
        closed += w.add(line("b", None, i), clock.advance(1))
        closed += w.tick(clock.now)
    assert [(s.key, s.close_reason) for s in closed] == [("a", "gap")]
    assert w.watermark(clock.now) == pytest.approx(1029.0)
    # b's lines took the time they arrived at past a's (ingestion time), so they are one session, not late ones
    (b,) = w.flush("end_of_input")
    assert b.key == "b" and len(b.lines) == 29


def test_an_untimed_line_of_a_source_that_stopped_stamping_does_not_hold_the_others_back():
    """Two sources of a repartitioned partition; source 1 sends one timed line, then only untimed ones: its event time
    moves on with the wall clock like a quiet source's, so the minimum watermark does not stay at its last stamp."""
    w = Sessionizer(session_spec(gap_secs=10.0, max_span_secs=None))
    now = 1_000.0
    w.add(sourced("a", 1000.0, 0, src=0, src_offset=0), now)
    w.add(sourced("y", 1000.0, 1, src=1, src_offset=0), now)
    closed = []
    for i in range(1, 40):
        now += 1
        closed += w.add(sourced("x", 1000.0 + i, 2 * i, src=0, src_offset=i), now)
        closed += w.add(sourced("y", None, 2 * i + 1, src=1, src_offset=i), now)
        closed += w.tick(now)
    assert ("a", "gap") in [(s.key, s.close_reason) for s in closed]
    assert w.watermark(now) == pytest.approx(1039.0)


def test_a_pause_of_the_input_is_not_quiet_time():
    """Found by review (2026-12-05), failing before its fix: while the daemon paused its input (backpressure) the
    watermark moved on with the wall clock as for a stream gone quiet, so a pause longer than the gap closed every open
    session of the backlog, whose next lines were waiting in Kafka."""
    w = Sessionizer(session_spec(gap_secs=300.0, max_span_secs=None, quiet_flush_secs=600.0))
    clock = Clock()
    w.add(line("a", 1000.0, 0), clock.now)
    wm = w.watermark(clock.now)
    assert w.tick(clock.now, paused=True) == []  # the daemon pauses its input: ticks from now on say so
    for _ in range(20):  # paused for 20 minutes, ticking every minute
        assert w.tick(clock.advance(60), paused=True) == []
    assert w.watermark(clock.now) == wm
    assert w.add(line("a", 1001.0, 1), clock.advance(1)) == []  # resumed: the session's next line joins it
    assert w.tick(clock.now) == []
    (a,) = w.flush("end_of_input")
    assert [ln.offset for ln in a.lines] == [0, 1]
    # Unpaused, the same quiet closes it (the watermark moves on with the wall clock again).
    w.add(line("b", 2000.0, 2), clock.now)
    assert [(s.key, s.close_reason) for s in w.tick(clock.advance(301))] == [("b", "gap")]


def test_a_pause_is_not_quiet_time_for_lines_without_timestamps_either():
    """Found by review (2026-12-05): with no timed line, the watermark is the arrival time, and it moved on through a
    pause as before."""
    w = Sessionizer(session_spec(gap_secs=300.0, max_span_secs=None))
    clock = Clock()
    w.add(line("a", None, 0), clock.now)
    assert w.tick(clock.now, paused=True) == []
    for _ in range(20):
        assert w.tick(clock.advance(60), paused=True) == []
    assert w.add(line("a", None, 1), clock.advance(1)) == [] and w.tick(clock.now) == []
    (a,) = w.flush("end_of_input")
    assert [ln.offset for ln in a.lines] == [0, 1]


def test_a_pause_keeps_every_source_followed():
    """With several sources, a pause longer than ``SOURCE_IDLE_SECS`` made every source idle; after it the first
    source heard set the watermark alone and closed sessions a lagging source still fed."""
    w = Sessionizer(session_spec(gap_secs=60.0, max_span_secs=None))
    now = 1_000.0
    w.add(sourced("k", 0.0, 0, src=0, src_offset=0), now)  # source 0 lags source 1 by 100 s
    w.add(sourced("j", 100.0, 1, src=1, src_offset=0), now)
    for _ in range(4):
        now += 10
        assert w.tick(now, paused=True) == []
    now += 1
    closed = w.add(sourced("j", 101.0, 2, src=1, src_offset=1), now)  # the source read ahead is heard first
    closed += w.tick(now)
    assert closed == []  # k's session waits for source 0, which still holds the watermark at its time
    closed = w.add(sourced("k", 1.0, 3, src=0, src_offset=1), now)
    assert closed == [] and {s.key: len(s.lines) for s in w.flush("end_of_input")} == {"k": 2, "j": 2}


def test_an_untimed_line_of_a_lagging_source_keeps_that_source_s_time():
    """An untimed line took the newest time of any source: a lagging source's untimed line moved that source to the
    newest time, the minimum watermark jumped, and the sessions the lagging source still fed closed in pieces."""
    w = Sessionizer(session_spec())
    now = 1_000.0
    w.add(sourced("a", 0, 0, src=0, src_offset=0), now)
    w.add(sourced("b", 500, 1, src=1, src_offset=0), now)  # source 1 is read far ahead
    w.add(sourced("a", None, 2, src=0, src_offset=1), now)  # an untimed line of the lagging source
    assert w.watermark(now) == 0 and w.tick(now) == []
    w.add(sourced("a", 3, 3, src=0, src_offset=2), now)
    closed = {s.key: s for s in w.flush("end_of_input")}
    assert [(ln.offset, ln.ts) for ln in closed["a"].lines] == [(0, 0), (2, None), (3, 3)]


def test_an_untimed_first_line_and_the_timed_lines_of_its_key_are_one_session():
    """Found by review (2026-12-03), failing before its fix: the untimed first line was dated by its arrival (the wall
    clock), so its key's timed lines of a replayed or lagging stream were older than the session: each one late."""
    late: list[float] = []
    w = Sessionizer(session_spec(max_open_secs=600.0), on_late=lambda ln, by: late.append(by))
    now = 1_000_000.0
    w.add(line("blk_1", None, 0), now)
    closed = []
    for i, ts in enumerate((500.0, 501.0, 502.0), start=1):
        closed += w.add(line("blk_1", ts, i), now)
    closed += w.flush("end_of_input")
    assert [(s.close_reason, len(s.lines)) for s in closed] == [("end_of_input", 4)] and late == []
    fixed = Sessionizer(WindowSpec(mode="fixed", window_secs=60.0, max_lines=1000))
    fixed.add(line("s", None, 0), now)
    closed = [s for i, ts in enumerate((500.0, 501.0), start=1) for s in fixed.add(line("s", ts, i), now)]
    assert closed == [] and [len(s.lines) for s in fixed.flush("end_of_input")] == [3]


def test_a_session_dated_by_arrival_closes_on_event_time_once_the_stream_has_times():
    """... and it never closed by its gap (event time stayed before its arrival date), pinning the partition's
    committed offset until ``max_open_secs``."""
    w = Sessionizer(session_spec(max_open_secs=600.0))
    now = 1_000_000.0
    w.add(line("x", None, 0), now)
    for i in range(1, 200):
        w.add(line(f"k{i % 5}", 500.0 + i, i), now + i * 0.01)
    assert "x" in [s.key for s in w.tick(now + 5)]


def test_a_lagging_host_s_lines_are_late_though_an_idle_source_is_far_behind():
    """Found by review (2026-12-07), failing before its fix: whether a line is late was measured at the minimum
    newest time over every source, an idle one far behind included, while the watermark that closes windows skips
    idle sources: a lagging host's lines after its key's session closed were never late (no ``on_late``), each a
    one-line session closed as "gap" at the next tick instead of one window of the key's late lines."""
    late: list[float] = []
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300.0, max_lines=1000, max_span_secs=3600.0),
                    on_late=lambda ln, by: late.append(ln.ts))
    w.add(sourced("other", 100.0, 0, src=2, src_offset=0), 0.0)  # input partition 2: one line, then quiet for good
    for i in range(3):
        w.add(sourced("K", 1000.0 + i, 1 + i, src=1, src_offset=i), 0.0)
    w.add(sourced("busy", 2000.0, 4, src=1, src_offset=3), 40.0)  # partition 2 idle past SOURCE_IDLE_SECS
    assert [(s.key, len(s.lines)) for s in w.tick(41.0)] == [("other", 1), ("K", 3)]
    closed = []
    for i, now in enumerate((42.0, 43.0, 44.0)):  # K's lines from a lagging host
        closed += w.add(sourced("K", 1010.0 + i, 5 + i, src=1, src_offset=4 + i), now)
        closed += w.tick(now)
    closed += w.tick(73.0)  # past the late window's hold (LATE_HOLD_SECS), source 1 not yet idle
    closed += w.flush("end_of_input")
    assert late == [1010.0]
    assert [(s.close_reason, len(s.lines)) for s in closed if s.key == "K"] == [("late", 3)]


def test_a_new_source_s_untimed_lines_are_not_dated_by_an_idle_source():
    """Found by review (2026-12-03), failing before its fix: an untimed line of a source with no time yet took the
    minimum over every timed source, an idle one far behind included, while the watermark skips idle sources: each
    such line closed at the next tick as a one-line session."""
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300.0, max_lines=1000, max_span_secs=3600.0))
    w.add(sourced("b", 100.0, 0, src=1, src_offset=0), 1_000.0)  # source 1 went idle long ago
    for i in range(1, 50):
        w.add(sourced(f"a{i % 3}", 5_000.0 + i, i, src=0, src_offset=i), 1_000.0 + i)
    closed = []
    for j in range(3):
        closed += w.add(sourced("c", None, 100 + j, src=2, src_offset=j), 1_050.0 + j)
        closed += w.tick(1_050.0 + j)
    closed += w.flush("end_of_input")
    assert [(s.close_reason, len(s.lines)) for s in closed if s.key == "c"] == [("end_of_input", 3)]


# ---- found by review (2026-12-04): each failed before its fix
def test_an_untimed_repartitioned_line_keeps_its_place_after_the_lines_written_before_it():
    # Lines written at source offsets 1, 2, 3; the third has no timestamp (windowed at its source's newest time, 200):
    # repartitioned sessions are sorted, and it sorted at the session's first time, ahead of the second line.
    spec = WindowSpec(mode="session", gap_secs=1000.0, max_lines=100)
    w = Sessionizer(spec, topic="r", partition=0)
    for off, ts in ((1, 100.0), (2, 200.0), (3, None)):
        w.add(LogLine("k", f"m{off}", f"m{off}", ts, "r", 0, 9, source=("in", 0, off)), 0.0)
    [s] = w.flush("end_of_input")
    assert [x.message for x in s.lines] == ["m1", "m2", "m3"]


def test_an_untimed_line_of_a_disordered_session_keeps_its_place():
    spec = WindowSpec(mode="session", gap_secs=1000.0, max_lines=100)
    w = Sessionizer(spec, topic="t", partition=0)
    for off, ts in ((1, 100.0), (2, 200.0), (3, None), (4, 150.0)):
        w.add(LogLine("k", f"m{off}", f"m{off}", ts, "t", 0, off), 0.0)
    [s] = w.flush("end_of_input")
    assert [x.message for x in s.lines] == ["m1", "m4", "m2", "m3"]  # m3 after m2, whose time it was windowed at


def test_sessions_of_one_key_that_begin_in_one_record_get_distinct_event_ids_that_replay_the_same():
    """Found by review (2026-12-04), failing before its fix: the event id is (topic, partition, key, first offset,
    revision), and every line of a repartition pack (or of a multi-line record) carries that record's offset, so two
    sessions of one key split inside it (a gap, max_lines, a full window) had one id: a consumer dropping duplicate
    ids dropped the second verdict."""
    from rationad.events import ModelInfo, event_id

    m = ModelInfo("m", "1")

    def pack_sessions() -> list:
        w = Sessionizer(WindowSpec(mode="session", gap_secs=300.0, max_lines=1000), topic="g-repartition")
        out = []
        for i, ts in enumerate((1000.0, 1400.0, 1450.0)):  # one pack (offset 7): the gap splits it after the first
            out += w.add(LogLine("host-1", f"m{i}", f"m{i}", ts, "g-repartition", 0, 7, source=("logs", 0, 100 + i)),
                         2000.0)
        return out + w.flush("end_of_input")

    first, second = pack_sessions()
    assert (first.first_offset, second.first_offset, first.part, second.part) == (7, 7, 0, 1)
    assert event_id(first, m) != event_id(second, m)
    assert [event_id(s, m) for s in pack_sessions()] == [event_id(first, m), event_id(second, m)]  # deterministic

    w = Sessionizer(WindowSpec(mode="fixed", window_lines=2), topic="bgl")
    windows = [s for i in range(5) for s in w.add(LogLine("stream", f"m{i}", f"m{i}", 10.0, "bgl", 0, 3), 20.0)]
    windows += w.flush("end_of_input")  # one 5-line record: windows of 2, 2 and 1 lines
    assert [s.part for s in windows] == [0, 2, 4] and len({event_id(s, m) for s in windows}) == 3
    assert windows[0].part == 0  # a session beginning its record keeps the id earlier releases gave it


def test_the_split_record_index_stays_bounded_when_sessions_close_in_reverse_order(monkeypatch):
    """Found by review (2026-12-05), failing before its fix: the index was pruned to the offset of the session that
    closed, so sessions closing in reverse order of their last records pruned nothing: it grew with every key and was
    rebuilt on every close (a tick of 90 s for 40,000 keys)."""
    import rationad.windows as windows

    monkeypatch.setattr(windows, "SPLIT_KEYS", 64)
    w = Sessionizer(session_spec(gap_secs=86_400.0, max_span_secs=None, max_open_secs=600.0))
    n, off = 1_000, 0
    for i in range(n):
        w.add(line(f"k{i}", 1000.0, off), 0.0)
        off += 1
    for i in reversed(range(n)):  # each key's last line comes in reverse order of opening
        w.add(line(f"k{i}", 1001.0, off), 1.0)
        off += 1
    closed = w.tick(601.0)  # max_open closes them in opening order: their last records newest first
    assert len(closed) == n
    assert len(w._split) <= 64 + 1


def test_the_split_record_index_is_not_rebuilt_on_every_close_when_many_keys_end_in_one_record(monkeypatch):
    """Found by review (2026-12-06), failing before its fix: sessions of many keys whose last lines are in one record
    (a 10,000-line record of one line per key) all stay at the newest offset, so every close past SPLIT_KEYS rebuilt
    the whole index and kept it all: a tick of 4.7 s for 10,000 keys, quadratic. Rebuilds are counted here through
    the ``max`` each one starts with."""
    import builtins

    import rationad.windows as windows

    monkeypatch.setattr(windows, "SPLIT_KEYS", 64)
    w = Sessionizer(session_spec(gap_secs=86_400.0, max_span_secs=None, max_open_secs=600.0))
    n = 2_000
    for i in range(n):
        w.add(line(f"k{i}", 1000.0, 7), 0.0)  # every key's one line in record 7
    calls = 0
    real_max = builtins.max

    def counting_max(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real_max(*args, **kwargs)

    monkeypatch.setattr(windows, "max", counting_max, raising=False)
    closed = w.tick(601.0)
    assert len(closed) == n and len(w._split) == n
    assert calls <= 2 * (n // 64).bit_length() + 10, calls  # a handful of rebuilds, not one per close


def test_late_lines_of_a_key_without_an_open_window_cost_a_bounded_look_each():
    """Found by review (2026-12-06), failing before its fix: late lines of a key with no newest window each opened a
    window waiting for the next tick, and every later line of the key looked through all of them (three times): 8,000
    such lines of one block in one fetch took 9.4 s (quadratic), long enough for the service watchdog to kill the
    daemon, which then read the same records again. Past MAX_OLDER_PER_KEY waiting windows the key's oldest closes
    before another opens; nothing is lost either way."""
    from rationad.windows import MAX_OLDER_PER_KEY

    looks = 0
    w = Sessionizer(session_spec())
    fits = w._fits

    def counting(cur, ts):
        nonlocal looks
        looks += 1
        return fits(cur, ts)

    w._fits = counting
    w.add(line("now", 1_000_000, 0), 0)  # event time is far ahead: every line below is late
    n = 2_000
    out = []
    for i in range(n):
        out += w.add(line("blk", 1_000 - 20 * i, i + 1), 0)  # each over a gap before the last
    out += w.tick(LATE_HOLD_SECS)
    assert looks < 3 * n * MAX_OLDER_PER_KEY // 2  # not n * n / 2
    assert len(w._older.get("blk", ())) <= MAX_OLDER_PER_KEY
    late = [s for s in out if s.key == "blk"]
    assert sorted(x.offset for s in late for x in s.lines) == list(range(1, n + 1))  # every line, once
    assert {s.close_reason for s in late} == {"late"}  # closed early, or when their time is up


def test_lines_of_a_lagging_source_open_a_bounded_number_of_windows_beside_their_keys_newest():
    """Found by review of the fix above (2026-12-06), failing before it: lines of a lagging source, older than their
    key's newest window (from a source ahead) but not late (the watermark follows the lagging source), each more
    than a gap after the last, each opened one more window beside the newest: 4,000 of them took 2.5 s, quadratic."""
    from rationad.windows import MAX_OLDER_PER_KEY

    def ln(key: str, ts: float, offset: int, src: str, src_offset: int) -> LogLine:
        return LogLine(key=key, message="m", raw="m", ts=ts, offset=offset, source=("logs", src, src_offset))

    w = Sessionizer(session_spec())
    out = w.add(ln("blk", 1_000_000, 0, 0, 0), 0) + w.add(ln("other", 1_000, 1, 1, 0), 0)
    n = 1_000
    for i in range(n):
        out += w.add(ln("blk", 1_000 + 20 * i, i + 2, 1, i + 1), 0)
        assert len(w._older.get("blk", ())) <= MAX_OLDER_PER_KEY
    out += w.flush("end")
    assert sorted(x.offset for s in out if s.key == "blk" for x in s.lines) == [0, *range(2, n + 2)]


def test_sessions_closed_before_their_deadline_leave_no_lines_behind():
    """Found by review, failing before its fix: a session closed by eviction (or max_open, max_lines) kept its
    deadline entry in the heap until its due time (a day for HDFS), and the entry its lines: the byte budget
    evicted sessions without freeing them (300 evicted blocks of 50 KB: ~30 MB pinned under a 1 MiB budget)."""
    import gc
    import tracemalloc

    from rationad.config import InputConfig
    from rationad.dialects import make_parser

    parse = make_parser(InputConfig(dialect="hdfs")).parse
    w = Sessionizer(resolve_spec(SessionsConfig(), "hdfs"))
    pad = "x" * 50_000
    tracemalloc.start()
    try:
        for i in range(300):
            rec = f"270115 080000 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_{i} src: {pad}".encode()
            for line in parse(rec, offset=i):
                w.add(line, 1_800_000_000.0)
            while w.open_bytes > 1 << 20:
                w.evict_oldest("evicted")  # judged, acknowledged and dropped by the caller
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.open_bytes <= 1 << 20 and held < 4 << 20, held


def test_keys_remembered_past_their_sessions_are_held_short():
    """Found by review, failing before its fix: the keys of sessions closed by max_open were remembered whole (for
    their next revision), outside the byte budget: a generic key_regex capture can be nearly a whole record, 1,000
    such keys held ~60 MB with no session open. Long keys are remembered by a digest (as ``key_spread`` does)."""
    import gc
    import tracemalloc

    from dataclasses import replace

    spec = resolve_spec(SessionsConfig(mode="session", gap_secs=10_000, max_open_secs=600), "generic")
    w = Sessionizer(replace(spec, carry_context=False))  # template level: no lines carried, only the revision
    tracemalloc.start()
    try:
        for i in range(300):
            key = f"{i}-" + "u" * 60_000
            w.add(LogLine(key, "INFO start", "INFO start", offset=i), 0.0)
        assert len(w.tick(601.0)) == 300 and w.open_count == 0
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 << 20, held
    again = w.add(LogLine("7-" + "u" * 60_000, "INFO more", "INFO more", offset=400), 602.0)
    assert again == [] and w.flush("shutdown")[0].revision == 2  # the next revision still follows the key


def test_a_line_dated_before_a_max_open_cut_does_not_break_the_key_s_revision_chain():
    """Found by review, failing before its fix: after max_open cut a block, one line of it dated before the cut (a
    delayed DataNode) opened a window beside the key's, and every later in-order line of the block went into that
    window: closed as a finished session ("gap", judged at the session threshold, not the unfinished one), revision
    1 with no context, and the next piece got revision 2 with the first's context only."""
    w = Sessionizer(resolve_spec(SessionsConfig(), "hdfs"))  # gap 1 day, max_open 600 s
    wall = 1_800_000_000.0
    first = wall - 5

    def add(ts, offset, now, msg):
        return w.add(LogLine("blk_1", msg, msg, ts, offset=offset), now)

    add(first, 1, wall, "allocate")
    add(first + 2, 2, wall + 2, "receiving")
    [cut] = w.tick(wall + 601)
    assert (cut.close_reason, cut.revision) == ("max_open", 1)
    add(first - 1, 3, wall + 610, "receiving (delayed)")
    add(first + 700, 4, wall + 700, "received")
    add(first + 701, 5, wall + 701, "deleting")
    [second] = w.tick(wall + 1300)
    assert (second.close_reason, second.unfinished, second.revision) == ("max_open", True, 2)
    assert [x.message for x in second.lines] == ["receiving (delayed)", "received", "deleting"]
    assert [x.message for x in second.context] == ["allocate", "receiving"]
    add(first + 1400, 6, wall + 1400, "deleted")
    [last] = w.flush("shutdown")
    assert last.revision == 3 and len(last.context) == 5


def test_a_line_shipped_late_and_cut_alone_adds_to_the_key_s_revision_chain():
    """Found by review (2026-12-07), failing before its fix: after two max_open cuts of a block, one line dated
    before the second cut (shipped late, not late by the watermark) was cut alone in turn, and its close replaced the
    key's chain with its own revision 1 and its one line: the block's next revision was 2, judged with that line as
    its only context (a deletion with no receive lines, the fragment carried context exists to prevent)."""
    w = Sessionizer(resolve_spec(SessionsConfig(), "hdfs"))  # gap 1 day, max_open 600 s
    now = 1_800_000_000.0
    t, out = now - 100, []

    def add(ts, offset, msg):
        out.extend(w.add(LogLine("blk_1", msg, msg, ts, offset=offset), now))

    add(t, 1, "receiving")
    add(t + 1, 2, "received")
    now += 601
    out.extend(w.tick(now))
    add(t + 700, 3, "addStoredBlock")
    now += 601
    out.extend(w.tick(now))
    add(t + 650, 4, "terminating")  # dated before the second cut
    now += 601
    out.extend(w.tick(now))
    add(t + 1400, 5, "deleting")
    out.extend(w.flush("end_of_input"))
    got = [(s.revision, [x.message for x in s.lines], [x.message for x in s.context]) for s in out]
    assert got[2] == (1, ["terminating"], [])  # judged alone, as a line beside the chain
    assert got[3] == (3, ["deleting"], ["receiving", "received", "addStoredBlock", "terminating"])


def test_a_key_logging_on_after_a_line_stamped_ahead_is_cut_as_unfinished_revisions():
    """Found by review (2026-12-07), failing before its fix: after a max_open cut whose first line was stamped an
    hour ahead (or a zone-less local clock going back an hour), the key's lines went to windows "older" than the cut,
    and each 600 s wall-clock cut of them closed as "gap": judged as a finished session, always revision 1, without
    the lines before it. They are the key's live window: cut as max_open, one revision after another."""
    s = Sessionizer(WindowSpec(mode="session", gap_secs=300, max_span_secs=3600, max_lines=1000, max_open_secs=600,
                               max_future_secs=86400))
    t0 = 1_700_000_000.0
    out = s.add(line("other", t0, 0), t0)
    out += s.add(line("K", t0 + 3600, 1), t0)
    for i in range(1, 300):
        now = t0 + i * 10
        out += s.add(line("K", now, 1 + i), now)
        out += s.tick(now)
    cuts = [(x.close_reason, x.revision, bool(x.context)) for x in out if x.key == "K"]
    assert cuts[0] == ("max_open", 1, False)  # the line stamped ahead, alone
    assert all(reason == "max_open" for reason, _, _ in cuts)
    assert [rev for _, rev, _ in cuts[2:]] == list(range(2, len(cuts))) and all(ctx for _, _, ctx in cuts[2:])


def _local_clock_stream(step_at: int, back: float, minutes: int = 80, keys: int = 5):
    """Lines of ``keys`` hosts, one every 2 s round robin, stamped in zone-less local time (four hours behind the
    wall clock); at ``step_at`` seconds the clock goes back ``back`` seconds. Yields (line, wall clock)."""
    wall, local = 1_700_000_000.0, 1_700_000_000.0 - 4 * 3600
    for n, i in enumerate(range(0, minutes * 60, 2)):
        stamp = local + i - (back if i >= step_at else 0)
        yield line(f"h{n % keys}", stamp, n, f"h{n % keys}-{n}"), wall + i


def test_a_source_clock_stepped_back_an_hour_does_not_make_each_line_a_session():
    """Found by review (2026-12-07), failing before its fix: at the end of daylight saving on zone-less local time,
    every line of the repeated hour was late (its key's window had closed by the clock before), and each one became a
    session of its own: 1,649 one-line sessions of 2,400 lines, each judged alone. Now a key's late lines gather in a
    window of late lines, and once every line of the source has been late for STEP_BACK_SECS its event time follows
    its clock: the hour after the step windows as the hour before it did."""
    steps: list[float] = []
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300, max_span_secs=3600, max_lines=1000, max_open_secs=600,
                               max_future_secs=86400), on_step=lambda ln, back: steps.append(back))
    out, n = [], 0
    for ln, now in _local_clock_stream(step_at=600, back=3600):
        out += w.add(ln, now)
        out += w.tick(now)
        n += 1
    out += w.flush("end_of_input")
    assert sorted(x.offset for s in out for x in s.lines) == list(range(n))  # every line, once
    assert len(steps) == 1 and 3_500 < steps[0] < 3_600  # said once, by about the hour
    assert min(len(s.lines) for s in out) >= 50  # no line alone: the 600 s max_open cuts of 5 hosts at 2 s
    assert len(out) <= 45 and {s.close_reason for s in out} <= {"max_open", "end_of_input"}


def test_a_host_lagging_behind_others_on_its_partition_is_no_clock_step_and_its_late_lines_group():
    """A partition carrying a host whose shipper is ten minutes behind the others: its lines are late (windows of
    their own as before), but the on-time hosts' lines between them mean the partition's clock did not step back:
    event time stays with them. The late lines of a key gather for LATE_HOLD_SECS instead of one session each."""
    steps: list[float] = []
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300, max_span_secs=3600, max_lines=1000, max_open_secs=600),
                    on_step=lambda ln, back: steps.append(back))
    t0, out = 1_700_000_000.0, []
    for i in range(0, 1200):
        now = t0 + i
        out += w.add(line("on-time", now, 2 * i), now)
        out += w.add(line("lagging", now - 900, 2 * i + 1), now)  # 15 minutes behind: a gap and more
        out += w.tick(now)
    out += w.flush("end_of_input")
    assert steps == []
    assert sorted(x.offset for s in out for x in s.lines) == list(range(2400))
    lagging = [s for s in out if s.key == "lagging"]
    assert {s.close_reason for s in lagging} <= {"late", "end_of_input"}
    assert len(lagging) <= 1200 // LATE_HOLD_SECS + 2  # a session a LATE_HOLD_SECS, not one a line
    on_time = [s for s in out if s.key == "on-time"]
    assert [s.close_reason for s in on_time] == ["max_open", "end_of_input"]  # unsplit by the late lines


@pytest.mark.parametrize("on_time_every", [11, 30])
def test_a_host_lagging_behind_quiet_on_time_hosts_is_taken_for_a_clock_step_once_at_most(on_time_every):
    """Found by review (2026-12-07), failing before its fix: when the on-time hosts of the partition log less often
    than every STEP_BACK_SECS, the lagging host's run of late lines was taken for a clock step each time (78 warnings in
    20 minutes), and each on-time line swung event time forward again by the lag, closing the lagging host's windows
    as "gap" after two or three lines. A leap ahead soon after a step marks the source as mixing clocks: no further
    step is taken for it for MIXED_CLOCKS_SECS, and its late lines gather as before."""
    steps: list[float] = []
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300, max_span_secs=3600, max_lines=1000, max_open_secs=600),
                    on_step=lambda ln, back: steps.append(back))
    t0, out, n = 1_700_000_000.0, [], 0
    for i in range(0, 1200):
        now = t0 + i
        if i % on_time_every == 0:
            out += w.add(line("on-time", now, n), now)
            n += 1
        out += w.add(line("lagging", now - 900, n), now)
        n += 1
        out += w.tick(now)
    out += w.flush("end_of_input")
    assert len(steps) <= 1
    assert sorted(x.offset for s in out for x in s.lines) == list(range(n))
    lagging = [s for s in out if s.key == "lagging"]
    assert {s.close_reason for s in lagging} <= {"late", "end_of_input"}
    assert min(len(s.lines) for s in lagging[:-1]) >= 10


def test_a_repartitioned_source_whose_clock_stepped_back_holds_back_only_through_the_minimum():
    """On a repartition-topic partition each input partition is a source: one whose clock stepped back is followed
    (its sessions window as before the step), and, as any source behind the others, it holds the partition's
    watermark back to its own time (a session of the other source waits for it, or for max_open)."""
    steps: list[float] = []
    w = Sessionizer(WindowSpec(mode="session", gap_secs=300, max_span_secs=3600, max_lines=1000, max_open_secs=600),
                    on_step=lambda ln, back: steps.append(back))
    t0, out, n = 1_700_000_000.0, [], 0
    for i in range(0, 1200, 2):
        now = t0 + i
        stepped = now - (7200 if i >= 300 else 0)
        for src, ts in ((0, now), (1, stepped)):
            ln = line(f"k{src}", ts, n, f"{src}-{n}")
            ln.source = ("in", src, i)
            out += w.add(ln, now)
            n += 1
        out += w.tick(now)
    out += w.flush("end_of_input")
    assert len(steps) == 1 and 7_000 < steps[0] <= 7_200
    assert sorted(x.offset for s in out for x in s.lines) == list(range(n))
    assert min(len(s.lines) for s in out) > 10  # k1's lines after the step group: no session of a line or two


def test_an_evicted_session_is_judged_as_unfinished_and_its_key_goes_on_as_a_revision():
    """Found by review (2026-12-07), failing before its fix: a session closed early to bound memory (more keys open
    than sessions.max_open_sessions, or delivery.max_open_bytes) is cut mid-life as one closed by max_open is, but
    was judged as finished (at judge.threshold_session, without the unfinished note), and its key's next lines started
    again at revision 1. Now it is unfinished, and the next session of its key is its revision (without its lines as
    context: memory is why it closed)."""
    from dataclasses import replace

    from rationad.config import InputConfig, JudgeConfig
    from rationad.dialects import make_parser

    parser = make_parser(InputConfig(dialect="hdfs"))
    w = Sessionizer(replace(resolve_spec(SessionsConfig(), "hdfs"), max_open_sessions=2))
    out = []
    for i, (text, blk) in enumerate([("Receiving block", 1), ("Received block", 1), ("Receiving block", 2),
                                     ("Receiving block", 3), ("Deleting block", 1)], start=1):
        [x] = parser.parse(f"270115 0730{i:02d} 1 INFO dfs.DataNode$DataXceiver: {text} blk_{blk}".encode(), offset=i)
        out += w.add(x, 1_800_000_000.0)
    out += w.flush("shutdown")
    first, later = [s for s in out if s.key == "blk_1"]
    assert first.close_reason == "evicted" and first.unfinished
    assert JudgeConfig().session_threshold(first.unfinished) == JudgeConfig().threshold_unfinished
    assert (later.revision, later.context) == (2, [])
    assert w.open_bytes == 0  # nothing carried
