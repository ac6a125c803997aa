"""Repartitioning benchmark (issue 17): lines/s through the repartition path beside plain ingest in the same run
(goal >= 0.5), and block-level F1 on real HDFS lines produced unkeyed (repartitioned) beside keyed (goal: equal
within noise).

**Throughput** (no model; one fresh noida-db broker; the same rendered HDFS lines written twice, to two 3-partition
topics):

- **plain ingest**: the topic keyed by block id (every block on one partition), ``input.repartition = "never"``: the
  daemon's own ``Daemon._start`` (group join included, untimed) then ``Daemon._consume_once`` in a loop (getmany,
  parse, sessionize, offsets, backpressure, metrics) until every input record is consumed.
- **repartition**: the same lines unkeyed, round-robin over the 3 partitions, ``input.repartition = "always"``: the same
  start and loop, which now runs both hops in one process as the daemon does by default: forward (getmany of the
  input, parse for the keys, produce each line to ``<group_id>-repartition`` keyed by its block, hold the input offset
  until acknowledged) and the session stage (getmany of the internal topic, parse, own-key filter and duplicate check,
  sessionize), until the session stage has parsed as many lines as plain ingest did.

In both, every closed session is acknowledged at once by a task standing in for the model stage (as in
``bench/ingest.py``), and offset commits are left out (timer driven, off the per-line path). The two sides differ
only in the topic they read and ``input.repartition`` (and the group id); the script asserts it.

**F1** (the real model, served by one vLLM OpenAI server on CPU shared by every variant): ``--blocks`` complete
blocks of LogLead's real HDFS 2 % sample (``datasets/hdfs_2pct``), ``--anomalous`` of them anomalous, drawn by a seeded
SHA-256 order from the blocks the training pipeline's split puts in its *test* split (``training.splits``), every line
in the file's chronological order, byte for byte. Variants, each a fresh topic and group, the daemon in-process
(``Daemon.run()``, ``vllm-server`` backend, in-memory verdict cache, ``sessions.quiet_flush_secs`` so sessions close
once the input ends, ``output.emit_normal = true``):

- ``keyed-never``: keyed by block id (partition = crc32(block) % 3), ``repartition = "never"``;
- ``unkeyed-always``: unkeyed, round-robin over 3 partitions, ``repartition = "always"``;
- ``unkeyed-never`` (``--trap``): unkeyed round-robin, ``repartition = "never"`` (the trap: fragments).

A variant is done when the group's commits reach the end of the input (and of the internal topic); a block is
predicted anomalous when any of its events says anomalous, a block with no event counts as predicted normal (and is
reported).

Usage: ``.venv/bin/python bench/repartition.py [--lines 300000] [--repeats 2] [--blocks 48 --anomalous 12] [--trap]
[--no-f1] [--no-throughput] [--json bench/results/repartition.json] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import os
import sys
import time
import uuid
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT, Acknowledger, SHARED, NoModel, Timer, default_model_dir, mixed_records, print_machine, produce_batched,
    rendered_lines,
)

PARTITIONS = 3
HDFS_2PCT = SHARED / "datasets" / "hdfs_2pct"
# F1 variants: name -> (keyed input, input.repartition, extra [sessions] settings)
VARIANTS = {
    "keyed-never": (True, "never", {}),
    "unkeyed-always": (False, "always", {}),
    "unkeyed-never": (False, "never", {}),  # the trap: fragments
    # diagnostic: the repartition hop merges three input partitions read at different speeds, so an internal
    # partition's event time jumps back and forth; a lateness allowance wider than the sample's span (3 days) shows
    # how much of the F1 gap that reordering explains
    "unkeyed-always-lateness": (False, "always", {"allowed_lateness_secs": 259_200}),
}


@contextlib.contextmanager
def fresh_broker():
    """A fresh noida-db broker (``rationad.broker.LocalBroker``), deleted afterwards. On this loaded machine its stop
    can take longer than LocalBroker allows (15 s after SIGTERM, 5 s after SIGKILL): wait for it here instead."""
    import subprocess

    from rationad.broker import LocalBroker

    broker = LocalBroker().start()
    try:
        yield broker
    finally:
        try:
            broker.close()
        except subprocess.TimeoutExpired:
            print("noida-db did not stop within LocalBroker's 20 s; waiting up to 120 s more", flush=True)
            broker.proc.wait(120)
            broker.close()


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ---- producing --------------------------------------------------------------------------------------------------
async def produce_lines(bootstrap: str, topic: str, pairs: list[tuple[str, bytes]], *, keyed: bool) -> list[int]:
    """Every ``(block, line)`` in order: keyed (key = block, partition = crc32(block) % 3, as a keyed producer with a
    stable partitioner) or unkeyed round-robin over the partitions (as a log shipper). Returns records per partition."""
    records = ((zlib.crc32(block.encode()) % PARTITIONS, block.encode(), value) if keyed
               else (n % PARTITIONS, None, value) for n, (block, value) in enumerate(pairs))
    return await produce_batched(bootstrap, topic, records, PARTITIONS)


def _settings_dict(bootstrap: str, topic: str, group: str, mode: str, **sections) -> dict:
    d = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "input": {"topics": [topic], "dialect": "hdfs", "repartition": mode},
        "cache": {"enabled": False},
        "server": {"enabled": False},
        "output": {"topic": "bench-rp.out", "dlq_topic": "bench-rp.dlq"},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def _differ(a: dict, b: dict) -> set[str]:
    keys = {f"{s}.{k}" for s in a.keys() | b.keys() for k in a.get(s, {}).keys() | b.get(s, {}).keys()}
    return {k for k in keys if a.get(k.split(".")[0], {}).get(k.split(".")[1]) !=
            b.get(k.split(".")[0], {}).get(k.split(".")[1])}


# ---- throughput -------------------------------------------------------------------------------------------------
async def run_stage(settings_dict: dict, target_lines: int | None, records: int, timeout: float) -> dict:
    """Start the daemon's consumer side (``Daemon._start``, untimed), then time ``_consume_once`` until the input is
    consumed (``target_lines`` None) or the session stage has parsed ``target_lines`` lines."""
    from rationad.config import Settings
    from rationad.daemon import Daemon

    s = Settings(**settings_dict)
    d = Daemon(s, client=NoModel())
    await d._start()
    want = PARTITIONS * (2 if d.internal else 1)
    deadline = time.monotonic() + 60
    while len(d._parts) < want:  # group join: not timed
        if time.monotonic() > deadline:
            raise RuntimeError(f"no assignment after 60 s: {list(d._parts)}")
        await asyncio.sleep(0.05)
    ack = Acknowledger(d)  # the model stage, disabled: every closed session acknowledged at once
    parsed = d.metrics.lines_parsed._value
    inputs = [p for tp, p in d._parts.items() if tp.topic != d.internal]
    load0 = _load()
    t_forwarded = None
    try:
        with Timer() as t:
            t0 = time.perf_counter()
            while True:
                await d._consume_once()
                if target_lines is None:
                    if sum(p.offsets.next_offset or 0 for p in inputs) >= records:
                        break
                else:
                    if t_forwarded is None and d.metrics.lines_repartitioned._value.get() >= target_lines:
                        t_forwarded = time.perf_counter() - t0
                    if parsed.get() >= target_lines:
                        break
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"timed out after {timeout} s: {parsed.get():,.0f} lines parsed")
            await asyncio.sleep(0)
    finally:
        ack.task.cancel()
        for task in list(d._tasks):
            task.cancel()
        await asyncio.gather(ack.task, *d._tasks, return_exceptions=True)
        await d._shutdown()
    lines = int(parsed.get())
    out = {"mode": s.input.repartition, "topic": s.input.topics[0], "records": records, "lines": lines,
           "secs": round(t.secs, 3), "lines_per_s": round(lines / t.secs), "sessions_closed": ack.closed,
           "load_avg_1m_before": load0, "load_avg_1m_after": _load()}
    if d.internal:
        out["lines_repartitioned"] = int(d.metrics.lines_repartitioned._value.get())
        out["forward_hop_secs"] = round(t_forwarded, 3) if t_forwarded else None
        out["duplicates_dropped"] = int(d.metrics.errors.labels("repartition", "duplicate_line")._value.get())
    return out


async def throughput(args) -> dict:
    from rationad.broker import create_topics

    n_sessions = args.lines // 18 + 1000
    with Timer() as t:
        pairs = [(block, line.encode()) for block, line, _ in rendered_lines(mixed_records(n_sessions, 0.03))]
        pairs = pairs[: args.lines]
    print(f"rendered {len(pairs):,} HDFS lines ({len({b for b, _ in pairs}):,} blocks, 3 % anomalous mix) in "
          f"{t.secs:.1f} s", flush=True)
    results = []
    with fresh_broker() as broker:
        bs = broker.bootstrap
        await create_topics(bs, {"rp-keyed": PARTITIONS, "rp-unkeyed": PARTITIONS, "bench-rp.out": 1,
                                 "bench-rp.dlq": 1})
        keyed = await produce_lines(bs, "rp-keyed", pairs, keyed=True)
        unkeyed = await produce_lines(bs, "rp-unkeyed", pairs, keyed=False)
        assert sum(keyed) == sum(unkeyed) == len(pairs), (keyed, unkeyed)  # the same lines on both topics
        print(f"produced them twice: keyed by block {keyed}, unkeyed round-robin {unkeyed} (records per partition)",
              flush=True)
        for rep in range(args.repeats):
            a = _settings_dict(bs, "rp-keyed", f"plain-{rep}", "never")
            b = _settings_dict(bs, "rp-unkeyed", f"rp-{rep}", "always")
            assert _differ(a, b) == {"input.topics", "input.repartition", "kafka.group_id"}, _differ(a, b)
            ra = await run_stage(a, None, len(pairs), args.timeout)
            ra["repeat"] = rep
            results.append(ra)
            print(f"  [{rep}] plain ingest (keyed, never):       {ra['lines']:>9,} lines in {ra['secs']:7.2f} s = "
                  f"{ra['lines_per_s']:>8,} lines/s (load {ra['load_avg_1m_before']} -> {ra['load_avg_1m_after']})",
                  flush=True)
            rb = await run_stage(b, ra["lines"], len(pairs), args.timeout)
            rb["repeat"] = rep
            assert rb["lines"] == ra["lines"], (rb["lines"], ra["lines"])  # every line once, no duplicate, none lost
            results.append(rb)
            print(f"  [{rep}] repartition (unkeyed, always):    {rb['lines']:>9,} lines in {rb['secs']:7.2f} s = "
                  f"{rb['lines_per_s']:>8,} lines/s (forward hop done at {rb['forward_hop_secs']} s; "
                  f"{rb['lines_repartitioned']:,} forwarded; load {rb['load_avg_1m_before']} -> "
                  f"{rb['load_avg_1m_after']}); ratio {rb['lines_per_s'] / ra['lines_per_s']:.3f}", flush=True)
    plain = max(r["lines_per_s"] for r in results if r["mode"] == "never")
    rep_ = max(r["lines_per_s"] for r in results if r["mode"] == "always")
    pairs_ratio = [b["lines_per_s"] / a["lines_per_s"] for a, b in zip(results[::2], results[1::2])]
    ratio = rep_ / plain
    profile = None
    if args.profile:
        import cProfile
        import io
        import pstats

        with fresh_broker() as broker:  # a fresh broker: the same lines, one more repartition pass under cProfile
            bs = broker.bootstrap
            await create_topics(bs, {"rp-unkeyed": PARTITIONS, "bench-rp.out": 1, "bench-rp.dlq": 1})
            await produce_lines(bs, "rp-unkeyed", pairs, keyed=False)
            prof = cProfile.Profile()
            prof.enable()
            r = await run_stage(_settings_dict(bs, "rp-unkeyed", "rp-prof", "always"), results[0]["lines"],
                                len(pairs), args.timeout)
            prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(22)
        profile = buf.getvalue()
        print(f"\nprofile of one repartition pass (cProfile, {r['lines_per_s']:,} lines/s under the profiler):\n"
              f"{profile}", flush=True)
    print(f"best of {args.repeats}: plain ingest {plain:,} lines/s, repartition path {rep_:,} lines/s: ratio "
          f"{ratio:.3f} (per repeat {', '.join(f'{x:.3f}' for x in pairs_ratio)}; goal >= 0.5: "
          f"{'MET' if ratio >= 0.5 else 'MISSED'})", flush=True)
    return {"lines": len(pairs), "partitions": PARTITIONS, "results": results, "best_plain_lines_per_s": plain,
            "best_repartition_lines_per_s": rep_, "ratio": round(ratio, 3),
            "ratio_per_repeat": [round(x, 3) for x in pairs_ratio], "profile": profile}


# ---- F1 on real HDFS lines ---------------------------------------------------------------------------------------
def choose_blocks(n: int, anomalous: int, seed: str) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """``n`` test-split blocks of the real sample (``anomalous`` of them anomalous), all their lines in file order."""
    from training.data_hdfs import block_splits
    from training.splits import seeded_order

    test = {b: label for b, (split, label) in block_splits(HDFS_2PCT).items() if split == "test"}
    anom = seeded_order([b for b, v in test.items() if v == "anomalous"], seed)[:anomalous]
    norm = seeded_order([b for b, v in test.items() if v == "normal"], seed)[: n - anomalous]
    chosen = {b: "anomalous" for b in anom} | {b: "normal" for b in norm}
    with (HDFS_2PCT / "anomaly_label_dev.csv").open(newline="") as f:  # the labels as the file has them
        file_labels = {r["BlockId"]: r["Label"] for r in csv.DictReader(f)}
    assert all((file_labels[b] == "Anomaly") == (v == "anomalous") for b, v in chosen.items())
    import re

    blk = re.compile(rb"blk_-?\d+")
    pairs = []
    with gzip.open(HDFS_2PCT / "HDFS_2pct_dev.log.gz", "rb") as f:
        for raw in f:
            ids = {m.decode() for m in blk.findall(raw)}
            if ids & chosen.keys():
                assert ids <= chosen.keys(), ids  # the dev file names one block per line (README of the sample)
                pairs.append((min(ids), raw.rstrip(b"\r\n")))
    return chosen, pairs


async def _committed_to_end(bootstrap: str, group: str, topics: list[str]) -> tuple[bool, dict]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        got = {}
        for topic in topics:
            parts = c.partitions_for_topic(topic) or set()
            if not parts:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return False, {topic: "no partitions yet"}
            ends = await c.end_offsets(tps)
            for tp in tps:
                got[f"{topic}:{tp.partition}"] = (await c.committed(tp), ends[tp])
        done = all(cm == e or (cm is None and e == 0) for cm, e in got.values())
        return done, got
    finally:
        await c.stop()


async def _read_all(bootstrap: str, topic: str) -> list:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        await c._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out = []
        while not all([await c.position(tp) >= ends[tp] for tp in tps]):
            for recs in (await c.getmany(timeout_ms=500)).values():
                out.extend(recs)
        return out
    finally:
        await c.stop()


def _counter_total(metrics, prefix: str) -> float | None:
    """Sum of every sample of the daemon's Prometheus counters whose name starts with ``prefix`` (None if none)."""
    total, found = 0.0, False
    for fam in metrics.registry.collect():
        for smp in fam.samples:
            if smp.name.startswith(prefix) and smp.name.endswith("_total"):
                total, found = total + smp.value, True
    return total if found else None


def _scores(labels: dict[str, str], events: list[dict]) -> dict:
    pred: dict[str, bool] = {}
    for e in events:
        k = e["session"]["key"]
        pred[k] = pred.get(k, False) or e["verdict"] == "anomalous"
    tp = sum(1 for b, v in labels.items() if v == "anomalous" and pred.get(b))
    fp = sum(1 for b, v in labels.items() if v == "normal" and pred.get(b))
    fn = sum(1 for b, v in labels.items() if v == "anomalous" and not pred.get(b))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    per_block: dict[str, int] = {}
    for e in events:
        per_block[e["session"]["key"]] = per_block.get(e["session"]["key"], 0) + 1
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f1, 3), "tp": tp, "fp": fp, "fn": fn,
            "events": len(events), "blocks_with_events": len(pred), "blocks_without_event": len(labels.keys() - pred),
            "blocks_judged_in_fragments": sum(1 for n in per_block.values() if n > 1),
            "events_per_block_max": max(per_block.values(), default=0)}


async def run_variant(name: str, bootstrap: str, server_url: str, model: Path, labels: dict[str, str],
                      pairs: list[tuple[str, bytes]], *, keyed: bool, mode: str, quiet: float, timeout: float,
                      sessions: dict | None = None) -> dict:
    import orjson

    from rationad.broker import create_topics
    from rationad.config import Settings
    from rationad.daemon import Daemon

    topic = f"f1-{name}-{uuid.uuid4().hex[:6]}"
    group = f"g-{topic}"
    await create_topics(bootstrap, {topic: PARTITIONS, f"{topic}.out": 1, f"{topic}.dlq": 1})
    counts = await produce_lines(bootstrap, topic, pairs, keyed=keyed)
    sd = _settings_dict(bootstrap, topic, group, mode,
                        cache={"enabled": True, "durable": False},
                        output={"topic": f"{topic}.out", "dlq_topic": f"{topic}.dlq", "emit_normal": True},
                        sessions={"quiet_flush_secs": quiet, **(sessions or {})},
                        model={"backend": "vllm-server", "path": str(model), "server_url": server_url,
                               "served_model_name": "rationad", "max_batch_size": 16},
                        delivery={"commit_interval_ms": 200, "drain_timeout_secs": 60})
    s = Settings(**sd)
    d = Daemon(s)
    topics = [topic] + ([d.internal] if d.internal else [])
    load0 = _load()
    t0 = time.monotonic()
    task = asyncio.create_task(d.run())
    finished, state = False, {}
    try:
        while time.monotonic() - t0 < timeout:
            await asyncio.sleep(2)
            if task.done():
                break
            finished, state = await _committed_to_end(bootstrap, group, topics)
            if finished:
                break
    finally:
        secs = time.monotonic() - t0
        d.request_stop()
        rc = await asyncio.wait_for(task, 120)
    events = [orjson.loads(r.value) for r in await _read_all(bootstrap, f"{topic}.out")]
    dlq = await _read_all(bootstrap, f"{topic}.dlq")
    out = {"variant": name, "keyed": keyed, "repartition": mode, "internal_topic": d.internal,
           "records_per_partition": counts, "lines": len(pairs), "finished": finished, "exit_code": rc,
           "secs": round(secs, 1), "dead_letters": len(dlq), "load_avg_1m_before": load0,
           "load_avg_1m_after": _load(), "split_sessions_metric": int(d.metrics.split_sessions._value.get()),
           "lines_repartitioned": int(d.metrics.lines_repartitioned._value.get()),
           **_scores(labels, events)}
    by_block: dict[str, list] = {}
    for e in events:
        by_block.setdefault(e["session"]["key"], []).append(
            [e["session"]["line_count"], e["session"]["close_reason"], e["verdict"]])
    out["fragmented_blocks"] = {b: {"label": labels.get(b), "sessions": v} for b, v in by_block.items() if len(v) > 1}
    out["late_lines_metric"] = _counter_total(d.metrics, "rationad_late_lines")
    if not finished:
        out["commit_state_at_stop"] = {k: list(v) for k, v in state.items()}
    sizes = sorted(e["session"]["line_count"] for e in events)
    out["session_line_counts"] = {"min": sizes[0] if sizes else None, "median": sizes[len(sizes) // 2] if sizes else
                                  None, "max": sizes[-1] if sizes else None}
    return out


async def f1(args) -> dict:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.integration.harness import VllmServer

    labels, pairs = choose_blocks(args.blocks, args.anomalous, args.seed)
    per_block = {}
    for b, _ in pairs:
        per_block[b] = per_block.get(b, 0) + 1
    print(f"F1 input: {len(labels)} test-split blocks of the real HDFS 2 % sample "
          f"({sum(v == 'anomalous' for v in labels.values())} anomalous), {len(pairs):,} lines "
          f"(per block min {min(per_block.values())}, max {max(per_block.values())})", flush=True)
    model = default_model_dir()
    names = args.variants.split(",") if args.variants else \
        ["keyed-never", "unkeyed-always"] + (["unkeyed-never"] if args.trap else [])
    variants = [(n, *VARIANTS[n]) for n in names]
    results = []
    server = VllmServer(model)
    with Timer() as t:
        server.start(timeout=600)
    print(f"vLLM server ({model.name} -> {model}) healthy after {t.secs:.0f} s", flush=True)
    try:
        with fresh_broker() as broker:
            for name, keyed, mode, sessions in variants:
                r = await run_variant(name, broker.bootstrap, server.url, model, labels, pairs, keyed=keyed,
                                      mode=mode, quiet=args.quiet_secs, timeout=args.variant_timeout,
                                      sessions=sessions)
                results.append(r)
                print(f"  {name:<15} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} "
                      f"(tp {r['tp']} fp {r['fp']} fn {r['fn']}); {r['events']} events for "
                      f"{r['blocks_with_events']} blocks, {r['blocks_judged_in_fragments']} blocks judged in "
                      f"several sessions; finished {r['finished']} in {r['secs']} s; load {r['load_avg_1m_before']} "
                      f"-> {r['load_avg_1m_after']}", flush=True)
    finally:
        server.stop()
    return {"blocks": len(labels), "anomalous": sum(v == "anomalous" for v in labels.values()), "lines": len(pairs),
            "seed": args.seed, "model": str(model), "quiet_flush_secs": args.quiet_secs, "results": results}


async def amain(args) -> dict:
    m = print_machine()
    out: dict = {"machine": m, "argv": sys.argv[1:]}
    if not args.no_throughput:
        out["throughput"] = await throughput(args)
    if not args.no_f1:
        out["f1"] = await f1(args)
    out["load_avg_1m_at_end"] = _load()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one throughput pass may take")
    ap.add_argument("--profile", action="store_true", help="cProfile one extra repartition pass, print hotspots")
    ap.add_argument("--blocks", type=int, default=48)
    ap.add_argument("--anomalous", type=int, default=12)
    ap.add_argument("--seed", default="rationad-bench-repartition-1")
    ap.add_argument("--quiet-secs", type=float, default=5.0, help="sessions.quiet_flush_secs of the F1 runs")
    ap.add_argument("--variant-timeout", type=float, default=900.0, help="seconds one F1 variant may take")
    ap.add_argument("--trap", action="store_true", help="also unkeyed input with repartition never (fragments)")
    ap.add_argument("--variants", help=f"comma-separated F1 variants (default keyed-never,unkeyed-always): "
                    f"{', '.join(VARIANTS)}")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-f1", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="30k lines, one repeat, 8 blocks (sanity check)")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.repeats, args.blocks, args.anomalous = 30_000, 1, 8, 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
