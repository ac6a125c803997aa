"""Source clocks off by a time zone, on the repartition hop.

A partition of the repartition topic merges lines of several input partitions, and its watermark is the minimum of
their event times (``rationad.windows``): one source whose stamps run hours behind the others, while it keeps
sending, holds every session of the partition open until ``sessions.max_open_secs``, and its lines of a key land
hours away from the other hosts' lines of that key. The usual cause is a host writing local time without a zone in
another zone than the rest, on an input partition of its own (a shipper keyed by host).

The forwarder sends each pack with the oldest and newest Kafka timestamps of the input records it holds
(``repartition.SOURCE_TIME_HEADER``: the shipper's produce time, or the broker's append time). A pack is evidence
when it is read as it is written (its record times within ``REALTIME_SECS`` of this daemon's wall clock: not a
backlog, not a shipper whose own clock is off) and its lines agree (record times and stamps each within
``SPREAD_SECS``: not hosts of several zones on one partition, not a burst of catch-up). A source whose evidence says,
for ``CONFIRM_SECS`` of wall clock and steady within ``STEADY_SECS``, that its stamps trail (or lead) its record times
by a whole number of quarter hours (within ``SPREAD_SECS``) is read shifted by that many quarter hours: its lines
then join the other hosts' windows and stop holding the watermark back. A shift whose band the evidence leaves for
``CONFIRM_SECS`` is dropped. Whatever else trails the record times is left as it is: a shipper catching up on old
files faster than about 1.2 times real time (its lag shrinks), a clock off by 20 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

QUARTER_HOUR = 900.0  # time zones are whole quarter hours apart (UTC+5:45 included)
SPREAD_SECS = 120.0  # a stamp may trail its record's produce time by this much (shipping, batching)
REALTIME_SECS = 300.0  # records written this long before they are read are read as they are written
STEADY_SECS = 60.0  # how far the offset may wander while a shift is confirmed (a backlog's shrinks)
CONFIRM_SECS = 300.0  # a shift is taken (or dropped) once the evidence said so this long


@dataclass(slots=True)
class _Clock:
    shift: float = 0.0  # seconds added to the source's stamps
    candidate: float | None = None  # a shift the evidence has said since ``since``, its offsets within [lo, hi]
    since: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    outside_since: float | None = None  # the evidence has left the taken shift's band since then


class SourceClocks:
    """The shift of each source (input topic and partition) of one internal partition."""

    def __init__(self) -> None:
        self._clocks: dict[tuple[str, int], _Clock] = {}

    def shift(self, source: tuple[str, int], records: tuple[float, float] | None,
              stamps: tuple[float, float] | None, now: float) -> tuple[float, float | None]:
        """The shift to add to the stamps of a pack of ``source`` whose input records' Kafka timestamps span
        ``records`` and whose lines' stamps span ``stamps`` (oldest, newest; None: none said), read at ``now`` (the
        wall clock), and the shift newly taken or dropped (0.0), else None."""
        clock = self._clocks.get(source)
        if clock is None:
            clock = self._clocks[source] = _Clock()
        if records is None or stamps is None:
            return clock.shift, None
        spread = records[1] - records[0]
        if abs(now - records[1]) > REALTIME_SECS or spread > SPREAD_SECS or stamps[1] - stamps[0] > spread + SPREAD_SECS:
            return clock.shift, None  # no evidence either way
        off = records[1] - stamps[1]
        zones = round(off / QUARTER_HOUR) * QUARTER_HOUR
        if abs(off - zones) > SPREAD_SECS:  # in no zone's band: a taken shift is dropped once that lasts
            clock.candidate = None
            if clock.shift == 0.0:
                return 0.0, None
            if clock.outside_since is None:
                clock.outside_since = now
            if now - clock.outside_since < CONFIRM_SECS:
                return clock.shift, None
            clock.shift, clock.outside_since = 0.0, None
            return 0.0, 0.0
        clock.outside_since = None
        if zones == clock.shift:
            clock.candidate = None
            return clock.shift, None
        if clock.candidate != zones or max(clock.hi, off) - min(clock.lo, off) > STEADY_SECS:
            clock.candidate, clock.since, clock.lo, clock.hi = zones, now, off, off
            return clock.shift, None
        clock.lo, clock.hi = min(clock.lo, off), max(clock.hi, off)
        if now - clock.since < CONFIRM_SECS:
            return clock.shift, None
        clock.shift, clock.candidate = zones, None
        return zones, zones
