"""A least-recently-used map bounded in bytes, and a memo decorator built on it.

Caches keyed by log text must be bounded by what they hold, not by how many entries: 65,536 entries of 64 KiB lines
are 4 GiB. ``ByteLRU`` evicts the least recently used entries while its byte total is past ``max_bytes`` (or its
count past ``max_entries``). The byte total is an estimate of resident memory, not of encoded size:
``sys.getsizeof`` of key and value plus ``ENTRY_OVERHEAD_BYTES`` for the map's own node and slot, so the bound holds
for the process's memory whatever the characters (CPython stores a non-Latin-1 string at 2 or 4 bytes a character).

Used by ``templates.to_template``, ``model.base.token_counter`` and ``cache.VerdictCache``.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# An OrderedDict entry's own cost beyond its key and value: hash-table slot and linked-list node (CPython 3.11,
# 64-bit, about 100 bytes), rounded up.
ENTRY_OVERHEAD_BYTES = 128

_MISSING: Any = object()


def entry_bytes(key: object, value: object) -> int:
    """What one entry is charged against ``max_bytes``."""
    return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD_BYTES


class ByteLRU(Generic[K, V]):
    """An LRU map bounded by ``max_bytes`` (``entry_bytes`` summed) and optionally ``max_entries``.

    ``get`` marks an entry as recently used; ``put`` inserts or replaces one and returns the keys it evicted, oldest
    first, so a caller can mirror evictions elsewhere (the verdict cache writes tombstones). An entry larger than
    ``max_bytes`` on its own is not stored (a previous value under its key is removed and reported as evicted).
    Not thread-safe: ``memoize`` adds the lock it needs.
    """

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.nbytes = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        item = self._data.get(key)
        if item is None:
            return default
        self._data.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V) -> list[K]:
        size = entry_bytes(key, value)
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if size > self.max_bytes:
            return [key] if old is not None else []
        self._data[key] = (value, size)
        self.nbytes += size
        evicted: list[K] = []
        while self.nbytes > self.max_bytes or (self.max_entries is not None and len(self._data) > self.max_entries):
            gone, (_, gone_size) = self._data.popitem(last=False)
            self.nbytes -= gone_size
            evicted.append(gone)
        return evicted

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None when absent."""
        item = self._data.pop(key, None)
        if item is None:
            return None
        self.nbytes -= item[1]
        return item[0]

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = 0

    def keys(self) -> Iterator[K]:
        """Keys from least to most recently used."""
        return iter(list(self._data))

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


def memoize(
    max_bytes: int, max_key_chars: int, max_entries: int | None = None
) -> Callable[[Callable[[str], V]], Callable[[str], V]]:
    """A thread-safe memo for a function of one string, bounded by ``max_bytes`` (and ``max_entries``); arguments
    longer than ``max_key_chars`` bypass it (computed every time, never stored), so one huge line cannot flush many
    ordinary ones. The wrapper's ``cache`` attribute is its ``ByteLRU``."""

    def wrap(fn: Callable[[str], V]) -> Callable[[str], V]:
        cache: ByteLRU[str, V] = ByteLRU(max_bytes, max_entries)
        lock = threading.Lock()

        @functools.wraps(fn)
        def memo(arg: str) -> V:
            if len(arg) > max_key_chars:
                return fn(arg)
            with lock:
                hit = cache.get(arg, _MISSING)
            if hit is not _MISSING:
                return hit
            value = fn(arg)
            with lock:
                cache.put(arg, value)
            return value

        memo.cache = cache  # type: ignore[attr-defined]
        return memo

    return wrap
