"""Templates the masking rules make of real logs, and what a change to the rules moves (no model, no broker).

Corpora (read from ``../shared``): Loghub's ``HDFS_2k.log`` and ``BGL_2k.log`` (Loghub, ISSRE 2023) and the 2%
HDFS sample ``hdfs_2pct/HDFS_2pct_dev.log.gz``, each parsed by the daemon's own dialect parser (so the message is
what the daemon masks, without the header); and the raw lines of LogLM's instruction set (many systems, generic
dialect: the whole line). For each: lines, distinct templates, and the masking time per line (``to_template``'s
memo bypassed). With ``--against REV`` the rules of ``rationad/templates.py`` at that git revision mask the same
messages: distinct templates under each, the lines whose template changes, and a few examples. Use it before
changing a masking rule: templates are verdict-cache keys and operator-label keys, so a change that moves a line's
template re-judges it and detaches its label.

Usage: ``.venv/bin/python bench/masking.py [--against HEAD~1] [--limit 0] [--examples 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, module_at, print_machine

LOGHUB = SHARED / "datasets" / "loghub"
CORPORA = {  # name -> (path, dialect); dialect None: LogLM's JSON, raw lines
    "HDFS_2k": (LOGHUB / "HDFS_2k.log", "hdfs"),
    "BGL_2k": (LOGHUB / "BGL_2k.log", "bgl"),
    "hdfs_2pct": (SHARED / "datasets" / "hdfs_2pct" / "HDFS_2pct_dev.log.gz", "hdfs"),
    "LogLM": (SHARED / "datasets" / "loglm" / "Instruction_Dataset_of_LogLM.json", None),
}


def messages(path: Path, dialect: str | None, limit: int) -> Iterator[str]:
    """The messages the daemon would mask: the dialect parser's, or LogLM's raw input lines (code fences dropped)."""
    if dialect is None:
        n = 0
        for row in json.loads(path.read_text(encoding="utf-8")):
            for line in str(row.get("input", "")).splitlines():
                if line.strip() and not line.startswith("```"):
                    yield line.strip()
                    n += 1
                    if limit and n >= limit:
                        return
        return
    from rationad.config import InputConfig
    from rationad.dialects import make_parser

    parser = make_parser(InputConfig(dialect=dialect))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
        for n, text in enumerate(f, start=1):
            for line in parser.parse(text.rstrip("\n").encode("utf-8", "surrogateescape"), topic=path.name, offset=n):
                yield line.message
            if limit and n >= limit:
                return


def masker_at(rev: str) -> Callable[[str], str]:
    """``to_template`` as ``rationad/templates.py`` had it at git revision ``rev``."""
    module = module_at(rev, "rationad/templates.py")
    return getattr(module.to_template, "__wrapped__", module.to_template)


def run(limit: int, against: str | None, examples: int) -> dict:
    from rationad import templates

    mask = getattr(templates.to_template, "__wrapped__", templates.to_template)
    other = masker_at(against) if against else None
    out: dict[str, dict] = {}
    for name, (path, dialect) in CORPORA.items():
        if not path.exists():
            print(f"{name}: {path} missing, skipped", flush=True)
            continue
        msgs = list(messages(path, dialect, limit))
        t0 = time.perf_counter()
        now = [mask(m) for m in msgs]
        secs = time.perf_counter() - t0
        row: dict = {"lines": len(msgs), "templates": len(set(now)),
                     "us_per_line": round(1e6 * secs / max(1, len(msgs)), 1)}
        if other is not None:
            then = [other(m) for m in msgs]
            changed = [(m, a, b) for m, a, b in zip(msgs, then, now, strict=True) if a != b]
            row.update({"templates_at_rev": len(set(then)), "lines_changed": len(changed),
                        "examples": [{"message": m[:200], "at_rev": a[:200], "now": b[:200]}
                                     for m, a, b in changed[:examples]]})
        out[name] = row
        moved = f", at {against}: {row['templates_at_rev']} templates, {row['lines_changed']} lines change" \
            if other is not None else ""
        print(f"{name}: {row['lines']} lines, {row['templates']} templates, {row['us_per_line']} us a line{moved}",
              flush=True)
        for ex in row.get("examples", []):
            print(f"    {ex['message']!r}\n      {against}: {ex['at_rev']!r}\n      now: {ex['now']!r}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision whose masking rules to compare with the working tree's")
    ap.add_argument("--limit", type=int, default=0, help="at most this many records a corpus (0: all)")
    ap.add_argument("--examples", type=int, default=5, help="changed lines to print a corpus")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    result = {"machine": print_machine(), "against": args.against,
              "corpora": run(args.limit, args.against, args.examples)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
