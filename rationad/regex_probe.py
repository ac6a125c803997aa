"""Refuse a session-key regex (``input.key_regex``) that backtracks without bound, before it meets a hostile line.

The key regex runs on every line, on the event loop: one search that backtracks for seconds stops heartbeats (the
group expels the member), and the record that caused it is read again after the restart, for ever. Python's ``re``
cannot be interrupted, so the pattern is tried in a child process on lines built from its own pieces (its literal
text and a character of each class it repeats, many times over, then a character it does not expect): the shapes
that make a backtracking engine exponential (``(\\w+\\s?)+;``, ``(a|aa)+$``) or polynomial on a 64 KiB line
(``(\\w+)@``) take seconds there, where a sound pattern takes microseconds. A pattern still running after
``PROBE_SECS`` is refused, naming the line it was stuck on; so is one whose search time grows faster than its
line (``GROWTH``: a tenth of the line searched over ``GROWTH`` times faster, once the long search takes
``FLOOR_SECS``), which does not depend on how fast the machine is (a fixed limit alone accepted ``(\\w+)@(\\w+)``
on a fast idle machine).
Not a proof: a pattern the probe does not trip is accepted.
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
MID = LONG // 10  # the same line a tenth as long: a linear search takes about a tenth of the time, a quadratic a 100th
GROWTH = 30.0  # a long search this many times slower than its MID partner grows faster than the line: refused
FLOOR_SECS = 0.02  # ... once it takes this long (a sound pattern: well under 1 ms), so that timer noise decides nothing
MAX_LITERALS, MAX_CHARS = 8, 12  # pieces of the pattern the probe lines are built from
BREAKERS = ("\x00", "!")  # characters a key regex rarely expects: the search must fail, and backtrack

BACKSTOP_SECS = 8.0  # the child is killed after this (its start-up included): a search that never ends
# Times are the child's CPU time (``thread_time``): time the child waits for a CPU on a busy machine is not counted.
# A long line whose time would be refused for its growth is searched again with its partner, each keeping its
# fastest time. The child stops at the first refusal.
_CHILD = """
import json, re, sys, time
job = json.loads(sys.stdin.read())
p = re.compile(job["pattern"])
subjects, partner, took = job["subjects"], job["partner"], {}
def timed(s):
    t = time.thread_time()
    p.search(s)
    return time.thread_time() - t
def grows(i):
    mid = partner[i]
    return mid >= 0 and took[i] > job["floor"] and took[i] > job["growth"] * max(took[mid], 1e-9)
for i, s in enumerate(subjects):
    print(i, flush=True)
    took[i] = timed(s)
    if took[i] <= job["secs"] and grows(i):
        took[partner[i]] = min(took[partner[i]], timed(subjects[partner[i]]))
        took[i] = min(took[i], timed(s))
        print(partner[i], took[partner[i]], flush=True)
    print(i, took[i], flush=True)
    if took[i] > job["secs"] or grows(i):
        break
"""

try:  # the parser module moved in Python 3.11 (re._parser); sre_parse is its older name
    from re import _parser as _sre  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse as _sre  # type: ignore[no-redef]


_CANDIDATES = "a1 b.-_x!"  # tried in order for a character a negated class matches


def _member(c: str, items) -> bool:
    """Whether the set items of an ``IN`` (without its NEGATE) match ``c``."""
    for op, av in items:
        name = str(op)
        if name == "LITERAL" and c == chr(av):
            return True
        if name == "RANGE" and av[0] <= ord(c) <= av[1]:
            return True
        if name == "CATEGORY":
            test = {"CATEGORY_DIGIT": c.isdigit(), "CATEGORY_NOT_DIGIT": not c.isdigit(),
                    "CATEGORY_SPACE": c.isspace(), "CATEGORY_NOT_SPACE": not c.isspace(),
                    "CATEGORY_WORD": c.isalnum() or c == "_", "CATEGORY_NOT_WORD": not (c.isalnum() or c == "_")}
            if test.get(str(av), False):
                return True
    return False


def _not_char(av: int) -> str:
    """A character a ``NOT_LITERAL`` (``[^,]``) matches."""
    return "b" if chr(av) == "a" else "a"


def group_can_be_empty(pattern: str, group: int) -> bool:
    """Whether capture ``group`` of ``pattern`` can match the empty string (its least width is 0), or a match can
    leave it out (inside an optional part, ``x(\\S+)?``, or one branch of an alternation): either way a line gets no
    value from it."""
    def find(items, optional: bool) -> bool | None:
        for op, av in items:
            name = str(op)
            if name == "SUBPATTERN":
                if av[0] == group:
                    return optional or av[-1].getwidth()[0] == 0
                found = find(av[-1], optional)
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                found = find(av[2], optional or av[0] == 0)
            elif name == "ATOMIC_GROUP":
                found = find(av, optional)
            elif name == "BRANCH":  # another branch can match without it
                found = next((f for b in av[1] if (f := find(b, optional or len(av[1]) > 1)) is not None), None)
            else:
                continue
            if found is not None:
                return found
        return None

    return bool(find(_sre.parse(pattern), False))


def _class_chars(items) -> list[str]:
    """Characters an ``IN`` matches: one of each member, or for a negated class (``[^,]``, ``[^\\s]``) one it lets
    through (a negated class added none, so the probe never repeated it)."""
    if items and str(items[0][0]) == "NEGATE":
        return [next((c for c in _CANDIDATES if not _member(c, items[1:])), "a")]
    out = []
    for sub_op, sub_av in items:
        sub = str(sub_op)
        if sub == "LITERAL":
            out.append(chr(sub_av))
        elif sub == "RANGE":
            out.append(chr(sub_av[0]))
        elif sub == "CATEGORY":  # one it matches (\W took "a" before, which \W does not match)
            out.append(next((c for c in _CANDIDATES if _member(c, [(sub_op, sub_av)])), "a"))
    return out


def _sample(items) -> str:
    """A short text one pass through ``items`` may match: one character per item, a repeat once (none when it may
    be left out), a group's first branch."""
    out = []
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name == "NOT_LITERAL":
            out.append(_not_char(av))
        elif name == "IN":
            out.append((_class_chars(av) or ["a"])[0])
        elif name == "ANY":
            out.append("a")
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            out.append(_sample(av[2]) if av[0] >= 1 else "")
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):  # an atomic group's argument is its items themselves
            out.append(_sample(av if name == "ATOMIC_GROUP" else av[-1]))
        elif name == "BRANCH":
            out.append(_sample(av[1][0]) if av[1] else "")
    return "".join(out)


MAX_PREFIXES = 4  # the pattern's own leading structure (``^\d+ `` before ``(\w+\s?)+``), as probe line starts


def _prefixes(pattern: str) -> list[str]:
    """Texts that match the pattern's first items in sequence (its first item, its first two, ...): a pattern whose
    bad part comes after some structure was never reached by lines that start with one literal run."""
    items = list(_sre.parse(pattern))
    out: list[str] = []
    for i in range(1, len(items)):
        head = _sample(items[:i])
        if head and head not in out:
            out.append(head)
        if len(out) == MAX_PREFIXES:
            break
    return out


def _pieces(pattern: str) -> tuple[list[str], list[str]]:
    """(literal runs of the pattern, then texts matching its first items in sequence; one character of each class or
    literal it may repeat)."""
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
                chars.extend(_class_chars(av))
            elif name == "NOT_LITERAL":
                chars.append(_not_char(av))
            elif name == "ANY":
                chars.append("a")
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                walk(av[2])
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                walk(av if name == "ATOMIC_GROUP" else av[-1])
            elif name == "BRANCH":
                for branch in av[1]:
                    walk(branch)
        if run:
            literals.append("".join(run))
            run.clear()

    walk(_sre.parse(pattern))  # bounded: a pattern of many branches is probed by its first pieces
    starts = list(dict.fromkeys(literals))[:MAX_LITERALS]
    starts += [p for p in _prefixes(pattern) if not any(s.startswith(p) for s in starts)]  # new starts only
    return starts, list(dict.fromkeys(chars or ["a"]))[:MAX_CHARS]


def subjects(pattern: str) -> list[str]:
    """The lines the probe tries: each literal run of the pattern (or none) followed by one of its characters
    repeated, then a character that ends the match."""
    return _lines(_pairs(*_pieces(pattern)))


def _lines(pairs: list[tuple[str, str]]) -> list[str]:
    return list(dict.fromkeys(s for pair in pairs for s in pair if s))


def _pairs(literals: list[str], chars: list[str]) -> list[tuple[str, str]]:
    """(MID line or "", line) in probe order: a long line follows its tenth-as-long partner (the growth check)."""
    out = []
    for prefix in ("", *literals):
        for c in chars:
            for end in BREAKERS:
                out.append(("", prefix + c * SHORT + end))
            out.append((prefix + c * MID + BREAKERS[0], prefix + c * LONG + BREAKERS[0]))
            out.append(("", prefix + c * LONG + BREAKERS[1]))
        if len(chars) > 1:  # alternating pieces (a word, a space, a word ...)
            piece = "".join(chars)
            out.append((prefix + piece * (MID // len(chars)) + BREAKERS[0],
                        prefix + piece * (LONG // len(chars)) + BREAKERS[0]))
    return out


def _shown(line: str) -> str:
    head = line.rstrip("".join(BREAKERS))
    return repr(head[:24] + (f"... ({len(head)} characters)" if len(head) > 24 else ""))


@lru_cache(maxsize=64)
def backtracks(pattern: str, secs: float = PROBE_SECS) -> str | None:
    """None when ``re`` searches each probe line with ``pattern`` in under ``secs`` (timed in the child, its start-up
    left out); else what it was slow on. A probe that cannot run (no child process) accepts the pattern."""
    re.compile(pattern)  # a bad pattern is the caller's error to report, not a probe result
    pairs = _pairs(*_pieces(pattern))
    lines = _lines(pairs)
    where = {s: i for i, s in enumerate(lines)}
    partner = [-1] * len(lines)
    for mid, long in pairs:
        if mid and where[mid] < where[long]:
            partner[where[long]] = where[mid]
    try:
        job = json.dumps({"pattern": pattern, "subjects": lines, "secs": secs, "partner": partner,
                          "floor": FLOOR_SECS, "growth": GROWTH})
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
    took = {int(i): float(dt) for i, dt in (ln.split() for ln in out.splitlines() if len(ln.split()) == 2)}
    slow = max(((dt, i) for i, dt in took.items()), default=(0.0, 0))
    if slow[0] > secs:
        return f"a search took {slow[0]:.1f} s on a line like {_shown(lines[slow[1]])}"
    for i, dt in took.items():
        mid = partner[i]
        if mid >= 0 and mid in took and dt > FLOOR_SECS and dt > GROWTH * max(took[mid], 1e-9):
            return (f"a search took {dt:.2f} s on a line like {_shown(lines[i])}, {dt / max(took[mid], 1e-9):.0f}x "
                    f"its time on a tenth of that line: it grows faster than the line")
    return None
