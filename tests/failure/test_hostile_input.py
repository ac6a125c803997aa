"""Hostile input on the real broker, in one daemon run: JSON records, a line stamped in 2100, undecodable and
oversized records whose dead letters exceed the producer's record limit, a byte budget so small that open sessions
are evicted all the time, and sessions still open when SIGTERM comes. Nothing is lost: every line lies in a judged
session or its record is on the dead-letter topic, and what was open at SIGTERM is judged after the restart.

Before the fixes of issue 13 the oversized dead letter stalled the partition for good (retried for ever), the 2100
line closed every open session, and the byte budget did not exist."""

import asyncio
import json
import re

import httpx
import pytest

from rationad.broker import free_port
from rationad.dialects import hdfs_header
from tests.failure.support import metric, missing_keys, new_stream, wait_until
from tests.integration.harness import (
    DaemonProcess,
    committed_vs_end,
    load_sessions,
    produce,
    read_to_end,
    render,
    write_config,
)

pytestmark = pytest.mark.integration

FUTURE_TS = 4_102_444_800.0  # 2100-01-01
# Added to write_config's own sections: JSON input with its timestamp field, a producer limit of 16 KiB and a 16 KiB
# budget for open sessions (a few dozen HDFS lines).
SETTINGS = {
    'dialect = "hdfs"': 'format = "json"\ntimestamp_field = "ts"',
    "emit_normal = true": "max_message_bytes = 16384",
    "drain_timeout_secs = 60": "max_open_bytes = 16384",
}


def labelled(port: int, name: str, label: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return 0.0
    m = re.search(rf'^{re.escape(name)}\{{{label}\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def as_json(lines, future_at: int | None = None) -> list[tuple[bytes, bytes]]:
    out = []
    for i, (block, raw) in enumerate(lines):
        ts = FUTURE_TS if i == future_at else hdfs_header(raw)[0]
        out.append((block.encode(), json.dumps({"message": raw, "ts": ts}).encode()))
    return out


def test_hostile_input_and_open_sessions_at_sigterm_lose_nothing(broker, model, vllm_server, tmp_path):
    stream = new_stream(broker.bootstrap, 10, prefix="hostile", partitions=2)
    records = as_json(stream.lines, future_at=len(stream.lines) // 3)
    hostile = [
        (b"junk", b"{not json"),
        (b"junk", b"\xff" * 10),
        (b"big", json.dumps({"message": "x" * 200_000, "ts": 1.0}).encode()),  # > max_record_bytes: dead letter
    ]
    asyncio.run(produce(broker.bootstrap, stream.topic, records[:40] + hostile + records[40:]))
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=stream.topic, group=stream.group,
                       model=model, server_url=vllm_server.url, port=port)
    text = cfg.read_text()
    for anchor, added in SETTINGS.items():
        assert anchor in text
        text = text.replace(anchor, f"{anchor}\n{added}")
    cfg.write_text(text)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    alive = lambda: daemon.proc.poll() is None  # noqa: E731
    try:
        # Phase 1: everything is judged or dead-lettered and committed to the end.
        got = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group, wait_secs=420))
        assert all(c == e for c, e in got.values()), (got, daemon.log()[-4000:])
        evicted = labelled(port, "rationad_sessions_closed_total", 'reason="evicted"')
        future = labelled(port, "rationad_late_lines_total", 'action="future_untimed"')
        assert evicted > 0, daemon.log()[-3000:]
        assert future == 1, daemon.log()[-3000:]

        # Phase 2: new blocks arrive and SIGTERM comes while their sessions are open.
        tail_lines, tail_labels = render(load_sessions(3, seed=99, anomalous_share=0.0), seed=99)
        parsed = metric(port, "rationad_lines_parsed_total") or 0
        asyncio.run(produce(broker.bootstrap, stream.topic, as_json(tail_lines)))
        assert wait_until(lambda: (metric(port, "rationad_lines_parsed_total") or 0) >= parsed + len(tail_lines),
                          60, interval=0.1, alive=alive), daemon.log()[-3000:]
        assert daemon.terminate() == 0, daemon.log()[-3000:]
        got = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
        assert any(c < e for c, e in got.values()), f"open sessions must not be committed past: {got}"

        # Phase 3: the restarted daemon re-reads the open sessions whole and judges them.
        daemon.start()
        got = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group, wait_secs=300))
        assert all(c == e for c, e in got.values()), (got, daemon.log()[-4000:])
        assert daemon.terminate() == 0, daemon.log()[-3000:]
    finally:
        daemon.kill()

    outs = asyncio.run(read_to_end(broker.bootstrap, f"{stream.topic}.out"))
    dlq = asyncio.run(read_to_end(broker.bootstrap, f"{stream.topic}.dlq"))
    evs = [json.loads(r.value) for r in outs]
    dead_sessions = [json.loads(r.value)["session"] for r in dlq
                     if dict(r.headers).get("rationad-error-stage") == b"model"]
    parse_dead = {}
    for r in dlq:
        h = dict(r.headers)
        if h.get("rationad-error-stage") == b"parse":
            parse_dead[(int(h["rationad-source-partition"]), int(h["rationad-source-offset"]))] = h
    # The three hostile records are dead letters; the oversized one was cut to the producer's limit and says so.
    assert sorted(h["rationad-error-type"] for h in parse_dead.values()) == [b"bad_json", b"invalid_utf8",
                                                                              b"too_large"], parse_dead
    (big,) = [h for h in parse_dead.values() if h["rationad-error-type"] == b"too_large"]
    assert big["rationad-truncated"] == b"true" and int(big["rationad-original-bytes"]) > 200_000
    # Every block has an outcome, the tail's included.
    stream.labels.update(tail_labels)
    assert not missing_keys(stream, evs, dead_sessions)
    # Every input line lies in a judged session of its block, or its record is a dead letter.
    inputs = asyncio.run(read_to_end(broker.bootstrap, stream.topic))
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for s in [e["session"] for e in evs] + dead_sessions:
        ranges.setdefault((s["key"], s["partition"]), []).append((s["first_offset"], s["last_offset"]))
    uncovered = [(r.partition, r.offset) for r in inputs
                 if (r.partition, r.offset) not in parse_dead
                 and not any(lo <= r.offset <= hi for lo, hi in ranges.get((r.key.decode(), r.partition), ()))]
    assert not uncovered, uncovered[:20]
