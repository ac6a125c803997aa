"""Helpers of the failure tests (on top of ``tests/integration/harness.py``): topics per test, streaming rendered
sessions in chunks, reading the daemon's metrics and readiness, and the "nothing lost" checks on the output."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from rationad.broker import create_topics
from tests.integration.harness import collect, committed_vs_end, load_sessions, produce, read_to_end, render


@dataclass
class Stream:
    """A per-test input topic with its output and DLQ topics, and the rendered lines to send."""

    bootstrap: str
    topic: str
    lines: list[tuple[str, str]]  # (block id, raw line)
    labels: dict[str, str]  # block id -> label
    partitions: int = 2

    @property
    def group(self) -> str:
        return f"g-{self.topic}"

    @property
    def out(self) -> str:
        return f"{self.topic}.out"

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    keyed: bool = True  # False: records without a key, as log shippers write them (spread over the partitions)

    def records(self, lo: int = 0, hi: int | None = None) -> list[tuple[bytes | None, bytes]]:
        return [(b.encode() if self.keyed else None, line.encode()) for b, line in self.lines[lo:hi]]


def new_stream(bootstrap: str, n_sessions: int, *, prefix: str, partitions: int = 2, seed: int = 7,
               anomalous_share: float = 0.3) -> Stream:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(bootstrap, {topic: partitions, f"{topic}.out": 1, f"{topic}.dlq": 1}))
    lines, labels = render(load_sessions(n_sessions, seed=seed, anomalous_share=anomalous_share), seed=seed)
    return Stream(bootstrap, topic, lines, labels, partitions)


def produce_chunks(stream: Stream, chunks: int, pause_secs: float) -> threading.Thread:
    """Send the stream's lines in ``chunks`` parts, ``pause_secs`` apart, from a background thread."""

    def run() -> None:
        n = len(stream.lines)
        for i in range(chunks):
            lo, hi = n * i // chunks, n * (i + 1) // chunks
            asyncio.run(produce(stream.bootstrap, stream.topic, stream.records(lo, hi)))
            if i + 1 < chunks:
                time.sleep(pause_secs)

    t = threading.Thread(target=run, daemon=True, name="producer")
    t.start()
    return t


def events(records) -> list[dict]:
    return [json.loads(r.value) for r in records]


def poison_sessions(dlq_records) -> list[dict]:
    """Sessions the model stage dead-lettered (malformed answers): ``{"key", "topic", "partition", "first_offset",
    "last_offset", ...}`` as in ``dlq.poison_session``."""
    out = []
    for r in dlq_records:
        h = dict(r.headers)
        if h.get("rationad-error-stage") == b"model":
            out.append(json.loads(r.value)["session"])
    return out


def collect_outcomes(stream: Stream, timeout: float, keys: set[str] | None = None) -> tuple[list[dict], list[dict]]:
    """(verdict events, dead-lettered sessions), read until every key in ``keys`` (default: every block of the
    stream) has one or the other, or ``timeout`` passes. A session is accounted for by a verdict event, or by a
    model-stage dead letter (its answer stayed malformed after the retry), never by nothing."""
    want = set(stream.labels) if keys is None else keys
    seen_dlq: list = []

    async def both():
        def keep(got) -> bool:  # never "done": runs until cancelled, exposing what it read so far
            seen_dlq.extend(got[len(seen_dlq) :])
            return False

        dlq_task = asyncio.create_task(collect(stream.bootstrap, stream.dlq, keep, timeout))

        def done(got) -> bool:
            keys_now = {json.loads(r.value)["session"]["key"] for r in got}
            keys_now |= {s["key"] for s in poison_sessions(seen_dlq)}
            return want <= keys_now

        out = await collect(stream.bootstrap, stream.out, done, timeout)
        dlq_task.cancel()
        try:
            await dlq_task
        except asyncio.CancelledError:
            pass
        return out

    out = asyncio.run(both())
    return events(out), poison_sessions(seen_dlq)


def settled_outcomes(stream: Stream, timeout: float) -> tuple[list[dict], list[dict]]:
    """(verdict events, dead-lettered sessions) once the daemon has settled: every block has an outcome, the group's
    commits have reached the input's end (the daemon commits a line only after the outcome of its session is
    acknowledged, so every line read then has its outcome on the topics), and both output topics are read to their
    end. A block's first outcome is not its last: a quiet gap or a restart can cut a block into several sessions."""
    collect_outcomes(stream, timeout)
    asyncio.run(committed_vs_end(stream.bootstrap, stream.topic, stream.group, wait_secs=180))
    out = asyncio.run(read_to_end(stream.bootstrap, stream.out))
    return events(out), poison_sessions(asyncio.run(read_to_end(stream.bootstrap, stream.dlq)))


def collect_verdicts(stream: Stream, timeout: float, keys: set[str] | None = None) -> list[dict]:
    """Output events, read until every key in ``keys`` (default: every block of the stream) has one."""
    want = set(stream.labels) if keys is None else keys

    def done(got) -> bool:
        return want <= {json.loads(r.value)["session"]["key"] for r in got}

    return events(asyncio.run(collect(stream.bootstrap, stream.out, done, timeout)))


def missing_keys(stream: Stream, evs: list[dict], dead: list[dict] = ()) -> set[str]:
    """Blocks of the stream with neither a verdict event nor a dead-lettered session."""
    return set(stream.labels) - {e["session"]["key"] for e in evs} - {s["key"] for s in dead}


def inconsistent_ids(evs: list[dict]) -> dict[tuple, set[str]]:
    """The same lines (key, topic, partition, first and last offsets, line count, part) emitted more than once with
    different ids, or different lines under one id."""
    ids: dict[tuple, set[str]] = {}
    lines: dict[str, set[tuple]] = {}
    for e in evs:
        s = e["session"]
        what = (s["key"], s["topic"], s["partition"], s["first_offset"], s["last_offset"], s["line_count"],
                s.get("part", 0))
        ids.setdefault(what, set()).add(e["id"])
        lines.setdefault(e["id"], set()).add(what)
    out = {k: v for k, v in ids.items() if len(v) > 1}
    out.update({("one id, other lines", i): {str(w) for w in v} for i, v in lines.items() if len(v) > 1})
    return out


def uncovered_lines(stream: Stream, evs: list[dict], dead: list[dict] = (),
                    timeout: float = 60) -> list[tuple[str, int, int]]:
    """Input lines (block, partition, offset) that no verdict event's session covers.

    A block may be judged in more than one session (a quiet stream closes sessions early, a restart may cut them
    differently); every input line must lie in the offset range of some judged session of its block.
    """
    n = len(stream.lines)
    inputs = asyncio.run(collect(stream.bootstrap, stream.topic, lambda got: len(got) >= n, timeout))
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for s in [e["session"] for e in evs] + list(dead):
        if s["topic"] == stream.topic:
            ranges.setdefault((s["key"], s["partition"]), []).append((s["first_offset"], s["last_offset"]))
    out = []
    for r in inputs:
        key = r.key.decode() if r.key else ""
        if not any(lo <= r.offset <= hi for lo, hi in ranges.get((key, r.partition), ())):
            out.append((key, r.partition, r.offset))
    return out


def metric(port: int, name: str) -> float | None:
    """One unlabelled metric's value from the daemon's ``/metrics`` (None when it cannot be read)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return None
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def readyz(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return None


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.5, alive: Callable[[], bool] = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if alive is not None and not alive():
            return False
        time.sleep(interval)
    return pred()


@dataclass
class Sampler:
    """Polls a function in a background thread and keeps what it returned (e.g. /readyz during an outage)."""

    fn: Callable[[], object]
    interval: float = 0.5
    seen: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(self.fn())
            self._stop.wait(self.interval)

    def stop(self) -> list:
        self._stop.set()
        self._t.join(5)
        return self.seen


def sessions_of(lines: list[tuple[str, str]], topic: str = "logs") -> list:
    """``rationad.records.Session``s of rendered ``(block, raw line)`` pairs, parsed by the daemon's hdfs parser,
    one session per block in order of first appearance (offsets are the lines' positions)."""
    from rationad.config import InputConfig
    from rationad.dialects import make_parser
    from rationad.records import Session

    parser = make_parser(InputConfig(dialect="hdfs"))
    by_key: dict[str, list] = {}
    for offset, (_, raw) in enumerate(lines):
        for line in parser.parse(raw.encode(), topic=topic, partition=0, offset=offset):
            by_key.setdefault(line.key, []).append(line)
    return [Session(key=k, lines=v, close_reason="gap", topic=topic) for k, v in by_key.items()]


async def _expire_members(bootstrap: str, groups: list[str]) -> dict[str, int]:
    from aiokafka.client import AIOKafkaClient, CoordinationType
    from aiokafka.protocol.admin import DescribeGroupsRequest
    from aiokafka.protocol.group import LeaveGroupRequest

    removed: dict[str, int] = {}
    for group_id in groups:
        last: Exception | None = None
        for _ in range(20):  # noida-db sometimes sends a DescribeGroups answer aiokafka cannot decode: ask again
            client = AIOKafkaClient(bootstrap_servers=bootstrap)
            try:
                await client.bootstrap()
                node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
                resp = await client.send(node, DescribeGroupsRequest([group_id]))
                members = [m[0] for g in resp.groups for m in g[5]]
                for member_id in members:
                    await client.send(node, LeaveGroupRequest(group_id, member_id))
                removed[group_id] = len(members)
                last = None
                break
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                last = exc
                await asyncio.sleep(0.5)
            finally:
                await client.close()
        if last is not None:
            raise RuntimeError(f"cannot expire the members of group {group_id}: {last!r}")
    return removed


def expire_dead_members(bootstrap: str, groups: list[str]) -> dict[str, int]:
    """What a Kafka broker does when a killed member's session times out: remove every member of ``groups`` (call it
    only when all their processes are dead). noida-db 0.2.3 never expires a SIGKILLed member (measured: a new member
    still had no assignment after minutes), so without this a restarted daemon waits for the group forever."""
    return asyncio.run(_expire_members(bootstrap, groups))
