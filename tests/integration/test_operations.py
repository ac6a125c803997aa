"""The operational surface on real parts, with the in-process vLLM engine: systemd notifications under a real
NOTIFY_SOCKET, the health/readiness/metrics side port, and a clean drain on SIGTERM."""

import asyncio
import socket
import time
import uuid

import httpx
import pytest

from rationad.broker import create_topics, free_port
from rationad.metrics import Metrics
from tests.integration.harness import DaemonProcess, write_config

pytestmark = pytest.mark.integration


def test_sd_notify_health_endpoints_and_drain(broker, model, tmp_path):
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(broker.bootstrap, {topic: 1, f"{topic}.out": 1, f"{topic}.dlq": 1}))
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=topic, group=f"g-{topic}", model=model,
                       port=port)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log",
                           env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}).start()
    seen: list[str] = []

    def wait_for(msg: str, timeout: float, alive: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and msg not in seen:
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                assert not alive or daemon.proc.poll() is None, daemon.log()[-3000:]
        assert msg in seen, f"{msg} not received; got {sorted(set(seen))}\n{daemon.log()[-3000:]}"

    try:
        wait_for("READY=1", 600)
        seen.clear()
        wait_for("WATCHDOG=1", 10)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert httpx.get(f"{base}/readyz").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert "rationad_ready 1.0" in metrics and "rationad_build_info" in metrics
        exported = {m.name for m in Metrics().registry.collect()}
        assert all(f"# HELP {name}" in metrics or f"# HELP {name}_total" in metrics for name in exported)
    finally:
        seen.clear()
        code = daemon.terminate()
    try:
        wait_for("STOPPING=1", 5, alive=False)
    finally:
        sock.close()
    assert code == 0, daemon.log()[-3000:]
