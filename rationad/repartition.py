"""Repartitioning by session key: the lines of one session, written to any input partitions, brought together.

Kafka Streams does this with ``selectKey`` and a repartition topic, faust with ``group_by``; rationad does it on its
own aiokafka path. The daemon's one consumer reads the input topics and the internal topic (``repartition.topic``)
in one group:

1. **Forward** (input partitions): each record is read just enough to know its lines' session keys
   (``Parser.route``: one regex over a one-line record), and each line goes to the internal partition of its key
   (``Router``: Kafka's default partitioner, memoised) as it was received, so the session stage parses it the same
   way; a line that names several sessions goes once to each. The lines of one fetch for one internal partition
   travel as **packs** (``Packer``): one internal record holding many lines, each with its key and source offset, so
   both hops pay the broker's and aiokafka's per-record cost once per pack, not per line. A line a pack cannot
   frame (one with a newline, from a JSON record) goes as a record of its own, in order. The input offsets are held
   until every record they produced is acknowledged (``Delivery.forward``); undecodable records go to the dead-letter
   topic here, before the hop, and a pack the broker can never take is dead-lettered line by line.
2. **Sessions** (internal partitions, co-partitioned by key): records are parsed again, each line keeps only its
   own key (``LogLine.source`` says where it came from), and windowing, judging and the offset rules are the daemon's
   usual ones (every line of a pack has the pack's offset); the window's watermark is the minimum over the source
   partitions (``rationad.windows``).

Delivery stays at least once across both hops; a restart between them can forward a line twice, so the session
stage drops a line it has already seen (same source topic, partition, offset and key) within a bounded memory.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections import OrderedDict

import orjson

from rationad.delivery import Output
from rationad.dialects import BadRecord

SOURCE_HEADERS = ("rationad-source-topic", "rationad-source-partition", "rationad-source-offset")
# A one-line record's count of the same line (key and bytes) before it in its input record: 0 for the first. Records
# without it (from a rationad that forwarded each distinct line of a record once) are occurrence 0.
SOURCE_REPEAT_HEADER = "rationad-source-repeat"
# The oldest and newest Kafka timestamps (ms, "oldest,newest") of the input records whose lines a record carries
# (``rationad.source_clocks``); absent where the input records had none (and from a rationad before 2026-12-07).
SOURCE_TIME_HEADER = "rationad-source-time"
PACK_HEADER = "rationad-pack"  # first header of a pack record; its value is the pack format's version
PACK_VERSION = b"1"
PACK_BYTES = 256 * 1024  # a pack is closed at this size (or half the largest record the producer may send)
LINE_INDEX_BYTES = 22  # a line's offset in a pack's index (up to 19 digits and a comma) and its newline
PACK_INDEX_BYTES = 8  # a pack's index brackets and the newline after it
SEEN_PER_PARTITION = 200_000  # records of one line remembered per internal partition to drop re-forwarded duplicates
# Pack offset ranges remembered per internal partition, shared by its source partitions (each keeps at least
# SEEN_RANGES_MIN): bounded per source alone, every input partition feeding every internal one, 12 inputs held 47 MiB
# of ranges per internal partition when full (review 2026-12-07); now about 4 MiB, however many feed it.
SEEN_RANGES = 50_000
SEEN_RANGES_MIN = 1_000
# Lines of a forwarded line naming several sessions, parsed from its first copy, kept per internal partition until
# the copies for their own keys arrive (``SharedTexts``); past this many, the oldest texts are forgotten (parsed again)
SHARED_LINES = 20_000
ROUTER_MEMO_KEY_CHARS = 256  # longer session keys are routed every time, not remembered (an HDFS block id is ~25)
ROUTER_MEMO_KEYS = 100_000  # session keys whose partition is remembered (a key has many lines: HDFS ~20 a block)


_source_prefix: dict[tuple[str, int], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def source_headers(source_topic: str, source_partition: int, source_offset: int) -> list[tuple[str, bytes]]:
    """The headers every internal record carries: where its line was read from."""
    prefix = _source_prefix.get((source_topic, source_partition))
    if prefix is None:
        prefix = _source_prefix[(source_topic, source_partition)] = (
            (SOURCE_HEADERS[0], source_topic.encode()), (SOURCE_HEADERS[1], str(source_partition).encode()))
    return [prefix[0], prefix[1], (SOURCE_HEADERS[2], b"%d" % source_offset)]


class Packer:
    r"""The routes of one fetch of one source partition, as records for the internal topic: per internal partition,
    consecutive lines go into packs of up to ``max_bytes``; a line a pack cannot frame (one holding a newline) goes as
    a record of its own (with ``source_headers``) and closes the pack before it, so each internal partition receives its lines in
    source order.

    A pack's value is its index, ``[[source offset, ...], [session key, ...]]`` as JSON on the first line, then its
    lines, ``\n``-separated, as received; its headers are ``PACK_HEADER`` and the source topic and partition
    (``pack_source``, ``unpack``). Building one costs three appends a line; reading one, a JSON parse and a split."""

    def __init__(self, topic: str, source_topic: str, source_partition: int, router: Router,
                 max_bytes: int = PACK_BYTES) -> None:
        self.topic = topic
        self.router = router
        self.max_bytes = max_bytes
        self.lines = 0
        self._source = (source_topic, source_partition)
        self._headers = [(PACK_HEADER, PACK_VERSION), *source_headers(source_topic, source_partition, 0)[:2]]
        self._open: dict[int, list] = {}  # partition -> [offsets, keys, lines, bytes]
        self._done: dict[int, list[Output]] = {}

    def add(self, routes: list[tuple[str, bytes]], offset: int, timestamp: int | None = None) -> None:
        """The routes (``Parser.route``) of the input record at ``offset``, written at ``timestamp`` (its Kafka
        timestamp in ms; None or below 1 for none)."""
        keys, opened, max_bytes = self.router.keys, self._open, self.max_bytes
        if timestamp is not None and timestamp < 1:
            timestamp = None
        self.lines += len(routes)
        # One record's lines for one internal partition never straddle two packs, nor a pack and a one-line record:
        # the session stage drops the lines of a pack whose offset range overlaps one it has windowed (a re-read),
        # so a record split at a pack's end would lose its later lines. Its lines for a partition go in one pack
        # (the open one when they fit beside it, else a new one), so a pack stays under ``max_bytes`` as built; lines
        # that cannot share a pack (a newline, a key JSON cannot carry) or would fill one alone go to their partition
        # as one-line records (windowed line by line).
        if len(routes) == 1:  # the common case, without the bookkeeping below
            key, value = routes[0]
            known = keys.get(key)
            if known is None:
                known = self.router.key(key)
            k, p, index_bytes = known
            cost = len(value) + index_bytes + LINE_INDEX_BYTES
            if index_bytes and cost < max_bytes and b"\n" not in value:
                pack = opened.get(p)
                if pack is None or pack[3] + cost > max_bytes:
                    self._close(p)
                    pack = opened[p] = [[], [], [], PACK_INDEX_BYTES, None, None]
                pack[0].append(offset)
                pack[1].append(key)
                pack[2].append(value)
                pack[3] += cost
                if timestamp is not None:
                    _stretch(pack, timestamp)
                return
        sized: list[tuple[str, bytes, bytes, int, int]] = []
        sizes: dict[int, int] = {}
        loose: set[int] = set()
        for key, value in routes:
            known = keys.get(key)
            if known is None:
                known = self.router.key(key)
            k, p, index_bytes = known
            if not index_bytes or b"\n" in value:
                loose.add(p)
            cost = len(value) + index_bytes + LINE_INDEX_BYTES
            sizes[p] = sizes.get(p, 0) + cost
            sized.append((key, value, k, p, cost))
        for p, n in sizes.items():
            if n >= max_bytes:
                loose.add(p)
            elif p not in loose and (pack := opened.get(p)) is not None and pack[3] + n > max_bytes:
                self._close(p)
        repeats: dict[tuple[str, bytes], int] = {}
        for key, value, k, p, cost in sized:
            if p in loose:
                self._close(p)
                # Its count of the same line before it tells identical lines of one record apart, and one
                # forwarded again after a restart (by any release) from a new line (``SOURCE_REPEAT_HEADER``).
                n = repeats.get((key, value), 0)
                repeats[(key, value)] = n + 1
                headers = [*source_headers(*self._source, offset), (SOURCE_REPEAT_HEADER, b"%d" % n)]
                if timestamp is not None:
                    headers.append((SOURCE_TIME_HEADER, b"%d,%d" % (timestamp, timestamp)))
                self._done.setdefault(p, []).append(Output(self.topic, k, value, headers, p))
                continue
            pack = opened.get(p)
            if pack is None:
                pack = opened[p] = [[], [], [], PACK_INDEX_BYTES, None, None]
            pack[0].append(offset)
            pack[1].append(key)
            pack[2].append(value)
            pack[3] += cost
            if timestamp is not None:
                _stretch(pack, timestamp)

    def _close(self, p: int) -> None:
        pack = self._open.pop(p, None)
        if pack:
            value = orjson.dumps([pack[0], pack[1]]) + b"\n" + b"\n".join(pack[2])
            headers = self._headers if pack[4] is None else [
                *self._headers, (SOURCE_TIME_HEADER, b"%d,%d" % (pack[4], pack[5]))]
            self._done.setdefault(p, []).append(Output(self.topic, None, value, headers, p))

    def outputs(self) -> list[Output]:
        """Every record built, each internal partition's in order; the packer is empty afterwards."""
        for p in list(self._open):
            self._close(p)
        out = [o for outs in self._done.values() for o in outs]
        self._done.clear()
        return out


def _stretch(pack: list, timestamp: int) -> None:
    """Widen an open pack's span of record times (``pack[4]``, ``pack[5]``: oldest, newest) to ``timestamp``."""
    if pack[4] is None or timestamp < pack[4]:
        pack[4] = timestamp
    if pack[5] is None or timestamp > pack[5]:
        pack[5] = timestamp


def own_lines(lines: list, key: str) -> list:
    """The parsed lines of a forwarded line that belong to the session ``key`` it was forwarded for."""
    own = lines if len(lines) == 1 and lines[0].key == key else [x for x in lines if x.key == key]
    if not own:
        raise BadRecord("repartition_key_mismatch", f"no line of the record has its key {key[:100]!r}")
    return own


def is_pack(headers) -> bool:
    return bool(headers) and headers[0][0] == PACK_HEADER


def pack_source(headers) -> tuple[bytes, bytes] | None:
    """(topic, partition) the lines of a pack were read from (bytes, as in the headers)."""
    t = p = None
    for name, value in headers:
        if name == SOURCE_HEADERS[0]:
            t = value
        elif name == SOURCE_HEADERS[1]:
            p = value
    return None if t is None or p is None else (t, p)


MAX_TIME_MS = 10**15  # about the year 33,658: a larger "time" is not one (and past a float's exact integers)


def source_time(headers) -> tuple[float, float] | None:
    """The oldest and newest Kafka timestamps of the input records an internal record carries, in seconds (None: not
    said, or not two times in order: a corrupt or forged header is ignored, never fatal)."""
    for name, value in headers or ():
        if name == SOURCE_TIME_HEADER:
            try:
                lo, hi = (int(v) for v in bytes(value).split(b",", 1))
            except (TypeError, ValueError):
                return None
            return (lo / 1000, hi / 1000) if 0 < lo <= hi <= MAX_TIME_MS else None
    return None


def unpack(value: bytes | None) -> list[tuple[int, str, bytes]]:
    """(source offset, session key, line) per line of a pack; ValueError for a value that is not one."""
    head, _, body = (value or b"").partition(b"\n")
    try:
        offsets, keys = orjson.loads(head)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError("no index of offsets and keys on its first line") from None
    lines = body.split(b"\n")
    if not isinstance(offsets, list) or not isinstance(keys, list) or not len(offsets) == len(keys) == len(lines) \
            or not all(type(o) is int for o in offsets) or not all(type(k) is str for k in keys):
        raise ValueError(f"its index does not match its {len(lines)} lines")
    return list(zip(offsets, keys, lines))


def source_repeat(headers) -> bytes:
    """How many copies of its line a one-line internal record's input record held before it (``SOURCE_REPEAT_HEADER``;
    b"0" when it does not say)."""
    for name, value in headers or ():
        if name == SOURCE_REPEAT_HEADER:
            return value
    return b"0"


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
        self.keys: dict[str, tuple[bytes, int, int]] = {}  # key -> (its bytes, partition, bytes in a pack's index)
        self._memo_keys = memo_keys

    def partition(self, key: bytes) -> int:
        from aiokafka.partitioner import murmur2

        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def key(self, key: str) -> tuple[bytes, int, int]:
        """(bytes, partition, bytes it takes in a pack's JSON index: 0 when JSON cannot carry it) of a session key,
        remembered. A control character takes 6 bytes there (``\\u0001``): counting the raw key let a pack outgrow the
        largest record the producer may send."""
        known = self.keys.get(key)
        if known is None:
            if len(self.keys) >= self._memo_keys:
                self.keys.clear()
            k = key.encode("utf-8", "surrogatepass")
            try:
                index_bytes = len(orjson.dumps(key)) + 1  # with its comma
            except orjson.JSONEncodeError:  # a lone surrogate: JSON cannot carry it
                index_bytes = 0
            known = (k, self.partition(k), index_bytes)
            if len(key) <= ROUTER_MEMO_KEY_CHARS:  # bounded in bytes too: a key can be as long as a record
                self.keys[key] = known
        return known


class SharedTexts:
    """A forwarded line that names several sessions (an HDFS delete naming N blocks) reaches an internal partition
    once per key of that partition; each copy was parsed whole and kept one line, so N keys cost N parses of N lines
    and N copies of the text in memory (review 2026-12-07: a delete naming 1,000 blocks took 0.6 s to parse and 47 MiB
    of open sessions). The first copy's parse now serves them all: the lines of the partition's other keys wait here
    for their own copies (one per key: each is handed out once), and all share one text in memory (the byte budget
    still counts it once per line, ``windows.line_bytes``). A copy whose text was forgotten, or whose key was handed
    out already (a line the input record repeats), is parsed again."""

    def __init__(self, max_lines: int = SHARED_LINES) -> None:
        self._waiting: OrderedDict[tuple, dict[str, list]] = OrderedDict()
        self._lines = 0
        self._max_lines = max_lines

    @property
    def lines(self) -> int:
        return self._lines

    def own(self, ident: tuple, key: str, offset: int, parse, mine) -> list:
        """The lines of ``key`` in the text ``ident`` (its source position and bytes) names: waiting from an earlier
        copy (given this copy's ``offset``), else ``parse()``'s, keeping those of its other keys for which
        ``mine(key)`` (this internal partition's) to wait. ``BadRecord`` as ``own_lines``."""
        left = self._waiting.get(ident)
        if left is not None:
            own = left.pop(key, None)
            if own is not None:
                self._lines -= len(own)
                if not left:
                    del self._waiting[ident]
                for x in own:
                    x.offset = offset
                return own
        lines = parse()
        own = own_lines(lines, key)
        if len(own) == len(lines):
            return own
        rest: dict[str, list] = {}
        for x in lines:
            if x.key != key and mine(x.key):
                rest.setdefault(x.key, []).append(x)
        waiting = sum(map(len, rest.values()))
        if rest:
            old = self._waiting.pop(ident, None)
            if old is not None:
                self._lines -= sum(map(len, old.values()))
            self._waiting[ident] = rest
            self._lines += waiting
            while self._lines > self._max_lines and len(self._waiting) > 1:
                _, gone = self._waiting.popitem(last=False)
                self._lines -= sum(map(len, gone.values()))
        return own


class SeenLines:
    """A bounded memory of source lines already windowed on one internal partition: a record of its own by (source
    position, key) (``first_time``), a pack by its source partition's offset range (``windowed``).

    A range is exact for packs: the forward hop packs every line of a fetch for this partition, in offset order, so
    a line of the same source offset range bound here was in that pack; re-forwarded lines (a restart between the
    hops re-reads the input from its committed offset) fall inside ranges already seen, a batch resent late falls
    outside them. So a pack costs one lookup, not one per line, unless it overlaps what was seen. A pack spanning more
    offsets than one fetch holds is not remembered as a range (the session stage tells its lines apart one by one):
    a forged or corrupt index would otherwise hide every later line of its source. Such a wide span is noted
    (``wide``): a pack that overlaps one is also told apart line by line, since a transactional or compacted input
    (offsets with gaps) makes a full fetch wide and a re-read of part of it narrow.

    A record of its own is remembered by a 16-byte digest of what tells it apart: a key of any length costs the same
    (a copy of each key, up to ``SEEN_PER_PARTITION`` of them, was kept: 60 KB keys would have held gigabytes)."""

    def __init__(self, limit: int = SEEN_PER_PARTITION, ranges: int = SEEN_RANGES) -> None:
        self.limit = limit
        self.ranges = ranges
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._starts: dict[object, list[int]] = {}  # per source partition: disjoint ranges, sorted
        self._ends: dict[object, list[int]] = {}
        self._wide: dict[object, list[tuple[int, int]]] = {}  # per source partition: spans of packs told line by line

    def first_time(self, ident: tuple) -> bool:
        """Whether ``ident`` (a tuple of strings, bytes and numbers) is met here for the first time."""
        digest = hashlib.blake2b(repr(ident).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return False
        self._seen[digest] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True

    def _per_source(self, sources: int) -> int:
        """Ranges (or wide spans) a source keeps: its share of ``ranges`` (at least ``SEEN_RANGES_MIN``, and never
        more than ``ranges``)."""
        return min(self.ranges, max(SEEN_RANGES_MIN, self.ranges // max(1, sources)))

    def wide(self, source: object, first: int, last: int) -> bool:
        """Whether a pack of ``source`` spanning ``[first, last]`` overlaps a wide one (its lines are then told apart
        one by one, ``first_time``); ``remember_wide`` notes a wide span. The oldest are forgotten past the source's
        share of ``ranges``."""
        return any(a <= last and first <= b for a, b in self._wide.get(source, ()))

    def remember_wide(self, source: object, first: int, last: int) -> None:
        if source not in self._wide:  # as ``windowed``: every source's share shrinks
            self._wide[source] = []
            keep = self._per_source(len(self._wide))
            for spans in self._wide.values():
                del spans[: max(0, len(spans) - keep)]
        spans = self._wide[source]
        spans.append((first, last))
        if len(spans) > (keep := self._per_source(len(self._wide))):
            del spans[: len(spans) - keep]

    def windowed(self, source: object, first: int, last: int, *, remember: bool = True) -> list[tuple[int, int]]:
        """The ranges of ``source`` already windowed here that overlap ``[first, last]`` (a pack's lines inside
        them are duplicates); then, with ``remember``, ``[first, last]`` is remembered too. The oldest ranges are
        forgotten past the source's share of ``ranges``."""
        if source not in self._starts:  # one more source: every source's share shrinks, so trim them all now
            self._starts[source], self._ends[source] = [], []  # (a source gone quiet kept its larger share)
            keep = self._per_source(len(self._starts))
            for other, kept in self._starts.items():
                if (extra := len(kept) - keep) > 0:
                    del kept[:extra], self._ends[other][:extra]
        starts = self._starts[source]
        ends = self._ends[source]
        i = bisect_right(starts, last)  # ranges starting at or before ``last``
        j = bisect_left(ends, first, 0, i)  # ... and ending at or after ``first`` (disjoint: ends are sorted too)
        overlap = list(zip(starts[j:i], ends[j:i]))
        if not remember:
            return overlap
        if overlap:
            first, last = min(first, starts[j]), max(last, ends[i - 1])
        starts[j:i] = [first]
        ends[j:i] = [last]
        if len(starts) > (keep := self._per_source(len(self._starts))):
            del starts[: len(starts) - keep], ends[: len(ends) - keep]
        return overlap
