import pytest

from rationad.offsets import OffsetTracker, PartitionOffsets


def test_commit_waits_for_open_and_pending_sessions():
    p = PartitionOffsets()
    assert p.committable(None) is None
    for o in range(10):
        p.consumed(o)
    assert p.committable(None) == 10
    assert p.committable(open_min=4) == 4  # a session opened at offset 4 is still open
    p.hold(2)  # closed session from offset 2 not yet acknowledged
    assert p.committable(open_min=4) == 2
    p.release(2)
    assert p.committable(open_min=None) == 10


def test_no_recommit_of_the_same_or_lower_offset():
    p = PartitionOffsets()
    p.consumed(5)
    assert p.committable(None) == 6
    p.mark_committed(6)
    assert p.committable(None) is None
    assert p.committable(open_min=3) is None  # never moves backwards
    p.consumed(8)
    assert p.committable(None) == 9


def test_hold_counts_and_release_errors():
    p = PartitionOffsets()
    p.consumed(3)
    p.hold(1)
    p.hold(1)
    p.release(1)
    assert p.committable(None) == 1
    p.release(1)
    with pytest.raises(ValueError):
        p.release(1)


def test_tracker_parts_are_independent():
    t = OffsetTracker()
    t.part("a").consumed(1)
    t.part("b").consumed(7)
    assert t.get("a").committable(None) == 2 and t.get("b").committable(None) == 8
    t.drop("a")
    assert t.get("a") is None and t.partitions() == ["b"]
