"""Which input offset is safe to commit (pure logic; the daemon does the I/O).

Contract (at-least-once, commit after produce): a partition's committable offset is the smallest of
- the next offset to consume (everything read so far),
- the first offset of every session still open in the windower (it may still grow),
- the first offset of every closed session or dead letter whose output is not yet acknowledged.
So after a crash the daemon re-reads from a point where every unfinished session starts again whole.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable


class PartitionOffsets:
    __slots__ = ("next_offset", "pending", "committed")

    def __init__(self) -> None:
        self.next_offset: int | None = None
        self.pending: Counter[int] = Counter()
        self.committed: int | None = None

    def consumed(self, offset: int) -> None:
        if self.next_offset is None or offset + 1 > self.next_offset:
            self.next_offset = offset + 1

    def hold(self, first_offset: int) -> None:
        """A closed session (or dead letter) starting at ``first_offset`` awaits acknowledgement."""
        self.pending[first_offset] += 1

    def release(self, first_offset: int) -> None:
        n = self.pending.get(first_offset, 0)
        if n <= 0:
            raise ValueError(f"offset {first_offset} is not held")
        if n == 1:
            del self.pending[first_offset]
        else:
            self.pending[first_offset] = n - 1

    def committable(self, open_min: int | None) -> int | None:
        """The offset to commit now, or None when there is nothing new to commit."""
        if self.next_offset is None:
            return None
        candidates = [self.next_offset]
        if self.pending:
            candidates.append(min(self.pending))
        if open_min is not None:
            candidates.append(open_min)
        offset = min(candidates)
        if self.committed is not None and offset <= self.committed:
            return None
        return offset

    def mark_committed(self, offset: int) -> None:
        self.committed = offset if self.committed is None else max(self.committed, offset)


class OffsetTracker:
    """One ``PartitionOffsets`` per assigned partition."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, PartitionOffsets] = {}

    def part(self, tp: Hashable) -> PartitionOffsets:
        p = self._parts.get(tp)
        if p is None:
            p = self._parts[tp] = PartitionOffsets()
        return p

    def get(self, tp: Hashable) -> PartitionOffsets | None:
        return self._parts.get(tp)

    def drop(self, tp: Hashable) -> None:
        self._parts.pop(tp, None)

    def partitions(self) -> list[Hashable]:
        return list(self._parts)
