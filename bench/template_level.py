"""Template-level judging: throughput and latency once templates are known (issue 14).

One fresh noida-db broker; ``--lines`` BGL-style lines (Loghub BGL_2k's 2,000 lines cycled, each cycle in a seeded
shuffled order so windows differ) produced unkeyed round-robin to a 2-partition topic. Two passes of the daemon's own
loop (``Daemon._start``, group join untimed, then ``Daemon._consume_once`` until every input record is consumed and
every closed window is settled), fixed windows of ``--window-lines`` lines:

- **ingest** (``judge.level = "session"``): every closed window is acknowledged at once instead of going to the model
  stage (as in ``bench/ingest.py``): the daemon's ingest + parse + window rate, the reference;
- **template** (``judge.level = "template"``): the whole template path: each line's template counted and looked up,
  new templates judged by a stub client that answers at once (so the figure is the daemon's, not the model's; a
  template costs a model call only the first time it is seen), windows decided from their templates at close and
  anomalous windows produced as events to the real broker.

Reported: lines/s of both and their ratio (goal: template within 2x of ingest), model calls (templates) per 1,000
windows, and the latency from a window's close to its decision being settled (event acknowledged, or released for a
normal window) for windows whose templates were known: p50/p99 (goal p99 <= 1 s). Cite Loghub for BGL_2k.

Usage: ``.venv/bin/python bench/template_level.py [--lines 100000] [--window-lines 100] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, NoModel, print_machine, produce_batched

from rationad.model.base import Completion

BGL_2K = SHARED / "datasets" / "loghub" / "BGL_2k.log"
PARTITIONS = 2
NORMAL = "<think>L1 x1 routine kernel message; nothing failed.</think>\n<answer>normal</answer>"
ANOMALOUS = "<think>L1 x1 FATAL: the node reports a failure.</think>\n<answer>anomalous</answer>"


class StubClient(NoModel):
    """Answers at once (templates with FATAL/FAILURE/ERROR/SEVERE anomalous); counts the prompts it was asked. Since
    2026-12-07 the bgl dialect gives the content alone, without BGL's level word, so fewer templates carry these
    words than when section 8 was measured (its stub flagged every FATAL line)."""

    name = "stub"

    def __init__(self) -> None:
        self.prompts = 0

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        self.prompts += len(conversations)
        out = []
        for c in conversations:
            text = c[-1]["content"]
            bad = any(w in text for w in ("FATAL", "FAILURE", "ERROR", "SEVERE"))
            out.append(Completion(ANOMALOUS if bad else NORMAL, 10, 10))
        return out


def stream(n: int, seed: int = 7) -> list[bytes]:
    lines = [ln.rstrip("\n").encode() for ln in BGL_2K.open(errors="replace") if ln.strip()]
    rng = random.Random(seed)
    out: list[bytes] = []
    while len(out) < n:
        cycle = lines[:]
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    await produce_batched(bootstrap, topic, ((n % PARTITIONS, None, v) for n, v in enumerate(values)), PARTITIONS)


class Latencies:
    """Stands in for the end-to-end latency histogram: keeps every observation."""

    def __init__(self) -> None:
        self.values: list[tuple[float, float]] = []  # (when observed, seconds)

    def labels(self, *a):
        return self

    def observe(self, v: float) -> None:
        self.values.append((time.perf_counter(), v))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def run_pass(bootstrap: str, topic: str, level: str, records: int, window_lines: int) -> dict:
    from rationad.config import Settings
    from rationad.daemon import Daemon

    group = f"{level}-{os.getpid()}-{time.time_ns()}"
    s = Settings(kafka={"bootstrap_servers": bootstrap, "group_id": group},
                 input={"topics": [topic], "dialect": "bgl"},
                 judge={"level": level, "labels_topic": f"{topic}.labels", "templates_topic": f"{topic}.templates"},
                 sessions={"mode": "fixed", "window_lines": window_lines},
                 model={"batch_wait_ms": 5},
                 cache={"durable": False}, server={"enabled": False},
                 output={"topic": f"{topic}.out", "dlq_topic": f"{topic}.dlq"},
                 delivery={"max_pending_sessions": 4096})
    client = StubClient()
    d = Daemon(s, client=client)
    lat = Latencies()
    d.metrics.end_to_end_latency = lat
    await d._start()
    deadline = time.monotonic() + 60
    while len(d._parts) < PARTITIONS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no assignment after 60 s: {list(d._parts)}")
        await asyncio.sleep(0.05)
    if level == "template":
        workers = [asyncio.create_task(d.stage.run())]
    else:
        async def acknowledge() -> None:  # the model stage, disabled: each closed window acknowledged at once
            while True:
                p = await d.stage.queue.get()
                p.hold.release()

        workers = [asyncio.create_task(acknowledge())]
    parts = list(d._parts.values())
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    half_t = None
    try:
        while True:
            await d._consume_once()
            consumed = sum(p.offsets.next_offset or 0 for p in parts)
            if half_t is None and consumed >= records // 2:
                half_t, half_n = time.perf_counter(), consumed
            if consumed >= records and d.delivery.held == 0:
                break
        elapsed = time.perf_counter() - t0
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        d.request_stop()
        await d._drain()
        await d._shutdown()
    windows = int(sum(d.metrics.sessions_closed.labels(r)._value.get() for r in ("window_full",)))
    out = {"level": level, "lines": records, "secs": round(elapsed, 3), "lines_per_s": round(records / elapsed),
           "steady_lines_per_s": round((records - half_n) / (t0 + elapsed - half_t)) if half_t else None,
           "windows_closed": windows, "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    steady = [v for t, v in lat.values if half_t is not None and t >= half_t]
    if level == "template":
        known = d.metrics.windows_decided.labels("known")._value.get()
        waited = d.metrics.windows_decided.labels("waited")._value.get()
        out |= {"templates": len(d.templates.book), "model_calls": client.prompts,
                "model_calls_per_1000_windows": round(1000 * client.prompts / max(windows, 1), 1),
                "windows_decided_at_close": int(known), "windows_waited": int(waited),
                "events": int(d.metrics.events_produced.labels("anomalous")._value.get()),
                # the second half of the stream: every template known by then (the first cycle of 2,000 lines)
                "latency_known_p50_s": _pct(steady, 0.5), "latency_known_p99_s": _pct(steady, 0.99),
                "latency_samples": len(steady), "latency_all_p99_s": _pct([v for _, v in lat.values], 0.99)}
    return out


async def main_async(args) -> dict:
    from rationad.broker import LocalBroker, create_topics

    values = stream(args.lines)
    with LocalBroker() as broker:
        topic = "tpl-bench"
        await create_topics(broker.bootstrap, {topic: PARTITIONS, f"{topic}.out": 1, f"{topic}.dlq": 1})
        await produce(broker.bootstrap, topic, values)
        print(f"produced {len(values):,} BGL_2k lines (cycled, shuffled per cycle) to {PARTITIONS} partitions")
        results = []
        for level in ("session", "template"):
            r = await run_pass(broker.bootstrap, topic, level, len(values), args.window_lines)
            print(json.dumps(r), flush=True)
            results.append(r)
    ingest, template = results
    ratio = template["lines_per_s"] / ingest["lines_per_s"]
    print(f"template level {template['lines_per_s']:,} lines/s vs ingest {ingest['lines_per_s']:,} lines/s: "
          f"ratio {ratio:.2f} (goal: within 2x, >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'}); "
          f"{template['model_calls']} model calls for {template['windows_closed']} windows; "
          f"p99 close -> settled {template['latency_known_p99_s']} s (goal <= 1 s)")
    return {"ingest": ingest, "template": template, "ratio": round(ratio, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000, help="lines in the stream (BGL_2k cycled)")
    ap.add_argument("--window-lines", type=int, default=100, help="fixed window size in lines")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    info = print_machine()
    res = asyncio.run(main_async(args))
    res |= {"machine": info, "argv": sys.argv}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
