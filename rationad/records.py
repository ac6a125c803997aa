"""The daemon's plain data: one parsed log line, one closed session. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class LogLine:
    """One parsed input line. ``message`` is what the model may see (labels and headers removed);
    ``raw`` is the line as received, kept for evidence. Not frozen (a frozen dataclass pays ``object.__setattr__``
    per field on the hot path); treat it as immutable once windowed."""

    key: str
    message: str
    raw: str
    ts: float | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    label: str | None = None  # ground truth carried by some formats (BGL's first column); never shown to the model
    # A repartitioned line (rationad/repartition.py): (topic, partition, offset) of the input record it came from;
    # ``topic``/``partition``/``offset`` above are then its place on the internal topic.
    source: tuple[str, int, int] | None = None
    # Its template once template-level judging has read it as it arrived (``TemplateStage.observe``), so the window's
    # close does not mask it again: a message too long for the template memo was masked twice (about 20 ms each for
    # 60 KB, on the event loop).
    template: str | None = None


@dataclass(slots=True)
class Session:
    """A closed window of lines sharing a key, ready to be judged."""

    key: str
    lines: list[LogLine]
    close_reason: str
    topic: str = ""
    partition: int = 0
    label: str | None = None  # ground truth, only in replay/evaluation
    source_id: str | None = None  # the input's own session id (replay), else None
    extra: dict = field(default_factory=dict)
    # 1 for a key's first session; one more for each session of the same key that follows a session closed early by
    # the processing-time bound ("max_open"): a revised verdict on the same lifecycle.
    revision: int = 1
    # 0, or how many lines of its key earlier sessions took from the record (or repartition pack) its first line came
    # from: sessions of one key that begin in the same record share a first offset and are told apart by it.
    part: int = 0
    # The lines of the key's earlier revisions (already judged; their offsets are not this session's): shown to the
    # model before ``lines``, so a revision is judged as the lifecycle so far, not as a fragment of it.
    context: list[LogLine] = field(default_factory=list)

    @property
    def unfinished(self) -> bool:
        """Closed while its key may still be writing: by the processing-time bound ``max_open``, or early to bound
        memory (``evicted``), after which a later revision of the same key may follow. Such a session is judged at
        ``judge.threshold_unfinished`` (an evicted one was judged as finished: review 2026-12-07)."""
        return self.close_reason == "max_open" or self.close_reason == "evicted"

    @property
    def judged_lines(self) -> list[LogLine]:
        """What the model is shown: ``context`` then ``lines``; rationale refs index into this list."""
        return self.context + self.lines if self.context else self.lines

    @property
    def first_offset(self) -> int:
        return min(line.offset for line in self.lines)

    @property
    def last_offset(self) -> int:
        return max(line.offset for line in self.lines)

    @property
    def first_ts(self) -> float | None:
        ts = [line.ts for line in self.lines if line.ts is not None]
        return min(ts) if ts else None

    @property
    def last_ts(self) -> float | None:
        ts = [line.ts for line in self.lines if line.ts is not None]
        return max(ts) if ts else None


def input_spans(lines: list[LogLine]) -> list[tuple[str, int, int, int]] | None:
    """Where lines that all came through the repartition topic were read on the input: (topic, partition, lowest
    offset, highest offset) for each input partition, in order; None when any line was read on the input itself."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for line in lines:
        if line.source is None:
            return None
        topic, partition, offset = line.source
        lo, hi = spans.get((topic, partition), (offset, offset))
        spans[(topic, partition)] = (min(lo, offset), max(hi, offset))
    return [(t, p, lo, hi) for (t, p), (lo, hi) in sorted(spans.items())] or None
