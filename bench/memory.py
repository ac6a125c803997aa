"""Memory benchmark: RSS with 100k open sessions, against the configured bound.

1. **Sessionizer** (in a fresh child process per fill level): rendered HDFS sessions are parsed by the real
   ``dialects`` parser and added to one ``windows.Sessionizer`` with the hdfs dialect's defaults (a block stays
   open for a day of event time, so every session stays open); RSS (``/proc/self/statm``) is read before and after.
   Fill levels: the first line of each session, the first 5 lines, and whole sessions (18.8 lines on average).
2. **Daemon process** (``--daemon``): ``rationad run`` (backend vllm-server pointed at a closed port, so no model
   runs and no session is judged) consumes the same whole-session lines from a fresh local broker until
   ``rationad_sessions_open`` reaches the target; its RSS is read from ``/proc/<pid>/status`` before and after.

The bound: ``sessions.max_open_sessions`` (default 100,000) caps the count; the deployment files cap the daemon's
memory at 1 GiB when the model runs elsewhere (``deploy/k8s/base/deployment.yaml`` limit, systemd drop-in).

Usage: ``.venv/bin/python bench/memory.py [--sessions 100000] [--daemon] [--quick]``.
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

BOUND_BYTES = 1024**3  # deploy/k8s/base/deployment.yaml memory limit for the daemon without the in-process model
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_self() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def child(sessions: int, first_lines: int | None) -> dict:
    """Fill one Sessionizer in this process; returns RSS figures."""
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
            "bytes_per_line": (after - before) / max(lines, 1), "fill_secs": secs}


async def daemon_rss(sessions: int, partitions: int = 1) -> dict:
    import httpx

    from rationad.broker import LocalBroker, create_topics, free_port

    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="rationad-bench-mem-") as tmp:
        topic = "bench-mem"
        await create_topics(broker.bootstrap, {topic: partitions, f"{topic}.out": 1, f"{topic}.dlq": 1})
        port = free_port()
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(f"""
[kafka]
bootstrap_servers = "{broker.bootstrap}"
group_id = "bench-mem"
[input]
topics = ["{topic}"]
dialect = "hdfs"
[sessions]
max_open_sessions = {max(sessions, 100_000)}
[model]
backend = "vllm-server"
server_url = "http://127.0.0.1:{free_port()}"
served_model_name = "none"
[output]
topic = "{topic}.out"
dlq_topic = "{topic}.dlq"
[server]
port = {port}
[log]
format = "json"
level = "warning"
""")
        proc = subprocess.Popen([sys.executable, "-m", "rationad", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=open(Path(tmp) / "daemon.log", "wb"), stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if "rationad_sessions_open" in httpx.get(url, timeout=2).text:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError((Path(tmp) / "daemon.log").read_text()[-2000:])
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # let it join the group
            before = rss_of(proc.pid)
            produced = await fill_topic(broker.bootstrap, topic, rendered_lines(mixed_records(sessions, 0.03)),
                                        partitions, 10**9, with_keys=True)
            open_now, peak = 0.0, before
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    text = httpx.get(url, timeout=30).text
                except httpx.HTTPError:  # the loop may be busy with a 5,000-record fetch on a loaded machine
                    await asyncio.sleep(1)
                    continue
                m = re.search(r"^rationad_sessions_open (\S+)", text, re.MULTILINE)
                lines = re.search(r"^rationad_lines_parsed_total (\S+)", text, re.MULTILINE)
                open_now = float(m.group(1)) if m else 0.0
                peak = max(peak, rss_of(proc.pid))
                if lines and float(lines.group(1)) >= produced:
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(2)
            after = rss_of(proc.pid)
            return {"lines": produced, "sessions_open": open_now, "rss_before": before, "rss_after": after,
                    "rss_peak": max(peak, after), "delta": after - before,
                    "bytes_per_session": (after - before) / max(open_now, 1)}
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--daemon", action="store_true", help="also measure a running daemon process")
    ap.add_argument("--daemon-only", action="store_true", help="only the daemon process")
    ap.add_argument("--quick", action="store_true", help="10k sessions, no daemon (sanity check)")
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        fill = None if args.child == "all" else int(args.child)
        print(json.dumps(child(args.sessions, fill)))
        return
    if args.quick:
        args.sessions, args.daemon = 10_000, False
    m = print_machine()
    out: dict = {"machine": m, "sessions": args.sessions, "bound_bytes": BOUND_BYTES, "sessionizer": {}}
    print(f"bound: max_open_sessions = 100,000 (default); daemon memory limit {mib(BOUND_BYTES)} "
          f"(deploy/k8s/base/deployment.yaml, model served elsewhere)")
    if args.daemon_only:
        args.daemon = True
    for fill in () if args.daemon_only else ("1", "5", "all"):
        res = subprocess.run([sys.executable, __file__, "--child", fill, "--sessions", str(args.sessions)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out["sessionizer"][fill] = r
        label = "whole sessions" if fill == "all" else f"first {fill} line(s)"
        print(f"Sessionizer, {r['sessions_open']:,} open sessions, {label} ({r['lines']:,} lines): RSS +{mib(r['delta'])}"
              f" = {r['bytes_per_session']:,.0f} B/session, {r['bytes_per_line']:,.0f} B/line; process RSS "
              f"{mib(r['rss_after'])} ({'under' if r['rss_after'] < BOUND_BYTES else 'OVER'} the 1 GiB bound)",
              flush=True)
    if args.daemon:
        r = asyncio.run(daemon_rss(args.sessions))
        out["daemon"] = r
        print(f"daemon process: {r['sessions_open']:,.0f} open sessions ({r['lines']:,} lines), RSS {mib(r['rss_before'])}"
              f" -> {mib(r['rss_after'])} (peak {mib(r['rss_peak'])}), +{r['bytes_per_session']:,.0f} B/session; "
              f"{'under' if r['rss_peak'] < BOUND_BYTES else 'OVER'} the 1 GiB bound", flush=True)
    if args.json:
        old = json.loads(Path(args.json).read_text()) if args.daemon_only and Path(args.json).is_file() else {}
        old.update({k: v for k, v in out.items() if v or k not in old})
        Path(args.json).write_text(json.dumps(old, indent=1))


if __name__ == "__main__":
    main()
