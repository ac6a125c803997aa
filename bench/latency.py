"""Latency benchmark: p50/p99 from a session's close to its event's acknowledgement, for cache hits and misses, at
half of the measured capacity (goals on CPU: p99 <= 1 s for hits, <= 5 s for misses).

The daemon runs as ``rationad run`` (default config, in-process vLLM engine, ``emit_normal = true``) on a fresh local
broker. Sessions are rendered HDFS sessions whose lines all carry the wall-clock time at which they are produced (one
burst per session); ``sessions.gap_secs`` is 2 s, so a session closes about 2 s after its burst.

1. **Miss capacity**: a backlog of distinct sessions (distinct template views, so every one is a model call) is
   produced at once; capacity = sessions / time from the first to the last event.
2. **Misses at half capacity**: new distinct sessions arrive as a Poisson stream at half that rate.
3. **Hit capacity** and **hits at half capacity**: sessions whose views are already cached (fresh block ids, IPs,
   sizes and times; same templates and counts).

Latency is read from the daemon's ``rationad_session_latency_seconds{cache="hit"|"miss"}`` histogram (close ->
broker acknowledgement of the event), differenced per phase; quantiles are interpolated within buckets (Prometheus'
``histogram_quantile``), and the share of sessions within the goal is exact (the goals are bucket bounds). The
script also reports, from outside the daemon, last line produced -> event received (which includes the 2 s gap).

Usage: ``.venv/bin/python bench/latency.py [--phase-secs 60] [--backlog 48] [--model DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, default_model_dir, load_records, print_machine

GAP_SECS = 2.0


def _signature(events: list[str]) -> tuple:
    order: dict[str, int] = {}
    for e in events:
        order[e] = order.get(e, 0) + 1
    return tuple(order.items())


def distinct_records(seed: int = 5) -> list[dict]:
    """Session records with pairwise different template views (3 % anomalous at random order)."""
    normal, anomalous = load_records()
    rng = random.Random(seed)
    pool = rng.sample(normal, len(normal)) + rng.sample(anomalous, 2000)
    seen, out_n, out_a = set(), [], []
    for rec in pool:
        sig = _signature(rec["events"])
        if sig in seen or len(rec["events"]) > 60:
            continue
        seen.add(sig)
        (out_a if rec["label"] == "anomalous" else out_n).append(rec)
    out = out_n + out_a[: max(1, len(out_n) * 3 // 97)]
    rng.shuffle(out)
    return out


def burst(rec: dict, rng: random.Random) -> tuple[str, list[bytes]]:
    """A rendered session whose lines all carry the current wall-clock second."""
    from rationad.hdfs_render import format_header, new_block_id, render_session

    block = new_block_id(rng)
    now = time.time()
    head = format_header(now)
    lines = render_session(rec["events"], block_id=block, start_ts=now, rng=rng)
    return block, [(head + line[13:]).encode() for line in lines]


class Histogram:
    """Cumulative bucket counts of one label of a Prometheus histogram, read from ``/metrics``."""

    def __init__(self, text: str, name: str, label: str) -> None:
        self.buckets: list[tuple[float, float]] = []
        for m in re.finditer(rf'^{name}_bucket{{cache="{label}",le="([^"]+)"}} (\S+)$', text, re.MULTILINE):
            self.buckets.append((float(m.group(1)), float(m.group(2))))
        self.buckets.sort()

    def minus(self, other: Histogram) -> list[tuple[float, float]]:
        prev = dict(other.buckets)
        return [(le, c - prev.get(le, 0.0)) for le, c in self.buckets]


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lo, prev = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - prev) / max(c - prev, 1e-9))
        lo, prev = le, c
    return lo


def share_within(buckets: list[tuple[float, float]], bound: float) -> float | None:
    total = buckets[-1][1] if buckets else 0
    return dict(buckets).get(bound, 0.0) / total if total else None


class Run:
    def __init__(self, bootstrap: str, topic: str, port: int) -> None:
        self.bootstrap, self.topic, self.port = bootstrap, topic, port
        self.sent: dict[str, float] = {}
        self.recv: dict[str, float] = {}
        self.recs: dict[str, dict] = {}
        self.dead: set[str] = set()
        self.rng = random.Random(9)

    async def metrics(self) -> str:
        import httpx

        async with httpx.AsyncClient() as c:
            return (await c.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10)).text

    async def follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        # Verdict events, and model-stage dead letters (malformed answers): both end a session's journey.
        c = AIOKafkaConsumer(f"{self.topic}.out", f"{self.topic}.dlq", bootstrap_servers=self.bootstrap,
                             group_id=None, auto_offset_reset="earliest")
        await c.start()
        try:
            while True:
                for recs in (await c.getmany(timeout_ms=100)).values():
                    now = time.time()
                    for r in recs:
                        if r.key is not None:
                            self.recv.setdefault(r.key.decode(), now)
                            if r.topic.endswith(".dlq"):
                                self.dead.add(r.key.decode())
        finally:
            await c.stop()

    async def send(self, producer, rec: dict) -> str:
        block, lines = burst(rec, self.rng)
        batch = producer.create_batch()
        for v in lines:
            batch.append(key=block.encode(), value=v, timestamp=None)
        batch.close()
        part = hash(block) % 2
        await (await producer.send_batch(batch, self.topic, partition=part))
        self.sent[block] = time.time()
        self.recs[block] = rec
        return block

    async def wait_for(self, blocks: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(b in self.recv for b in blocks):
                return True
            await asyncio.sleep(0.2)
        return False

    async def capacity(self, producer, recs: list[dict], timeout: float) -> float:
        t0 = time.time()
        blocks = [await self.send(producer, r) for r in recs]
        ok = await self.wait_for(blocks, timeout)
        done = [self.recv[b] for b in blocks if b in self.recv]
        if not ok or not done:
            raise RuntimeError(f"backlog not judged in {timeout} s ({len(done)}/{len(blocks)})")
        # Sessions per second from the backlog's arrival to its last outcome (a batch finishes all at once, so the
        # spread of the outcomes alone says nothing); includes the gap wait, so it slightly underestimates.
        took = max(done) - t0
        return len(done) / took, took

    async def paced(self, producer, recs, rate: float, secs: float) -> list[str]:
        rng = random.Random(3)
        blocks, t_end, i = [], time.monotonic() + secs, 0
        nxt = time.monotonic()
        while time.monotonic() < t_end:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            blocks.append(await self.send(producer, recs[i % len(recs)]))
            i += 1
            nxt += rng.expovariate(rate)
        return blocks


def _config(path: Path, bootstrap: str, topic: str, port: int, model: str) -> None:
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "bench-latency"
[input]
topics = ["{topic}"]
dialect = "hdfs"
[sessions]
gap_secs = {GAP_SECS}
[model]
backend = "vllm-engine"
path = "{model}"
[output]
topic = "{topic}.out"
dlq_topic = "{topic}.dlq"
emit_normal = true
[server]
port = {port}
[log]
format = "json"
level = "warning"
""")


def summarize(name: str, buckets, goal: float, ext: list[float]) -> dict:
    n = int(buckets[-1][1]) if buckets else 0
    p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
    within = share_within(buckets, goal)
    ext.sort()
    e50 = ext[len(ext) // 2] if ext else None
    e99 = ext[min(len(ext) - 1, int(len(ext) * 0.99))] if ext else None
    met = within is not None and within >= 0.99
    fmt = lambda v: "n/a" if v is None else f"{v:.2f} s"
    print(f"  {name}: {n} sessions; close -> ack p50 {fmt(p50)}, p99 {fmt(p99)}; share <= {goal:g} s: "
          f"{'n/a' if within is None else f'{within:.1%}'} (goal p99 <= {goal:g} s: {'MET' if met else 'MISSED'}); "
          f"last line produced -> event received p50 {fmt(e50)}, p99 {fmt(e99)} (includes the {GAP_SECS:g} s gap)",
          flush=True)
    return {"sessions": n, "p50": p50, "p99": p99, "share_within_goal": within, "goal": goal, "met": met,
            "external_p50": e50, "external_p99": e99, "buckets": buckets}


async def amain(args) -> dict:
    from aiokafka import AIOKafkaProducer

    from rationad.broker import LocalBroker, create_topics, free_port

    m = print_machine()
    model = str(args.model or default_model_dir())
    recs = distinct_records()
    print(f"model {model}; {len(recs)} distinct session views available", flush=True)
    out: dict = {"machine": m, "model": model}
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="rationad-bench-lat-") as tmp:
        topic = "bench-latency"
        await create_topics(broker.bootstrap, {topic: 2, f"{topic}.out": 1, f"{topic}.dlq": 1})
        port = free_port()
        cfg = Path(tmp) / "c.toml"
        _config(cfg, broker.bootstrap, topic, port, model)
        log = Path(tmp) / "daemon.log"
        # The in-process engine sizes its CPU KV cache from free RAM unless told (fails on a busy machine).
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
        proc = subprocess.Popen([sys.executable, "-m", "rationad", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
        run = Run(broker.bootstrap, topic, port)
        follower = asyncio.create_task(run.follow())
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            t0 = time.monotonic()
            while "rationad_ready 1.0" not in (await _safe(run.metrics)):
                if proc.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:])
                if time.monotonic() - t0 > 900:
                    raise RuntimeError("daemon not ready in 900 s")
                await asyncio.sleep(1)
            print(f"daemon ready in {time.monotonic() - t0:.0f} s (engine start-up)", flush=True)
            warm = recs[: args.backlog]
            cap_miss, took = await run.capacity(producer, warm, 900)
            print(f"miss capacity: {cap_miss:.2f} sessions/s ({len(warm)} distinct sessions, backlog judged in "
                  f"{took:.0f} s)", flush=True)
            fresh = recs[args.backlog :]
            base = await run.metrics()
            blocks = await run.paced(producer, fresh, cap_miss / 2, args.phase_secs)
            await run.wait_for(blocks, 300)
            after = await run.metrics()
            miss_b = Histogram(after, "rationad_session_latency_seconds", "miss").minus(
                Histogram(base, "rationad_session_latency_seconds", "miss"))
            ext = [run.recv[b] - run.sent[b] for b in blocks if b in run.recv and b not in run.dead]
            print(f"({sum(b in run.dead for b in blocks)} of {len(blocks)} sessions dead-lettered: malformed answers)")
            print(f"misses at half capacity ({cap_miss / 2:.2f} sessions/s, {len(blocks)} sessions, "
                  f"{len(fresh)} distinct views left):", flush=True)
            out["miss"] = summarize("misses", miss_b, 5.0, ext)
            out["miss"].update(capacity=cap_miss, rate=cap_miss / 2)
            # Only sessions that got a verdict event are cached (a malformed answer is dead-lettered, never cached).
            cached = [rec for b, rec in run.recs.items() if b in run.recv and b not in run.dead]
            cap_hit, took = await run.capacity(producer, [cached[i % len(cached)] for i in range(args.hit_backlog)],
                                               300)
            print(f"hit capacity: {cap_hit:.1f} sessions/s ({args.hit_backlog} cached sessions in {took:.0f} s)",
                  flush=True)
            base = await run.metrics()
            blocks = await run.paced(producer, cached, cap_hit / 2, args.phase_secs)
            await run.wait_for(blocks, 300)
            after = await run.metrics()
            hit_b = Histogram(after, "rationad_session_latency_seconds", "hit").minus(
                Histogram(base, "rationad_session_latency_seconds", "hit"))
            ext = [run.recv[b] - run.sent[b] for b in blocks if b in run.recv]
            print(f"hits at half capacity ({cap_hit / 2:.1f} sessions/s, {len(blocks)} sessions):", flush=True)
            out["hit"] = summarize("hits", hit_b, 1.0, ext)
            out["hit"].update(capacity=cap_hit, rate=cap_hit / 2)
        finally:
            follower.cancel()
            await producer.stop()
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            if args.keep_log:
                Path(args.keep_log).write_bytes(log.read_bytes())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


async def _safe(fn) -> str:
    try:
        return await fn()
    except Exception:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase-secs", type=float, default=60.0)
    ap.add_argument("--backlog", type=int, default=48, help="distinct sessions for the miss-capacity backlog")
    ap.add_argument("--hit-backlog", type=int, default=2000)
    ap.add_argument("--model")
    ap.add_argument("--json")
    ap.add_argument("--keep-log")
    ap.add_argument("--quick", action="store_true", help="short phases (engine start-up still takes 1-2 min)")
    args = ap.parse_args()
    if args.quick:
        args.phase_secs, args.backlog, args.hit_backlog = 15.0, 12, 300
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
