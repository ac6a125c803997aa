"""The operational surface on real parts, with the in-process vLLM engine: systemd notifications under a real
NOTIFY_SOCKET, the health/readiness/metrics side port, and a clean drain on SIGTERM."""

import asyncio
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from rationad.broker import LocalBroker, create_topics, free_port
from rationad.config import KafkaConfig
from rationad.metrics import Metrics
from rationad.topics import missing_topics
from tests.integration.harness import ROOT, DaemonProcess, write_config

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
        assert httpx.get(f"{base}/startedz").json() == {"ok": True, "detail": "started"}
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


async def _auto_create(bootstrap: str, enabled: bool | None = None) -> list[str]:
    """Switch the broker's topic auto-creation (noida-db honours AlterConfigs); return its topics."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if enabled is not None:
            value = "true" if enabled else "false"
            await admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1",
                                                      {"auto.create.topics.enable": value})])
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_check_config_names_a_missing_output_topic_and_creates_nothing(model, tmp_path):
    """With auto-creation off, a missing DLQ topic stalls every dead letter; check-config must say which key names
    it. Asking must not create it: aiokafka's metadata requests for named topics allow auto-creation. Its own
    broker, since the shared one must keep auto-creating."""
    topic = f"topics-{uuid.uuid4().hex[:8]}"
    with LocalBroker(data_dir=tmp_path / "broker") as b:
        asyncio.run(_auto_create(b.bootstrap, False))
        asyncio.run(create_topics(b.bootstrap, {topic: 1, f"{topic}.out": 1}))
        cfg = write_config(tmp_path / "c.toml", bootstrap=b.bootstrap, topic=topic, group=f"g-{topic}", model=model)

        def check_config() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "rationad", "check-config", "--config", str(cfg)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)

        r = check_config()
        assert r.returncode == 1, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert errors == [f"error: output.dlq_topic: topic '{topic}.dlq' does not exist on {b.bootstrap} and the "
                          "broker does not auto-create topics (auto.create.topics.enable=false); create it"], r.stderr
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap)
        assert asyncio.run(missing_topics(kafka, [f"{topic}.out", f"{topic}.dlq"])) == [f"{topic}.dlq"]

        assert f"{topic}.dlq" not in asyncio.run(_auto_create(b.bootstrap, True))
        assert asyncio.run(missing_topics(kafka, [f"{topic}.out", f"{topic}.dlq"])) == []  # the first send creates it
        assert f"{topic}.dlq" not in asyncio.run(_auto_create(b.bootstrap))  # asking created nothing

        asyncio.run(_auto_create(b.bootstrap, False))
        asyncio.run(create_topics(b.bootstrap, {f"{topic}.dlq": 1}))
        r = check_config()
        assert r.returncode == 0, r.stderr


async def test_an_output_topic_smaller_than_output_max_message_bytes_is_refused_at_start(broker):
    """Found by review (2026-12-07): a broker refuses a producer batch over the topic's max.message.bytes whole, so
    with output.max_message_bytes above it the events of a model batch were all dead-lettered, then their dead
    letters refused, and the daemon stopped, again after every restart. Start names the key; the limit read from the
    real broker (DescribeConfigs)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from rationad.config import ConfigError
    from rationad.topics import require_topics

    topic = f"small-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "65536"})])
    finally:
        await admin.close()
    await create_topics(broker.bootstrap, {f"{topic}.dlq": 1})
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    keyed = {"output.topic": topic, "output.dlq_topic": f"{topic}.dlq"}
    with pytest.raises(ConfigError, match=f"output.max_message_bytes: 1048576 is more than topic '{topic}'"):
        await require_topics(kafka, keyed, max_message_bytes=1_048_576)
    await require_topics(kafka, keyed, max_message_bytes=65_536)


async def test_record_times_reads_the_broker_timestamps_of_committed_offsets(broker):
    """``rationad.kafka.record_times`` (the committed age of partitions the daemon has not fetched) on the real broker:
    the time of the record at each partition's offset, in one read; a partition with nothing there is left out."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    from rationad.kafka import record_times

    topic = f"rt-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {topic: 3})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        for part in (0, 1):
            for i, ms in enumerate((1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000)):
                await p.send_and_wait(topic, b"line %d" % i, partition=part, timestamp_ms=ms + part * 1000)
    finally:
        await p.stop()
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap)
    t0, t1, t2 = (TopicPartition(topic, n) for n in range(3))
    got = await record_times(kafka, {t0: 1, t1: 0, t2: 0}, 5.0)
    assert got == {t0: 1_700_000_060.0, t1: 1_700_000_001.0}  # partition 2 is empty
