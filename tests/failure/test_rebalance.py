"""Two daemons in one consumer group on a 4-partition topic; one is stopped (SIGTERM) mid-stream, the other takes
its partitions over: no session is lost, a session emitted by both carries the same id, and the committed offsets
reach the end of the input."""

import asyncio
import json
import os

import pytest

from rationad.broker import free_port
from tests.failure.support import (
    inconsistent_ids,
    metric,
    missing_keys,
    new_stream,
    settled_outcomes,
    uncovered_lines,
    wait_until,
)
from tests.integration.harness import DaemonProcess, committed_vs_end, produce, write_config

pytestmark = pytest.mark.integration

SESSIONS = int(os.environ.get("RATIONAD_FAILURE_SESSIONS", "8"))


def _owned(log: str) -> list[str]:
    """The partitions a daemon's log says it owns now (its last assignment once it has started), or []."""
    if "daemon_started" not in log:
        return []
    owned: list[str] = []
    for line in log.splitlines():
        if '"partitions_assigned"' in line:
            try:
                owned = json.loads(line)["partitions"]
            except (ValueError, KeyError):
                pass
        elif '"partitions_revoked"' in line:
            owned = []
    return owned


def test_one_of_two_daemons_stopped_mid_stream_loses_nothing(broker, model, vllm_server, tmp_path):
    stream = new_stream(broker.bootstrap, SESSIONS, prefix="rebal", partitions=4)
    half = len(stream.lines) // 2
    daemons, ports = [], []
    for name in ("a", "b"):
        port = free_port()
        cfg = write_config(tmp_path / f"{name}.toml", bootstrap=broker.bootstrap, topic=stream.topic,
                           group=stream.group, model=model, server_url=vllm_server.url, port=port)
        daemons.append(DaemonProcess(cfg, tmp_path / f"{name}.log").start())
        ports.append(port)
    a, b = daemons
    try:
        # The first half is sent once both members own partitions: sent before, a member that started late (its
        # verdict cache's recovery can take up to CACHE_RECOVERY_TIMEOUT_SECS) found the other had read and judged
        # every line, flushed as quiet, and had none to read (a CI run failed so).
        assert wait_until(lambda: all(_owned(d.log()) for d in daemons), 300), a.log()[-2000:] + b.log()[-2000:]
        asyncio.run(produce(broker.bootstrap, stream.topic, stream.records(0, half)))
        # Both members own partitions and both have read lines: the stream is shared.
        assert wait_until(lambda: all("partitions_assigned" in d.log() for d in daemons)
                          and all((metric(p, "rationad_lines_parsed_total") or 0) > 0 for p in ports), 180), \
            a.log()[-2000:] + b.log()[-2000:]
        assert wait_until(lambda: (metric(ports[0], 'rationad_events_produced_total{verdict="normal"}') or 0)
                          + (metric(ports[0], 'rationad_events_produced_total{verdict="anomalous"}') or 0) >= 1, 300), \
            a.log()[-3000:]
        code_a = a.terminate()
        assert code_a == 0, a.log()[-3000:]
        asyncio.run(produce(broker.bootstrap, stream.topic, stream.records(half)))
        evs, dead = settled_outcomes(stream, timeout=480)
        code_b = b.terminate()
    finally:
        for d in daemons:
            d.kill()
    assert code_b == 0, b.log()[-3000:]
    assert not missing_keys(stream, evs, dead), f"lost: {missing_keys(stream, evs, dead)}\n{b.log()[-3000:]}"
    assert not inconsistent_ids(evs), inconsistent_ids(evs)
    assert not uncovered_lines(stream, evs, dead)
    assert {e["session"]["partition"] for e in evs} | {s["partition"] for s in dead} == set(range(4))
    offsets = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
    assert all(committed == end for committed, end in offsets.values()), offsets
