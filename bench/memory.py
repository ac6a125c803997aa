"""Memory benchmark: RSS of the Sessionizer with 100k open sessions, and of ``rationad run`` fed 100k whole sessions.

1. **Sessionizer** (in a fresh child process per fill level): rendered HDFS sessions are parsed by the real
   ``dialects`` parser and added to one ``windows.Sessionizer`` with the hdfs dialect's defaults (a block stays
   open for a day of event time, so every session stays open: the Sessionizer alone has no byte budget); RSS
   (``/proc/self/statm``) is read before and after, beside ``Sessionizer.open_bytes``, the estimate the daemon's
   byte budget counts. Fill levels: the first line of each session, the first 5 lines, and whole sessions.
2. **Daemon process** (``--daemon``): ``rationad run`` (backend vllm-server, no model runs in the process; default
   settings, so ``delivery.max_open_bytes`` = 256 MiB evicts the oldest open sessions, reason "evicted") consumes the
   same 100k whole sessions (about 2M lines) from a fresh local broker, once per setup, each with its own topic and
   group; the lines are produced while it runs, at most 100,000 ahead of what it has parsed (see ``feed``):

   - ``down``: the model server's URL is a closed port. Evicted sessions wait for a verdict (pending) and, at
     ``delivery.max_pending_sessions`` = 512, backpressure pauses consumption: the daemon stops reading long before
     the 100k sessions, which is what it does in production while the model is down.
   - ``down-unpaused``: as ``down`` with ``max_pending_sessions`` = 1,000,000, so consumption never pauses and
     every line is read: open sessions stay within the byte budget, the evicted ones all wait in memory (pending
     sessions are bounded by count only, not by bytes).
   - ``stub``: a stub OpenAI-compatible server (a child process of this script) answers every request at once with
     a fixed "normal" verdict, so evicted sessions are judged (by the verdict cache or the stub), their holds
     released, and all 100k sessions flow through the daemon with every setting at its default.

   ``/proc/<pid>/status`` gives VmRSS (before the first line, at the end) and VmHWM (the peak); ``/metrics`` gives
   sessions open, ``rationad_sessions_open_bytes``, sessions closed by reason (``evicted``), pending and paused.

The bound: 1 GiB of memory for the daemon when the model is served elsewhere (``deploy/k8s/base/statefulset.yaml``
memory limit; the systemd unit's ``MemoryMax=1G`` drop-in, ``deploy/systemd/README.md``).

Usage: ``.venv/bin/python bench/memory.py [--sessions 100000] [--daemon | --daemon-only] [--setups down,stub]
[--daemon-limit-secs 240] [--quick] [--json bench/results/memory.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, START_TS, fill_topic, mixed_records, print_machine, rendered_lines

BOUND_BYTES = 1024**3  # deploy/k8s/base/statefulset.yaml memory limit for the daemon without the in-process model
PAGE = os.sysconf("SC_PAGE_SIZE")
SETUPS = ("down", "down-unpaused", "stub")
BACKLOG_LINES = 100_000  # produced but not yet parsed, see feed()
CHUNK_LINES = 25_000


def rss_self() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def child(sessions: int, first_lines: int | None) -> dict:
    """Fill one Sessionizer in this process; returns RSS figures and the Sessionizer's own byte estimate."""
    import gc
    import random

    from rationad.config import InputConfig, SessionsConfig
    from rationad.dialects import make_parser
    from rationad.hdfs_render import new_block_id, render_session
    from rationad.windows import Sessionizer, resolve_spec

    parser = make_parser(InputConfig(dialect="hdfs"))
    spec = resolve_spec(SessionsConfig(max_open_sessions=max(sessions, 100_000)), "hdfs")
    sz = Sessionizer(spec, topic="logs", partition=0)
    records = list(mixed_records(sessions, 0.03))
    rng = random.Random(1)
    gc.collect()
    before = rss_self()
    lines = offset = 0
    closed = 0
    t0 = time.perf_counter()
    for i, rec in enumerate(records):
        events = rec["events"] if first_lines is None else rec["events"][:first_lines]
        for raw in render_session(events, block_id=new_block_id(rng), start_ts=START_TS + i * 0.01, rng=rng):
            for line in parser.parse(raw.encode(), topic="logs", partition=0, offset=offset):
                closed += len(sz.add(line, 0.0))
                lines += 1
            offset += 1
    secs = time.perf_counter() - t0
    del records
    gc.collect()
    after = rss_self()
    return {"sessions_open": sz.open_count, "closed": closed, "lines": lines, "rss_before": before,
            "rss_after": after, "delta": after - before, "bytes_per_session": (after - before) / sz.open_count,
            "bytes_per_line": (after - before) / max(lines, 1), "open_bytes_estimate": sz.open_bytes,
            "fill_secs": secs}


# ---- daemon process ------------------------------------------------------------------------------------------
STUB_ANSWER = "<think>L1 allocated, L2 received and stored: the usual block lifecycle.</think>\n<answer>normal</answer>"


def stub_server(port: int) -> None:
    """A stand-in for the model server: /health, /v1/models and an instant fixed chat completion."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "stub", "object": "model"}]})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": STUB_ANSWER},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


METRICS = {
    "sessions_open": r"^rationad_sessions_open (\S+)",
    "open_bytes": r"^rationad_sessions_open_bytes (\S+)",
    "evicted": r'^rationad_sessions_closed_total\{reason="evicted"\} (\S+)',
    "closed_total": None,  # sum over reasons, below
    "pending": r"^rationad_sessions_pending (\S+)",
    "paused": r"^rationad_consumption_paused (\S+)",
    "lines_parsed": r"^rationad_lines_parsed_total (\S+)",
}


def read_metrics(text: str) -> dict[str, float]:
    out = {}
    for name, rx in METRICS.items():
        if rx is None:
            continue
        m = re.search(rx, text, re.MULTILINE)
        out[name] = float(m.group(1)) if m else 0.0
    out["closed_total"] = sum(float(v) for v in re.findall(r"^rationad_sessions_closed_total\{[^}]*\} (\S+)", text,
                                                            re.MULTILINE))
    out["closed_by_reason"] = {r: float(v) for r, v in re.findall(
        r'^rationad_sessions_closed_total\{reason="([^"]+)"\} (\S+)', text, re.MULTILINE)}
    return out


async def feed(bootstrap: str, topic: str, sessions: int, state: dict) -> None:
    """Produce the sessions' lines in chunks, keeping at most ``BACKLOG_LINES`` produced and not yet parsed.

    The backlog is kept small because noida-db answers a fetch with everything past the offset (it does not apply
    aiokafka's ``max_partition_fetch_bytes``, 1 MiB): a consumer started on a 2M-line topic parses the whole topic
    into one buffered fetch (about +680 MiB of RSS before the first line is handed out). A Kafka broker bounds each
    fetch, so the backlog here stands for what a Kafka consumer would buffer, not for the topic's length."""
    import itertools

    lines = rendered_lines(mixed_records(sessions, 0.03))
    while True:
        if state["produced"] - state["parsed"] >= BACKLOG_LINES:
            await asyncio.sleep(0.2)
            continue
        chunk = list(itertools.islice(lines, CHUNK_LINES))
        if not chunk:
            break
        state["produced"] += await fill_topic(bootstrap, topic, iter(chunk), 1, len(chunk), with_keys=True)
    state["done"] = True


async def run_daemon(setup: str, bootstrap: str, sessions: int, tmp: Path, limit_secs: float) -> dict:
    """One ``rationad run`` in its own group over its own topic, fed while it runs; memory and metric figures."""
    from rationad.broker import create_topics

    topic = f"bench-mem-{setup}"
    await create_topics(bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1})
    import httpx

    from rationad.broker import free_port

    port = free_port()
    stub = None
    model_port = free_port()
    if setup == "stub":
        stub = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, __file__, "--stub-server", str(model_port)], cwd=ROOT)
    delivery = "max_pending_sessions = 1000000\n" if setup == "down-unpaused" else ""
    cfg = tmp / f"{setup}.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "bench-mem-{setup}"
[input]
topics = ["{topic}"]
dialect = "hdfs"
[model]
backend = "vllm-server"
server_url = "http://127.0.0.1:{model_port}"
served_model_name = "stub"
[output]
topic = "{topic}.out"
dlq_topic = "{topic}.dlq"
[delivery]
{delivery}[server]
port = {port}
[log]
format = "json"
level = "warning"
""")
    log_path = tmp / f"{setup}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rationad", "run", "--config", str(cfg)],  # noqa: ASYNC220
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    samples: list[dict] = []
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 120
            start = None
            while time.monotonic() < deadline:
                try:
                    text = (await http.get(url, timeout=2)).text
                    if "rationad_sessions_open" in text:
                        start = read_metrics(text)
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(log_path.read_text()[-2000:])
                await asyncio.sleep(0.2)
            if start is None:
                raise RuntimeError("no /metrics within 120 s: " + log_path.read_text()[-2000:])
            before = proc_mem(proc.pid)["VmRSS"]
            state = {"produced": 0, "parsed": 0.0, "done": False}
            feeder = asyncio.create_task(feed(bootstrap, topic, sessions, state))
            t0 = time.monotonic()
            last = dict(start)
            stalled_since, last_lines, outcome = None, -1.0, "time limit"
            while time.monotonic() - t0 < limit_secs:
                await asyncio.sleep(1)
                if proc.poll() is not None:
                    raise RuntimeError(log_path.read_text()[-2000:])
                try:
                    last = read_metrics((await http.get(url, timeout=30)).text)
                except httpx.HTTPError:  # the loop may be busy with a 5,000-record fetch on a loaded machine
                    continue
                state["parsed"] = last["lines_parsed"]
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()
                produced = state["produced"]
                mem = proc_mem(proc.pid)
                samples.append({"t": round(time.monotonic() - t0, 1), "rss": mem["VmRSS"],
                                **{k: v for k, v in last.items() if k != "closed_by_reason"}})
                if state["done"] and last["lines_parsed"] >= produced and (setup != "stub" or last["pending"] == 0):
                    outcome = "all lines read" + (" and judged" if setup == "stub" else "")
                    break
                if last["lines_parsed"] != last_lines:
                    last_lines, stalled_since = last["lines_parsed"], time.monotonic()
                elif last["paused"] and time.monotonic() - stalled_since >= 20:
                    outcome = "paused by backpressure (no line read for 20 s)"
                    break
            secs = time.monotonic() - t0
            feeder.cancel()
            await asyncio.sleep(2)
            mem = proc_mem(proc.pid)
            try:
                last = read_metrics((await http.get(url, timeout=30)).text)
            except httpx.HTTPError:
                pass
        rss_peak = max([mem["VmHWM"]] + [s["rss"] for s in samples])
        return {"setup": setup, "outcome": outcome, "secs": round(secs, 1), "lines_produced": state["produced"],
                "lines_read": last["lines_parsed"], "sessions_open": last["sessions_open"],
                "sessions_open_bytes": last["open_bytes"], "sessions_evicted": last["evicted"],
                "sessions_closed": last["closed_by_reason"], "sessions_pending": last["pending"],
                "paused": last["paused"], "rss_before": before, "rss_after": mem["VmRSS"], "rss_peak": rss_peak,
                "under_bound": rss_peak < BOUND_BYTES, "samples": samples[::max(1, len(samples) // 60)]}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if stub is not None:
            stub.kill()
            stub.wait()


async def daemon_runs(sessions: int, setups: list[str], limit_secs: float) -> dict:
    from rationad.broker import LocalBroker

    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="rationad-bench-mem-") as tmp:
        out: dict = {"backlog_lines": BACKLOG_LINES}
        for setup in setups:
            r = await run_daemon(setup, broker.bootstrap, sessions, Path(tmp), limit_secs)
            out[setup] = r
            print(f"daemon [{setup}]: {r['outcome']} after {r['secs']:.0f} s; read {r['lines_read']:,.0f} of "
                  f"{r['lines_produced']:,} lines produced; open {r['sessions_open']:,.0f} sessions, open_bytes "
                  f"{mib(r['sessions_open_bytes'])}; evicted {r['sessions_evicted']:,.0f}, pending "
                  f"{r['sessions_pending']:,.0f}, closed {r['sessions_closed']}; RSS {mib(r['rss_before'])} -> "
                  f"{mib(r['rss_after'])}, peak (VmHWM) {mib(r['rss_peak'])}: "
                  f"{'under' if r['under_bound'] else 'OVER'} the 1 GiB bound", flush=True)
        return out


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--daemon", action="store_true", help="also measure running daemon processes")
    ap.add_argument("--daemon-only", action="store_true", help="only the daemon processes")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"daemon setups, of {', '.join(SETUPS)}")
    ap.add_argument("--daemon-limit-secs", type=float, default=240, help="time limit of each daemon setup")
    ap.add_argument("--quick", action="store_true", help="10k sessions, no daemon (sanity check)")
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--stub-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stub_server is not None:
        stub_server(args.stub_server)
        return
    if args.child is not None:
        fill = None if args.child == "all" else int(args.child)
        print(json.dumps(child(args.sessions, fill)))
        return
    if args.quick:
        args.sessions, args.daemon = 10_000, False
    setups = [x for x in args.setups.split(",") if x]
    if unknown := set(setups) - set(SETUPS):
        ap.error(f"unknown setups {sorted(unknown)}")
    m = print_machine()
    out: dict = {"machine": m, "sessions": args.sessions, "bound_bytes": BOUND_BYTES, "sessionizer": {}}
    print(f"bound: daemon memory limit {mib(BOUND_BYTES)} (deploy/k8s/base/statefulset.yaml, model served elsewhere); "
          f"delivery.max_open_bytes 256 MiB (default)")
    if args.daemon_only:
        args.daemon = True
    for fill in () if args.daemon_only else ("1", "5", "all"):
        res = subprocess.run([sys.executable, __file__, "--child", fill, "--sessions", str(args.sessions)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out["sessionizer"][fill] = r
        label = "whole sessions" if fill == "all" else f"first {fill} line(s)"
        print(f"Sessionizer, {r['sessions_open']:,} open sessions, {label} ({r['lines']:,} lines): "
              f"RSS +{mib(r['delta'])} = {r['bytes_per_session']:,.0f} B/session, {r['bytes_per_line']:,.0f} B/line "
              f"(open_bytes estimate {mib(r['open_bytes_estimate'])}); process RSS {mib(r['rss_after'])} "
              f"({'under' if r['rss_after'] < BOUND_BYTES else 'OVER'} 1 GiB)", flush=True)
    if args.daemon:
        out["daemon"] = asyncio.run(daemon_runs(args.sessions, setups, args.daemon_limit_secs))
    if args.json:
        old = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
        old.update({k: v for k, v in out.items() if v or k not in old})
        Path(args.json).write_text(json.dumps(old, indent=1))


if __name__ == "__main__":
    main()
