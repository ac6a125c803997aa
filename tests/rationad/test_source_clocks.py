from rationad.source_clocks import CONFIRM_SECS, SourceClocks

SRC = ("logs", 1)
T = 1_765_000_000.0


def said(clocks: SourceClocks, now: float, off: float, *, lag: float = 3.0, source=SRC, spread: float = 1.0):
    """A pack read at ``now``, written ``lag`` s before, whose stamps trail its record times by ``off``."""
    rec = (now - lag - spread, now - lag)
    return clocks.shift(source, rec, (rec[0] - off, rec[1] - off), now)


def test_a_source_a_time_zone_behind_is_read_shifted_once_the_evidence_said_so_for_a_while():
    clocks = SourceClocks()
    for now in range(0, int(CONFIRM_SECS), 20):  # stamps two hours behind, shipped within seconds
        assert said(clocks, T + now, 7200 + now % 7) == (0.0, None)
    assert said(clocks, T + CONFIRM_SECS, 7203) == (7200.0, 7200.0)
    assert said(clocks, T + CONFIRM_SECS + 20, 7201) == (7200.0, None)  # kept, taken once
    assert said(clocks, T + CONFIRM_SECS + 20, 0, source=("logs", 0)) == (0.0, None)  # another source: its own


def test_a_source_ahead_by_five_and_three_quarter_hours_is_shifted_back():
    clocks = SourceClocks()
    off = -(5 * 3600 + 45 * 60)
    said(clocks, T, off)
    assert said(clocks, T + CONFIRM_SECS, off) == (off, off)


def test_no_evidence_from_a_backlog_a_shipper_clock_off_or_hosts_of_several_zones_in_one_pack():
    clocks = SourceClocks()
    for now in range(0, 2 * int(CONFIRM_SECS), 10):
        # an input read two hours behind: its records are as old as their stamps
        assert said(clocks, T + now, 2, lag=7200) == (0.0, None)
        # a shipper whose own clock is an hour fast: its record times are an hour off this daemon's clock
        assert said(clocks, T + now, -3600, lag=-3600) == (0.0, None)
        # hosts of two zones in one pack: its stamps spread over two hours
        rec = (T + now - 4, T + now - 3)
        assert clocks.shift(SRC, rec, (rec[0] - 7200, rec[1]), T + now) == (0.0, None)


def test_a_shipper_catching_up_is_never_a_time_zone():
    """Found by review (2026-12-07) of the first version: a lag shrinking slower than 4 s a second stayed in one
    quarter hour's band for the minute it took to confirm: a shift at every quarter hour the lag passed."""
    clocks = SourceClocks()
    lag = 7200.0
    for now in range(0, 4 * 3600, 2):  # down two hours, catching up at 2x real time
        assert said(clocks, T + now, max(lag, 0.0)) == (0.0, None), now
        lag -= 2.0


def test_a_shift_whose_band_the_evidence_leaves_is_dropped_and_a_clock_put_right_is_followed():
    clocks = SourceClocks()
    said(clocks, T, 3600)
    assert said(clocks, T + CONFIRM_SECS, 3600) == (3600.0, 3600.0)
    said(clocks, T + 400, 300)  # in no zone's band (5 minutes): dropped once that lasts
    assert said(clocks, T + 400 + CONFIRM_SECS - 1, 300) == (3600.0, None)
    assert said(clocks, T + 400 + CONFIRM_SECS, 300) == (0.0, 0.0)
    said(clocks, T + 1000, 3600)
    assert said(clocks, T + 1000 + CONFIRM_SECS, 3600) == (3600.0, 3600.0)
    said(clocks, T + 2000, 0)  # the host's zone set right: followed once confirmed
    assert said(clocks, T + 2000 + CONFIRM_SECS, 0) == (0.0, 0.0)
    assert clocks.shift(SRC, None, (T, T), T) == (0.0, None)  # records without a time
    assert clocks.shift(SRC, (T, T), None, T) == (0.0, None)  # untimed lines
