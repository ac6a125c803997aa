"""The verdict cache: bounded LRU from ``prompt.cache_key`` (what the model sees) to the model's completion.

Sessions that look the same to the model (same templates, same counts, ids and times masked) get the same verdict
without a model call. The completion text is stored, not the parsed answer, so a hit is re-parsed against the new
session's view and its evidence points at the new session's own lines.

With a ``store`` (``rationad.cache_table.ChangelogStore``) the cache is durable and shared: it is warmed from the
store at start-up, and every insertion and eviction is written through to it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol


class CacheStore(Protocol):
    async def start(self) -> None: ...
    def items(self) -> Iterator[tuple[str, str]]: ...
    def put(self, key: str, completion: str) -> None: ...
    def delete(self, key: str) -> None: ...
    async def aclose(self) -> None: ...


class VerdictCache:
    def __init__(self, max_entries: int, store: CacheStore | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.store = store
        self._data: OrderedDict[str, str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def start(self) -> int:
        """Start the store and warm the LRU from it; returns how many entries were recovered."""
        if self.store is None:
            return 0
        await self.store.start()
        for key, completion in self.store.items():
            self._insert(key, completion, write=False)
        return len(self._data)

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()

    def get(self, key: str) -> str | None:
        text = self._data.get(key)
        if text is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return text

    def put(self, key: str, completion: str) -> None:
        self._insert(key, completion, write=True)

    def _insert(self, key: str, completion: str, *, write: bool) -> None:
        self._data[key] = completion
        self._data.move_to_end(key)
        if write and self.store is not None:
            self.store.put(key, completion)
        while len(self._data) > self.max_entries:
            old, _ = self._data.popitem(last=False)
            if self.store is not None:
                self.store.delete(old)

    def __len__(self) -> int:
        return len(self._data)
