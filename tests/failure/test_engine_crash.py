"""The in-process vLLM engine crashes (its EngineCore process is killed) mid-stream. The daemon cannot serve again in
this process: it stops with exit code 1 (so systemd or Kubernetes restart it) instead of retrying for ever, dead-letters
nothing because of the crash, commits nothing past the sessions it could not judge, and leaves no engine process
behind. The restarted daemon (here on the shared vLLM server, to save a second engine start) judges what was left.

Before issue 13 an ``EngineDeadError`` was a retryable outage: the daemon retried the batch for ever with /healthz
green, and its engine processes outlived a SIGKILL of the daemon."""

import asyncio
import signal
import time

import psutil
import pytest

from rationad.broker import free_port
from tests.failure.support import metric, missing_keys, new_stream, produce_chunks, settled_outcomes, wait_until
from tests.integration.harness import DaemonProcess, committed_vs_end, write_config

pytestmark = pytest.mark.integration


def engine_core(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_engine_crash_stops_the_daemon_and_loses_nothing(broker, model, vllm_server, tmp_path):
    stream = new_stream(broker.bootstrap, 8, prefix="enginecrash", partitions=2)
    port = free_port()
    engine_cfg = write_config(tmp_path / "engine.toml", bootstrap=broker.bootstrap, topic=stream.topic,
                              group=stream.group, model=model, port=port)
    daemon = DaemonProcess(engine_cfg, tmp_path / "daemon.log").start()
    alive = lambda: daemon.proc.poll() is None  # noqa: E731
    producer = None
    try:
        assert wait_until(lambda: metric(port, "rationad_ready") == 1, 300, alive=alive), daemon.log()[-3000:]
        producer = produce_chunks(stream, chunks=4, pause_secs=3.0)
        assert wait_until(lambda: (metric(port, "rationad_sessions_pending") or 0) >= 1, 120, interval=0.2,
                          alive=alive), daemon.log()[-3000:]
        core = engine_core(daemon.proc.pid)
        assert core is not None, "no EngineCore child found"
        core.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        code = daemon.proc.wait(120)
        stopped_after = time.monotonic() - t0
        producer.join(60)
        log = daemon.log()
        assert code == 1, log[-3000:]
        assert '"fatal"' in log and "dead" in log, log[-3000:]
        assert stopped_after < 90, stopped_after
        # Nothing was dead-lettered because of the crash, and the commit did not pass what is unjudged.
        assert "model_rejected" not in log and "judge_failed" not in log
        got = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
        assert any(c is None or c < e for c, e in got.values()), got
        # The engine's processes died with it.
        assert wait_until(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                       if "EngineCore" in " ".join(p.info["cmdline"] or [])
                                       and p.ppid() in (1, daemon.proc.pid)], 30)

        server_cfg = write_config(tmp_path / "server.toml", bootstrap=broker.bootstrap, topic=stream.topic,
                                  group=stream.group, model=model, server_url=vllm_server.url, port=port)
        daemon.config = server_cfg
        daemon.start()
        evs, dead = settled_outcomes(stream, timeout=420)
        assert daemon.terminate() == 0
    finally:
        if producer is not None:
            producer.join(60)
        daemon.kill()
    assert not missing_keys(stream, evs, dead)
