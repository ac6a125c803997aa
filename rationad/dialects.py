"""Input parsers: one Kafka record value -> the parsed ``LogLine``s it holds, or a ``BadRecord`` saying why not.

``make_parser(input_cfg)`` builds the parser for a dialect and a record format:

- format ``text``: the value is UTF-8 text (strict) holding one log line, or several ended by ``\\n``, ``\\r\\n`` or
  ``\\r`` alone (a trailing line end and blank lines are ignored). A record with a bad line is rejected
  whole, with the line's number in the detail, so the dead-letter topic keeps it intact; so is a record of more
  than ``max_lines_per_record`` non-blank lines (``too_many_lines``). Parsing is linear in the record's size: the
  lines continuing an entry are joined once, when the entry ends.
- format ``json``: the value is a JSON object; the log line is ``json_message_field``; ``json_key_field`` (if set)
  overrides the dialect's session key and ``timestamp_field`` (if set) its timestamp (an epoch number in seconds,
  milliseconds, microseconds or nanoseconds, told apart by size, or ISO-8601; an ISO time without a zone is UTC).

Dialects (``Parser.source`` is the log source name the prompt shows):

- ``hdfs``: ``yymmdd HHMMSS pid LEVEL component: content``. ``ts`` is the header time as UTC epoch seconds; the
  model sees ``LEVEL component: content`` (no date, time or pid); the key is the block id ``blk_-?\\d+``, and a line
  naming several blocks yields one LogLine per distinct block (same raw line and offset); more than
  ``max_keys_per_line`` distinct blocks reject the record (``too_many_keys``). A line without a parseable header but
  with a block id is accepted (ts None, message = the whole line).
- ``bgl``: Loghub-labelled lines (BGL, Spirit, Thunderbird, Liberty): ``LABEL EPOCH yyyy.mm.dd NODE ...``. The
  label (``-`` normal, anything else an alert category) goes to ``LogLine.label`` as normal/anomalous and never into
  the message; ``ts`` is EPOCH; the message is the content, as Loghub parses these logs: it drops the header fields of
  the BGL layout (``NODE yyyy-mm-dd-HH.MM.SS.ffffff NODE TYPE COMPONENT LEVEL``) or the syslog layout (``HOST Mon d
  HH:MM:SS HOST/HOST component[pid]:``), falling back to everything after the epoch (the templates the model was
  trained on, and the experts' label corrections, are written over the content). The key is ``key_regex`` (matched
  against the line after its label, so the label can never become a key) or the constant ``"stream"``.
- ``generic``: the message is the line; the key comes from ``key_regex`` (group 1 if it has groups, else the
  whole match, searched in the line) or ``json_key_field``; ``ts`` from ``timestamp_field`` or None.

A parser raises ``BadRecord`` and nothing else, whatever the bytes (property-tested). Log lines are untrusted: they
are kept verbatim in ``raw`` and ``message`` and quoted later by the prompt.
"""

from __future__ import annotations

from dataclasses import replace

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import structlog

from rationad.config import ConfigError, InputConfig
from rationad.records import LogLine

log = structlog.get_logger("rationad")

_LINE_END = re.compile(r"\r\n|\r|\n")  # a lone \r ends a line too: it was one line holding every entry after it

SOURCES = ("hdfs", "bgl", "generic")
BGL_STREAM_KEY = "stream"
MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last time a datetime can show
_DETAIL_SNIPPET = 80


class BadRecord(Exception):
    """A record that cannot be parsed. ``reason`` is a short snake_case code (metrics, DLQ header); ``detail`` is
    for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def bad_record_of(exc: Exception) -> BadRecord:
    """What a record's parse raised, as the reason it is dead-lettered: ``BadRecord`` as it is; anything else is a
    parser bug this record meets (``parse_failed``), which must cost the record, not stop its partition at every
    restart."""
    if isinstance(exc, BadRecord):
        return exc
    if isinstance(exc, MemoryError):  # the daemon's state, not the record: as before, it stops and is retried
        raise exc
    error = f"{type(exc).__name__}: {str(exc)[:_FAILED_DETAIL]}"
    # the traceback once per failure (its type and where it rose): a bug every record meets would log one at the
    # input's rate, and another bug raising the same type is another failure
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    kind = (type(exc).__name__, tb.tb_frame.f_code.co_filename if tb else "", tb.tb_lineno if tb else 0)
    first = kind not in _failed_kinds and len(_failed_kinds) < _FAILED_KINDS
    _failed_kinds.add(kind)
    log.error("parse_failed", error=error, exc_info=exc if first else None)
    return BadRecord("parse_failed", f"the parser failed on this record: {error}")


_FAILED_DETAIL = 300  # characters of a parser failure's message kept (it may quote the record)
_FAILED_KINDS = 100  # parser failures whose traceback is logged, at most
_failed_kinds: set[tuple[str, str, int]] = set()  # (type, file, line) of the parser failures whose traceback was logged


class InputConfigError(ConfigError, ValueError):
    """An ``[input]`` combination the parser cannot honour (names the key)."""


def _snippet(text: str) -> str:
    return repr(text[:_DETAIL_SNIPPET]) + ("..." if len(text) > _DETAIL_SNIPPET else "")


# ---- HDFS ----------------------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"blk_-?\d+")
# Date, time, pid, then the "LEVEL component: " prefix whose start is where the model's message begins.
_HDFS_HEADER = re.compile(r"(\d{6}) (\d{6}) \d+ ([A-Z]+ [^\s:]+: )")
_day_epochs: dict[str, float | None] = {}
_second_of_day: dict[str, int | None] = {}


def _day_epoch(yymmdd: str) -> float | None:
    try:
        return _day_epochs[yymmdd]
    except KeyError:
        try:
            day = datetime(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]), tzinfo=UTC)
            value: float | None = day.timestamp()
        except ValueError:
            value = None
        if value is not None and yymmdd.isascii():  # valid dates only: at most 100 * 12 * 31 keys, whatever the
            _day_epochs[yymmdd] = value  # input (other Unicode digits parse too: not cached)
        return value


def _seconds(hhmmss: str) -> int | None:
    try:
        return _second_of_day[hhmmss]
    except KeyError:
        h, m, s = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:])
        value = h * 3600 + m * 60 + s if h < 24 and m < 60 and s < 60 else None
        if value is not None and hhmmss.isascii():  # valid times only: at most 86,400 keys (other Unicode digits:
            _second_of_day[hhmmss] = value  # not cached)
        return value


# The same header as _HDFS_HEADER, ending where the message begins (the hot path needs only that position: the date
# and time are the line's first 13 characters whenever it matches).
_HDFS_PREFIX = re.compile(r"\d{6} \d{6} \d+ (?=[A-Z]+ [^\s:]+: )")
_stamp_epochs: dict[str, float | None] = {}  # "yymmdd HHMMSS" -> epoch seconds or None; cleared when it grows large
_STAMP_CACHE_MAX = 1 << 16


def _stamp_epoch(stamp: str) -> float | None:
    """Epoch seconds of an HDFS "yymmdd HHMMSS" stamp (digits only), or None: what ``hdfs_header`` computes."""
    day = _day_epochs.get(stamp[:6]) or _day_epoch(stamp[:6])
    secs = _second_of_day.get(stamp[7:])
    if secs is None:
        secs = _seconds(stamp[7:])
    value = None if day is None or secs is None else day + secs
    if len(_stamp_epochs) >= _STAMP_CACHE_MAX:
        _stamp_epochs.clear()
    _stamp_epochs[stamp] = value
    return value


def hdfs_header(line: str) -> tuple[float | None, str]:
    """(epoch seconds UTC or None, the message the model sees) of one HDFS line."""
    m = _HDFS_HEADER.match(line)
    if m is None:
        return None, line
    day = _day_epoch(m.group(1))
    secs = _seconds(m.group(2))
    if day is None or secs is None:
        return None, line
    return day + secs, line[m.start(3) :]


# ---- BGL and other Loghub-labelled logs ----------------------------------------------------------------------------

# After "LABEL EPOCH ": the BGL header "yyyy.mm.dd NODE yyyy-mm-dd-HH.MM.SS.ffffff NODE " ...
_BGL_HEADER = re.compile(r"\d{4}\.\d{2}\.\d{2} \S+ \d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}\.\d+ \S+ ")
# ... or the syslog-like one of Spirit/Thunderbird/Liberty "yyyy.mm.dd HOST Mon d HH:MM:SS HOST/HOST|src@HOST ".
_SYSLOG_HEADER = re.compile(r"\d{4}\.\d{2}\.\d{2} \S+ [A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} \S+ ")
_LABEL_EPOCH = re.compile(r"(\S+) (\d{1,12}) ")
# The fields before the content, as Loghub parses these logs: BGL's "TYPE COMPONENT LEVEL " (``RAS KERNEL INFO``) and
# the syslog layout's "component[pid]: ". Loghub's templates, the experts' label corrections and so the model's
# template training are written over the content alone: served with these words, no BGL template prompt was one the
# model had been trained on (0 of BGL_2k's 144).
_BGL_FIELDS = re.compile(r"\S+ \S+ (?:INFO|WARNING|SEVERE|ERROR|FATAL|FAILURE) ")
_SYSLOG_FIELDS = re.compile(r"[^\s:\[\]]+(?:\[\d+\])?: ")


def looks_bgl(line: str) -> bool:
    """Whether ``line`` reads as a BGL record beyond doubt: a label and an epoch, then the ``-`` label or a header.
    Any "WORD DIGITS rest" parses (``fan 3 failed``: label ``fan``, epoch 3, message ``failed``), so text an operator
    types is read as a record only when it is one (``rationad label``)."""
    m = _LABEL_EPOCH.match(line)
    return m is not None and (m.group(1) == "-" or _BGL_HEADER.match(line, m.end()) is not None
                              or _SYSLOG_HEADER.match(line, m.end()) is not None)


def bgl_fields(line: str) -> tuple[str, float, str, str]:
    """(label normal/anomalous, epoch, message, rest of the line after the label) of a labelled line."""
    m = _LABEL_EPOCH.match(line)
    if m is None:
        raise BadRecord("bad_header", f"not a labelled line ('LABEL EPOCH ...'): {_snippet(line)}")
    label = "normal" if m.group(1) == "-" else "anomalous"
    if float(m.group(2)) > MAX_EPOCH:  # as for JSON times: past year 9999 (one such line moved replay's clock there)
        raise BadRecord("bad_timestamp", f"epoch {m.group(2)} is past year 9999: {_snippet(line)}")
    pos = m.end()
    if (h := _BGL_HEADER.match(line, pos)) is not None or (h := _SYSLOG_HEADER.match(line, pos)) is not None:
        pos = h.end()
        fields = (_BGL_FIELDS if h.re is _BGL_HEADER else _SYSLOG_FIELDS).match(line, pos)
        if fields is not None and line[fields.end():].strip():  # a line of fields alone keeps them as its message
            pos = fields.end()
    message = line[pos:]
    if not message.strip():
        raise BadRecord("empty", f"labelled line without content: {_snippet(line)}")
    return label, float(m.group(2)), message, line[m.end(1) + 1 :]


# ---- timestamps and keys from JSON ---------------------------------------------------------------------------------


# Epoch numbers past year 9999 in seconds are milliseconds, then microseconds, then nanoseconds (what JSON loggers
# write: Java's and JavaScript's clocks give milliseconds, Go's and OpenTelemetry's nanoseconds). No value that reads
# as seconds reads otherwise: only dates before 1978 (milliseconds) or 1970-01-03 (finer) would be taken for seconds.
_EPOCH_UNITS = (1.0, 1e3, 1e6, 1e9)
_EPOCH_TEXT = re.compile(r"\d{1,30}(?:\.\d{1,30})?")


def _epoch(number: float, shown: str) -> float:
    """Epoch seconds from an epoch number in seconds, milliseconds, microseconds or nanoseconds (``_EPOCH_UNITS``)."""
    if math.isfinite(number) and number >= 0:
        for unit in _EPOCH_UNITS:
            if number <= MAX_EPOCH * unit:
                return number / unit
    raise BadRecord("bad_timestamp", f"timestamp out of range: {shown}")


def parse_timestamp(value: object) -> float:
    """Epoch seconds from a JSON value: an epoch number (seconds, or milliseconds, microseconds or nanoseconds, told
    apart by size), as a number or a string of digits, or an ISO-8601 string (no zone = UTC)."""
    if isinstance(value, bool):
        raise BadRecord("bad_timestamp", f"timestamp is a boolean: {value!r}")
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:
            raise BadRecord("bad_timestamp", "timestamp out of range: an integer too large for a float") from None
        return _epoch(ts, repr(value))
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            text = value.strip()
            if _EPOCH_TEXT.fullmatch(text):  # "1700000000.5": ISO-8601 first ("20081109" is a date)
                # the stripped text: ``strip`` takes \x1c-\x1f for spaces and ``float`` does not (review 2026-12-07:
                # "\x1c1700000000" raised ValueError, past every call site, and the daemon exited at each restart)
                return _epoch(float(text), _snippet(value))
            raise BadRecord("bad_timestamp", f"not an ISO-8601 time or epoch number: {_snippet(value)}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        try:
            ts = dt.timestamp()
        except (OverflowError, ValueError, OSError):
            raise BadRecord("bad_timestamp", f"timestamp out of range: {_snippet(value)}") from None
        if not 0 <= ts <= MAX_EPOCH:
            raise BadRecord("bad_timestamp", f"timestamp out of range: {_snippet(value)}")
        return ts
    raise BadRecord("bad_timestamp", f"timestamp must be a number or a string, got {type(value).__name__}")


def _key_from(regex: re.Pattern[str]) -> Callable[[str], str | None]:
    """group 1 if the regex has groups, else the whole match; None when it does not match (or matches empty)."""
    group = 1 if regex.groups else 0

    def key(text: str) -> str | None:
        m = regex.search(text)
        return (m.group(group) or None) if m is not None else None

    return key


def _continued(entry: list[LogLine], cont: list[str]) -> list[LogLine]:
    """The LogLines of one entry (one per key its line names) with its continuation lines appended, built once."""
    tail = "\n" + "\n".join(cont)
    first = entry[0]
    message, raw = first.message + tail, first.raw + tail
    # A line naming several blocks gives LogLines that share one message and raw: keep sharing the joined text.
    return [replace(x, message=message if x.message is first.message else x.message + tail,
                    raw=raw if x.raw is first.raw else x.raw + tail) for x in entry]


# ---- the parser ----------------------------------------------------------------------------------------------------


class Parser:
    """Parses record values of one input (dialect + format). Raises BadRecord, nothing else."""

    def __init__(self, cfg: InputConfig) -> None:
        self.cfg = cfg
        self.source: str = cfg.dialect
        self.format = cfg.format
        self.max_record_bytes = cfg.max_record_bytes
        self.max_lines_per_record = cfg.max_lines_per_record
        self.max_keys_per_line = cfg.max_keys_per_line
        self._message_field = cfg.json_message_field
        self._key_field = cfg.json_key_field
        self._ts_field = cfg.timestamp_field
        self._key_regex = _key_from(re.compile(cfg.key_regex)) if cfg.key_regex is not None else None
        if cfg.dialect not in SOURCES:
            raise InputConfigError(f"input.dialect: unknown dialect {cfg.dialect!r} (expected one of {SOURCES})")
        if cfg.format == "text" and (cfg.json_key_field or cfg.timestamp_field):
            key = "input.json_key_field" if cfg.json_key_field else "input.timestamp_field"
            raise InputConfigError(f"{key}: only used with input.format = 'json'")
        if cfg.dialect == "hdfs" and cfg.key_regex is not None:
            raise InputConfigError("input.key_regex: not used by the hdfs dialect (its session key is the block id)")
        self._line = {"hdfs": self._hdfs, "bgl": self._bgl, "generic": self._generic}[cfg.dialect]
        self._hdfs_text = cfg.dialect == "hdfs" and cfg.format == "text"
        # ``route`` reads a one-line text record's key(s) by one regex: "hdfs" (block ids), "generic" (key_regex)
        self._route_by_regex = None if cfg.format != "text" else "hdfs" if self.source == "hdfs" else \
            "generic" if self.source == "generic" and self._key_regex is not None else None

    def __repr__(self) -> str:
        return f"Parser(source={self.source!r}, format={self.format!r})"

    # The hot path: one call per Kafka record.
    def parse(self, value: bytes | None, *, topic: str = "", partition: int = 0, offset: int = 0) -> list[LogLine]:
        if self._hdfs_text and type(value) is bytes and len(value) <= self.max_record_bytes:
            # The common HDFS record: one line, a valid header, one block id. Gives exactly what the general path
            # below gives for it (property-tested against it); anything else falls through to that path.
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            m = _HDFS_PREFIX.match(text)
            if m is not None and "\n" not in text and "\r" not in text:
                blocks = _BLOCK.findall(text)
                if len(blocks) == 1 or (blocks and blocks.count(blocks[0]) == len(blocks)):  # one distinct block
                    stamp = text[:13]
                    ts = _stamp_epochs.get(stamp)
                    if ts is None:
                        ts = _stamp_epoch(stamp)
                    if ts is not None:
                        return [LogLine(blocks[0], text[m.end():], text, ts, topic, partition, offset)]
        if not value:
            raise BadRecord("empty", "empty record (no value)")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise BadRecord("bad_value", f"record value must be bytes, got {type(value).__name__}")
        if len(value) > self.max_record_bytes:
            raise BadRecord("too_large",
                            f"record of {len(value)} bytes exceeds max_record_bytes={self.max_record_bytes}")
        if not isinstance(value, bytes):
            value = bytes(value)  # bytearray/memoryview: _json decodes the value again for ``raw``
        try:
            if self.format == "json":
                return self._json(value, topic, partition, offset)
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord("invalid_utf8", f"record is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if "\n" not in text and "\r" not in text:
            if not text.strip():
                raise BadRecord("empty", "record holds only blank space")
            return self._line(text, None, None, text, topic, partition, offset)
        lines = [ln for ln in _LINE_END.split(text) if ln.strip()]
        if not lines:
            raise BadRecord("empty", "record holds only blank lines")
        if len(lines) > self.max_lines_per_record:
            raise BadRecord("too_many_lines", f"record of {len(lines)} lines exceeds "
                                              f"max_lines_per_record={self.max_lines_per_record}")
        if len(lines) == 1:
            return self._line(lines[0], None, None, lines[0], topic, partition, offset)
        out: list[LogLine] = []
        last: list[LogLine] = []  # the LogLines of the newest line that parsed
        cont: list[str] = []  # the lines continuing it, joined once when the entry ends (linear in the record)
        headed = False  # whether that line had its dialect's header
        for n, line in enumerate(lines, start=1):
            refused: BadRecord | None = None
            try:
                parsed = self._line(line, None, None, line, topic, partition, offset)
            except BadRecord as exc:
                refused = exc
            if last and self._joins(headed, line, refused):
                cont.append(line)
                continue
            if refused is not None:
                raise BadRecord(refused.reason, f"line {n} of {len(lines)} in the record: {refused.detail}") from None
            headed = self.headed(line)
            if cont:
                out[len(out) - len(last):] = _continued(last, cont)
                cont = []
            out.extend(parsed)
            last = parsed
        if cont:
            out[len(out) - len(last):] = _continued(last, cont)
        return out

    def route(self, value: bytes | None, *, topic: str = "", partition: int = 0, offset: int = 0
              ) -> list[tuple[str, bytes]]:
        """The repartition hop's view of a record: (session key, bytes to forward) per line and key, raising
        ``BadRecord`` exactly when ``parse`` would. A one-line text record of a dialect whose key is a regex over the
        line (hdfs, generic) is routed by that regex alone and forwarded as it is; anything else is parsed whole and
        each entry forwarded as its raw text, so the session stage, which parses the forwarded bytes again and keeps the
        lines of its own key, sees what ``parse`` saw (a line the record repeats goes as often as it is there)."""
        by_regex = self._route_by_regex
        if by_regex is not None and type(value) is bytes and 0 < len(value) <= self.max_record_bytes \
                and b"\n" not in value and b"\r" not in value:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = ""  # parse below raises the proper BadRecord
            if by_regex == "hdfs":
                keys = _BLOCK.findall(text)  # a line with a block id is not blank
                if len(keys) == 1:
                    return [(keys[0], value)]
                keys = list(dict.fromkeys(keys))
                if 0 < len(keys) <= self.max_keys_per_line:
                    return [(k, value) for k in keys]
            elif text.strip():
                key = self._key_regex(text)  # type: ignore[misc]
                if key is not None:
                    return [(key, value)]
        return [(line.key, line.raw.encode("utf-8", "surrogatepass"))
                for line in self.parse(value, topic=topic, partition=partition, offset=offset)]

    def _joins(self, headed: bool, line: str, refused: BadRecord | None) -> bool:
        """Within one record, after an entry that parsed (``headed``: with its dialect's header), does ``line``
        continue that entry? ``refused``: why ``line`` does not parse alone (None: it does).

        A line that does not parse and does not start like a log entry continues it (a stack trace, a message with
        embedded newlines): judged as part of that entry, not dropped; one that starts like an entry, or names too
        many keys, makes the record bad. A line that parses on its own (a trace line naming a block; "HTTP 500 ..."
        read as LABEL EPOCH) but has no header of its dialect, after an entry that had one, continues it too (key,
        time, label); entries without headers (a record of bare lines) stay apart."""
        if refused is not None:
            return refused.reason != "too_many_keys" and not self.starts_entry(line)
        return headed and not self.headed(line)

    def continues(self, headed: bool, line: str) -> bool:
        """``parse``'s rule for a file read line by line (``rationad.replay``): does ``line`` continue the entry
        before it, which parsed (``headed``: ``headed(entry)``), as the two would be joined in one record?"""
        try:
            self._line(line, None, None, line, "", 0, 0)
        except BadRecord as exc:
            return self._joins(headed, line, exc)
        except Exception:  # noqa: BLE001 - a parser bug: not joined; the line is parsed alone and skipped then
            return False
        return self._joins(headed, line, None)

    def headed(self, line: str) -> bool:
        """Whether a line that parses has its dialect's header (every line of a dialect without one)."""
        return self.source not in ("hdfs", "bgl") or self.starts_entry(line)

    def starts_entry(self, line: str) -> bool:
        """Does ``line`` start a new log entry (a header of its dialect), rather than continue the one before?"""
        if self.source == "hdfs":
            return _HDFS_HEADER.match(line) is not None
        if self.source == "bgl":  # LABEL EPOCH and the layout's date after it (a bare "WORD NUMBER ..." continues)
            m = _LABEL_EPOCH.match(line)
            return m is not None and (_BGL_HEADER.match(line, m.end()) or _SYSLOG_HEADER.match(line, m.end())) \
                is not None
        return not line[:1].isspace()

    def _json(self, value: bytes, topic: str, partition: int, offset: int) -> list[LogLine]:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "bad_json"
            raise BadRecord(reason, f"record is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadRecord("not_an_object", f"JSON record must be an object, got {type(obj).__name__}")
        message = obj.get(self._message_field)
        if message is None:
            raise BadRecord("missing_field", f"JSON record has no '{self._message_field}' field")
        if not isinstance(message, str):
            raise BadRecord("bad_field", f"JSON field '{self._message_field}' must be a string")
        if not message.strip():
            raise BadRecord("empty", f"JSON field '{self._message_field}' is empty")
        key: str | None = None
        if self._key_field is not None:
            k = obj.get(self._key_field)
            if k is None or k == "":
                raise BadRecord("no_session_key", f"JSON record has no '{self._key_field}' key field")
            if isinstance(k, bool) or not isinstance(k, str | int):
                raise BadRecord("bad_field", f"JSON field '{self._key_field}' must be a string or an integer")
            key = str(k)
        ts: float | None = None
        if self._ts_field is not None:
            t = obj.get(self._ts_field)
            if t is None:
                raise BadRecord("missing_field", f"JSON record has no '{self._ts_field}' timestamp field")
            ts = parse_timestamp(t)
        line = message.rstrip("\r\n")
        return self._line(line, key, ts, value.decode("utf-8"), topic, partition, offset)

    # Each dialect: (line, key override, ts override, raw, ...) -> LogLines. ``raw`` is the record's text.
    def _hdfs(self, line: str, key: str | None, ts: float | None, raw: str, topic: str, partition: int,
              offset: int) -> list[LogLine]:
        t, message = hdfs_header(line)
        if ts is None:
            ts = t
        if key is not None:
            return [LogLine(key, message, raw, ts, topic, partition, offset)]
        blocks = _BLOCK.findall(line)
        if not blocks:
            raise BadRecord("no_session_key", f"hdfs line has no block id (blk_...): {_snippet(line)}")
        if len(blocks) == 1:
            return [LogLine(blocks[0], message, raw, ts, topic, partition, offset)]
        keys = dict.fromkeys(blocks)
        if len(keys) > self.max_keys_per_line:
            raise BadRecord("too_many_keys", f"hdfs line names {len(keys)} session keys (blk_...), more than "
                                             f"max_keys_per_line={self.max_keys_per_line}: {_snippet(line)}")
        return [LogLine(b, message, raw, ts, topic, partition, offset) for b in keys]

    def _bgl(self, line: str, key: str | None, ts: float | None, raw: str, topic: str, partition: int,
             offset: int) -> list[LogLine]:
        label, epoch, message, unlabelled = bgl_fields(line)
        if key is None:
            if self._key_regex is not None:
                key = self._key_regex(unlabelled)
                if key is None:
                    raise BadRecord("no_session_key", f"key_regex does not match: {_snippet(unlabelled)}")
            else:
                key = BGL_STREAM_KEY
        return [LogLine(key, message, raw, epoch if ts is None else ts, topic, partition, offset, label)]

    def _generic(self, line: str, key: str | None, ts: float | None, raw: str, topic: str, partition: int,
                 offset: int) -> list[LogLine]:
        if key is None:
            if self._key_regex is not None:
                key = self._key_regex(line)
                if key is None:
                    raise BadRecord("no_session_key", f"key_regex does not match: {_snippet(line)}")
            else:  # no key configured: fixed windows over the stream (Settings refuses session windows without one)
                key = BGL_STREAM_KEY
        return [LogLine(key, line, raw, ts, topic, partition, offset)]


def make_parser(input_cfg: InputConfig) -> Parser:
    """The parser for ``[input]``; raises InputConfigError (a ValueError and ConfigError) naming the bad key."""
    return Parser(input_cfg)
