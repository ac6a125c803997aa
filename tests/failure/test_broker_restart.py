"""Stop the broker mid-stream and start it again on the same port and data dir (noida-db keeps topics, records and
committed offsets there): the daemon reconnects by itself, and every session is accounted for, every input line lies
in a judged session, and the committed offsets reach the end of the input after the drain.

``RATIONAD_FAILURE_BROKER_DOWN_SECS`` (default 10) sets how long the broker stays down."""

import asyncio
import os
import time

import pytest

from rationad.broker import LocalBroker, free_port
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
DOWN_SECS = float(os.environ.get("RATIONAD_FAILURE_BROKER_DOWN_SECS", "10"))


def test_broker_stop_and_restart_mid_stream(model, vllm_server, tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "broker").start()
    daemon = None
    try:
        stream = new_stream(broker.bootstrap, SESSIONS, prefix="brk", partitions=2)
        half = len(stream.lines) // 2
        asyncio.run(produce(broker.bootstrap, stream.topic, stream.records(0, half)))
        port = free_port()
        cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=stream.topic, group=stream.group,
                           model=model, server_url=vllm_server.url, port=port)
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
        alive = lambda: daemon.proc.poll() is None
        # Mid-stream: the first half read and some verdicts out, the rest not yet produced.
        assert wait_until(lambda: (metric(port, "rationad_lines_parsed_total") or 0) >= half, 180, alive=alive), \
            daemon.log()[-3000:]
        assert wait_until(lambda: sum((metric(port, f'rationad_events_produced_total{{verdict="{v}"}}') or 0)
                                      for v in ("normal", "anomalous")) >= 1, 300, alive=alive), daemon.log()[-3000:]
        broker.stop()
        time.sleep(DOWN_SECS)
        assert alive(), daemon.log()[-3000:]
        broker.start()
        asyncio.run(produce(broker.bootstrap, stream.topic, stream.records(half)))
        evs, dead = settled_outcomes(stream, timeout=480)
        code = daemon.terminate()
        log = daemon.log()
        assert code == 0, log[-3000:]
        assert not missing_keys(stream, evs, dead), f"lost: {missing_keys(stream, evs, dead)}\n{log[-3000:]}"
        assert not inconsistent_ids(evs), inconsistent_ids(evs)
        assert not uncovered_lines(stream, evs, dead)
        offsets = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
        assert all(committed == end for committed, end in offsets.values()), offsets
    finally:
        if daemon is not None:
            daemon.kill()
        broker.close()
