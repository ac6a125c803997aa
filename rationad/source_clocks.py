"""Source clocks off by a time zone, on the repartition hop.

A partition of the repartition topic merges lines of several input partitions, and its watermark is the minimum of
their event times (``rationad.windows``): one source whose stamps run hours behind the others, while it keeps
sending, holds every session of the partition open until ``sessions.max_open_secs``, and its lines of a key land
hours away from the other hosts' lines of that key. The usual cause is a host writing local time without a zone in
another zone than the rest (or a daylight-saving change on such a host).

The forwarder sends each pack with the newest Kafka timestamp of the input records it holds
(``repartition.SOURCE_TIME_HEADER``: the shipper's produce time, or the broker's append time). A source whose newest
stamp trails (or leads) that time by a whole number of quarter hours, within ``SKEW_TOLERANCE_SECS`` (shipping takes
a moment), for ``SKEW_CONFIRM_SECS`` of wall clock, is read shifted by that many quarter hours: its lines then join
the other hosts' windows and stop holding the watermark back. Whatever else trails the record times is left as it
is: a shipper catching up on old files (its lag shrinks as it goes), or an input read hours behind (its records are
as old as its stamps) are event time as it should be read.
"""

from __future__ import annotations

from dataclasses import dataclass

QUARTER_HOUR = 900.0  # time zones are whole quarter hours apart (UTC+5:45 included)
SKEW_TOLERANCE_SECS = 120.0  # a stamp may trail its record's produce time by this much (shipping, batching)
SKEW_CONFIRM_SECS = 60.0  # a new shift is taken once every pack of the source said it for this long


@dataclass(slots=True)
class _Clock:
    shift: float = 0.0  # seconds added to the source's stamps
    candidate: float | None = None  # a shift every pack has said since ``since``
    since: float = 0.0


class SourceClocks:
    """The shift of each source (input topic and partition) of one internal partition."""

    def __init__(self) -> None:
        self._clocks: dict[tuple[str, int], _Clock] = {}

    def shift(self, source: tuple[str, int], record_secs: float | None, newest_stamp: float | None, now: float,
              ) -> tuple[float, float | None]:
        """The shift to add to the stamps of a pack of ``source`` whose input records' newest Kafka timestamp is
        ``record_secs`` and whose newest line stamp is ``newest_stamp``, and the shift newly taken (None if none)."""
        clock = self._clocks.get(source)
        if clock is None:
            clock = self._clocks[source] = _Clock()
        if record_secs is None or newest_stamp is None:
            return clock.shift, None
        off = record_secs - newest_stamp
        zones = round(off / QUARTER_HOUR) * QUARTER_HOUR
        if abs(off - zones) > SKEW_TOLERANCE_SECS or zones == clock.shift:
            clock.candidate = None  # as read now, or not a zone's difference (a backlog): nothing to take
            return clock.shift, None
        if clock.candidate != zones:
            clock.candidate, clock.since = zones, now
            return clock.shift, None
        if now - clock.since < SKEW_CONFIRM_SECS:
            return clock.shift, None
        clock.shift, clock.candidate = zones, None
        return zones, zones
