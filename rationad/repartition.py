"""Repartitioning by session key: the lines of one session, written to any input partitions, brought together.

Kafka Streams does this with ``selectKey`` and a repartition topic, faust with ``group_by``; rationad does it on its
own aiokafka path. The daemon's one consumer reads the input topics and the internal topic (``repartition.topic``)
in one group:

1. **Forward** (input partitions): each record is parsed just enough to know its lines' session keys, and each line
   is produced to the internal topic keyed by its key (the line as received, so the session stage parses it the same
   way; a line that names several sessions goes once to each). The input offset is held until every line it produced
   is acknowledged (``Delivery.forward``); undecodable records go to the dead-letter topic here, before the hop.
2. **Sessions** (internal partitions, co-partitioned by key): records are parsed again, each keeps only the lines of
   its record key, and windowing, judging and the offset rules are the daemon's usual ones.

Delivery stays at least once across both hops; a restart between them can forward a line twice, so the session
stage drops a line it has already seen (same source topic, partition, offset and key) within a bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict

from rationad.delivery import Output
from rationad.records import LogLine

SOURCE_HEADERS = ("rationad-source-topic", "rationad-source-partition", "rationad-source-offset")
SEEN_PER_PARTITION = 200_000  # source lines remembered per internal partition to drop re-forwarded duplicates


def forward(lines: list[LogLine], topic: str, source_topic: str, source_partition: int, source_offset: int
            ) -> list[Output]:
    """One internal record per (session key, entry) of an input record's parsed lines."""
    headers = [(SOURCE_HEADERS[0], source_topic.encode()), (SOURCE_HEADERS[1], str(source_partition).encode()),
               (SOURCE_HEADERS[2], str(source_offset).encode())]
    out, seen = [], set()
    for line in lines:
        ident = (line.key, line.raw)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(Output(topic, line.key.encode(), line.raw.encode(), headers))
    return out


def source_of(headers) -> tuple[bytes, ...] | None:
    """(topic, partition, offset) of the input line an internal record carries, from its headers."""
    h = dict(headers or ())
    vals = tuple(h.get(name) for name in SOURCE_HEADERS)
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


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
