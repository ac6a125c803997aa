"""Time of the windowing's close path when many sessions close in reverse order of their last records (no broker).

The scenario of the split-record index's worst case (``Sessionizer._split``, bounded at ``SPLIT_KEYS`` entries): N
keys each open a session, then each gets a second line in reverse order of opening, so the sessions that close first
(``max_open_secs``, opening order) hold the newest records last. Before 1d71a39 the index was pruned to the closing
session's offset and such closes pruned nothing: it held every key and was rebuilt on every close. The figures are
the seconds to add the 2N lines and to close the N sessions in one tick, and the index's size after it.

``--shape one-record``: N keys each send one line, all in one record (a 10,000-line record of one line per key),
then all close in one tick: every entry stays at the newest offset, so a prune keeps them all. Before 798f32d it was
rebuilt on every close past the bound (quadratic).

With ``--against REV`` the same runs on ``rationad/windows.py`` as it was at that git revision (``1d71a39~1`` /
``798f32d~1`` for the figures before the fixes), in the same process, so both sides share machine, Python and lines.

Usage: ``.venv/bin/python bench/split_index.py [--keys 40000] [--shape reverse|one-record] [--against 1d71a39~1]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import module_at, print_machine


def run(windows, keys: int, shape: str = "reverse") -> dict:
    from rationad.records import LogLine

    spec = windows.WindowSpec(mode="session", gap_secs=86_400.0, max_lines=1000, max_span_secs=None,
                              max_open_secs=600.0)
    w = windows.Sessionizer(spec)
    off = 0
    t0 = time.perf_counter()
    for i in range(keys):
        w.add(LogLine(key=f"k{i}", message="m", raw="m", ts=1000.0, offset=off), 0.0)
        off += shape == "reverse"
    if shape == "reverse":
        for i in reversed(range(keys)):
            w.add(LogLine(key=f"k{i}", message="m", raw="m", ts=1001.0, offset=off), 1.0)
            off += 1
    added = time.perf_counter() - t0
    t0 = time.perf_counter()
    closed = w.tick(601.0)
    tick = time.perf_counter() - t0
    assert len(closed) == keys, f"{len(closed)} sessions closed of {keys}"
    return {"keys": keys, "shape": shape, "add_secs": round(added, 3), "tick_secs": round(tick, 3), "index_after": len(w._split),
            "split_keys": windows.SPLIT_KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=40_000)
    ap.add_argument("--shape", choices=("reverse", "one-record"), default="reverse")
    ap.add_argument("--against", help="also time rationad/windows.py at this git revision")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import rationad.windows

    result: dict = {"machine": print_machine()}
    sides = [("now", rationad.windows)] + ([(args.against, module_at(args.against, "rationad/windows.py"))]
                                           if args.against else [])
    for name, module in sides:
        r = result[name] = run(module, args.keys, args.shape)
        print(f"{name}: {r['keys']} keys ({r['shape']}): add {r['add_secs']} s, tick closing all {r['tick_secs']} s, "
              f"index after {r['index_after']} entries (bound {r['split_keys']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
