"""``rationad tail``: follow the verdict topic and print rationales for people (colour on a TTY, filters)."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import IO, Any

import orjson

from rationad.config import Settings
from rationad.kafka import common_kwargs

_COLOURS = {"anomalous": "\033[1;31m", "normal": "\033[32m", "dim": "\033[2m", "bold": "\033[1m", "end": "\033[0m"}

# What a terminal may act on, in text that comes from the logs: C0 controls (tab aside; newline is handled where
# text may span lines), DEL, C1 controls (U+009B is a one-character CSI on some terminals), bidirectional overrides,
# isolates and marks (ALM, LRM, RLM; they reorder what is shown), and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: Any) -> str:
    """``value`` as text that cannot drive a terminal: control characters shown as ``\\x1b``, ``\\u202e``..."""
    return _CONTROL.sub(_escape_char, str(value))


def safe_lines(value: Any, indent: str) -> str:
    """Like ``safe``, keeping line breaks but indenting every continuation, so a log line's newline cannot start a
    line that looks like the header of another event."""
    return f"\n{indent}".join(safe(line) for line in str(value).splitlines())


def render(event: dict[str, Any], colour: bool) -> str:
    """An event for a person. Every field is log-derived and escaped (``safe``); colours are the program's own."""
    c = _COLOURS if colour else {k: "" for k in _COLOURS}
    s = _dict(event.get("session"))
    verdict = str(event.get("verdict", "?"))
    revision = s.get("revision") or 1
    # A revision is judged with its key's earlier lines: say so, or its line count reads as the whole story.
    rev = f"revision {safe(revision)} (+{safe(s.get('context_lines', 0))} earlier lines), " if revision != 1 else ""
    head = (
        f"{c.get(verdict, '')}{safe(verdict.upper()):9}{c['end']} {c['bold']}{safe(s.get('key', '?'))}{c['end']} "
        f"{c['dim']}{rev}{safe(s.get('line_count', '?'))} lines, {safe(s.get('first_time') or '-')} .. "
        f"{safe(s.get('last_time') or '-')}{', cached' if event.get('cached') else ''}, id {safe(event.get('id', '?'))}"
        f"{c['end']}"
    )
    out = [head, f"  {safe_lines(str(event.get('rationale', '')).strip(), '  ')}"]
    for ev in _list(event.get("evidence")):
        if not isinstance(ev, dict):
            continue
        line = safe(str(ev.get("line", ""))[:300])  # one log line: a newline in it is escaped, not kept
        where = f"{safe(ev.get('ref'))} x{safe(ev.get('count'))} @{safe(ev.get('offset'))}:"
        out.append(f"  {c['dim']}{where}{c['end']} {line}")
    if not event.get("grounded", True):
        refs = ", ".join(safe(r) for r in _list(event.get("ungrounded_refs")))
        out.append(f"  {c['dim']}(cited lines not in the session: {refs}){c['end']}")
    for problem in _list(event.get("rationale_problems"))[:5]:  # what the session refutes in the rationale
        out.append(f"  {c['dim']}(not so: {safe(problem)[:200]}){c['end']}")
    return "\n".join(out)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _json_escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def safe_json(value: Any) -> str:
    """``value`` as one line of JSON that cannot drive a terminal. orjson escapes C0 controls but writes DEL, C1 and
    bidi controls raw; they are escaped here too (``\\u009b`` is the same JSON string: parsed, the value is equal).
    Every command that prints log-derived JSON uses it (``tail --json``, ``templates``, ``replay``)."""
    return _CONTROL.sub(_json_escape, orjson.dumps(value).decode())


def format_event(event: dict[str, Any], *, colour: bool, as_json: bool) -> str:
    """One event as printed by ``tail``: ``render`` for people, or one line of JSON (``safe_json``)."""
    if as_json:
        return safe_json(event)
    return render(event, colour)


def matches(event: dict[str, Any], verdict: str | None, key: re.Pattern[str] | None) -> bool:
    if verdict and event.get("verdict") != verdict:
        return False
    if key and not key.search(str(_dict(event.get("session")).get("key", ""))):
        return False
    return True


async def _getmany(consumer: Any, next_of: dict, from_beginning: bool) -> dict:
    """``getmany`` that steps past a record aiokafka cannot decode (a header key that is not UTF-8, a batch in a
    codec it cannot read), logged as ``undecodable_record`` (stderr), as the daemon's input and the labels reader do:
    anyone who may write to the output topic ended every tail at it, ``--from-beginning`` at each run (review
    2026-12-07). ``next_of``: partition -> the offset after the last record returned, kept up to date."""
    from rationad.undecodable import DECODE_ERRORS, fetch_around

    bad: dict = {}
    for tp in consumer.assignment():  # where each partition starts (no I/O once known): a partition that returned
        if tp not in next_of:  # nothing yet is read again from there too (review of the first version: "latest"
            next_of[tp] = await consumer.position(tp)  # lost what getmany drained from it before it raised)
    try:
        batch = await consumer.getmany(timeout_ms=500)
    except DECODE_ERRORS:
        partitions = list(consumer.assignment())
        for tp in partitions:  # what getmany drained before it raised went with the exception: read it again
            if tp in next_of:
                consumer.seek(tp, next_of[tp])
            elif from_beginning:
                await consumer.seek_to_beginning(tp)
        batch, bad = await fetch_around(consumer, partitions, 500, held=lambda tp: True, action="skipped")
    for tp, records in batch.items():
        if records:
            next_of[tp] = records[-1].offset + 1
    for tp, undecodable in bad.items():  # after the records before it
        next_of[tp] = undecodable.offset + 1
    return batch


async def tail(
    settings: Settings, *, verdict: str | None = None, key: str | None = None, from_beginning: bool = False,
    limit: int | None = None, idle_exit_secs: float | None = None, as_json: bool = False, out: IO[str] | None = None,
) -> int:
    """Print matching events until interrupted, ``limit`` events, or ``idle_exit_secs`` without any (to ``out``,
    standard output as it is when called)."""
    from aiokafka import AIOKafkaConsumer

    out = out if out is not None else sys.stdout

    pattern = re.compile(key) if key else None
    colour = out.isatty() and not as_json
    consumer = AIOKafkaConsumer(
        settings.output.topic, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", **common_kwargs(settings.kafka),
    )
    await consumer.start()
    shown = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    next_of: dict = {}  # partition -> the offset after the last record returned
    try:
        while limit is None or shown < limit:
            batch = await _getmany(consumer, next_of, from_beginning)
            for rec in (r for records in batch.values() for r in records):  # one loop: --limit stops it
                try:
                    event = orjson.loads(rec.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(event, dict):  # not an event: skipped like a record that is not JSON
                    continue
                try:
                    if not matches(event, verdict, pattern):
                        continue
                    text = format_event(event, colour=colour, as_json=as_json)
                except (TypeError, ValueError, RecursionError):  # nested deeper than can be written back (review)
                    continue
                print(text, file=out, flush=True)
                last = loop.time()  # "without events": the events shown, not records filtered out or skipped
                shown += 1
                if limit is not None and shown >= limit:
                    break
            if idle_exit_secs is not None and loop.time() - last > idle_exit_secs:
                break
    finally:
        await consumer.stop()
    return shown
