"""Records aiokafka cannot decode: find them and step past them, so one record cannot stop a replica.

aiokafka's record parser decodes header keys as strict UTF-8; a record whose header key is not (any writer to the
topic can send one, and the broker stores it) makes ``getmany`` raise ``UnicodeDecodeError``, for that record and
on every fetch after a restart. The error names no partition or offset, so ``fetch_around`` finds them with the
consumer's public API: the records of each assigned partition with some to read are asked for on their own; on the
one that raises, one record at a time until it raises again (a failed fetch does not advance the position, a limited
one keeps its place in the fetched batch), and the position is then the record's offset, or, after a gap of offsets
the fetch skipped, the first offset of the batch that failed (``failed_batch_offset``). The consumer is moved past
it; the caller dead-letters it under a hold, after the records before it.

Two things aiokafka does around such a record (found by review, tests/integration/test_undecodable_record.py):
- ``getmany`` drains its buffer partition by partition into a dict of its own and moves each drained partition's
  position; when a later partition raises, the records already drained go with the exception. ``rewind`` moves every
  partition back to the first offset the caller has not seen before the records are asked for again.
- it decodes a fetched record batch from its first record, so it can never read the records after an undecodable one
  in the same batch (a producer batches records): each fails like the bad one, and is dead-lettered by its offset
  in turn, naming the undecodable record of its batch (``Undecodable``'s caller keeps the run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.errors import UnsupportedCodecError

log = structlog.get_logger("rationad")

# A batch in a codec aiokafka cannot read (a codec id it does not know, or its library missing: cramjam comes with
# rationad's aiokafka extras) raises UnsupportedCodecError from ``getmany`` for the whole batch, every time.
DECODE_ERRORS = (UnicodeDecodeError, UnsupportedCodecError)
REFETCH_WAIT_MS = 2_000  # a partition whose fetch failed is fetched again from its position: wait this long for it


@dataclass(frozen=True, slots=True)
class Undecodable:
    offset: int
    error: str


async def rewind(consumer: Any, seen: dict[Any, int | None], auto_offset_reset: str,
                 held: Callable[[Any], bool] | None = None) -> None:
    """Move each partition of ``seen`` (partition -> next offset the caller has not seen, None when it has seen
    none since the partition was assigned) back there. ``held(tp)``: the partition is still the assignment ``seen``
    was read from (default: still assigned); one that is not (a rebalance meanwhile: moved away, or assigned again
    and starting from the group's offset) is left alone."""
    held = held or (lambda tp: tp in consumer.assignment())
    for tp, offset in seen.items():
        if not held(tp):
            continue
        if offset is None:  # nothing read since it was assigned: it started at the group's offset, or was reset
            offset = await consumer.committed(tp)
            if not held(tp):
                continue
        if offset is not None:
            consumer.seek(tp, offset)
        elif auto_offset_reset == "earliest":
            await consumer.seek_to_beginning(tp)
        else:  # it started at the end as it was then, which nothing remembers: what arrived since may be skipped
            log.warning("undecodable_record_rewind_unknown", topic=tp.topic, partition=tp.partition,
                        auto_offset_reset=auto_offset_reset)


def failed_batch_offset(exc: BaseException) -> int | None:
    """The first offset of the record batch aiokafka was decoding when ``exc`` rose (read from its fetcher's
    ``PartitionRecords._unpack_records`` frame in the traceback), or None. The position does not move past what a
    fetch skipped without returning it, so after a gap (a batch removed by compaction, a transaction's commit marker)
    it lies before the undecodable record: taken for its offset, each offset of the gap was reported (and counted,
    and on the input dead-lettered) as an undecodable record in turn (review, 2026-12-07)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_unpack_records":
            found = getattr(tb.tb_frame.f_locals.get("next_batch"), "base_offset", found)
        tb = tb.tb_next
    return found


async def fetch_around(consumer: Any, partitions: Iterable[Any], max_records: int,
                       held: Callable[[Any], bool] | None = None, owner: Callable[[Any], Any] | None = None,
                       action: str = "dead-lettered, skipped") -> tuple[dict[Any, list], dict[Any, Undecodable]]:
    """(records by partition, the undecodable record of each partition where one was found). Records are those
    before the undecodable one, in order; the consumer's position is past it. A partition whose refetch does not
    arrive in time is left for the next fetch (which raises again and comes back here), and one no longer assigned (a
    rebalance meanwhile: aiokafka's calls for it raise) to its new owner (``held`` as for ``rewind``).

    ``owner(tp)``: the caller's state of the partition's assignment now (default: none). What a partition's fetches
    return belongs to the assignment current when they returned (aiokafka waits out a rebalance inside ``getmany``,
    then reads the new assignment from the group's offset); records of an assignment that is not the current one when
    this returns (revoked meanwhile, perhaps assigned again) are left out: its new state reads them again."""
    held = held or (lambda tp: tp in consumer.assignment())
    owner = owner or (lambda tp: None)
    records: dict[Any, list] = {}
    bad: dict[Any, Undecodable] = {}
    fetched_for: dict[Any, Any] = {}

    def reassigned(tp: Any) -> bool:
        """Whether ``tp``'s earlier fetches were for an assignment revoked since; notes the current one."""
        now = owner(tp)
        changed = tp in fetched_for and fetched_for[tp] is not now
        fetched_for[tp] = now
        return changed

    for tp in partitions:
        if not held(tp):
            continue
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) >= highwater:
            continue  # nothing to read there
        try:  # the failed fetch left nothing buffered for its partition: it is fetched again (a round trip)
            got = await consumer.getmany(tp, timeout_ms=REFETCH_WAIT_MS, max_records=max_records)
            fetched_for[tp] = owner(tp)
        except DECODE_ERRORS:
            before: list = []
            while True:
                try:
                    got = await consumer.getmany(tp, timeout_ms=REFETCH_WAIT_MS, max_records=1)
                except DECODE_ERRORS as exc:
                    offset = max(await consumer.position(tp), failed_batch_offset(exc) or 0)
                    if not held(tp):
                        break
                    if reassigned(tp):
                        before = []
                    consumer.seek(tp, offset + 1)
                    bad[tp] = Undecodable(offset, f"{type(exc).__name__}: {exc}")
                    log.error("undecodable_record", topic=tp.topic, partition=tp.partition, offset=offset,
                              error=str(exc), action=action)
                    break
                if reassigned(tp):
                    before = []
                if not got:
                    break
                before += got.get(tp, [])
                if len(before) >= max_records:  # not met again so far (a fetch it did not fail): on as usual
                    break
            if before or tp in bad:
                records[tp] = before
            continue
        records.update(got)
    current = {tp for tp in fetched_for if fetched_for[tp] is owner(tp)}
    return ({tp: r for tp, r in records.items() if tp in current},
            {tp: u for tp, u in bad.items() if tp in current})
