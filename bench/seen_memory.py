"""Memory of the repartition hop's duplicate memory (``rationad.repartition.SeenLines``) when full: 200,000 lines sent
on their own, remembered on one internal partition, measured with ``tracemalloc``, for keys of a few lengths.

With ``--against REV`` the same runs on ``rationad/repartition.py`` as it was at that git revision (``c68b38c~1``,
before the 16-byte digests, when each entry kept its key), in the same process.

Usage: ``.venv/bin/python bench/seen_memory.py [--entries 200000] [--key-chars 18,1000] [--against c68b38c~1]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import module_at, print_machine


def run(repartition, entries: int, key_chars: int) -> float:
    """MiB the full memory holds (keys built per record, as the daemon decodes each record's key)."""
    tracemalloc.start()
    try:
        seen = repartition.SeenLines(limit=entries)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(entries):
            key = f"{i:016d}".ljust(key_chars, "k")
            assert seen.first_time((("logs", 0, i), key, hash(b"value %d" % i), 0))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return round(held / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--key-chars", default="18,1000")
    ap.add_argument("--against", help="also measure rationad/repartition.py at this git revision")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import rationad.repartition

    result: dict = {"machine": print_machine(), "entries": args.entries}
    sides = [("now", rationad.repartition)] + ([(args.against, module_at(args.against, "rationad/repartition.py"))]
                                               if args.against else [])
    for name, module in sides:
        for chars in (int(c) for c in args.key_chars.split(",")):
            mib = result.setdefault(name, {})[f"{chars}-char keys"] = run(module, args.entries, chars)
            print(f"{name}: {args.entries} entries, {chars}-character keys: {mib} MiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
