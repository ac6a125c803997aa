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


def render(event: dict[str, Any], colour: bool) -> str:
    c = _COLOURS if colour else {k: "" for k in _COLOURS}
    s = event.get("session", {})
    verdict = event.get("verdict", "?")
    head = (
        f"{c.get(verdict, '')}{verdict.upper():9}{c['end']} {c['bold']}{s.get('key', '?')}{c['end']} "
        f"{c['dim']}{s.get('line_count', '?')} lines, {s.get('first_time') or '-'} .. {s.get('last_time') or '-'}"
        f"{', cached' if event.get('cached') else ''}, id {event.get('id', '?')}{c['end']}"
    )
    out = [head, f"  {event.get('rationale', '').strip()}"]
    for ev in event.get("evidence", []):
        out.append(f"  {c['dim']}{ev.get('ref')} x{ev.get('count')} @{ev.get('offset')}:{c['end']} {ev.get('line', '')[:300]}")
    if not event.get("grounded", True):
        out.append(f"  {c['dim']}(cited lines not in the session: {', '.join(event.get('ungrounded_refs', []))}){c['end']}")
    return "\n".join(out)


def matches(event: dict[str, Any], verdict: str | None, key: re.Pattern[str] | None) -> bool:
    if verdict and event.get("verdict") != verdict:
        return False
    if key and not key.search(str(event.get("session", {}).get("key", ""))):
        return False
    return True


async def tail(
    settings: Settings, *, verdict: str | None = None, key: str | None = None, from_beginning: bool = False,
    limit: int | None = None, idle_exit_secs: float | None = None, as_json: bool = False, out: IO[str] = sys.stdout,
) -> int:
    """Print matching events until interrupted, ``limit`` events, or ``idle_exit_secs`` without any."""
    from aiokafka import AIOKafkaConsumer

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
    try:
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and idle_exit_secs is not None and loop.time() - last > idle_exit_secs:
                break
            for records in batch.values():
                last = loop.time()
                for rec in records:
                    try:
                        event = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not matches(event, verdict, pattern):
                        continue
                    print(orjson.dumps(event).decode() if as_json else render(event, colour), file=out, flush=True)
                    shown += 1
                    if limit is not None and shown >= limit:
                        break
    finally:
        await consumer.stop()
    return shown
