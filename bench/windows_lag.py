"""``Sessionizer.add`` + ``tick`` cost when one source lags (repartitioned input) and on windows cut and bridged.

Two sources feed one partition; one is ``--lag`` seconds of event time behind. 2,000 keys, a line every 10 ms, gap
10 s, span 300 s, allowed lateness 5 s: almost every line is a session of its own, the worst case for keeping a key's
older windows open until the watermark passes them. Then the cut-and-bridge pattern (every key past its gap, then a
line between: a merge) over 4,000 keys, three rounds. Pure logic, no broker. Usage:
``.venv/bin/python bench/windows_lag.py [--lines 200000]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine


def lagging(lag: float, lines: int, keys: int = 2_000) -> str:
    from rationad.records import LogLine
    from rationad.windows import Sessionizer, WindowSpec

    spec = WindowSpec(mode="session", gap_secs=10.0, max_lines=1000, max_span_secs=300.0, allowed_lateness_secs=5.0)
    w, rng, closed = Sessionizer(spec), random.Random(1), 0
    todo = [LogLine(key=f"k{rng.randrange(keys)}", message="m", raw="m", ts=i * 0.01 - (lag if i % 2 else 0),
                    offset=i, source=("logs", i % 2, i)) for i in range(lines)]
    t0 = time.perf_counter()
    for i, ln in enumerate(todo):
        closed += len(w.add(ln, i * 0.01))
        if i % 1000 == 0:
            closed += len(w.tick(i * 0.01))
    secs = time.perf_counter() - t0
    closed += len(w.flush("end_of_input"))
    assert closed >= 1 and w.open_count == 0
    return f"lag {lag:>5.0f} s: {secs / lines * 1e6:.2f} us a line ({lines:,} lines, {closed:,} sessions)"


def cut_and_bridged(keys: int = 4_000, rounds: int = 3) -> str:
    from rationad.records import LogLine
    from rationad.windows import Sessionizer, WindowSpec

    w = Sessionizer(WindowSpec(mode="session", gap_secs=10.0, max_lines=1000, allowed_lateness_secs=100.0))
    off, t0 = 0, time.perf_counter()
    for r in range(rounds):
        for ts in (20.0 * (r + 1), 20.0 * (r + 1) - 10):  # past the gap (the window waits), then a bridging line
            for k in range(keys):
                w.add(LogLine(key=f"k{k}", message="m", raw="m", ts=ts, offset=off), 0.0)
                off += 1
    secs = time.perf_counter() - t0
    assert w.open_count == keys
    return f"cut and bridged: {secs:.2f} s for {off:,} lines over {keys:,} keys ({len(w._deadlines):,} deadlines)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args()
    print_machine()
    for lag in (0.0, 30.0, 300.0):
        print(lagging(lag, args.lines), flush=True)
    print(cut_and_bridged())


if __name__ == "__main__":
    main()
