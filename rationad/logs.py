"""structlog set-up: JSON lines for machines, console rendering on a TTY."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# C0 and C1 control characters and DEL: terminal escapes (cursor moves, erased lines, window titles) in log-derived
# values (a session key, a template) must reach a console as text, not act on it; so must the bidi overrides,
# isolates and marks and the Unicode line and paragraph separators, as ``rationad tail`` has them (review 2026-12-07).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_BREAK = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MULTILINE = frozenset({"exception", "stack"})  # rendered tracebacks keep their lines


def _escaped(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_controls(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Console rendering only (JSON escapes them anyway): control characters in string values as ``\\xNN``."""
    for k, v in event_dict.items():
        if isinstance(v, str):
            rx = _CONTROL if k in _MULTILINE else _CONTROL_OR_BREAK
            if rx.search(v):
                event_dict[k] = rx.sub(_escaped, v)
    return event_dict


class _Stderr:
    """``sys.stderr`` as it is when a line is written, not as it was when logging was set up (a test's capture, a
    stream replaced later): loggers cache their output on first use."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr, format="%(message)s")
    # Third-party libraries log through stdlib logging; keep them quieter than our own events.
    for noisy in ("aiokafka", "kafka", "httpx", "vllm", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level.upper())))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *([escape_controls] if use_console else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
