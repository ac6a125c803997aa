"""A local Kafka-protocol broker for the demo, tests and benchmarks: noida-db from PyPI (no JVM, no Docker).

Production uses a real Kafka cluster; this only starts a single local broker. noida-db keeps its data in
``data_dir``, so a stop/start keeps topics and committed offsets (the failure tests rely on that).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path


def _binary() -> Path:
    try:
        from importlib.resources import files

        path = Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError as exc:
        raise RuntimeError("noida-db is not installed (pip install 'rationad[dev]')") from exc
    if not path.is_file():
        raise RuntimeError(f"noida-db binary not found at {path}")
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the broker answers a Kafka ApiVersions v0 request."""
    client_id = b"rationad"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(8)
            return len(head) >= 8 and struct.unpack(">i", head[4:8])[0] == 1
    except OSError:
        return False


class LocalBroker:
    def __init__(self, port: int | None = None, data_dir: str | Path | None = None, log_path: str | Path | None = None):
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="rationad-broker-"))
        self.log_path = Path(log_path) if log_path else self.data_dir / "broker.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(_binary()), "start", "--only", "kafka", "--kafka-port", str(self.port), "--data-dir",
             str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"noida-db exited with {self.proc.returncode}; see {self.log_path}")
            if api_versions_ok("127.0.0.1", self.port):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"noida-db did not answer on port {self.port} within {timeout}s; see {self.log_path}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir and not os.environ.get("RATIONAD_KEEP_BROKER_DATA"):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions) if they do not exist; brokers auto-create with other counts."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, p, 1) for n, p in topics.items() if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()
