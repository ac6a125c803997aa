"""Shared helpers of the benchmark scripts: the machine description, a fresh local broker, fast topic filling
with rendered HDFS lines, and a plain-text report line format. Imported by ``bench/*.py`` (run from the repo root
as ``.venv/bin/python bench/<x>.py``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import random
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("RATIONAD_SHARED", ROOT.parent / "shared"))
HDFS_SESSIONS = SHARED / "datasets" / "hdfs_sessions" / "hdfs_sessions.jsonl"
START_TS = 1_226_246_400.0  # 2008-11-09, the HDFS_v1 period


def machine() -> dict[str, object]:
    """CPU model, logical cores, RAM and the load average when the benchmark started (shared machines)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "python": platform.python_version(),
            "load_avg_1m": round(load[0], 2)}


def module_at(rev: str, path: str):
    """The module at ``path`` (relative to the repo root) as git revision ``rev`` had it, loaded under a name of its
    own beside the working tree's package (its ``rationad`` imports resolve to the working tree): to time or compare
    one module before and after a change on the same machine, in one process."""
    import importlib.util
    import subprocess
    import tempfile

    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(f"{Path(path).stem}_at_{rev.replace('~', '_')}", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return module


def print_machine() -> dict[str, object]:
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, "
          f"load average (1 min) at start {m['load_avg_1m']}", flush=True)
    return m


def load_records(seed: int = 7) -> tuple[list[dict], list[dict]]:
    """(normal, anomalous) session records of the shared HDFS session set."""
    from rationad.hdfs_render import iter_session_records

    normal, anomalous = [], []
    for rec in iter_session_records(HDFS_SESSIONS):
        (anomalous if rec["label"] == "anomalous" else normal).append(rec)
    return normal, anomalous


def mixed_records(n: int, anomalous_share: float, seed: int = 7) -> Iterator[dict]:
    """``n`` session records drawn with replacement, each anomalous with probability ``anomalous_share`` (the real
    HDFS stream has about 3 % anomalous blocks; the shared set over-represents them, so we resample)."""
    normal, anomalous = load_records(seed)
    rng = random.Random(seed)
    for _ in range(n):
        yield rng.choice(anomalous) if rng.random() < anomalous_share else rng.choice(normal)


def rendered_lines(records, seed: int = 7, interleave: int = 8) -> Iterator[tuple[str, str, str | None]]:
    from rationad.hdfs_render import render_stream

    return render_stream(records, rng=random.Random(seed), start_ts=START_TS, interleave=interleave)


def partition_of(key: str, partitions: int) -> int:
    """A stable key -> partition mapping (all lines of a block land in one partition, as keyed producers do)."""
    return zlib.crc32(key.encode()) % partitions


async def produce_batched(bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]],
                          partitions: int) -> list[int]:
    """Produce ``(partition, key, value)`` records in order with ``send_batch`` (one open batch per partition, the
    fastest way to fill a topic from Python); returns the records written per partition."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0, max_request_size=8 * 1024 * 1024,
                         max_batch_size=1024 * 1024)
    await p.start()
    counts = [0] * partitions
    try:
        batches = [p.create_batch() for _ in range(partitions)]
        futs = []

        async def flush(i: int) -> None:
            b = batches[i]
            b.close()
            futs.append(await p.send_batch(b, topic, partition=i))
            batches[i] = p.create_batch()

        for i, key, value in records:
            if batches[i].append(key=key, value=value, timestamp=None) is None:
                await flush(i)
                batches[i].append(key=key, value=value, timestamp=None)
            counts[i] += 1
            if len(futs) > 64:
                await asyncio.gather(*futs)
                futs.clear()
        for i in range(partitions):
            if batches[i].record_count():
                await flush(i)
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return counts


async def fill_topic(bootstrap: str, topic: str, lines: Iterator[tuple[str, str, str | None]], partitions: int,
                     limit: int, *, with_keys: bool = False) -> int:
    """Produce up to ``limit`` rendered lines, partitioned by block; returns the count."""
    records = ((partition_of(block, partitions), block.encode() if with_keys else None, line.encode())
               for block, line, _label in itertools.islice(lines, limit))
    return sum(await produce_batched(bootstrap, topic, records, partitions))


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.secs = time.perf_counter() - self.t0


def build_sessions(records, seed: int = 7, topic: str = "logs") -> list:
    """Closed ``Session`` objects from session records: each rendered to raw HDFS lines and parsed by the daemon's
    own hdfs parser (as the daemon would see them), one session per record."""
    from rationad.config import InputConfig
    from rationad.dialects import make_parser
    from rationad.hdfs_render import new_block_id, render_session
    from rationad.records import Session

    parser = make_parser(InputConfig(dialect="hdfs"))
    rng = random.Random(seed)
    out, offset = [], 0
    for i, rec in enumerate(records):
        block = new_block_id(rng)
        lines = []
        for raw in render_session(rec["events"], block_id=block, start_ts=START_TS + i * 10.0, rng=rng):
            lines.extend(parser.parse(raw.encode(), topic=topic, partition=0, offset=offset))
            offset += 1
        s = Session(key=block, lines=lines, close_reason="gap", topic=topic, partition=0, label=rec.get("label"))
        out.append(s)
    return out


def default_model_dir() -> Path:
    """The served default (``models/default`` in ``RATIONAD_CACHE_DIR``, ``~/.cache/rationad``, as scripts/setup.sh
    made it), else the base model; ``RATIONAD_BENCH_MODEL`` overrides."""
    env = os.environ.get("RATIONAD_BENCH_MODEL") or os.environ.get("RATIONAD_TEST_MODEL")
    if env:
        return Path(env).expanduser().resolve()
    cache = Path(os.environ.get("RATIONAD_CACHE_DIR", Path.home() / ".cache" / "rationad")).expanduser().resolve()
    for name in ("default", "base"):
        p = cache / "models" / name
        if (p / "config.json").is_file():
            return p.resolve()
    raise SystemExit("no model folder: run scripts/setup.sh (or python -m training.prepare_base)")


class NoModel:
    """Stands in for the model client where a benchmark measures the daemon's ingest path without a model stage."""

    name = "none"

    async def start(self) -> None: ...

    async def generate(self, *a, **k):
        raise RuntimeError("this benchmark runs no model")

    async def check_health(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def aclose(self) -> None: ...


class Acknowledger:
    """Stands in for the model stage of a daemon whose ingest path a benchmark measures: every closed session's hold
    is released at once (``closed`` counts them). ``task`` runs until cancelled."""

    def __init__(self, daemon) -> None:
        self.closed = 0
        self.task = asyncio.create_task(self._run(daemon))

    async def _run(self, daemon) -> None:
        while True:
            p = await daemon.stage.queue.get()
            p.hold.release()
            self.closed += 1
