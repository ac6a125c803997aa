"""Template normalization: mask the variable parts of a log message so that sessions that differ only in ids,
addresses, numbers and timestamps look the same to the model and to the verdict cache.

The masking rules are data (drain3 ``MaskingInstruction``s, applied in order); we use drain3's masker and not its
clustering, because clustering is stateful and would make the cache key depend on what the daemon saw before.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from drain3.masking import LogMasker, MaskingInstruction

from rationad.lru import memoize

MASK = "{*}"

# The memo of ``to_template`` is bounded in bytes (keys and templates, see ``rationad.lru``), not in entries: 65,536
# whole 64 KiB messages were 4 GiB. Messages longer than TEMPLATE_CACHE_MAX_KEY_CHARS are masked every time and
# never stored (about 10 ms for 64 KiB), so a few huge lines cannot flush the ordinary ones; even of the longest
# memoised (ASCII) messages about 2,000 stay cached (32 MiB / 16 KiB), and tens of thousands of ordinary ones.
TEMPLATE_CACHE_BYTES = 32 * 1024 * 1024
TEMPLATE_CACHE_MAX_KEY_CHARS = 8_192

# Order matters: specific shapes first, bare numbers last.
MASKING_RULES: tuple[tuple[str, str], ...] = (
    # timestamps, with a fraction and a zone (2024-01-02T03:04:05.123456Z, 2015-10-18 18:01:47,978, +02:00), before
    # the clock-time rule below takes their time and leaves the date and a zone letter: a template per second
    (r"\b\d{4}-\d{2}-\d{2}[T -]\d{2}[:.]\d{2}[:.]\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?(?!\w)", "*"),
    # colon-separated hex bytes (MACs, chip status words) and clock times, with any fraction (12:34:56.789)
    (r"\b(?:[0-9A-Fa-f]{1,2}:){2,}[0-9A-Fa-f]{1,2}(?:\.\d+)?\b", "*"),
    (r"blk_-?\d+", "*"),  # HDFS block ids
    (r"(?:/)?(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?", "*"),  # IPv4 with optional port and leading slash
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "*"),  # UUIDs
    (r"(?:/[\w.\-$]+){2,}/?", "*"),  # file paths
    (r"\b0x[0-9a-fA-F]+\b", "*"),  # hex literals
    (r"\b[0-9a-fA-F]{8,}\b", "*"),  # long hex words
    # numbers with a unit (35ms, 1.5s, 512MB, 80%): each value would be a template of its own
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:ns|us|µs|ms|s|min|m|h|[kKMGT]i?B|[kKMG]?bps|%)(?![\w.])", "*"),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])", "*"),  # numbers
    (r"(?<=[A-Za-z])\d+\b", "*"),  # numeric suffixes (node names, task ids)
    (r"(?<=[A-Za-z]\.)\d+\b", "*"),  # numbered names (core.9654): BGL_2k has 858 distinct templates without it, 144 with
)

_LOGHUB_WILDCARD = re.compile(r"<\*>")
_COLLAPSE = re.compile(r"(?:\{\*\}[\s,:]*){2,}")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _masker() -> LogMasker:
    return LogMasker([MaskingInstruction(p, w) for p, w in MASKING_RULES], "{", "}")


@memoize(TEMPLATE_CACHE_BYTES, TEMPLATE_CACHE_MAX_KEY_CHARS)
def to_template(message: str) -> str:
    """The masked template of one log message (ids, addresses, numbers and paths become ``{*}``)."""
    masked = _masker().mask(message)
    masked = _COLLAPSE.sub(MASK + " ", masked)
    return _SPACES.sub(" ", masked).strip()


def from_loghub(template: str) -> str:
    """A Loghub template (``<*>`` wildcards) in our notation."""
    return _SPACES.sub(" ", _LOGHUB_WILDCARD.sub(MASK, template)).strip()


def template_id(template: str) -> str:
    """A short stable id of a template (``t-`` + 12 hex digits of its SHA-256), for ``rationad label`` and listings."""
    return "t-" + hashlib.sha256(template.encode("utf-8", "surrogatepass")).hexdigest()[:12]
