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


async def test_a_kept_entry_is_made_recent_and_written_again_without_counting_a_lookup():
    """``keep`` (a verdict the template book serves): the entry is the most recent, so the next eviction takes
    another, and written again, so a store replayed in write order (a changelog) recovers it among the recent."""
    store = DictStore()
    c = VerdictCache(2, store=store)
    c.put("hot", "H")
    c.put("a", "A")
    writes = []
    store.put = lambda k, v: writes.append(k) or store.data.__setitem__(k, v)
    assert c.keep("hot") and writes == ["hot"] and not c.keep("gone")
    c.put("b", "B")
    assert sorted(store.data) == ["b", "hot"] and c.hits == c.misses == 0


def test_byte_bound_keeps_the_total_under_it_and_evicts_oldest_first():
    # Issue 13 item 10: the verdict cache was bounded by entries only; 100,000 large completions are gigabytes.
    store = DictStore()
    c = VerdictCache(1_000, store=store, max_bytes=50_000)
    for i in range(10):
        c.put(f"k{i}", "x" * 10_000)
        assert c.nbytes <= 50_000
    assert 1 <= len(c) < 5
    kept = [f"k{i}" for i in range(10) if c.get(f"k{i}") is not None]
    assert kept == [f"k{i}" for i in range(10 - len(c), 10)]  # the newest survive, the oldest went first
    assert sorted(store.data) == sorted(kept)  # evictions wrote tombstones: the durable mirror matches


def test_byte_bound_follows_recency_not_insertion():
    c = VerdictCache(1_000, max_bytes=35_000)
    for k in "abc":
        c.put(k, "y" * 10_000)
    assert c.get("a") is not None  # a becomes the most recent
    c.put("d", "y" * 10_000)  # over the bound: b (least recently used) goes, not a
    assert c.get("b") is None and c.get("a") is not None and c.get("d") is not None


def test_an_entry_larger_than_the_bound_is_not_cached_nor_written():
    store = DictStore()
    c = VerdictCache(10, store=store, max_bytes=2_048)
    c.put("small", "ok")
    c.put("huge", "z" * 4_096)
    assert c.get("huge") is None and c.get("small") == "ok"
    assert "huge" not in store.data and "small" in store.data
    c.put("small", "z" * 4_096)  # replacing with an oversized value drops the stale one, here and in the store
    assert c.get("small") is None and "small" not in store.data and c.nbytes == 0


async def test_a_recovered_entry_too_large_for_the_bound_is_dropped_from_the_store():
    store = DictStore({"huge": "z" * 4_096, "small": "ok"})  # written when max_bytes was larger
    c = VerdictCache(10, store=store, max_bytes=2_048)
    assert await c.start() == 1
    assert c.get("small") == "ok" and sorted(store.data) == ["small"]


async def test_warming_from_the_store_respects_the_byte_bound():
    store = DictStore({f"k{i}": "w" * 10_000 for i in range(10)})
    c = VerdictCache(1_000, store=store, max_bytes=50_000)
    assert 1 <= await c.start() < 5
    assert c.nbytes <= 50_000 and len(store.data) == len(c)


def test_max_bytes_defaults_to_the_config_default_and_is_validated():
    from rationad.config import CacheConfig

    assert VerdictCache(2).max_bytes == CacheConfig().max_bytes
    with pytest.raises(ValueError):
        VerdictCache(2, max_bytes=0)


def test_byte_lru():
    from rationad.lru import ByteLRU, entry_bytes

    lru = ByteLRU(max_bytes=3 * entry_bytes("k0", "v" * 100), max_entries=10)
    evicted = [k for i in range(5) for k in lru.put(f"k{i}", "v" * 100)]
    assert evicted == ["k0", "k1"] and list(lru.keys()) == ["k2", "k3", "k4"]
    assert lru.nbytes == 3 * entry_bytes("k0", "v" * 100)
    assert lru.get("k2") == "v" * 100 and list(lru.keys()) == ["k3", "k4", "k2"]
    assert lru.get("missing", 7) == 7
    assert lru.put("k3", "v") == [] and lru.nbytes == 2 * entry_bytes("k0", "v" * 100) + entry_bytes("k3", "v")
    by_count = ByteLRU(max_bytes=10**9, max_entries=2)
    assert [k for i in range(4) for k in by_count.put(i, i)] == [0, 1]
    assert ByteLRU(max_bytes=10).put("key", "too large") == [] and "key" not in ByteLRU(max_bytes=10)
    lru.clear()
    assert len(lru) == 0 and lru.nbytes == 0


async def test_a_session_timeout_past_faust_s_request_timeout_keeps_the_durable_cache(tmp_path):
    """Found by review, failing before its fix: faust refuses a session timeout above its request timeout (90 s by
    default), so kafka.session_timeout_ms = 120000 (past the engine's model load, for static membership) turned the
    durable cache off at every start with one warning. Builds the table's consumer as faust does at start."""
    import faust

    from rationad.cache_table import app_settings
    from rationad.config import KafkaConfig

    k = KafkaConfig(bootstrap_servers="127.0.0.1:1", session_timeout_ms=120_000, group_instance_id="rationad-0")
    app = faust.App("t-verdicts", **app_settings(k, str(tmp_path)))
    assert app.conf.broker_request_timeout >= app.conf.broker_session_timeout == 120.0
    app.consumer._thread._create_worker_consumer(app.transport)  # raised ImproperlyConfigured


def test_the_cache_changelog_gets_the_internal_topics_replication_factor(tmp_path):
    """It was created with one replica whatever the configuration (left by an earlier session, found again by
    review): on a cluster with min.insync.replicas >= 2 the broker refused its writes, and a lost broker took the
    recovered verdicts. It follows repartition.replication_factor, as the other internal topics do."""
    import faust

    from rationad.cache_table import app_settings
    from rationad.config import Settings
    from rationad.daemon import Daemon
    from tests.rationad.fakes import FakeModel

    s = Settings(repartition={"replication_factor": 3}, cache={"durable": True})
    store = Daemon(s, client=FakeModel())._cache_store()
    assert store.replication_factor == 3
    app = faust.App(store.app_id, **app_settings(store.kafka, str(tmp_path), store.replication_factor))
    table = app.GlobalTable("t", default=None, partitions=1, key_type=bytes, value_type=bytes)
    assert table.changelog_topic.replicas in (None, 3) and app.conf.topic_replication_factor == 3
