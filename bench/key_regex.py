"""What a session-key regex costs: the start-up probe (``rationad.regex_probe.backtracks``) and one search of a
hostile line, for sound and for backtracking patterns (no broker, no model).

For each pattern: the probe's wall time (a child process; cache cleared, so each is a first start) and its verdict,
then one ``re`` search of the line the daemon would meet, in a child process killed after ``--cap`` seconds (so a
pattern that never ends costs the cap, not the run): a name of ``--name-len`` letters for the nested quantifier, a
line of ``--line-chars`` characters for the quadratic ones, and the same line for the sound ones. A search over
a few hundred milliseconds on the event loop stops heartbeats; the probe is there to refuse such a pattern at start.

Usage: ``.venv/bin/python bench/key_regex.py [--name-len 24] [--line-chars 20000] [--cap 30] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine

# (pattern, kind, the hostile line built from --name-len / --line-chars)
PATTERNS = (
    (r"session=(\w+)", "sound", lambda n, c: "session=" + "a" * c + "!"),
    (r"blk_-?\d+", "sound", lambda n, c: "blk_" + "1" * c + "!"),
    (r"\[(\w+)\]", "sound", lambda n, c: "[" + "a" * c + "!"),
    (r"user=(\w+\s?)+;", "nested quantifier", lambda n, c: "user=" + "a" * n + "!"),
    (r"(a|aa)+$", "overlapping branches", lambda n, c: "a" * n + "!"),
    (r"(\w+)@(\w+)", "quadratic", lambda n, c: "a" * c + "!"),
)

_SEARCH = "import re, sys, time; p = re.compile(sys.argv[1]); s = sys.stdin.read(); t = time.perf_counter(); " \
          "p.search(s); print(time.perf_counter() - t)"


def search_secs(pattern: str, line: str, cap: float) -> float | None:
    """One search of ``line``, timed in a child; None when it ran past ``cap`` seconds."""
    try:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", _SEARCH, pattern], input=line, capture_output=True,
                             text=True, timeout=cap, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    return float(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name-len", type=int, default=24, help="letters of the hostile name (exponential patterns)")
    ap.add_argument("--line-chars", type=int, default=20_000, help="characters of the hostile line (others)")
    ap.add_argument("--cap", type=float, default=30.0, help="seconds a search may run before it is killed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from rationad.regex_probe import backtracks

    result: dict = {"machine": print_machine(), "patterns": []}
    for pattern, kind, build in PATTERNS:
        backtracks.cache_clear()
        t0 = time.perf_counter()
        verdict = backtracks(pattern)
        probe = time.perf_counter() - t0
        line = build(args.name_len, args.line_chars)
        secs = search_secs(pattern, line, args.cap)
        result["patterns"].append({"pattern": pattern, "kind": kind, "probe_secs": round(probe, 3),
                                   "refused": verdict, "line_chars": len(line),
                                   "search_secs": None if secs is None else round(secs, 6)})
        shown = f"over {args.cap:g} s (killed)" if secs is None else f"{secs:.6f} s"
        print(f"{pattern!r} ({kind}): probe {probe:.3f} s, {'refused: ' + verdict if verdict else 'accepted'}; "
              f"one search of a {len(line)}-character hostile line {shown}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
