"""The HTTP backend: an OpenAI-compatible vLLM server (``python -m vllm.entrypoints.openai.api_server``).

One ``POST /v1/chat/completions`` per conversation, at most ``model.max_concurrency`` in flight; the server applies
the model's chat template and batches concurrent requests itself. Output is constrained with vLLM's
``structured_outputs: {"regex": ...}`` request field. Connection errors, timeouts, 5xx and 429 are retried with
exponential backoff and jitter (``Retry-After`` honoured), then reported as a retryable ``ModelError``; any other
4xx means the request itself is wrong and is reported as non-retryable. The API key is sent as a bearer token and
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx

from rationad.config import ModelConfig
from rationad.model.base import Completion, Message, ModelError, gather_all, token_counter

log = logging.getLogger(__name__)

SEED = 0
MAX_BACKOFF_SECS = 30.0
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def backoff_delay(attempt: int, base: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``base * 2**attempt`` with +-50 % jitter, capped."""
    return min(base * (2**attempt), MAX_BACKOFF_SECS) * (0.5 + rand())


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return min(float(resp.headers["retry-after"]), MAX_BACKOFF_SECS)
    except (KeyError, ValueError):
        return None


def _error_text(resp: httpx.Response, limit: int = 300) -> str:
    try:
        body = resp.json()
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
        text = str(msg or body)
    except ValueError:
        text = resp.text
    return text[:limit]


class ServerClient:
    """``ModelClient`` over an OpenAI-compatible vLLM server."""

    def __init__(
        self, cfg: ModelConfig, *, transport: httpx.AsyncBaseTransport | None = None, sleep=asyncio.sleep
    ) -> None:
        assert cfg.server_url
        self.cfg = cfg
        self.base_url = cfg.server_url.rstrip("/")
        self.model: str | None = cfg.served_model_name
        self.name = cfg.served_model_name or (cfg.path.name if cfg.path is not None else "vllm-server")
        self._count = token_counter(cfg.path)
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key is not None else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(cfg.request_timeout_secs),
            limits=httpx.Limits(max_connections=cfg.max_concurrency + 2),
            transport=transport,
        )

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    async def start(self) -> None:
        """Find the served model's name if it is not configured; a server that is still down is not an error here
        (the daemon waits for it through ``check_health`` and retries)."""
        if self.model is None:
            try:
                await self._discover()
            except ModelError as exc:
                log.warning("model name discovery deferred: %s", exc)

    async def _discover(self) -> str:
        resp = await self._request("GET", "/v1/models", None)
        data = resp.json().get("data") or []
        if not data:
            raise ModelError(f"{self.base_url}/v1/models lists no model", retryable=True)
        self.model = str(data[0]["id"])
        if self.cfg.served_model_name is None:
            self.name = self.model
        return self.model

    async def _request(self, method: str, url: str, payload: dict[str, Any] | None) -> httpx.Response:
        """One request with bounded concurrency and retries; the response when 2xx, else ModelError."""
        attempts = self.cfg.max_retries + 1
        last = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                async with self._sem:
                    resp = await self._http.request(method, url, json=payload)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return resp
                last = f"HTTP {resp.status_code}: {_error_text(resp)}"
                if resp.status_code not in RETRY_STATUS:
                    raise ModelError(f"{method} {url} rejected: {last}", retryable=False)
                wait = _retry_after(resp)
            if attempt + 1 < attempts:
                delay = max(wait or 0.0, backoff_delay(attempt, self.cfg.retry_backoff_secs))
                log.debug("retrying %s %s in %.2f s after %s", method, url, delay, last)
                await self._sleep(delay)
        raise ModelError(f"{method} {self.base_url}{url} failed after {attempts} attempt(s): {last}", retryable=True)

    async def _one(self, messages: list[Message], max_tokens: int, temperature: float, regex: str | None) -> Completion:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": SEED,
        }
        if regex:
            payload["structured_outputs"] = {"regex": regex}
        resp = await self._request("POST", "/v1/chat/completions", payload)
        try:
            body = resp.json()
            text = body["choices"][0]["message"]["content"] or ""
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"malformed chat completion response: {resp.text[:300]}", retryable=True) from exc
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def generate(
        self, conversations: list[list[Message]], *, max_tokens: int, temperature: float, regex: str | None
    ) -> list[Completion]:
        if not conversations:
            return []
        if self.model is None:
            await self._discover()
        return await gather_all(self._one(c, max_tokens, temperature, regex) for c in conversations)

    async def check_health(self) -> bool:
        try:
            resp = await self._http.get("/health", timeout=self.cfg.health_timeout_secs)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()
