"""Window logic, driven by explicit event times and an explicit wall clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationad.config import SessionsConfig
from rationad.records import LogLine
from rationad.windows import Sessionizer, WindowSpec, resolve_spec


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
    closed = w.tick(0)
    assert [(s.key, s.first_offset) for s in closed] == [("a", 2)]  # not lost: its own session


def test_line_older_than_the_open_window_is_its_own_late_session():
    late: list[float] = []
    w = Sessionizer(session_spec(), on_late=lambda ln, by: late.append(by))
    w.add(line("a", 100, 0), 0)
    (s,) = w.add(line("a", 50, 1), 0)
    assert (s.key, s.close_reason, s.first_offset) == ("a", "late", 1)
    assert late == [50] and w.open_count == 1


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
    assert (timed.mode, timed.window_secs, timed.window_lines) == ("fixed", 300, None)
    counted = resolve_spec(SessionsConfig(window_lines=20), "hdfs")
    assert (counted.mode, counted.window_lines, counted.gap_secs) == ("fixed", 20, None)


def test_spec_rejects_incomplete_settings():
    with pytest.raises(ValueError, match="gap_secs"):
        WindowSpec(mode="session")
    with pytest.raises(ValueError, match="window_lines"):
        WindowSpec(mode="fixed")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 400), st.integers(0, 3)), max_size=80),
       st.integers(1, 4), st.floats(0, 20))
def test_no_line_is_lost_and_offsets_bound_the_commit(events, max_open, lateness):
    """Whatever the order and timing, every line comes out in exactly one session, and the committable position
    never passes the first offset of an open session."""
    w = Sessionizer(session_spec(max_open_sessions=max_open, allowed_lateness_secs=lateness, max_lines=7))
    out = []
    clock = Clock()
    for offset, (key, ts, pause) in enumerate(events):
        out.extend(w.add(line(key, float(ts), offset), clock.now))
        out.extend(w.tick(clock.advance(pause)))
        open_min = w.min_open_offset()
        if open_min is not None:
            assert all(open_min <= ln.offset for s in w._open.values() for ln in s.lines)
        assert w.open_count <= max_open
    out.extend(w.flush("end_of_input"))
    seen = sorted(ln.offset for s in out for ln in s.lines)
    assert seen == list(range(len(events)))
    assert all(len({ln.key for ln in s.lines}) == 1 for s in out)
