"""The side port: ``/metrics`` (Prometheus), ``/healthz`` (main loop alive and progressing), ``/readyz``, and
``/startedz`` (start-up done: the model client started and the main loop running, whatever the model's health)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rationad.metrics import Metrics

Check = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, metrics: Metrics, host: str, port: int, *, healthy: Check, ready: Check,
                 started: Check) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._healthy = healthy
        self._ready = ready
        self._started = started
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _status(check: Check) -> web.Response:
        ok, detail = check()
        return web.json_response({"ok": ok, "detail": detail}, status=200 if ok else 503)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._status(self._healthy)

    async def _readyz(self, _request: web.Request) -> web.Response:
        return self._status(self._ready)

    async def _startedz(self, _request: web.Request) -> web.Response:
        return self._status(self._started)

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [web.get("/metrics", self._metrics), web.get("/healthz", self._healthz), web.get("/readyz", self._readyz),
             web.get("/startedz", self._startedz)]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # ephemeral port (tests): report the real one
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
