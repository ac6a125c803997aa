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


class DictStore:
    """An in-memory store for the write-through logic (the real one is tested in tests/integration)."""

    def __init__(self, data=None):
        self.data = dict(data or {})
        self.started = self.closed = False

    async def start(self):
        self.started = True

    def items(self):
        return iter(list(self.data.items()))

    def put(self, key, completion):
        self.data[key] = completion

    def delete(self, key):
        self.data.pop(key, None)

    async def aclose(self):
        self.closed = True


async def test_store_is_warmed_from_and_mirrors_the_lru():
    store = DictStore({"x": "X", "y": "Y", "z": "Z"})
    c = VerdictCache(2, store=store)
    assert await c.start() == 2  # bounded even when the store holds more
    assert len(c) == 2
    c.put("a", "A")
    assert "a" in store.data and len(c) == 2
    assert len(store.data) == 2  # evictions write tombstones: the store stays bounded too
    await c.aclose()
    assert store.closed
