"""Restart benchmark: seconds from restarting the daemon after a ``kill -9`` to its first new verdict, with dynamic
group membership and with static membership (``kafka.group_instance_id``, KIP-345).

One local noida-db broker and one vLLM OpenAI server on CPU (started once; the daemon uses the ``vllm-server``
backend, so a restart does not reload the model and the figures isolate what the group does). Per variant: a fresh
input topic (2 partitions) and group; a producer streams rendered HDFS sessions whose lines carry the wall-clock time
(one burst per session, ``--rate`` sessions/s; ``sessions.gap_secs`` 2 s, so each closes about 2 s later, and
``emit_normal = true``, so every judged session is an event); once ``--warm`` verdicts have arrived the daemon's process
group gets SIGKILL, the daemon is started again at once (t = 0), and the script reports, from t = 0: the daemon's
``partitions_assigned`` log line, ``/readyz`` (``rationad_ready 1``) and the first event on the output topic past the
offset it had at t = 0.

Variants:
- ``static``: ``kafka.group_instance_id`` set; nothing else is done. The restarted instance takes its old member's
  place (noida-db 0.2.3 supports JoinGroup v7 and honours the id).
- ``dynamic-expiry``: no instance id; the killed member is removed ``kafka.session_timeout_ms`` after the kill, which
  is what a Kafka broker does when the dead member's session expires (noida-db never does it by itself; the removal
  is a LeaveGroup for each member, as ``tests/failure/support.expire_dead_members`` does).
- ``dynamic``: no instance id and nothing done: on noida-db 0.2.3 the restarted daemon is never assigned (the dead
  member is never expired); bounded by ``--never-secs``.

The durable verdict cache is off by default (``cache.durable = false``): its faust consumer group has no instance id
(faust's ``consumer_group_instance_id`` is not set by ``rationad.cache_table``), so after a kill -9 its recovery
waits for that group as well, up to the daemon's 120 s cache-recovery timeout on noida-db. ``--durable-cache`` turns
it on; the killed cache member (group ``<group_id>-verdicts``) is then removed ``session_timeout_ms`` after the kill
in every variant, as Kafka would.

Usage: ``.venv/bin/python bench/restart.py [--variants static,dynamic-expiry,dynamic] [--repeats 1] [--rate 0.5]
[--warm 3] [--timeout 240] [--never-secs 60] [--durable-cache] [--model DIR] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, default_model_dir, load_records, print_machine  # noqa: E402

GAP_SECS = 2.0
SESSION_TIMEOUT_MS = 10_000


def _records(seed: int = 11) -> list[dict]:
    """Short sessions (model calls stay a few seconds on CPU), 10 % anomalous."""
    normal, anomalous = load_records()
    rng = random.Random(seed)
    normal = [r for r in normal if len(r["events"]) <= 30]
    anomalous = [r for r in anomalous if len(r["events"]) <= 30]
    return [rng.choice(anomalous) if rng.random() < 0.1 else rng.choice(normal) for _ in range(5000)]


def _config(path: Path, *, bootstrap: str, topic: str, group: str, port: int, model: str, server_url: str,
            instance_id: str | None, durable_cache: bool) -> None:
    instance = f'group_instance_id = "{instance_id}"\n' if instance_id else ""
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
session_timeout_ms = {SESSION_TIMEOUT_MS}
heartbeat_interval_ms = 2000
{instance}[input]
topics = ["{topic}"]
dialect = "hdfs"
[sessions]
gap_secs = {GAP_SECS}
quiet_flush_secs = 3
[model]
backend = "vllm-server"
path = "{model}"
server_url = "{server_url}"
served_model_name = "rationad"
max_batch_size = 16
[cache]
durable = {"true" if durable_cache else "false"}
[output]
topic = "{topic}.out"
dlq_topic = "{topic}.dlq"
emit_normal = true
[delivery]
commit_interval_ms = 200
[server]
port = {port}
[log]
level = "info"
format = "json"
""")


class Stream:
    """Background producer of session bursts (wall-clock timestamps) and follower of the output topic."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.events: list[tuple[int, float]] = []  # (offset on the output topic, monotonic receive time)
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=lambda: asyncio.run(self._produce()), daemon=True),
                         threading.Thread(target=lambda: asyncio.run(self._follow()), daemon=True)]

    def start(self) -> Stream:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    async def _produce(self) -> None:
        from aiokafka import AIOKafkaProducer

        from rationad.hdfs_render import format_header, new_block_id, render_session

        recs, rng = _records(), random.Random(5)
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await p.start()
        try:
            nxt = time.monotonic()
            while not self._stop.is_set():
                rec = recs[self.sent % len(recs)]
                block, now = new_block_id(rng), time.time()
                head = format_header(now)
                batch = p.create_batch()
                for line in render_session(rec["events"], block_id=block, start_ts=now, rng=rng):
                    batch.append(key=block.encode(), value=(head + line[13:]).encode(), timestamp=None)
                batch.close()
                await (await p.send_batch(batch, self.topic, partition=self.sent % 2))
                self.sent += 1
                nxt += 1.0 / self.rate
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        finally:
            await p.stop()

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(f"{self.topic}.out", bootstrap_servers=self.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            while not self._stop.is_set():
                for recs in (await c.getmany(timeout_ms=100)).values():
                    now = time.monotonic()
                    self.events.extend((r.offset, now) for r in recs)
        finally:
            await c.stop()

    def end_offset(self) -> int:
        """The output topic's end offset (it has one partition)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def end() -> int:
            c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
            await c.start()
            try:
                tp = TopicPartition(f"{self.topic}.out", 0)
                return (await c.end_offsets([tp]))[tp]
            finally:
                await c.stop()

        return asyncio.run(end())


def _metric(port: int, name: str) -> float | None:
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _wait(cond, secs: float, alive=lambda: True, step: float = 0.1) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return True
        if not alive():
            return False
        time.sleep(step)
    return False


def run_variant(variant: str, args, broker, server, model: str, tmp: Path) -> dict:
    from rationad.broker import create_topics, free_port
    from tests.failure.support import expire_dead_members
    from tests.integration.harness import DaemonProcess

    topic = f"restart-{variant}-{uuid.uuid4().hex[:6]}"
    group = f"g-{topic}"
    asyncio.run(create_topics(broker.bootstrap, {topic: 2, f"{topic}.out": 1, f"{topic}.dlq": 1}))
    port = free_port()
    cfg = tmp / f"{topic}.toml"
    _config(cfg, bootstrap=broker.bootstrap, topic=topic, group=group, port=port, model=model, server_url=server.url,
            instance_id=f"{topic}-0" if variant == "static" else None, durable_cache=args.durable_cache)
    log = tmp / f"{topic}.log"
    daemon = DaemonProcess(cfg, log)
    stream = Stream(broker.bootstrap, topic, args.rate).start()
    out: dict = {"variant": variant}
    try:
        daemon.start()
        alive = lambda: daemon.proc.poll() is None  # noqa: E731
        if not _wait(lambda: len(stream.events) >= args.warm, args.timeout, alive, 0.5):
            raise RuntimeError(f"{variant}: fewer than {args.warm} verdicts before the kill:\n{daemon.log()[-3000:]}")
        daemon.kill()  # SIGKILL to the daemon's process group
        t_kill = time.monotonic()
        expiring = []
        groups = ([group] if variant == "dynamic-expiry" else []) + ([f"{group}-verdicts"] if args.durable_cache else [])
        if groups:  # what a Kafka broker does session_timeout_ms after the dead member's last heartbeat
            def expire() -> None:
                time.sleep(max(0.0, t_kill + SESSION_TIMEOUT_MS / 1000 - time.monotonic()))
                out["expired_members"] = expire_dead_members(broker.bootstrap, groups)

            expiring.append(threading.Thread(target=expire, daemon=True))
            expiring[0].start()
        end_at_restart = stream.end_offset()
        log_mark = log.stat().st_size
        t0 = time.monotonic()
        daemon.start()
        bound = args.never_secs if variant == "dynamic" else args.timeout
        marks: dict[str, float | None] = {"assigned": None, "ready": None, "first_verdict": None}
        deadline = t0 + bound
        while time.monotonic() < deadline and alive() and marks["first_verdict"] is None:
            now = time.monotonic() - t0
            if marks["assigned"] is None:
                with open(log, "rb") as f:
                    f.seek(log_mark)
                    if b'"partitions_assigned"' in f.read():
                        marks["assigned"] = now
            if marks["ready"] is None and _metric(port, "rationad_ready") == 1.0:
                marks["ready"] = now
            first = next((t for off, t in stream.events if off >= end_at_restart), None)
            if first is not None:
                marks["first_verdict"] = first - t0
            time.sleep(0.1)
        if not alive():
            raise RuntimeError(f"{variant}: the restarted daemon exited:\n{daemon.log()[-3000:]}")
        out.update({k: (round(v, 2) if v is not None else None) for k, v in marks.items()}, bound_secs=bound)
        for t in expiring:
            t.join(30)
    finally:
        try:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
        finally:
            stream.stop()
    fmt = lambda v: f"{v:.1f} s" if v is not None else f"none within {bound:.0f} s"  # noqa: E731
    print(f"  {variant}: restart -> partitions assigned {fmt(out['assigned'])}, ready {fmt(out['ready'])}, "
          f"first new verdict {fmt(out['first_verdict'])}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="static,dynamic-expiry,dynamic")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.5, help="sessions produced per second")
    ap.add_argument("--warm", type=int, default=3, help="verdicts to wait for before the kill")
    ap.add_argument("--timeout", type=float, default=240.0, help="bound on each wait, s")
    ap.add_argument("--never-secs", type=float, default=60.0, help="bound on the 'dynamic' variant's wait, s")
    ap.add_argument("--durable-cache", action="store_true", help="cache.durable = true (faust changelog)")
    ap.add_argument("--model")
    ap.add_argument("--json")
    args = ap.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from rationad.broker import LocalBroker
    from tests.integration.harness import VllmServer

    m = print_machine()
    model = str(args.model or default_model_dir())
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(f"model {model} (vllm-server backend); variants {variants} x {args.repeats}; {args.rate} sessions/s; "
          f"session_timeout_ms {SESSION_TIMEOUT_MS}; durable cache {'on' if args.durable_cache else 'off'}", flush=True)
    results: list[dict] = []
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="rationad-bench-restart-") as tmp:
        t = time.monotonic()
        server = VllmServer(Path(model), log_path=Path(tmp) / "vllm.log").start()
        print(f"vLLM server healthy in {time.monotonic() - t:.0f} s", flush=True)
        try:
            for i in range(args.repeats):
                for v in variants:
                    results.append(run_variant(v, args, broker, server, model, Path(tmp)) | {"repeat": i})
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "model": model, "args": vars(args),
                                               "results": results}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    main()
