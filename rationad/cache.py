"""The verdict cache: LRU from ``prompt.cache_key`` (what the model sees) to the model's completion, bounded both in
entries (``max_entries``) and in bytes (``max_bytes``, keys and completions as resident memory, see
``rationad.lru``): past either bound the least recently used entries are evicted.

Sessions that look the same to the model (same templates, same counts, ids and times masked) get the same verdict
without a model call. The completion text is stored, not the parsed answer, so a hit is re-parsed against the new
session's view and its evidence points at the new session's own lines.

With a ``store`` (``rationad.cache_table.ChangelogStore``) the cache is durable and shared: it is warmed from the
store at start-up, and every insertion and eviction is written through to it, so the store holds what the LRU holds
(and its changelog stays within the same bounds). A completion too large for ``max_bytes`` on its own is neither
cached nor written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from rationad.lru import ByteLRU

# The default of ``cache.max_bytes`` in rationad/config.py (CacheConfig), for callers that build a cache directly.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class CacheStore(Protocol):
    async def start(self) -> None: ...
    def items(self) -> Iterator[tuple[str, str]]: ...
    def put(self, key: str, completion: str) -> None: ...
    def delete(self, key: str) -> None: ...
    async def aclose(self) -> None: ...


class VerdictCache:
    def __init__(self, max_entries: int, store: CacheStore | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.store = store
        self._lru: ByteLRU[str, str] = ByteLRU(max_bytes, max_entries)
        self.hits = 0
        self.misses = 0

    @property
    def max_entries(self) -> int:
        assert self._lru.max_entries is not None  # always set here
        return self._lru.max_entries

    @property
    def max_bytes(self) -> int:
        return self._lru.max_bytes

    @property
    def nbytes(self) -> int:
        """Bytes charged against ``max_bytes`` now."""
        return self._lru.nbytes

    async def start(self) -> int:
        """Start the store and warm the LRU from it; returns how many entries were recovered."""
        if self.store is None:
            return 0
        await self.store.start()
        for key, completion in self.store.items():
            self._insert(key, completion, write=False)
        return len(self._lru)

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()

    def get(self, key: str) -> str | None:
        text = self._lru.get(key)
        if text is None:
            self.misses += 1
            return None
        self.hits += 1
        return text

    def put(self, key: str, completion: str) -> None:
        self._insert(key, completion, write=True)

    def keep(self, key: str) -> bool:
        """``key``'s entry is in use though nobody looks it up (a verdict the template book serves): made the most
        recent here and written again to the store, so that a restart or another replica recovers it among the
        recent. Whether it was there."""
        completion = self._lru.get(key)
        if completion is None:
            return False
        if self.store is not None:
            self.store.put(key, completion)
        return True

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in the store (an entry found unusable)."""
        if self._lru.pop(key) is not None and self.store is not None:
            self.store.delete(key)

    def _insert(self, key: str, completion: str, *, write: bool) -> None:
        evicted = self._lru.put(key, completion)
        if self.store is None:
            return
        if write and key in self._lru:
            self.store.put(key, completion)
        elif not write and key not in self._lru:
            # Recovered but too large to cache (max_bytes was lowered): drop it there too, the store mirrors the LRU.
            self.store.delete(key)
        for old in evicted:
            self.store.delete(old)

    def __len__(self) -> int:
        return len(self._lru)
