"""Operator verdicts per template (``rationad label``), kept in a compacted topic (``judge.labels_topic``).

One record per template: key = the template id (``rationad.templates.template_id``), value = the label as JSON; a
record without a value (a tombstone) clears the template's label. The topic is the whole state: every replica reads it
to its end at start (``LabelBook.start``) and keeps following it, so a label written anywhere applies on every replica
within about a second, survives restarts, and outlives model upgrades (a label names a template, not a model
version). Compaction keeps the last record per key; readers keep the last value per key themselves, so they are right
whether or not the broker has compacted yet (noida-db stores ``cleanup.policy=compact``, and holds every record of a
key until its cleaner runs, as Kafka does before a segment rolls).

Readers assign every partition by hand, from the earliest offset, with no consumer group and no commits: each
reader wants every record, and a group would share the partitions out between replicas.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
import structlog

from rationad.config import ConfigError, KafkaConfig
from rationad.kafka import common_kwargs, make_producer
from rationad.prompt import VERDICTS
from rationad.tasks import cancel_all
from rationad.templates import template_id

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import ConsumerRecord

log = structlog.get_logger("rationad.labels")

LABEL_FORMAT_VERSION = 1
TEMPLATE_ID = re.compile(r"t-[0-9a-f]{12}")

# How often a follower asks for the topic's partitions again: the topic may be created after a reader starts (the
# first ``rationad label`` creates it: asked every second until then), or grow.
PARTITION_REFRESH_SECS = 10.0
MISSING_TOPIC_REFRESH_SECS = 1.0


# An operator's reason becomes the rationale of the template's verdicts and of a training row (``<think>`` holds at most
# rationad.prompt.THINK_MAX_CHARS characters, beside its citation and conclusion). ``by`` goes into every event of the
# template (``labelled_by``): a label record from any writer is held to both, or one of 100 KB dead-lettered every
# anomaly of its template as too large for the output topic.
REASON_MAX_CHARS = 500
BY_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Label:
    """An operator's verdict for one template; ``forced`` when it was given for a template never seen."""

    template: str
    verdict: Literal["normal", "anomalous"]
    reason: str
    by: str
    at: float  # Unix time the label was given
    forced: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or not isinstance(self.reason, str) or not isinstance(self.by, str):
            raise TypeError("template, reason and by must be strings")
        if len(self.reason) > REASON_MAX_CHARS or len(self.by) > BY_MAX_CHARS:
            raise ValueError(f"reason ({len(self.reason)} characters) must be at most {REASON_MAX_CHARS}, by "
                             f"({len(self.by)}) at most {BY_MAX_CHARS}")
        if not self.template.strip():  # no line has it; the neighbour index cannot hold it either
            raise ValueError("template must not be empty")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if isinstance(self.at, bool) or not isinstance(self.at, int | float) or not math.isfinite(self.at):
            raise ValueError(f"at must be a finite Unix time, got {self.at!r}")
        if not isinstance(self.forced, bool):
            raise TypeError(f"forced must be a bool, got {self.forced!r}")

    @property
    def id(self) -> str:
        return template_id(self.template)


def encode_label(label: Label) -> tuple[bytes, bytes]:
    """The record of ``label``: (key = its template id, value = JSON)."""
    value = {"v": LABEL_FORMAT_VERSION, "template": label.template, "verdict": label.verdict, "reason": label.reason,
             "by": label.by, "at": label.at, "forced": label.forced}
    return label.id.encode(), orjson.dumps(value)


def decode_tid(key: bytes | None) -> str:
    """The template id a record's key holds; ``ValueError`` unless it is one (``t-`` and 12 hex digits)."""
    if key is None:
        raise ValueError("no key (a template id is expected)")
    try:
        tid = key.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"key {key[:40]!r} is not UTF-8") from None
    if not TEMPLATE_ID.fullmatch(tid):
        raise ValueError(f"key {tid[:40]!r} is not a template id")
    return tid


def decode_label(key: bytes | None, value: bytes | None) -> Label | None:
    """The label of one record; None for a tombstone (the label was cleared). ``ValueError`` for anything else that
    is not a label: no or a malformed key, a value that is not the JSON of a label, a key that is not the id of the
    value's template."""
    tid = decode_tid(key)
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{tid}: value is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{tid}: value is not a JSON object")  # noqa: TRY004 - garbage is a ValueError
    if data.get("v", LABEL_FORMAT_VERSION) != LABEL_FORMAT_VERSION:
        raise ValueError(f"{tid}: label format {data.get('v')!r} (this rationad reads {LABEL_FORMAT_VERSION})")
    try:
        label = Label(template=data["template"], verdict=data["verdict"], reason=data["reason"], by=data["by"],
                      at=data["at"], forced=data.get("forced", False))
    except KeyError as exc:
        raise ValueError(f"{tid}: label without {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{tid}: {exc}") from None
    if label.id != tid:
        raise ValueError(f"{tid}: key is not the id of the label's template ({label.id})")
    return label


class TopicFollower:
    """Reads every partition of one topic from the earliest offset, by manual assignment (no group, no commits).

    The topic is looked up with a metadata request for all topics, which names none and so creates none (see
    ``rationad.topics``): a reader must not create a state topic with the broker's defaults (not compacted)."""

    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topic = topic
        self.consumer: AIOKafkaConsumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                                           auto_offset_reset="earliest", **common_kwargs(kafka))
        self.partitions: list[TopicPartition] = []
        self.unreadable = 0  # records aiokafka could not decode, stepped past (rationad.undecodable)
        # per partition, the offset after the last record returned or stepped past: where a fetch that raised is
        # rewound to, noted here so that a poll asks the consumer for no positions
        self._next: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self.consumer.start()
        await self.refresh()

    async def _getmany(self, partitions: list[TopicPartition], timeout_ms: int) -> dict:
        """``getmany`` that steps past a record aiokafka cannot decode (a header key that is not UTF-8, a batch in a
        codec it cannot read), as the daemon's input does (``rationad.undecodable``): anyone who may write to a state
        topic could otherwise stop every replica's start, and the following of later labels, with one record that
        compaction keeps for ever."""
        from rationad.undecodable import DECODE_ERRORS, fetch_around

        bad: dict = {}
        try:
            records = await self.consumer.getmany(*partitions, timeout_ms=timeout_ms)
        except DECODE_ERRORS:
            await self._rewind(partitions)  # what getmany drained before it raised went with the exception
            records, bad = await fetch_around(self.consumer, partitions, 500, action="skipped")
            self.unreadable += len(bad)
        for tp, recs in records.items():
            if recs:
                self._next[tp] = recs[-1].offset + 1
        for tp, undecodable in bad.items():  # after the records before it: a later rewind must not read it again
            self._next[tp] = undecodable.offset + 1
        return records

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        """Move ``partitions`` back to the first offset not yet returned."""
        for tp in partitions:
            offset = self._next.get(tp)
            if offset is None:  # nothing returned since it was assigned, from its beginning (``refresh``)
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def refresh(self) -> bool:
        """Assign the topic's partitions not assigned yet, from their beginning; True when there were any."""
        from aiokafka import TopicPartition

        cluster = await self.consumer._client.fetch_all_metadata()
        if self.topic in cluster.unauthorized_topics:
            # a topic the ACL hides reads as missing ("no operator labels yet"): every label ignored, silently
            raise ConfigError(f"topic {self.topic!r}: the broker does not authorize this principal "
                              "(kafka.sasl_username) to describe it: grant it Describe and Read on the topic")
        found = [TopicPartition(self.topic, p) for p in sorted(cluster.partitions_for_topic(self.topic) or ())]
        new = [tp for tp in found if tp not in self.partitions]
        if not new:
            return False
        # ``assign`` starts every partition afresh: carry the assigned ones' positions over.
        positions = {tp: await self.consumer.position(tp) for tp in self.partitions}
        self.partitions += new
        self.consumer.assign(self.partitions)
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        await self.consumer.seek_to_beginning(*new)
        return True

    async def catch_up(self, apply: Callable[[ConsumerRecord], None]) -> int:
        """Apply every record up to the end offsets as of the call; the number of records read."""
        if not self.partitions:
            return 0
        ends = await self.consumer.end_offsets(self.partitions)
        n = 0
        while True:
            behind = [tp for tp in self.partitions if await self.consumer.position(tp) < ends[tp]]
            if not behind:
                return n
            batch = await self._getmany(behind, timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    apply(rec)
                n += len(records)

    async def poll(self, apply: Callable[[ConsumerRecord], None], timeout_ms: int = 500) -> int:
        """Apply what arrived (waiting up to ``timeout_ms``); the number of records read."""
        if not self.partitions:
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        n = 0
        for records in (await self._getmany(self.partitions, timeout_ms)).values():
            for rec in records:
                apply(rec)
            n += len(records)
        return n

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        except Exception:  # noqa: BLE001 - stopping a consumer that never connected
            pass


def supersedes(written: dict[Any, tuple[int, int]], key: Any, rec: ConsumerRecord) -> bool:
    """Whether ``rec`` is the newest record of ``key`` read so far (noted in ``written``: key -> (partition,
    timestamp)). Within a partition the offset order decides. Across partitions (the topic grew: a key's newer records
    go to another partition while its older ones stay the latest of the first for ever, compaction being per
    partition) the newer record timestamp does, whatever order the partitions are fetched in."""
    stamp = getattr(rec, "timestamp", None) or 0
    where = written.get(key)
    if where is not None and where[0] != rec.partition and stamp < where[1]:
        log.info("record_superseded", topic=rec.topic, partition=rec.partition, offset=rec.offset,
                 by_partition=where[0])
        return False
    same = where is not None and where[0] == rec.partition  # offset order: newer, whatever its (skewed) stamp
    written[key] = (rec.partition, max(stamp, where[1]) if same else stamp)  # type: ignore[index]
    return True


async def read_latest(kafka: KafkaConfig, topic: str, *, timeout_secs: float = 30.0) -> dict[bytes, bytes]:
    """The last value of every key of ``topic`` up to its end offsets as of the call, tombstoned keys left out, for
    readers that want the state once (``rationad templates``, ``rationad label``); ``{}`` when the topic does not
    exist. Records without a key are left out. ``TimeoutError`` naming the topic past ``timeout_secs``."""
    latest: dict[bytes, bytes] = {}
    written: dict[bytes, tuple[int, int]] = {}

    def apply(rec: ConsumerRecord) -> None:
        if rec.key is None or not supersedes(written, rec.key, rec):
            return
        if rec.value is None:
            latest.pop(rec.key, None)
        else:
            latest[rec.key] = rec.value

    follower = TopicFollower(kafka, topic)
    try:
        await asyncio.wait_for(_read_all(follower, apply), timeout_secs)
    except TimeoutError:
        raise TimeoutError(f"topic {topic!r} on {kafka.bootstrap_servers}: not read to its end within "
                           f"{timeout_secs:g} s") from None
    finally:
        await follower.stop()
    return latest


async def _read_all(follower: TopicFollower, apply: Callable[[ConsumerRecord], None]) -> None:
    await follower.start()
    await follower.catch_up(apply)


async def read_labels(kafka: KafkaConfig, topic: str, *, timeout_secs: float = 30.0) -> list[Label]:
    """Every label of ``topic`` once (garbage records logged and skipped), ordered by template id."""
    out = []
    for key, value in (await read_latest(kafka, topic, timeout_secs=timeout_secs)).items():
        try:
            label = decode_label(key, value)
        except ValueError as exc:
            log.warning("label_record_skipped", topic=topic, error=str(exc))
            continue
        if label is not None:
            out.append(label)
    return sorted(out, key=lambda lb: lb.id)


class LabelBook:
    """The operator labels in memory, kept current by following the labels topic.

    ``start`` reads the topic to the end offsets it finds and returns; a background task then applies new records as
    they arrive (within about a second of the write). ``on_change(template_id, label_or_None)`` is called for each
    change applied after ``start`` returned (the state ``start`` loaded is read with ``labels``), from the event
    loop; an exception in it is logged, not raised."""

    def __init__(self, kafka: KafkaConfig, topic: str, *,
                 on_change: Callable[[str, Label | None], None] | None = None) -> None:
        self.kafka = kafka
        self.topic = topic
        self.on_change = on_change
        self._labels: dict[str, Label] = {}
        self._written: dict[str, tuple[int, int]] = {}  # template id -> (partition, timestamp) of its newest record
        self._follower: TopicFollower | None = None
        self._task: asyncio.Task[None] | None = None
        self._live = False
        self.skipped = 0  # records that were not labels (logged)

    async def start(self, timeout_secs: float = 30) -> None:
        follower = TopicFollower(self.kafka, self.topic)
        try:
            await asyncio.wait_for(_read_all(follower, self._apply), timeout_secs)
        except TimeoutError:
            await follower.stop()
            raise TimeoutError(f"judge.labels_topic: topic {self.topic!r} on {self.kafka.bootstrap_servers}: not read "
                               f"to its end within {timeout_secs:g} s") from None
        except BaseException:
            await follower.stop()
            raise
        if not follower.partitions:
            log.warning("labels_topic_missing", topic=self.topic,
                        note="no operator labels yet; followed once it is created")
        self._follower = follower
        self._live = True
        self._task = asyncio.create_task(self._follow(), name="rationad-labels")
        log.info("labels_loaded", topic=self.topic, labels=len(self._labels), skipped=self.skipped)

    async def _follow(self) -> None:
        assert self._follower is not None
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + (PARTITION_REFRESH_SECS if self._follower.partitions
                                      else MISSING_TOPIC_REFRESH_SECS)
        while True:
            try:
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + (PARTITION_REFRESH_SECS if self._follower.partitions
                                                  else MISSING_TOPIC_REFRESH_SECS)
                    if await self._follower.refresh():
                        log.info("labels_topic_partitions", topic=self.topic,
                                 partitions=len(self._follower.partitions))
                await self._follower.poll(self._apply, timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker hiccup must not stop the labels for good
                log.warning("labels_follow_error", topic=self.topic, error=repr(exc))
                await asyncio.sleep(1.0)

    def _apply(self, rec: ConsumerRecord) -> None:
        try:
            label = decode_label(rec.key, rec.value)
        except ValueError as exc:
            self.skipped += 1
            log.warning("label_record_skipped", topic=rec.topic, partition=rec.partition, offset=rec.offset,
                        error=str(exc))
            try:
                decode_tid(rec.key)
            except ValueError:
                return
            # An unreadable record under a template's key is still that key's latest: once compacted, no reader sees
            # an older label for it, so none stays in force here either (replicas and ``rationad templates`` agree).
            label = None
        tid = decode_tid(rec.key)
        if not supersedes(self._written, tid, rec):
            return
        old = self._labels.pop(tid, None) if label is None else self._labels.get(tid)
        if label is not None:
            self._labels[tid] = label
        if old == label or not self._live or self.on_change is None:
            return
        try:
            self.on_change(tid, label)
        except Exception as exc:  # noqa: BLE001 - the caller's bug must not stop the follower
            log.error("label_on_change_failed", template_id=tid, error=repr(exc))

    def get_id(self, tid: str) -> Label | None:
        return self._labels.get(tid)

    def get(self, template: str) -> Label | None:
        return self._labels.get(template_id(template))

    def labels(self) -> list[Label]:
        return list(self._labels.values())

    def __len__(self) -> int:
        return len(self._labels)

    async def aclose(self) -> None:
        self._live = False
        if self._task is not None:
            await cancel_all([self._task])  # bounded: the task may swallow a cancellation (rationad.tasks)
            self._task = None
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None


async def write_label(kafka: KafkaConfig, topic: str, label: Label | None, *, tid: str | None = None,
                      key: str = "judge.labels_topic", timeout_secs: float = 30.0,
                      replication_factor: int = 1) -> None:
    """Write ``label`` (or, with ``label=None``, a tombstone for ``tid``: the label is cleared) and wait for the
    broker's acknowledgement. Creates the topic, compacted, with ``replication_factor`` replicas when it is missing
    (``ConfigError`` naming ``key`` when it cannot, ``TopicCheckError`` when that may pass); ``TimeoutError`` when the
    write is not acknowledged within ``timeout_secs``."""
    from rationad.topics import ensure_compacted_topic

    if label is None:
        if tid is None or not TEMPLATE_ID.fullmatch(tid):
            raise ValueError(f"clearing a label needs the template id (t- and 12 hex digits), got {tid!r}")
        record: tuple[bytes, bytes | None] = (tid.encode(), None)
    else:
        if tid is not None and tid != label.id:
            raise ValueError(f"tid {tid!r} is not the id of the label's template ({label.id})")
        record = encode_label(label)
    # created as the daemon creates it (repartition.replication_factor): a label written before the daemon's first
    # start made it with one replica, which a cluster with min.insync.replicas >= 2 then refused every write to
    await ensure_compacted_topic(kafka, topic, key=key, timeout_secs=timeout_secs,
                                 replication_factor=replication_factor)
    producer: Any = make_producer(kafka)
    try:
        await asyncio.wait_for(producer.start(), timeout_secs)
        if record[1] is None:
            # A clear goes to every partition: after partitions were added, the key's older label may sit in
            # another one, where only a tombstone of its own removes it (``supersedes`` compares the two while both
            # exist; once compaction drops a lone tombstone, the old label would be the only record left)
            partitions = sorted(await asyncio.wait_for(producer.partitions_for(topic), timeout_secs))
            for p in partitions:
                await asyncio.wait_for(producer.send_and_wait(topic, key=record[0], value=None, partition=p),
                                       timeout_secs)
        else:
            await asyncio.wait_for(producer.send_and_wait(topic, key=record[0], value=record[1]), timeout_secs)
    except TimeoutError:
        raise TimeoutError(f"{key}: the write to {topic!r} on {kafka.bootstrap_servers} was not acknowledged within "
                           f"{timeout_secs:g} s") from None
    finally:
        await producer.stop()
