"""A model server that refuses the daemon's API key (a rotated key): the real vLLM server sits behind an
authenticating gateway on loopback that answers 401 to any other bearer token, as an API gateway or vLLM's own
``--api-key`` does. A 401 is not a property of any session: the daemon pauses consumption, fails ``/readyz``,
dead-letters nothing and commits nothing past the waiting sessions; once the gateway takes the key, every session
is judged. Before issue 13 every session went to the dead-letter topic and was committed past."""

import asyncio
import threading

import httpx
import pytest
from aiohttp import ClientSession, web

from rationad.broker import free_port
from tests.failure.support import metric, missing_keys, new_stream, readyz, settled_outcomes, wait_until
from tests.integration.harness import DaemonProcess, committed_vs_end, produce, write_config

pytestmark = pytest.mark.integration

DAEMON_KEY = "key-2026-12"


class Gateway:
    """Forwards to ``upstream`` when the bearer token is ``accepted``; 401 otherwise. ``/health`` needs no token."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.accepted = "key-2026-11"
        self.port = free_port()
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gateway")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/health" and request.headers.get("Authorization") != f"Bearer {self.accepted}":
            self.refused += 1
            return web.json_response({"error": {"message": "invalid API key", "code": 401}}, status=401)
        async with ClientSession() as s:
            async with s.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                 headers={"Content-Type": request.headers.get("Content-Type", "application/json")}) as r:
                return web.Response(body=await r.read(), status=r.status, content_type=r.content_type)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> "Gateway":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_a_refused_api_key_pauses_and_dead_letters_nothing(broker, model, vllm_server, tmp_path):
    gateway = Gateway(vllm_server.url).start()
    stream = new_stream(broker.bootstrap, 8, prefix="auth", partitions=2)
    asyncio.run(produce(broker.bootstrap, stream.topic, stream.records()))
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=stream.topic, group=stream.group,
                       model=model, server_url=gateway.url, port=port)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", env={"RATIONAD_MODEL__API_KEY": DAEMON_KEY}).start()
    alive = lambda: daemon.proc.poll() is None  # noqa: E731
    try:
        assert wait_until(lambda: metric(port, "rationad_model_blocked") == 1, 120, alive=alive), daemon.log()[-3000:]
        assert wait_until(lambda: metric(port, "rationad_consumption_paused") == 1, 30, alive=alive), \
            daemon.log()[-3000:]
        assert readyz(port) == 503
        body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).text
        assert "misconfigured" in body and DAEMON_KEY not in body
        assert gateway.refused >= 1
        # Nothing is dead-lettered or committed past while the key is refused.
        assert (metric(port, "rationad_dlq_records_total") or 0) == 0
        before = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
        assert any(c is None or c < e for c, e in before.values()), before
        assert alive()
        gateway.accepted = DAEMON_KEY  # the operator rotates the gateway's key too
        evs, dead = settled_outcomes(stream, timeout=420)
        assert wait_until(lambda: readyz(port) == 200, 60, alive=alive), daemon.log()[-3000:]
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
        gateway.stop()
    assert not missing_keys(stream, evs, dead)
    assert all(d.get("close_reason") for d in dead)  # only malformed-answer dead letters, if any
    log = daemon.log()
    assert DAEMON_KEY not in log
    assert log.count('"model_blocked"') <= 3, "one clear error, not one per retry"
