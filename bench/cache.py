"""Cache benchmark: model calls per 1,000 sessions over a long HDFS stream, through the daemon's ``Judge`` with its
verdict cache on (goal: <= 20 in steady state).

The stream: sessions drawn from the shared HDFS session set in the real stream's mix (each session anomalous with
probability 3 %, drawn with replacement from the 4,466 normal and 17,434 anomalous records), rendered to raw lines
with fresh block ids, IPs, sizes and times, parsed by the daemon's hdfs parser; the Judge sees them in batches of
``model.max_batch_size`` like the daemon. A second stream, ``--real-2pct``, is the real raw HDFS sample
(``datasets/hdfs_2pct``, 8,051 blocks, 3 % anomalous) sessionized by block.

Counting: for the long stream the model client is a counting stub that answers every prompt with a fixed
well-formed completion (only the *number* of model calls is measured; a hit or a miss depends only on the prompt,
never on the model's answer, except that malformed answers are not cached). ``--real N`` (on by default with 200
sessions, off in ``--quick``) then runs the first N sessions through the real vLLM engine with the same cache and
reports both counts side by side: they are equal when the real model's answers are well formed.

Usage: ``.venv/bin/python bench/cache.py [--sessions 50000] [--real 200] [--real-2pct] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, build_sessions, default_model_dir, mixed_records, print_machine

WINDOW = 1_000
BATCH = 32  # model.max_batch_size default


class CountingClient:
    """A model client that only counts: every prompt gets one fixed well-formed completion."""

    name = "counting-stub"

    def __init__(self) -> None:
        self.calls = 0

    async def start(self) -> None: ...

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        from rationad.model.base import Completion

        self.calls += len(conversations)
        return [Completion("<think>L1 is routine block traffic.</think>\n<answer>normal</answer>", 0, 0)
                for _ in conversations]

    async def check_health(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def aclose(self) -> None: ...


async def run_stream(sessions, client, *, window: int = WINDOW, max_entries: int = 100_000) -> dict:
    from rationad.cache import VerdictCache
    from rationad.config import ModelConfig
    from rationad.judge import Judge

    cfg = ModelConfig(backend="vllm-engine", path=None) if not hasattr(client, "path") else client.cfg
    cache = VerdictCache(max_entries)
    judge = Judge(client, cfg, "hdfs", cache=cache)
    curve, calls_before, n, mark = [], 0, 0, 0
    verdicts = []
    t0 = time.perf_counter()
    for i in range(0, len(sessions), BATCH):
        res = await judge.judge_many(sessions[i : i + BATCH])
        verdicts.extend(j.answer.verdict for j in res)
        n += len(res)
        if n - mark >= window or n == len(sessions):  # windows of ~``window`` sessions (batches of 32)
            curve.append({"sessions": n, "window_sessions": n - mark, "calls_in_window": judge.model_calls - calls_before,
                          "calls_total": judge.model_calls, "cache_entries": len(cache)})
            calls_before, mark = judge.model_calls, n
    return {"sessions": n, "model_calls": judge.model_calls, "hits": cache.hits, "misses": cache.misses,
            "entries": len(cache), "curve": curve, "secs": time.perf_counter() - t0, "verdicts": verdicts}


def sessions_2pct() -> list:
    """Real HDFS blocks of the 2 % sample, one session per block in order of first appearance."""
    from rationad.config import InputConfig
    from rationad.dialects import BadRecord, make_parser
    from rationad.records import Session

    parser = make_parser(InputConfig(dialect="hdfs"))
    by_key: dict[str, list] = {}
    with gzip.open(SHARED / "datasets" / "hdfs_2pct" / "HDFS_2pct_dev.log.gz", "rb") as f:
        for off, raw in enumerate(f):
            try:
                for line in parser.parse(raw.rstrip(b"\n"), topic="hdfs2pct", offset=off):
                    by_key.setdefault(line.key, []).append(line)
            except BadRecord:
                continue
    return [Session(key=k, lines=v, close_reason="gap", topic="hdfs2pct") for k, v in by_key.items()]


def _report(title: str, r: dict) -> None:
    per = [c["calls_in_window"] * 1000 / c["window_sessions"] for c in r["curve"]]
    tail = per[len(per) // 2 :] or per
    steady = sum(tail) / len(tail)
    r["steady_calls_per_1000"] = steady
    print(f"{title}: {r['sessions']:,} sessions, {r['model_calls']:,} model calls "
          f"({r['model_calls'] * 1000 / r['sessions']:.1f} per 1,000 overall), cache hits {r['hits']:,}, "
          f"entries {r['entries']:,}")
    print("  calls per 1,000 sessions, window by window: " + " ".join(f"{p:.0f}" for p in per[:60])
          + (" ..." if len(per) > 60 else ""))
    print(f"  steady state (mean of the second half of the windows): {steady:.1f} per 1,000 "
          f"(goal <= 20: {'MET' if steady <= 20 else 'MISSED'})", flush=True)


async def amain(args) -> dict:
    m = print_machine()
    out: dict = {"machine": m}
    t0 = time.perf_counter()
    sessions = build_sessions(list(mixed_records(args.sessions, 0.03, seed=3)), seed=3)
    print(f"rendered and parsed {len(sessions):,} sessions ({sum(len(s.lines) for s in sessions):,} lines, "
          f"{sum(s.label == 'anomalous' for s in sessions):,} anomalous) in {time.perf_counter() - t0:.0f} s",
          flush=True)
    stub = await run_stream(sessions, CountingClient())
    stub.pop("verdicts")
    _report("rendered stream, counting stub", stub)
    out["stub"] = stub
    if args.real_2pct:
        real = sessions_2pct()
        r = await run_stream(real, CountingClient())
        r.pop("verdicts")
        _report("real HDFS 2% sample (8,051 blocks), counting stub", r)
        out["hdfs_2pct"] = r
    if args.real:
        from rationad.config import ModelConfig
        from rationad.model.engine import EngineClient

        part = sessions[: args.real]
        stub_part = await run_stream(part, CountingClient(), window=100)
        cfg = ModelConfig(backend="vllm-engine", path=str(default_model_dir()))
        client = EngineClient(cfg)
        await client.start()
        client.path = cfg.path
        try:
            real = await run_stream(part, client, window=100)
        finally:
            await client.aclose()
        malformed = sum(v is None for v in real["verdicts"])
        real.pop("verdicts")
        stub_part.pop("verdicts")
        print(f"first {len(part)} sessions: counting stub {stub_part['model_calls']} model calls / "
              f"{stub_part['hits']} hits; real vLLM engine ({cfg.path.name}) {real['model_calls']} model calls / "
              f"{real['hits']} hits, {malformed} malformed answers (retried once, never cached); "
              f"windows of 100: stub {[c['calls_in_window'] for c in stub_part['curve']]}, "
              f"real {[c['calls_in_window'] for c in real['curve']]}", flush=True)
        out["real_check"] = {"sessions": len(part), "stub": stub_part, "real": real, "malformed": malformed}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50_000)
    ap.add_argument("--real", type=int, default=200, help="sessions to re-run through the real model (0: none)")
    ap.add_argument("--real-2pct", action="store_true", help="also the real raw HDFS 2%% sample")
    ap.add_argument("--quick", action="store_true", help="5,000 sessions, no real-model pass")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.real = 5_000, 0
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
