"""Scale-out benchmark (issue 15, item 4): one vs two daemon replicas in one consumer group over the same topic.

One fresh noida-db broker; an input topic of ``--partitions`` (default 4) partitions, every line keyed by its block
(``input.repartition = "never"``), filled once and read from the beginning by each run under a fresh group id.
Every replica is a **separate process** (this script re-run as ``--child``): two daemons in one Python process would
share one core and one event loop, and could not show scaling. Each child builds the daemon's own ``Daemon`` from a
``Settings`` dict, runs ``Daemon._start`` (model load, producer, group join: not timed) and waits until the group has
settled (each replica holds exactly ``partitions / replicas`` partitions); the parent then writes a start time to a
"go" file that every child polls, and the clock runs from that instant.

- **ingest** (no model): each child loops the daemon's ``Daemon._consume_once`` (getmany, parse, sessionize, offsets,
  backpressure, metrics) until its partitions are read to their end offsets; every closed session is acknowledged at
  once by a task standing in for the model stage (as ``bench/ingest.py`` and ``bench/repartition.py`` do). Figure:
  all lines / (the last child's finish - go).
- **e2e** (the real model): each child runs the daemon's main loop (``Daemon._serve``: consume, sessionize, judge,
  produce verdicts, commit) with ``output.emit_normal = true``, ``sessions.quiet_flush_secs`` so every session closes
  once the input ends, and the verdict cache off (with it, two replicas' separate in-memory caches would do different
  model work than one). The parent reads the output and dead-letter topics and stops the clock when every block has a
  verdict (or a model-stage dead letter). Figure: sessions / (last verdict - go). ``--model server`` (default): one
  shared vLLM OpenAI server on CPU (``tests/integration/harness.VllmServer``, ``backend = "vllm-server"``), the
  production layout of deploy/ (daemons in front of a vLLM Service); ``--model engine``: each replica loads its own
  in-process engine (``backend = "vllm-engine"``, the default backend); with two replicas each engine's OpenMP threads
  are bound to one core of its own (``VLLM_CPU_OMP_THREADS_BIND``), one replica keeps vLLM's default binding.

Usage: ``.venv/bin/python bench/scale_out.py [--partitions 4] [--lines 400000] [--sessions 64] [--model server|engine]
[--no-ingest] [--no-e2e] [--repeats 1] [--json bench/results/scale_out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT, Acknowledger, NoModel, default_model_dir, fill_topic, mixed_records, print_machine, rendered_lines,
)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ---- child: one daemon replica -----------------------------------------------------------------------------------
async def child_main(spec: dict) -> dict:
    from rationad.config import Settings
    from rationad.daemon import Daemon

    s = Settings(**spec["settings"])
    client = None
    if spec["mode"] == "ingest":
        client = NoModel()
    elif spec.get("stub"):  # --model stub: answers at once (checks the harness; the daemon side's own ceiling)
        sys.path.insert(0, str(ROOT))
        from tests.rationad.fakes import FakeModel

        client = FakeModel()
    d = Daemon(s, client=client)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        import faulthandler

        print(f"{time.time():.3f} stop requested", file=sys.stderr, flush=True)
        if spec["mode"] == "e2e":  # the figures are taken now: a slow drain or shutdown does not hide them
            print(json.dumps({"result": {"index": spec["index"], "partitions": sorted(tp.partition for tp in d._parts),
                                         "model_calls": d.judge.model_calls,
                                         "lines": int(d.metrics.lines_parsed._value.get())}}), flush=True)
        faulthandler.dump_traceback_later(60, exit=False)  # a stop that hangs shows where, in this replica's log
        d.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    t_start = time.time()
    await d._start()
    share = spec["share"]
    deadline = time.monotonic() + 300
    stable_since = None
    while True:  # the group settles: this replica holds exactly its share, for 1 s
        if len(d._parts) == share:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                break
        else:
            stable_since = None
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {spec['index']}: no settled assignment after 300 s: {list(d._parts)}")
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": spec["index"], "partitions": sorted(tp.partition for tp in d._parts),
                      "start_secs": round(time.time() - t_start, 1)}), flush=True)
    go = Path(spec["go"])
    while not go.exists():
        await asyncio.sleep(0.005)
    t0 = float(go.read_text() or time.time())
    out: dict = {"index": spec["index"], "partitions": sorted(tp.partition for tp in d._parts)}
    if spec["mode"] == "ingest":
        ack = Acknowledger(d)  # the model stage, disabled: every closed session acknowledged at once
        ends = await d.consumer.end_offsets(list(d._parts))
        held = set(d._parts)
        parsed = d.metrics.lines_parsed._value
        rebalanced = False
        while True:
            await d._consume_once()
            if set(d._parts) != held:  # a rebalance during the timed run (a starved heartbeat): flagged, not timed
                rebalanced = True
                held = set(d._parts)
                ends.update(await d.consumer.end_offsets([tp for tp in held if tp not in ends]) if held - ends.keys()
                            else {})
            if all((p.offsets.next_offset or 0) >= ends[tp] for tp, p in d._parts.items()):
                break
        t_end = time.time()
        ack.task.cancel()
        out.update(records=sum(ends.values()), lines=int(parsed.get()), closed=ack.closed, secs=round(t_end - t0, 3),
                   rebalanced=rebalanced, t_end=t_end, load_end=_load())
        # Stay in the group until the parent has every replica's result and kills them all: a replica that left
        # on finishing would rebalance the group under one still reading its last batch.
        print(json.dumps({"result": out}), flush=True)
        while True:
            await asyncio.sleep(3600)
    else:
        code = await d._serve()  # until the parent's SIGTERM (every block judged)
        print(f"{time.time():.3f} stopped, exit code {code}", file=sys.stderr, flush=True)
        return None
    return out


def child_entry(spec_path: str) -> int:
    from rationad.logs import configure

    spec = json.loads(Path(spec_path).read_text())
    configure("warning", "json")
    out = asyncio.run(child_main(spec))
    if out is not None:
        print(json.dumps({"result": out}), flush=True)
    return 0


# ---- parent ------------------------------------------------------------------------------------------------------
def _settings(bootstrap: str, topic: str, group: str, **sections) -> dict:
    d = {
        # a long session timeout: on a loaded 2-core machine a starved replica's heartbeat must not rebalance
        # the group in the middle of a timed run
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "session_timeout_ms": 30000,
                  "heartbeat_interval_ms": 3000},
        "input": {"topics": [topic], "dialect": "hdfs", "repartition": "never"},
        "cache": {"enabled": False},
        "server": {"enabled": False},
        "output": {"topic": f"{topic}.out", "dlq_topic": f"{topic}.dlq", "emit_normal": True},
        "delivery": {"commit_interval_ms": 500},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


class Replicas:
    """``n`` child processes, each one daemon replica; stdout lines are JSON (ready, result); logs to files."""

    def __init__(self, n: int, mode: str, settings: dict, partitions: int, workdir: Path,
                 env_for=lambda i, n: {}, stub: bool = False) -> None:
        self.n, self.workdir = n, workdir
        self.go = workdir / f"go-{uuid.uuid4().hex[:6]}"
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for i in range(n):
            spec = {"mode": mode, "settings": settings, "share": partitions // n, "index": i, "go": str(self.go),
                    "stub": stub}
            sp = workdir / f"spec-{i}.json"
            sp.write_text(json.dumps(spec))
            log = workdir / f"{mode}-{n}r-{i}.log"
            self.logs.append(log)
            env = dict(os.environ, **env_for(i, n))
            self.procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(sp)],
                                               cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "ab"), env=env,
                                               text=True, start_new_session=True))

    def _line(self, i: int, key: str, timeout: float) -> dict:
        import selectors

        p = self.procs[i]
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=1.0):
                line = p.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if key in msg:
                    return msg
            elif p.poll() is not None:
                break
        tail = self.logs[i].read_text(errors="replace")[-3000:] if self.logs[i].exists() else ""
        raise RuntimeError(f"replica {i}: no '{key}' line within {timeout:.0f} s (exit {p.poll()}):\n{tail}")

    def ready(self, timeout: float) -> list[dict]:
        return [self._line(i, "ready", timeout) for i in range(self.n)]

    def start_clock(self) -> float:
        t0 = time.time()
        tmp = self.go.with_suffix(".tmp")
        tmp.write_text(repr(t0))
        tmp.rename(self.go)
        return t0

    def results(self, timeout: float) -> list[dict]:
        return [self._line(i, "result", timeout)["result"] for i in range(self.n)]

    def terminate(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(30)


def run_ingest(bootstrap: str, topic: str, partitions: int, n: int, workdir: Path) -> dict:
    group = f"so-ingest-{n}r-{uuid.uuid4().hex[:6]}"
    r = Replicas(n, "ingest", _settings(bootstrap, topic, group), partitions, workdir)
    try:
        ready = r.ready(300)
        load0 = _load()
        t0 = r.start_clock()
        try:
            res = r.results(180)
        except RuntimeError as exc:  # a replica stuck (seen once after a mid-run rebalance): the run is void
            print(f"ingest  {n} replica(s): void ({str(exc).splitlines()[0]})", flush=True)
            return {"replicas": n, "void": str(exc)[:2000], "load_start": load0, "load_end": _load()}
    finally:
        r.kill()
    if any(x.get("rebalanced") for x in res):
        print(f"ingest  {n} replica(s): void (the group rebalanced during the timed run)", flush=True)
        return {"replicas": n, "void": "rebalanced during the timed run", "load_start": load0, "load_end": _load()}
    secs = max(x["t_end"] for x in res) - t0
    lines = sum(x["lines"] for x in res)
    out = {"replicas": n, "lines": lines, "records": sum(x["records"] for x in res), "secs": round(secs, 3),
           "lines_per_s": round(lines / secs), "load_start": load0, "load_end": _load(),
           "per_replica": [{k: x[k] for k in ("index", "partitions", "lines", "secs")} for x in res],
           "start_secs": [x["start_secs"] for x in ready]}
    per = ", ".join(f"{x['lines']} in {x['secs']:.2f} s" for x in res)
    print(f"ingest  {n} replica(s): {lines} lines in {secs:.2f} s = {lines / secs:,.0f} lines/s "
          f"(per replica: {per}; load {load0} -> "
          f"{out['load_end']})", flush=True)
    return out


async def _watch_verdicts(bootstrap: str, topic: str, blocks: set[str], t0: float, timeout: float) -> dict:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(f"{topic}.out", f"{topic}.dlq", bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest")
    await c.start()
    seen: dict[str, float] = {}
    dead = 0
    try:
        while len(seen) < len(blocks) and time.time() - t0 < timeout:
            for tp, recs in (await c.getmany(timeout_ms=200)).items():
                for rec in recs:
                    if tp.topic.endswith(".dlq"):
                        dead += 1
                        h = dict(rec.headers)
                        if h.get("rationad-error-stage") != b"model":
                            continue
                    key = json.loads(rec.value)["session"]["key"]
                    if key in blocks:
                        seen.setdefault(key, time.time())
    finally:
        await c.stop()
    return {"judged": len(seen), "dead_letters": dead, "t_last": max(seen.values()) if seen else None,
            "t_first": min(seen.values()) if seen else None}


def run_e2e(bootstrap: str, topic: str, partitions: int, n: int, blocks: set[str], workdir: Path, model: dict,
            engine_binding: bool, stub: bool = False) -> dict:
    group = f"so-e2e-{n}r-{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, f"{topic}", group, model=model, sessions={"quiet_flush_secs": 2})
    settings["output"] = {"topic": f"{topic}-{group}.out", "dlq_topic": f"{topic}-{group}.dlq", "emit_normal": True}

    def env_for(i: int, n: int) -> dict:
        return {"VLLM_CPU_OMP_THREADS_BIND": str(i)} if engine_binding and n > 1 else {}

    r = Replicas(n, "e2e", settings, partitions, workdir, env_for=env_for, stub=stub)
    try:
        ready = r.ready(600)
        load0 = _load()
        t0 = r.start_clock()
        w = asyncio.run(_watch_verdicts(bootstrap, f"{topic}-{group}", blocks, t0, 1200))
        load1 = _load()
        r.terminate()
        res = r.results(60)
        t_stop = time.monotonic()
        stopped = []
        for p in r.procs:  # how long each replica takes to drain and stop (not part of the figure)
            try:
                p.wait(max(1.0, 120 - (time.monotonic() - t_stop)))
                stopped.append(round(time.monotonic() - t_stop, 1))
            except subprocess.TimeoutExpired:
                stopped.append(None)
    finally:
        r.kill()
    if w["judged"] < len(blocks):
        raise RuntimeError(f"e2e {n} replica(s): {w['judged']}/{len(blocks)} blocks judged within 1200 s")
    secs = w["t_last"] - t0
    out = {"replicas": n, "sessions": len(blocks), "secs": round(secs, 2), "sessions_per_s": round(len(blocks) / secs, 3),
           "first_verdict_secs": round(w["t_first"] - t0, 2), "dead_letters": w["dead_letters"],
           "model_calls": [x.get("model_calls") for x in res], "lines": [x.get("lines") for x in res],
           "partitions": [x["partitions"] for x in res], "start_secs": [x["start_secs"] for x in ready],
           "load_start": load0, "load_end": load1, "stop_secs": stopped}
    print(f"e2e     {n} replica(s): {len(blocks)} sessions in {secs:.1f} s = {len(blocks) / secs:.3f} sessions/s "
          f"(first verdict at {out['first_verdict_secs']} s; model calls per replica {out['model_calls']}; "
          f"start {out['start_secs']} s; load {load0} -> {load1})", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--lines", type=int, default=400_000, help="ingest: lines in the topic")
    ap.add_argument("--sessions", type=int, default=64, help="e2e: HDFS blocks (sessions) in the topic")
    ap.add_argument("--anomalous-share", type=float, default=0.1)
    ap.add_argument("--model", choices=["server", "engine", "stub"], default="server")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-ingest", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "scale_out.json"))
    args = ap.parse_args()
    if args.child:
        return child_entry(args.child)
    assert args.partitions % 2 == 0, "the partitions must split evenly over two replicas"

    from rationad.broker import LocalBroker, create_topics

    m = print_machine()
    report: dict = {"machine": m, "args": {k: v for k, v in vars(args).items() if k != "child"},
                    "command": "bench/scale_out.py " + " ".join(sys.argv[1:])}
    workdir = Path(tempfile.mkdtemp(prefix="rationad-scale-out-"))
    print(f"child logs: {workdir}", flush=True)
    broker = LocalBroker().start()
    server = None
    try:
        if not args.no_ingest:
            topic = "so-ingest"
            asyncio.run(create_topics(broker.bootstrap, {topic: args.partitions}))
            n = asyncio.run(fill_topic(broker.bootstrap, topic, rendered_lines(mixed_records(10**9, 0.03)),
                                       args.partitions, args.lines, with_keys=True))
            print(f"ingest: {n} rendered HDFS lines keyed by block in '{topic}' ({args.partitions} partitions)",
                  flush=True)
            runs = []
            for _ in range(args.repeats):
                for k in (1, 2):
                    runs.append(run_ingest(broker.bootstrap, topic, args.partitions, k, workdir))
            import statistics

            one = [x["lines_per_s"] for x in runs if x["replicas"] == 1 and "void" not in x]
            two = [x["lines_per_s"] for x in runs if x["replicas"] == 2 and "void" not in x]
            report["ingest"] = {"runs": runs, "best_1": max(one), "best_2": max(two),
                                "ratio_best": round(max(two) / max(one), 3), "median_1": statistics.median(one),
                                "median_2": statistics.median(two),
                                "ratio_median": round(statistics.median(two) / statistics.median(one), 3)}
            print(f"ingest ratio (two replicas / one): best {report['ingest']['ratio_best']:.2f}, median "
                  f"{report['ingest']['ratio_median']:.2f} ({len(one)} and {len(two)} valid runs)", flush=True)
        if not args.no_e2e:
            topic = "so-e2e"
            asyncio.run(create_topics(broker.bootstrap, {topic: args.partitions}))
            recs = list(mixed_records(args.sessions, args.anomalous_share, seed=11))
            lines = list(rendered_lines(recs, seed=11))
            blocks = {b for b, _l, _lab in lines}
            asyncio.run(fill_topic(broker.bootstrap, topic, iter(lines), args.partitions, len(lines), with_keys=True))
            print(f"e2e: {len(blocks)} HDFS blocks ({len(lines)} lines) keyed by block in '{topic}'", flush=True)
            model_dir = default_model_dir()
            if args.model == "server":
                sys.path.insert(0, str(ROOT))
                from tests.integration.harness import VllmServer

                t = time.monotonic()
                server = VllmServer(model_dir, log_path=workdir / "vllm-server.log").start()
                print(f"vLLM server up in {time.monotonic() - t:.0f} s at {server.url} (log {server.log_path})",
                      flush=True)
                model = {"backend": "vllm-server", "path": str(model_dir), "server_url": server.url,
                         "served_model_name": "rationad"}
            else:
                model = {"backend": "vllm-engine", "path": str(model_dir)}
            stub = args.model == "stub"
            runs = []
            for _ in range(args.repeats):
                for k in (1, 2):
                    runs.append(run_e2e(broker.bootstrap, topic, args.partitions, k, blocks, workdir, model,
                                        engine_binding=args.model == "engine", stub=stub))
            one = max(x["sessions_per_s"] for x in runs if x["replicas"] == 1)
            two = max(x["sessions_per_s"] for x in runs if x["replicas"] == 2)
            report["e2e"] = {"model": args.model, "runs": runs, "best_1": one, "best_2": two,
                             "ratio": round(two / one, 3)}
            print(f"e2e ratio (two replicas / one, best of {args.repeats}, model {args.model}): {two / one:.2f}",
                  flush=True)
    finally:
        if server is not None:
            server.stop()
        try:
            broker.close()
        except subprocess.TimeoutExpired:
            broker.proc.wait(120)
            broker.close()
    report["load_end"] = _load()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
