"""Faust side of ``bench/ingest.py``: a faust-streaming worker (aiokafka driver) whose agent parses and sessionizes
every record of a topic, per event (``async for event in stream.events()``) or in ``stream.take()`` batches.

Run by ``bench/ingest.py`` as a subprocess (faust owns its event loop); writes its JSON result to ``--result`` and exits when it
has seen ``--lines`` records or ``--max-secs`` passed since the first record. Timing starts at the first record, so
worker start-up and the group join are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust

from rationad.config import InputConfig, SessionsConfig
from rationad.dialects import BadRecord, make_parser
from rationad.windows import Sessionizer, resolve_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--lines", type=int, required=True)
    ap.add_argument("--mode", choices=("events", "take"), default="events")
    ap.add_argument("--gap-secs", type=float, default=None)
    ap.add_argument("--max-secs", type=float, default=120.0)
    ap.add_argument("--result", required=True, help="write the JSON result to this file")
    ap.add_argument("--datadir", required=True)
    args = ap.parse_args()

    app = faust.App(
        f"rationad-bench-{uuid.uuid4().hex[:8]}", broker=f"kafka://{args.bootstrap}", value_serializer="raw",
        key_serializer="raw", store="memory://", datadir=args.datadir, web_enabled=False, consumer_auto_offset_reset="earliest",
        topic_disable_leader=True, broker_max_poll_records=5000,
    )
    topic = app.topic(args.topic, value_serializer="raw", key_serializer="raw")
    parser = make_parser(InputConfig(dialect="hdfs"))
    spec = resolve_spec(SessionsConfig(gap_secs=args.gap_secs), "hdfs")
    sessionizers: dict[int, Sessionizer] = {}
    state = {"n": 0, "lines": 0, "closed": 0, "t0": None}

    def finish(partial: bool) -> None:
        secs = time.perf_counter() - state["t0"]
        out = {"mode": args.mode, "records": state["n"], "lines": state["lines"], "closed": state["closed"],
               "secs": secs, "records_per_s": state["n"] / secs, "partial": partial}
        Path(args.result).write_text(json.dumps(out))
        os._exit(0)

    def handle(value: bytes, partition: int) -> None:
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        sz = sessionizers.get(partition)
        if sz is None:
            sz = sessionizers[partition] = Sessionizer(spec, topic=args.topic, partition=partition)
        now = time.time()
        try:
            lines = parser.parse(value, topic=args.topic, partition=partition)
        except BadRecord:
            lines = []
        for line in lines:
            state["closed"] += len(sz.add(line, now))
        state["lines"] += len(lines)
        state["n"] += 1

    def check_done() -> None:
        if state["n"] >= args.lines:
            finish(False)
        if state["t0"] is not None and time.perf_counter() - state["t0"] > args.max_secs:
            finish(True)

    if args.mode == "events":
        @app.agent(topic)
        async def per_event(stream):
            async for event in stream.events():
                handle(event.value, event.message.partition)
                check_done()
    else:
        @app.agent(topic)
        async def batched(stream):
            async for values in stream.take(5000, within=0.5):
                for v in values:
                    handle(v, 0)
                check_done()

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
