"""Model server outage with the ``vllm-server`` backend: the OpenAI server is killed (SIGKILL) mid-stream and kept
down for ``RATIONAD_FAILURE_OUTAGE_SECS`` (20 s here, 60 s in the long version) plus its restart time. During the
outage ``/readyz`` answers 503, consumption pauses (``rationad_consumption_paused`` = 1 and the daemon stops reading
although input is waiting), the daemon stays alive; after the restart the backlog drains and no session is lost.

The shared server fixture is restarted before the test returns, so later tests find it up."""

import asyncio
import os
import signal
import time

import pytest

from rationad.broker import free_port
from tests.failure.support import (
    Sampler,
    inconsistent_ids,
    metric,
    missing_keys,
    new_stream,
    produce_chunks,
    readyz,
    settled_outcomes,
    uncovered_lines,
    wait_until,
)
from tests.integration.harness import DaemonProcess, committed_vs_end, produce, write_config

pytestmark = pytest.mark.integration

SESSIONS = int(os.environ.get("RATIONAD_FAILURE_SESSIONS", "12"))
OUTAGE_SECS = float(os.environ.get("RATIONAD_FAILURE_OUTAGE_SECS", "20"))
MAX_PENDING = 4


def _kill_server(server) -> None:
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    server.proc = None


def test_model_server_outage_pauses_and_loses_nothing(broker, model, vllm_server, tmp_path):
    stream = new_stream(broker.bootstrap, SESSIONS, prefix="outage", partitions=2)
    third = len(stream.lines) // 3
    asyncio.run(produce(broker.bootstrap, stream.topic, stream.records(0, third)))
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=stream.topic, group=stream.group,
                       model=model, server_url=vllm_server.url, port=port)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log",
                           env={"RATIONAD_DELIVERY__MAX_PENDING_SESSIONS": str(MAX_PENDING)}).start()
    alive = lambda: daemon.proc.poll() is None
    sampler = None
    try:
        assert wait_until(lambda: readyz(port) == 200, 180, alive=alive), daemon.log()[-3000:]
        assert wait_until(lambda: sum((metric(port, f'rationad_events_produced_total{{verdict="{v}"}}') or 0)
                                      for v in ("normal", "anomalous")) >= 1, 300, alive=alive), daemon.log()[-3000:]
        _kill_server(vllm_server)
        t_kill = time.monotonic()
        sampler = Sampler(lambda: (time.monotonic() - t_kill, readyz(port),
                                   metric(port, "rationad_consumption_paused"),
                                   metric(port, "rationad_lines_parsed_total")))
        # The rest of the stream arrives during the outage, in bursts (a quiet gap closes sessions).
        tail = type(stream)(stream.bootstrap, stream.topic, stream.lines[third:], stream.labels, stream.partitions)
        producer = produce_chunks(tail, chunks=3, pause_secs=4.0)
        time.sleep(OUTAGE_SECS)
        producer.join(60)
        during = list(sampler.seen)
        assert alive(), daemon.log()[-3000:]
        vllm_server.start()
        t_up = time.monotonic() - t_kill
        evs, dead = settled_outcomes(stream, timeout=480)
        seen = sampler.stop()
        code = daemon.terminate()
    finally:
        if sampler is not None:
            sampler.stop()
        daemon.kill()
        if vllm_server.proc is None:
            vllm_server.start()
    log = daemon.log()
    outage = [s for s in seen if s[0] < t_up - 1]
    print(f"outage {t_up:.0f} s (down {OUTAGE_SECS:.0f} s + restart); samples (t, readyz, paused, lines): "
          f"{outage[::10]}")
    assert code == 0, log[-3000:]
    assert any(s[1] == 503 for s in during), f"/readyz never reported the outage: {during}"
    paused = [s for s in outage if s[2] == 1.0]
    assert paused, f"consumption never paused: {outage}"
    # While paused the daemon read nothing although input was waiting (it read less than the whole stream).
    lines_while_paused = {s[3] for s in paused}
    assert len(lines_while_paused) <= 2 and max(lines_while_paused) < len(stream.lines), paused
    assert "model_unavailable" in log
    assert not missing_keys(stream, evs, dead), f"lost: {missing_keys(stream, evs, dead)}\n{log[-3000:]}"
    assert not inconsistent_ids(evs), inconsistent_ids(evs)
    assert not uncovered_lines(stream, evs, dead)
    offsets = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
    assert all(committed == end for committed, end in offsets.values()), offsets
