"""The in-process vLLM engine crashes (its EngineCore process is killed) mid-stream. The daemon builds the engine
again in its own process and goes on: every block gets its outcome, nothing is dead-lettered because of the crash,
the commits reach the input's end, the dead engine core is gone and one new one serves, and a SIGTERM then drains and
exits 0.

Before issue 13 an ``EngineDeadError`` was a retryable outage on an engine that could never serve again: the daemon
retried the batch for ever with /healthz green. From issue 13 to 2026-12-07 the daemon stopped with exit code 1 for
its supervisor to restart it, and a session whose own request killed the engine was read first by the restarted
daemon, which died again, for ever (tests/rationad/test_model_stage.py drives that case with a fake engine)."""

import signal
import time

import psutil
import pytest

from rationad.broker import free_port
from tests.failure.support import metric, missing_keys, new_stream, produce_chunks, settled_outcomes, wait_until
from tests.integration.harness import DaemonProcess, write_config

pytestmark = pytest.mark.integration


def engine_core(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_engine_crash_is_survived_in_process_and_loses_nothing(broker, model, tmp_path):
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
        producer.join(60)
        evs, dead = settled_outcomes(stream, timeout=420)
        log = daemon.log()
        assert alive(), log[-3000:]
        assert "building the engine again" in log and "vLLM engine built again" in log, log[-3000:]
        new = engine_core(daemon.proc.pid)
        assert new is not None and new.pid != core.pid, log[-3000:]
        assert not psutil.pid_exists(core.pid) or psutil.Process(core.pid).status() == psutil.STATUS_ZOMBIE
        assert dead == [], dead  # nothing dead-lettered because of the crash
        assert '"fatal"' not in log
        print(f"judged everything {time.monotonic() - t0:.0f} s after the crash")
        assert daemon.terminate() == 0
    finally:
        if producer is not None:
            producer.join(60)
        daemon.kill()
    assert not missing_keys(stream, evs, dead)
