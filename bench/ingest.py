"""Ingest benchmark: lines/s of the daemon's ingest path beside a plain aiokafka consumer, on the same topic, in the
same run (goal: daemon / plain >= 0.8), and beside a faust-streaming agent doing the same per-line work.

What is measured (all on one topic of rendered HDFS lines, ``--partitions`` partitions, read from the beginning):

- **plain**: ``AIOKafkaConsumer.getmany(max_records=5000)`` in a loop, counting records; no processing.
- **daemon**: the daemon's own ``Daemon._consume_once`` (the real code: ``getmany``, ``dialects`` parse of every
  record, ``windows.Sessionizer.add`` of every line, ``tick`` per batch, offset tracking, backpressure check,
  metrics). The model stage is replaced by a task that acknowledges every closed session at once (no model, no
  produce), so this is ingest + parse + sessionize only. Offset commits are not included (they are timer-driven and
  off the per-line path).
- **parse**: the plain loop plus ``Parser.parse`` only (a diagnostic: how much of the daemon's cost is parsing).
- **faust**: a faust-streaming worker whose agent parses and sessionizes per event (``stream.events()``), and with
  ``stream.take(5000)`` batches (``--faust-take``); timed from its first record (start-up excluded).
  The pass runs under the daemon's garbage-collection policy (``rationad.daemon.collect_less``, set by
  ``Daemon._start``: start-up objects frozen, young collections every 50,000 allocations).
- **floor** (``--floor``, diagnostic): the least any ingest that holds one Python line object per line in its open
  session must do: ``getmany``, decode each value, find its block id with one regex search, build a ``LogLine``,
  append it to its key's list; no header or time parsing, no windowing, under the daemon's collector policy. Its
  ratio to plain bounds what a redesign of the per-line path (lazy parsing, BENCHMARKS.md section 1) could reach.
- **daemon-gc-default** / **daemon-gc-off** (``--gc default|off``, diagnostics, not how the daemon runs): the daemon
  pass under CPython's default collector thresholds (the daemon before that policy), or with the cyclic collector
  disabled during the pass: the most any GC policy of the process could give.

Each pass reports wall-clock lines/s (the figures the goal is stated in) and lines per second of this process's CPU
time (``time.process_time``; the broker runs in another process): on a shared machine the CPU ratio moves less with
the load than the wall-clock one. Both ratios are printed.

Usage: ``.venv/bin/python bench/ingest.py [--lines 1000000] [--partitions 2] [--gap-secs S] [--quick]``.
A fresh noida-db broker with its own data dir is started and deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Acknowledger, NoModel, Timer, fill_topic, mixed_records, print_machine, rendered_lines

FETCH_BYTES = 4 * 1024 * 1024  # the daemon's max_partition_fetch_bytes
MAX_RECORDS = 5_000  # the daemon's default kafka.fetch_max_records


async def _consumer(bootstrap: str, topic: str, partitions: int):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=FETCH_BYTES)
    await c.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    ends = await c.end_offsets(tps)
    return c, tps, sum(ends.values())


async def _pass(bootstrap: str, topic: str, partitions: int, path: str, handle) -> dict:
    """Read the whole topic with ``getmany``; ``handle(tp, records)`` returns the lines it made of one batch."""
    c, _, total = await _consumer(bootstrap, topic, partitions)
    n = lines = 0
    try:
        cpu0 = time.process_time()
        with Timer() as t:
            while n < total:
                for tp, recs in (await c.getmany(timeout_ms=200, max_records=MAX_RECORDS)).items():
                    n += len(recs)
                    lines += handle(tp, recs)
        cpu = time.process_time() - cpu0
    finally:
        await c.stop()
    return {"path": path, "records": n, "lines": lines, "secs": t.secs, "lines_per_s": lines / t.secs,
            "cpu_secs": cpu, "lines_per_cpu_s": lines / cpu}


async def run_plain(bootstrap: str, topic: str, partitions: int) -> dict:
    return await _pass(bootstrap, topic, partitions, "plain", lambda tp, recs: len(recs))


async def run_parse_only(bootstrap: str, topic: str, partitions: int) -> dict:
    from rationad.config import InputConfig
    from rationad.dialects import BadRecord, make_parser

    parse = make_parser(InputConfig(dialect="hdfs")).parse

    def handle(tp, recs) -> int:
        lines = 0
        for r in recs:
            try:
                lines += len(parse(r.value, topic=tp.topic, partition=tp.partition, offset=r.offset))
            except BadRecord:
                pass
        return lines

    return await _pass(bootstrap, topic, partitions, "parse", handle)


async def run_floor(bootstrap: str, topic: str, partitions: int) -> dict:
    import gc

    from rationad.daemon import collect_less
    from rationad.dialects import _BLOCK
    from rationad.records import LogLine

    held: dict[str, list] = {}
    search = _BLOCK.search

    def handle(tp, recs) -> int:
        topic_, part = tp.topic, tp.partition
        for r in recs:
            text = r.value.decode("utf-8")
            m = search(text)
            key = m[0] if m is not None else ""
            line = LogLine(key, text, text, 0.0, topic_, part, r.offset)
            slot = held.get(key)
            if slot is None:
                held[key] = [line]
            else:
                slot.append(line)
        return len(recs)

    saved = gc.get_threshold()
    collect_less()  # as the daemon runs
    try:
        r = await _pass(bootstrap, topic, partitions, "floor", handle)
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
    return {**r, "keys_held": len(held)}


async def run_daemon(bootstrap: str, topic: str, partitions: int, gap_secs: float | None,
                     gc_mode: str | None = None) -> dict:
    from rationad.config import Settings
    from rationad.daemon import Daemon

    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": "bench"},
        input={"topics": [topic], "dialect": "hdfs", "repartition": "never"},  # the session path (input keyed)
        sessions={"gap_secs": gap_secs} if gap_secs else {},
        server={"enabled": False},
    )
    d = Daemon(settings, client=NoModel())
    c, tps, total = await _consumer(bootstrap, topic, partitions)
    d.consumer = c
    d._on_assigned(tps)
    ack = Acknowledger(d)  # the model stage, disabled: every closed session acknowledged at once
    parts = list(d._parts.values())
    import gc

    from rationad.daemon import collect_less

    saved = gc.get_threshold()
    if gc_mode is None:
        collect_less()  # as Daemon._start sets it: this is how the daemon runs
    elif gc_mode == "off":
        gc.disable()
    # "default": CPython's own thresholds, nothing frozen (the daemon before issue 15's policy)
    try:
        cpu0 = time.process_time()
        with Timer() as t:
            while sum(p.offsets.next_offset or 0 for p in parts) < total:
                await d._consume_once()
            await asyncio.sleep(0)
        cpu = time.process_time() - cpu0
    finally:
        gc.unfreeze()
        gc.enable()
        gc.set_threshold(*saved)
        ack.task.cancel()
        await c.stop()
    lines = int(d.metrics.lines_parsed._value.get())
    open_now = sum(p.sessionizer.open_count for p in parts)
    return {"path": f"daemon-gc-{gc_mode}" if gc_mode else "daemon", "records": total, "lines": lines, "secs": t.secs,
            "lines_per_s": lines / t.secs, "cpu_secs": cpu, "lines_per_cpu_s": lines / cpu,
            "sessions_closed": ack.closed, "sessions_open_at_end": open_now}


def run_faust(bootstrap: str, topic: str, lines: int, mode: str, gap_secs: float | None, max_secs: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="rationad-bench-faust-"))
    result = tmp / "result.json"
    cmd = [sys.executable, str(ROOT / "bench" / "_faust_ingest.py"), "--bootstrap", bootstrap, "--topic", topic,
           "--lines", str(lines), "--mode", mode, "--max-secs", str(max_secs), "--result", str(result),
           "--datadir", str(tmp / "data")]
    if gap_secs:
        cmd += ["--gap-secs", str(gap_secs)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max_secs + 120, cwd=tmp)
        if result.is_file():
            r = json.loads(result.read_text())
            return {"path": f"faust-{mode}", "records": r["records"], "lines": r["lines"], "secs": r["secs"],
                    "lines_per_s": r["lines"] / r["secs"], "partial": r["partial"]}
        return {"path": f"faust-{mode}", "error": (out.stdout + out.stderr)[-1500:]}
    except subprocess.TimeoutExpired as exc:
        return {"path": f"faust-{mode}", "error": f"timed out: {str(exc.stdout)[-500:]}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"  {r['path']:<12} ERROR {r['error']}"
    extra = "".join(f", {k}={r[k]}" for k in ("sessions_closed", "sessions_open_at_end", "keys_held", "partial")
                    if k in r)
    cpu = f" ({r['lines_per_cpu_s']:>9,.0f} per CPU s)" if "lines_per_cpu_s" in r else ""
    return (f"  {r['path']:<12} {r['lines']:>9,} lines in {r['secs']:7.2f} s = {r['lines_per_s']:>10,.0f} lines/s"
            f"{cpu}{extra}")


async def amain(args) -> dict:
    from rationad.broker import LocalBroker, create_topics

    m = print_machine()
    n_sessions = args.lines // 18 + 1000  # about 18.8 lines a session
    topic = "bench-ingest"
    results: list[dict] = []
    with LocalBroker() as broker:
        await create_topics(broker.bootstrap, {topic: args.partitions})
        with Timer() as t:
            produced = await fill_topic(broker.bootstrap, topic, rendered_lines(mixed_records(n_sessions, 0.03)),
                                        args.partitions, args.lines)
        print(f"produced {produced:,} rendered HDFS lines into {args.partitions} partitions in {t.secs:.1f} s "
              f"(broker data dir {broker.data_dir}, deleted afterwards)", flush=True)
        passes = [lambda: run_plain(broker.bootstrap, topic, args.partitions),
                  lambda: run_daemon(broker.bootstrap, topic, args.partitions, args.gap_secs),
                  lambda: run_parse_only(broker.bootstrap, topic, args.partitions)]
        if args.gc:
            passes.append(lambda: run_daemon(broker.bootstrap, topic, args.partitions, args.gap_secs,
                                             gc_mode=args.gc))
        if args.floor:
            passes.append(lambda: run_floor(broker.bootstrap, topic, args.partitions))
        for rep in range(args.repeats):
            for fn in passes:
                r = await fn()
                r["repeat"] = rep
                results.append(r)
                print(_fmt(r), flush=True)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            r = await run_daemon(broker.bootstrap, topic, args.partitions, args.gap_secs)
            prof.disable()
            print(f"\nprofile of one daemon pass (cProfile, {r['lines_per_s']:,.0f} lines/s under the profiler):")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        if not args.no_faust:
            modes = ["events"] + (["take"] if args.faust_take else [])
            for mode in modes:
                r = await asyncio.to_thread(run_faust, broker.bootstrap, topic, produced, mode, args.gap_secs,
                                            args.faust_max_secs)
                results.append(r)
                print(_fmt(r), flush=True)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for r in results:
        if "lines_per_s" in r:
            best[r["path"]] = max(best.get(r["path"], 0.0), r["lines_per_s"])
        if "lines_per_cpu_s" in r:
            best_cpu[r["path"]] = max(best_cpu.get(r["path"], 0.0), r["lines_per_cpu_s"])
    ratio = best["daemon"] / best["plain"]
    ratio_cpu = best_cpu["daemon"] / best_cpu["plain"]
    print(f"\nbest of {args.repeats}: plain {best['plain']:,.0f} lines/s, daemon ingest+parse+sessionize "
          f"{best['daemon']:,.0f} lines/s, parse only {best['parse']:,.0f} lines/s")
    print(f"ratio daemon/plain = {ratio:.3f} (goal >= 0.8: {'MET' if ratio >= 0.8 else 'MISSED'}; "
          f">= 0.5: {'MET' if ratio >= 0.5 else 'MISSED'})")
    print(f"per CPU second: plain {best_cpu['plain']:,.0f}, daemon {best_cpu['daemon']:,.0f} lines: "
          f"ratio {ratio_cpu:.3f}")
    if args.floor:
        print(f"diagnostic, floor (decode + key search + LogLine + hold, no parsing or windowing): "
              f"{best['floor']:,.0f} lines/s = {best['floor'] / best['plain']:.3f} of plain "
              f"({best_cpu['floor'] / best_cpu['plain']:.3f} per CPU second)")
    if args.gc:
        k = f"daemon-gc-{args.gc}"
        print(f"diagnostic, daemon with gc {args.gc}: {best[k]:,.0f} lines/s = {best[k] / best['plain']:.3f} of plain "
              f"({best_cpu[k] / best_cpu['plain']:.3f} per CPU second)")
    for k, v in best.items():
        if k.startswith("faust"):
            print(f"{k}: {v:,.0f} lines/s = {v / best['plain']:.3f} of plain, {v / best['daemon']:.3f} of the daemon")
    summary = {"machine": m, "lines": produced, "partitions": args.partitions, "gap_secs": args.gap_secs,
               "results": results, "best": best, "best_per_cpu_s": best_cpu, "ratio_daemon_plain": ratio,
               "ratio_daemon_plain_cpu": ratio_cpu}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gap-secs", type=float, default=None,
                    help="session gap; default: the hdfs dialect's (one day: every block stays open to the end)")
    ap.add_argument("--no-faust", action="store_true")
    ap.add_argument("--faust-take", action="store_true", help="also measure faust stream.take(5000) batches")
    ap.add_argument("--faust-max-secs", type=float, default=150.0)
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--profile", action="store_true", help="cProfile one extra daemon pass, print the hotspots")
    ap.add_argument("--gc", choices=["default", "off"],
                    help="diagnostic: also time the daemon pass under CPython's default GC thresholds or with the "
                         "cyclic GC disabled (not how the daemon runs)")
    ap.add_argument("--floor", action="store_true",
                    help="diagnostic: also time the least a line-object-per-line ingest must do (see the docstring)")
    ap.add_argument("--quick", action="store_true", help="100k lines, one repeat (sanity check, < 1 min)")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.repeats, args.faust_max_secs = 100_000, 1, 20.0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
