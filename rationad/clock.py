"""The daemon's wall clock, which never steps back.

Processing-time bounds (``sessions.max_open_secs``, ``quiet_flush_secs``, the watermark's advance while a source is
idle) are differences of this clock. ``time.time()`` jumps when the system clock is stepped: stepped back an hour, it
kept every open session open an hour longer than ``max_open_secs`` (pinning the committed offset), and the watermark
stood still. ``SteadyClock`` follows the wall clock forward (a clock corrected forward is followed at once, so event
times stay comparable with it) and advances at the monotonic clock's pace when the wall clock goes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SteadyClock:
    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall, self._mono = wall, mono
        self._offset = wall() - mono()

    def __call__(self) -> float:
        mono, wall = self._mono(), self._wall()
        now = self._offset + mono
        if wall > now:  # the wall clock went forward (or ran ahead): follow it
            self._offset, now = wall - mono, wall
        return now


steady = SteadyClock()  # one clock per process: the windows' "now" and the latencies measured from it agree
