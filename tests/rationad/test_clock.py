from rationad.clock import SteadyClock


def test_follows_the_wall_clock_forward_and_the_monotonic_pace_when_it_steps_back():
    t = {"wall": 1_000.0, "mono": 50.0}
    clock = SteadyClock(wall=lambda: t["wall"], mono=lambda: t["mono"])
    assert clock() == 1_000.0
    t["wall"], t["mono"] = 1_005.0, 55.0
    assert clock() == 1_005.0
    t["wall"], t["mono"] = 1_008.0 - 3_600, 58.0  # the system clock stepped back an hour
    assert clock() == 1_008.0
    t["wall"], t["mono"] = 5_000.0, 60.0  # ... and forward: followed at once
    assert clock() == 5_000.0
    t["mono"] = 61.5
    assert clock() == 5_001.5
