"""``rationad demo``: the whole system on one machine with embedded defaults.

Starts a local Kafka-protocol broker (noida-db), streams the bundled sample of real HDFS logs (plus a few malformed
records) into the input topic, runs the daemon on the default model, and prints the anomaly events with their
rationales as they arrive; at the end, a summary against the sample's labels.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import sys
import time
from importlib import resources

import orjson

from rationad.broker import LocalBroker, create_topics, free_port
from rationad.config import Settings, load_settings
from rationad.tail import render

_BLOCK = re.compile(rb"blk_-?\d+")
MALFORMED = [b"", b"\xff\xfe not utf-8 \xc3\x28", b"081109 203615 148 INFO dfs.DataNode: a line with no block id"]


def sample_lines() -> list[bytes]:
    data = resources.files("rationad").joinpath("data/hdfs_sample.log.gz").read_bytes()
    return gzip.decompress(data).splitlines()


def sample_labels() -> dict[str, str]:
    text = resources.files("rationad").joinpath("data/hdfs_sample_labels.csv").read_text()
    rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
    return {k: ("anomalous" if v.strip().lower().startswith("anomal") else "normal") for k, v in rows}


async def _produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        batch = []
        for line in lines:
            m = _BLOCK.search(line)
            batch.append(producer.send(topic, value=line, key=m.group(0) if m else None))
            if len(batch) >= 1000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
        await producer.flush()
    finally:
        await producer.stop()


async def run_demo(settings: Settings, *, timeout_secs: float = 900, out=sys.stdout) -> dict:
    from aiokafka import AIOKafkaConsumer

    from rationad.daemon import Daemon

    lines = sample_lines()
    labels = sample_labels()
    bootstrap = settings.kafka.bootstrap_servers
    await create_topics(bootstrap, {settings.input.topics[0]: 2, settings.output.topic: 1, settings.output.dlq_topic: 1})
    print(f"demo: streaming {len(lines)} real HDFS lines ({len(labels)} blocks) and {len(MALFORMED)} malformed "
          f"records into '{settings.input.topics[0]}'", file=out, flush=True)
    await _produce(bootstrap, settings.input.topics[0], lines + MALFORMED)

    daemon = Daemon(settings)
    run_task = asyncio.create_task(daemon.run())
    consumer = AIOKafkaConsumer(settings.output.topic, settings.output.dlq_topic, bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    verdicts: dict[str, str] = {}
    dead = 0
    dead_blocks: set[str] = set()  # blocks whose session was dead-lettered by the model stage (accounted for too)
    colour = out.isatty()
    start = time.monotonic()
    try:
        while len(verdicts.keys() | dead_blocks) < len(labels) and time.monotonic() - start < timeout_secs \
                and not run_task.done():
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for rec in records:
                    if tp.topic == settings.output.dlq_topic:
                        dead += 1
                        reason = dict(rec.headers).get("rationad-error-type", b"?").decode()
                        if dict(rec.headers).get("rationad-error-stage") == b"model":
                            dead_blocks.add(orjson.loads(rec.value)["session"]["key"])
                        print(f"DLQ       offset {dict(rec.headers).get('rationad-source-offset', b'?').decode()}: "
                              f"{reason}", file=out, flush=True)
                        continue
                    event = orjson.loads(rec.value)
                    verdicts[event["session"]["key"]] = event["verdict"]
                    if event["verdict"] == "anomalous":
                        print(render(event, colour), file=out, flush=True)
    finally:
        await consumer.stop()
        daemon.request_stop()
        await run_task
    tp = sum(1 for k, v in verdicts.items() if v == "anomalous" and labels.get(k) == "anomalous")
    fp = sum(1 for k, v in verdicts.items() if v == "anomalous" and labels.get(k) == "normal")
    fn = sum(1 for k, v in labels.items() if v == "anomalous" and verdicts.get(k) == "normal")
    summary = {
        "blocks": len(labels), "judged": len(verdicts), "anomalous": sum(v == "anomalous" for v in verdicts.values()),
        "dead_letters": dead, "dead_lettered_blocks": len(dead_blocks - verdicts.keys()),
        "accounted": len(verdicts.keys() | dead_blocks), "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "model_calls": daemon.judge.model_calls, "seconds": round(time.monotonic() - start, 1),
    }
    print(f"demo: {orjson.dumps(summary).decode()}", file=out, flush=True)
    return summary


def main(config_path: str | None) -> int:
    from rationad.logs import configure

    port = free_port()
    with LocalBroker(port=port) as broker:
        overrides = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "group_id": "rationad-demo", "session_timeout_ms": 6000},
            # The demo's producer keys every line by its block id, so no repartitioning hop is needed.
            "input": {"topics": ["logs"], "dialect": "hdfs", "repartition": "never"},
            # The sample is replayed at full speed: close each block once the stream has been quiet for 5 s.
            "sessions": {"quiet_flush_secs": 5},
            "output": {"emit_normal": True},
            "server": {"port": 0},
            "log": {"level": "warning"},
        }
        settings = load_settings(config_path, **overrides)
        configure(settings.log.level, settings.log.format)
        print(f"demo: local broker on {broker.bootstrap}; model {settings.model.path}", flush=True)
        summary = asyncio.run(run_demo(settings))
    # Every block is accounted for: a verdict, or its session on the dead-letter topic with the model's raw answer.
    return 0 if summary["accounted"] == summary["blocks"] else 1
