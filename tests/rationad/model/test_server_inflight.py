"""Requests in flight from ``ServerClient`` to a real socket: a loopback HTTP/1.1 server counts the requests it holds
at once. A vLLM server batches only what it receives concurrently, so every conversation of a ``generate`` call must
reach it together; ``model.max_concurrency`` bounds the model stage's batches, not these requests (issue 15).
Unlike ``httpx.MockTransport`` (test_server.py), this goes through httpx's connection pool, whose size caps
requests in flight too."""

from __future__ import annotations

import asyncio
import json
from typing import Self

import pytest

from rationad.config import ModelConfig
from rationad.model.base import ModelError
from rationad.model.server import ServerClient, in_flight_cap

CONV = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def _body(text: str) -> bytes:
    return json.dumps({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }).encode()


class LoopbackServer:
    """Answers chat completions after holding each request until ``expect`` requests are in flight at once (or
    ``hold_secs`` passed), so a client that sends them all together is answered at once and ``peak`` shows how many
    it had in flight. ``status`` (per request number) makes a request fail with that HTTP status."""

    def __init__(self, expect: int, hold_secs: float = 0.5, status: dict[int, int] | None = None) -> None:
        self.expect = expect
        self.hold_secs = hold_secs
        self.status = status or {}
        self.in_flight = 0
        self.peak = 0
        self.requests = 0
        self.connections = 0
        self._full = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                payload = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                number = self.requests
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                if self.in_flight >= self.expect:
                    self._full.set()
                try:
                    await asyncio.wait_for(self._full.wait(), self.hold_secs)
                except TimeoutError:
                    pass
                self.in_flight -= 1
                status = self.status.get(number, 200)
                text = payload.get("messages", [{}])[-1].get("content", "")
                body = _body("re:" + text) if status == 200 else b'{"error": {"message": "no"}}'
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _client(url: str, **cfg) -> ServerClient:
    async def no_sleep(secs: float) -> None: ...

    settings = {"backend": "vllm-server", "server_url": url, "served_model_name": "rationad", "max_retries": 1,
                "retry_backoff_secs": 0.0}
    settings.update(cfg)
    return ServerClient(ModelConfig(**settings), sleep=no_sleep)


async def test_every_conversation_of_a_call_is_in_flight_at_once():
    """32 conversations (the default ``max_batch_size``) with the default ``max_concurrency`` 4: the server holds all
    32 at once. The old client let ``max_concurrency`` requests through (peak 4: a server could not batch)."""
    n = 32
    async with LoopbackServer(expect=n) as srv:
        client = _client(srv.url)
        assert client.cfg.max_concurrency == 4
        convs = [[{"role": "user", "content": str(i)}] for i in range(n)]
        out = await client.generate(convs, max_tokens=8, temperature=0.0, regex=None)
        await client.aclose()
    assert [c.text for c in out] == [f"re:{i}" for i in range(n)]
    assert srv.peak == n
    assert srv.requests == n


async def test_concurrent_batches_reach_the_server_together():
    """``max_concurrency`` batches in flight (what the model stage does) put all their sessions in flight."""
    batch, batches = 8, 3
    async with LoopbackServer(expect=batch * batches) as srv:
        client = _client(srv.url, max_batch_size=batch, max_concurrency=batches)
        calls = [client.generate([[{"role": "user", "content": f"{b}.{i}"}] for i in range(batch)], max_tokens=8,
                                 temperature=0.0, regex=None) for b in range(batches)]
        outs = await asyncio.gather(*calls)
        await client.aclose()
    assert [[c.text for c in o] for o in outs] == [[f"re:{b}.{i}" for i in range(batch)] for b in range(batches)]
    assert srv.peak == batch * batches


async def test_a_call_larger_than_the_cap_queues_in_the_client_without_failing():
    """Past ``max_batch_size * max_concurrency`` requests wait in the client (not in httpx's pool, where the wait
    would count against the request timeout), and every one is answered."""
    cfg = {"max_batch_size": 3, "max_concurrency": 2}
    cap = in_flight_cap(ModelConfig(**cfg))
    assert cap == 6
    async with LoopbackServer(expect=cap, hold_secs=0.2) as srv:
        client = _client(srv.url, request_timeout_secs=5, **cfg)
        convs = [[{"role": "user", "content": str(i)}] for i in range(3 * cap)]
        out = await client.generate(convs, max_tokens=8, temperature=0.0, regex=None)
        await client.aclose()
    assert [c.text for c in out] == [f"re:{i}" for i in range(3 * cap)]
    assert srv.peak == cap
    assert srv.connections <= cap


@pytest.mark.parametrize(("status", "kind"), [(400, "rejected"), (401, "config"), (503, "outage")])
async def test_error_kinds_hold_with_every_request_in_flight(status, kind):
    """One failing request among many sent at once still fails the call with its kind (outage after retries)."""
    n = 12
    async with LoopbackServer(expect=n, status={5: status, n + 1: status}) as srv:
        client = _client(srv.url)
        with pytest.raises(ModelError) as err:
            await client.generate([CONV] * n, max_tokens=8, temperature=0.0, regex=None)
        await client.aclose()
    assert err.value.kind == kind
    assert srv.peak == n
