from rationad.source_clocks import SKEW_CONFIRM_SECS, SourceClocks

SRC = ("logs", 1)
T = 1_765_000_000.0


def test_a_source_a_time_zone_behind_its_records_is_read_shifted_once_every_pack_said_so_for_a_while():
    clocks = SourceClocks()
    for now in (0.0, 20.0, 40.0):  # stamps two hours behind, shipped within seconds
        assert clocks.shift(SRC, T + now + 3, T + now - 7200, now) == (0.0, None)
    assert clocks.shift(SRC, T + 63, T + 60 - 7200, SKEW_CONFIRM_SECS) == (7200.0, 7200.0)
    assert clocks.shift(SRC, T + 80, T + 75 - 7200, 80.0) == (7200.0, None)  # kept, taken once
    assert clocks.shift(("logs", 0), T, T, 80.0) == (0.0, None)  # another source: its own clock


def test_a_source_ahead_by_five_and_three_quarter_hours_is_shifted_back():
    clocks = SourceClocks()
    off = 5 * 3600 + 45 * 60
    clocks.shift(SRC, T, T + off, 0.0)
    assert clocks.shift(SRC, T + 61, T + 61 + off, 61.0) == (-off, -off)


def test_a_backlog_is_event_time_as_it_should_be_read_not_a_time_zone():
    clocks = SourceClocks()
    # a shipper catching up on an old file: its stamps trail the produce time less and less
    for i, now in enumerate(range(0, 600, 10)):
        assert clocks.shift(SRC, T + now, T + now - 7200 + 100 * i, float(now)) == (0.0, None)
    # an input read hours behind: the records are as old as their stamps
    for now in range(0, 300, 10):
        assert clocks.shift(SRC, T - 7200 + now, T - 7200 + now - 2, float(now)) == (0.0, None)
    # 20 minutes behind is not a time zone
    for now in range(0, 300, 10):
        assert clocks.shift(SRC, T + now, T + now - 1200, float(now)) == (0.0, None)


def test_a_pack_that_says_otherwise_starts_the_wait_again_and_a_clock_put_right_is_followed():
    clocks = SourceClocks()
    clocks.shift(SRC, T, T - 3600, 0.0)
    clocks.shift(SRC, T + 30, T + 30, 30.0)  # on time again: the candidate is dropped
    assert clocks.shift(SRC, T + 61, T + 61 - 3600, 61.0) == (0.0, None)
    assert clocks.shift(SRC, T + 125, T + 125 - 3600, 125.0) == (3600.0, 3600.0)
    clocks.shift(SRC, T + 200, T + 200, 200.0)  # the host's zone set right: back to no shift once confirmed
    assert clocks.shift(SRC, T + 270, T + 270, 270.0) == (0.0, 0.0)
    assert clocks.shift(SRC, T + 300, None, 300.0) == (0.0, None)  # untimed lines, or records without a time
    assert clocks.shift(SRC, None, T, 300.0) == (0.0, None)
