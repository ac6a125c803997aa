"""Detects input that is not keyed by session key (pure logic, no I/O).

The daemon windows each input partition on its own, so a session is whole only if every one of its lines is on the
same partition: the producer must key its records by the session key (the HDFS block id, the ``key_regex`` match).
Log shippers (Filebeat, Fluent Bit, Vector, syslog relays) write records unkeyed or keyed by host, and then one
session's lines land on several partitions and are judged as fragments.

``KeySpread`` remembers, per partition, the most recent session keys it closed (a bounded set each), and reports a
key closed on one partition that was recently closed on another: a split session. It sees the partitions of this
instance only, which is enough to notice the trap as soon as an instance owns two partitions.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

DEFAULT_KEYS_PER_PARTITION = 10_000
LONG_KEY_CHARS = 64  # longer keys are remembered by a 16-byte digest (a key can be as long as a record)


def short_key(key: str) -> str | bytes:
    """``key`` as remembered past its session: itself, or a 16-byte digest when longer than ``LONG_KEY_CHARS``."""
    if len(key) <= LONG_KEY_CHARS:
        return key
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class KeySpread:
    def __init__(self, keys_per_partition: int = DEFAULT_KEYS_PER_PARTITION) -> None:
        self.keys_per_partition = keys_per_partition
        self._recent: dict[Hashable, OrderedDict[str | bytes, None]] = {}

    def seen(self, partition: Hashable, key: str) -> Hashable | None:
        """Record that a session of ``key`` closed on ``partition``; returns another partition that recently closed
        a session of the same key (a split session), or None."""
        other = None
        key = short_key(key)
        for p, keys in self._recent.items():
            if p != partition and key in keys:
                other = p
                break
        keys = self._recent.setdefault(partition, OrderedDict())
        keys[key] = None
        keys.move_to_end(key)
        if len(keys) > self.keys_per_partition:
            keys.popitem(last=False)
        return other

    def drop(self, partition: Hashable) -> None:
        """The partition moved to another instance: forget its keys."""
        self._recent.pop(partition, None)
