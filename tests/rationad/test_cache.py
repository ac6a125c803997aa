import pytest

from rationad.cache import VerdictCache


def test_lru_bound_and_counters():
    c = VerdictCache(2)
    c.put("a", "A")
    c.put("b", "B")
    assert c.get("a") == "A"  # a is now most recent
    c.put("c", "C")  # evicts b
    assert c.get("b") is None and c.get("c") == "C" and len(c) == 2
    assert (c.hits, c.misses) == (2, 1)
    with pytest.raises(ValueError):
        VerdictCache(0)
