"""Fakes of the daemon's I/O for unit tests of its logic: a scripted consumer, a producer, a model client.

They speak the narrow shapes the daemon uses (aiokafka's ``getmany``/``commit``/``send``, the ``ModelClient``
protocol); tests that claim Kafka or vLLM use the real ones (tests/integration, tests/failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition

from rationad.model.base import Completion, approx_token_count

# No count and no HDFS walk entry ("L1 x1 routine"): the session or the knowledge base would refute one of the fakes'
# many lines, and the judge write the answer again.
NORMAL = "<think>L1: routine line; nothing failed.</think>\n<answer>normal</answer>"
ANOMALOUS = "<think>L1: ERROR line: the operation failed.</think>\n<answer>anomalous</answer>"


@dataclass
class Rec:
    offset: int
    value: bytes
    key: bytes | None = None
    headers: list = field(default_factory=list)


class FakeConsumer:
    """Hands out scripted batches (``{tp: [Rec]}``), then empty ones; records commits, pauses and resumes."""

    def __init__(self, batches: list[dict], tps: list[TopicPartition]) -> None:
        self.batches = list(batches)
        self.tps = tps
        self.listener = None
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused: set = set()
        self.pause_calls = 0
        self.handed: dict = {}  # partition -> every record handed out, for ``seek``
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.again: dict = {}

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    async def start(self) -> None:
        await self.listener.on_partitions_assigned(set(self.tps))

    async def stop(self) -> None:
        pass

    def assignment(self):
        return set(self.tps)

    def pause(self, *tps) -> None:
        self.paused.update(tps)
        self.pause_calls += 1

    def resume(self, *tps) -> None:
        self.paused.difference_update(tps)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        if self.again and not self.paused:  # what ``seek`` put back comes first
            batch, self.again = self.again, {}
            for tp, records in batch.items():
                self.handed.setdefault(tp, []).extend(records)
            return batch
        if self.batches and not self.paused:
            batch = self.batches.pop(0)
            for tp, records in batch.items():
                self.handed.setdefault(tp, []).extend(records)
            return batch
        await asyncio.sleep(0.01)
        return {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Hand the records of ``tp`` from ``offset`` out again, before any scripted batch (as a fetch would)."""
        self.seeks.append((tp, offset))
        self.again[tp] = [r for r in self.handed.get(tp, []) if r.offset >= offset] + [
            r for r in self.again.get(tp, []) if r.offset >= offset]
        self.handed[tp] = [r for r in self.handed.get(tp, []) if r.offset < offset]

    async def commit(self, offsets) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def committed_offset(self, tp: TopicPartition) -> int | None:
        for c in reversed(self.commits):
            if tp in c:
                return c[tp]
        return None

    def highwater(self, tp):
        return None

    async def position(self, tp):
        return 0

    async def committed(self, tp):
        return self.committed_offset(tp)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list
    partition: int | None = None


class FakeProducer:
    """Acknowledges every send, unless ``fail(sent) -> Exception | None`` says otherwise for that record."""

    def __init__(self, fail: Callable[[Sent], BaseException | None] | None = None,
                 max_request_size: int | None = None) -> None:
        self.fail = fail
        self.max_request_size = max_request_size
        self.sent: list[Sent] = []  # acknowledged records only
        self.attempts = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(self, topic, value=None, key=None, headers=None, partition=None):
        assert value is not None or key is not None, "Need at least one: key or value"  # as aiokafka's send
        self.attempts += 1
        rec = Sent(topic, key, value, list(headers or []), partition)
        fut = asyncio.get_running_loop().create_future()
        exc = self.fail(rec) if self.fail else None
        if exc is None and self.max_request_size is not None:
            from aiokafka.errors import MessageSizeTooLargeError

            size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in rec.headers)
            if size > self.max_request_size:
                raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        if exc is not None:
            fut.set_exception(exc)
        else:
            self.sent.append(rec)
            fut.set_result(None)
        return fut

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class FakeModel:
    """A ``ModelClient``: ``answer(prompt_text) -> str`` or raises; counts calls."""

    name = "fake-model"

    def __init__(self, answer: Callable[[str], str] | None = None) -> None:
        self.answer = answer or (lambda text: ANOMALOUS if "ERROR" in text else NORMAL)
        self.calls = 0

    async def start(self) -> None:
        pass

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        self.calls += 1
        await asyncio.sleep(0)
        out = []
        for conv in conversations:
            text = self.answer(conv[-1]["content"])
            out.append(Completion(text, 10, 10))
        return out

    async def check_health(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return approx_token_count(text)

    async def aclose(self) -> None:
        pass


async def swallows_one_cancellation() -> None:
    """A task that swallows the first cancellation it meets and goes on (Python 3.11's wait_for, gh-86296)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(3600)


def parser_bug_on(monkeypatch, marker: bytes = b"boom") -> None:
    """A bug in the parser, as one on a JSON timestamp "\x1c1700000000" was (review 2026-12-07): ``Parser.parse``
    raises ValueError, not BadRecord, on a record holding ``marker``, and parses every other as it does."""
    from rationad.dialects import Parser

    real = Parser.parse

    def parse(self, value, **kw):
        if value and marker in value:
            raise ValueError("could not convert string to float: '\x1c1700000000'")
        return real(self, value, **kw)

    monkeypatch.setattr(Parser, "parse", parse)
