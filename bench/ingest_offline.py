"""The daemon's per-line ingest work without a broker: microseconds a line of ``Parser.parse`` alone and of
``Parser.parse`` + ``Sessionizer.add`` (the hdfs dialect, the daemon's session spec), on prebuilt rendered HDFS
record values, under the daemon's collector policy; best of ``--repeats``.

It isolates the part of ``bench/ingest.py``'s daemon pass that a faster parser or session store would change, and
times another build of ``rationad`` (``--rationad DIR``: the folder holding a compiled copy of the package) against
this checkout's; it prints which ``rationad.windows`` it imported. Usage: ``.venv/bin/python bench/ingest_offline.py
[--lines 300000] [--repeats 3] [--rationad DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import START_TS, mixed_records, print_machine, rendered_lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rationad", help="import rationad from this folder instead of the checkout")
    args = ap.parse_args()
    if args.rationad:
        sys.path.insert(0, args.rationad)

    import rationad.windows
    from rationad.config import Settings
    from rationad.daemon import collect_less
    from rationad.dialects import make_parser
    from rationad.windows import Sessionizer, resolve_spec

    print_machine()
    print(f"rationad.windows from {rationad.windows.__file__}")
    values: list[bytes] = []
    for _, text, _ in rendered_lines(mixed_records(args.lines // 10, 0.03)):  # (block id, line, label)
        values.append(text.encode())
        if len(values) >= args.lines:
            break
    s = Settings(kafka={"bootstrap_servers": "localhost:9092", "group_id": "bench"},
                 input={"topics": ["t"], "dialect": "hdfs", "repartition": "never"}, server={"enabled": False})
    parse = make_parser(s.input).parse
    spec = resolve_spec(s.sessions, s.input.dialect)
    now = START_TS + 1e6  # the wall clock: after every line of the stream (none is in the future)

    # The record values are whole HDFS lines: each parses to one line with its time and block id (an earlier version
    # of this script timed the block ids alone: untimed one-word lines).
    first = parse(values[0], topic="t", partition=0, offset=0)
    assert len(first) == 1 and first[0].ts is not None and first[0].key.startswith("blk_"), first

    def parse_only() -> float:
        t0 = time.perf_counter()
        for off, v in enumerate(values):
            parse(v, topic="t", partition=0, offset=off)
        return time.perf_counter() - t0

    def parse_add() -> float:
        sz = Sessionizer(spec, topic="t", partition=0)
        closed = 0
        t0 = time.perf_counter()
        for off, v in enumerate(values):
            for line in parse(v, topic="t", partition=0, offset=off):
                closed += len(sz.add(line, now))
        secs = time.perf_counter() - t0
        held.update(closed=closed, open=sz.open_count)
        return secs

    held: dict[str, int] = {}
    collect_less()
    for name, fn in (("parse", parse_only), ("parse + add", parse_add)):
        best = min(fn() for _ in range(args.repeats))
        print(f"{name}: {best / len(values) * 1e6:.2f} us a line ({len(values):,} lines, best of {args.repeats})")
    print(f"sessions closed by add: {held['closed']:,}; open at the end: {held['open']:,}")


if __name__ == "__main__":
    main()
