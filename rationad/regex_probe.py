"""Refuse a session-key regex (``input.key_regex``) that backtracks without bound, before it meets a hostile line.

The key regex runs on every line, on the event loop: one search that backtracks for seconds stops heartbeats (the
group expels the member), and the record that caused it is read again after the restart, for ever. Python's ``re``
cannot be interrupted, so the pattern is tried in a child process on lines built from its own pieces (its literal
text and a character of each class it repeats, many times over, then a character it does not expect): the shapes
that make a backtracking engine exponential (``(\\w+\\s?)+;``, ``(a|aa)+$``) or polynomial on a 64 KiB line
(``(\\w+)@``) take seconds there, where a sound pattern takes microseconds. A pattern still running after
``PROBE_SECS`` is refused, naming the line it was stuck on. Not a proof: a pattern the probe does not trip is
accepted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache

# A search of a long probe line (20,000 characters) slower than this is refused: a quadratic pattern takes about 10x
# as long on a 64 KiB record. At 2.0 s, (\w+)@(\w+) (1.74 s here on a 2-core EPYC with avx512_bf16, idle) was
# accepted on a fast idle machine; a sound pattern takes well under a millisecond on the same line.
PROBE_SECS = 0.5
SHORT = 30  # repeats that make an exponential pattern take minutes
LONG = 20_000  # repeats that make a quadratic one take seconds (a record may hold 64 KiB)
MAX_LITERALS, MAX_CHARS = 8, 12  # pieces of the pattern the probe lines are built from
BREAKERS = ("\x00", "!")  # characters a key regex rarely expects: the search must fail, and backtrack

BACKSTOP_SECS = 8.0  # the child is killed after this (its start-up included): a search that never ends
_CHILD = """
import json, re, sys, time
job = json.loads(sys.stdin.read())
p = re.compile(job["pattern"])
for i, s in enumerate(job["subjects"]):
    print(i, flush=True)
    t = time.perf_counter()
    p.search(s)
    dt = time.perf_counter() - t
    print(i, dt, flush=True)
    if dt > job["secs"]:
        break
"""

try:  # the parser module moved in Python 3.11 (re._parser); sre_parse is its older name
    from re import _parser as _sre  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse as _sre  # type: ignore[no-redef]


def _pieces(pattern: str) -> tuple[list[str], list[str]]:
    """(literal runs of the pattern, one character of each class or literal it may repeat)."""
    literals: list[str] = []
    chars: list[str] = []
    run: list[str] = []

    def walk(items) -> None:
        for op, av in items:
            name = str(op)
            if name == "LITERAL":
                run.append(chr(av))
                chars.append(chr(av))
                continue
            if run:
                literals.append("".join(run))
                run.clear()
            if name == "IN":
                for sub_op, sub_av in av:
                    sub = str(sub_op)
                    if sub == "LITERAL":
                        chars.append(chr(sub_av))
                    elif sub == "RANGE":
                        chars.append(chr(sub_av[0]))
                    elif sub == "CATEGORY":
                        chars.append({"CATEGORY_DIGIT": "1", "CATEGORY_SPACE": " "}.get(str(sub_av), "a"))
            elif name == "ANY":
                chars.append("a")
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                walk(av[2])
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                walk(av[-1])
            elif name == "BRANCH":
                for branch in av[1]:
                    walk(branch)
        if run:
            literals.append("".join(run))
            run.clear()

    walk(_sre.parse(pattern))  # bounded: a pattern of many branches is probed by its first pieces
    return list(dict.fromkeys(literals))[:MAX_LITERALS], list(dict.fromkeys(chars or ["a"]))[:MAX_CHARS]


def subjects(pattern: str) -> list[str]:
    """The lines the probe tries: each literal run of the pattern (or none) followed by one of its characters
    repeated, then a character that ends the match."""
    literals, chars = _pieces(pattern)
    out = []
    for prefix in ("", *literals):
        for c in chars:
            for n in (SHORT, LONG):
                for end in BREAKERS:
                    out.append(prefix + c * n + end)
        if len(chars) > 1:  # alternating pieces (a word, a space, a word ...)
            out.append(prefix + "".join(chars) * (LONG // len(chars)) + BREAKERS[0])
    return list(dict.fromkeys(out))


def _shown(line: str) -> str:
    head = line.rstrip("".join(BREAKERS))
    return repr(head[:24] + (f"... ({len(head)} characters)" if len(head) > 24 else ""))


@lru_cache(maxsize=64)
def backtracks(pattern: str, secs: float = PROBE_SECS) -> str | None:
    """None when ``re`` searches each probe line with ``pattern`` in under ``secs`` (timed in the child, its start-up
    left out); else what it was slow on. A probe that cannot run (no child process) accepts the pattern."""
    re.compile(pattern)  # a bad pattern is the caller's error to report, not a probe result
    lines = subjects(pattern)
    try:
        job = json.dumps({"pattern": pattern, "subjects": lines, "secs": secs})
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD], input=job, capture_output=True, text=True,
                              timeout=BACKSTOP_SECS)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        started = [ln for ln in out.splitlines() if ln.isdigit()]
        if started:
            return f"a search ran for over {BACKSTOP_SECS:g} s on a line like {_shown(lines[int(started[-1])])}"
        return None  # the child did not even start in time (a starved machine): no verdict
    except OSError:
        return None
    timed = [ln.split() for ln in out.splitlines() if len(ln.split()) == 2]
    slow = max(((float(dt), int(i)) for i, dt in timed), default=(0.0, 0))
    if slow[0] > secs:
        return f"a search took {slow[0]:.1f} s on a line like {_shown(lines[slow[1]])}"
    return None
