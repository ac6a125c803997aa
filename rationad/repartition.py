"""Repartitioning by session key: the lines of one session, written to any input partitions, brought together.

Kafka Streams does this with ``selectKey`` and a repartition topic, faust with ``group_by``; rationad does it on its
own aiokafka path. The daemon's one consumer reads the input topics and the internal topic (``repartition.topic``)
in one group:

1. **Forward** (input partitions): each record is read just enough to know its lines' session keys
   (``Parser.route``: one regex over a one-line record), and each line is produced to the internal topic keyed by its
   key (the line as received, so the session stage parses it the same way; a line that names several sessions goes
   once to each), in one batch per internal partition (``Router``: Kafka's default partitioner, memoised). The input
   offsets are held until every line they produced is acknowledged (``Delivery.forward``); undecodable records go to
   the dead-letter topic here, before the hop.
2. **Sessions** (internal partitions, co-partitioned by key): records are parsed again, each keeps only the lines of
   its record key (``LogLine.source`` says where each came from), and windowing, judging and the offset rules are the
   daemon's usual ones; the window's watermark is the minimum over the source partitions (``rationad.windows``).

Delivery stays at least once across both hops; a restart between them can forward a line twice, so the session
stage drops a line it has already seen (same source topic, partition, offset and key) within a bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict

from rationad.delivery import Output

SOURCE_HEADERS = ("rationad-source-topic", "rationad-source-partition", "rationad-source-offset")
SEEN_PER_PARTITION = 200_000  # source lines remembered per internal partition to drop re-forwarded duplicates
ROUTER_MEMO_KEYS = 100_000  # session keys whose partition is remembered (a key has many lines: HDFS ~20 a block)


_source_prefix: dict[tuple[str, int], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def source_headers(source_topic: str, source_partition: int, source_offset: int) -> list[tuple[str, bytes]]:
    """The headers every internal record carries: where its line was read from."""
    prefix = _source_prefix.get((source_topic, source_partition))
    if prefix is None:
        prefix = _source_prefix[(source_topic, source_partition)] = (
            (SOURCE_HEADERS[0], source_topic.encode()), (SOURCE_HEADERS[1], str(source_partition).encode()))
    return [prefix[0], prefix[1], (SOURCE_HEADERS[2], b"%d" % source_offset)]


_output = tuple.__new__  # Output's own __new__ is a Python function: this is the per-line path


def forward(routes: list[tuple[str, bytes]], topic: str, headers: list[tuple[str, bytes]]) -> list[Output]:
    """One internal record per (session key, bytes) route of an input record (``Parser.route``)."""
    return [_output(Output, (topic, key.encode(), value, headers)) for key, value in routes]


def source_of(headers) -> tuple[bytes, bytes, bytes] | None:
    """(topic, partition, offset) of the input line an internal record carries, from its headers."""
    t = p = o = None
    for name, value in headers or ():
        if name == "rationad-source-offset":
            o = value
        elif name == "rationad-source-partition":
            p = value
        elif name == "rationad-source-topic":
            t = value
    return None if t is None or p is None or o is None else (t, p, o)


class Router:
    """The internal partition of a session key: Kafka's default partitioner (murmur2 of the key bytes, as the Java
    client and aiokafka compute it) over ``partitions``, remembered per key. Batches built for one partition and a
    record resent alone through the producer's own partitioner therefore land on the same partition."""

    def __init__(self, partitions: int, memo_keys: int = ROUTER_MEMO_KEYS) -> None:
        if partitions < 1:
            raise ValueError("a topic has at least one partition")
        self.partitions = partitions
        self._memo: dict[bytes, int] = {}
        self._memo_keys = memo_keys

    def partition(self, key: bytes) -> int:
        p = self._memo.get(key)
        if p is None:
            from aiokafka.partitioner import murmur2

            p = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            if len(self._memo) >= self._memo_keys:
                self._memo.clear()
            self._memo[key] = p
        return p


class SeenLines:
    """A bounded memory of source lines (and their key) already windowed on one internal partition."""

    def __init__(self, limit: int = SEEN_PER_PARTITION) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple, None] = OrderedDict()

    def first_time(self, ident: tuple) -> bool:
        if ident in self._seen:
            self._seen.move_to_end(ident)
            return False
        self._seen[ident] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True
