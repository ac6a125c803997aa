"""The verdict cache: bounded LRU from ``prompt.cache_key`` (what the model sees) to the model's completion.

Sessions that look the same to the model (same templates, same counts, ids and times masked) get the same verdict
without a model call. The completion text is stored, not the parsed answer, so a hit is re-parsed against the new
session's view and its evidence points at the new session's own lines.
"""

from __future__ import annotations

from collections import OrderedDict


class VerdictCache:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._data: OrderedDict[str, str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> str | None:
        text = self._data.get(key)
        if text is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return text

    def put(self, key: str, completion: str) -> None:
        self._data[key] = completion
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
