"""The HTTP backend: an OpenAI-compatible vLLM server (``python -m vllm.entrypoints.openai.api_server``).

One ``POST /v1/chat/completions`` per conversation; the server applies the model's chat template and batches
concurrent requests itself, so every conversation of a ``generate`` call is sent at once. ``model.max_concurrency``
bounds the model stage's *batches* in flight, not requests: a client caps its requests in flight (and its
connections) only at ``in_flight_cap(cfg)`` = ``max_batch_size * max_concurrency``, one request for every session
the model stage can have pending, so the cap never holds back a batch (it bounds sockets against a runaway caller).
Output is constrained with vLLM's ``structured_outputs: {"regex": ...}`` request field.

Failures become a ``ModelError`` whose ``kind`` tells the daemon what to do (see ``rationad.model.base``):

- connection errors, timeouts, 408, 429 and 5xx are retried here with exponential backoff and jitter
  (``Retry-After`` honoured), then reported as ``outage``;
- 401, 403, 407 and 404 (also from ``/v1/models`` discovery) are ``config``: a rotated API key, a renamed model or
  a wrong URL fails every request alike, so no session is at fault; the message names the likely key;
- any other 4xx (400, 413, 422, ...) is about the request itself: ``rejected``, not retried.

The API key is sent as a bearer token; credentials in ``model.server_url`` (``http://user:pass@host``) are sent as
basic auth. Neither is ever logged or put in an error message: URLs are shown as ``http://***@host:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx

from rationad.config import USERINFO, ModelConfig, redact_url
from rationad.answer import answer_score
from rationad.model.base import SCORE_LOGPROBS, Completion, Message, ModelError, continued, gather_all, token_counter

log = logging.getLogger(__name__)

MAX_BACKOFF_SECS = 30.0
RETRY_STATUS = frozenset({408, 429})  # and every 5xx
BUSY_STATUS = frozenset({408, 429, 503})  # the server says: later (ModelError.busy)
CONFIG_STATUS = frozenset({401, 403, 404, 405, 407})  # and every 3xx (see _is_config)


def _is_config(status: int) -> bool:
    """Statuses that say the URL or credentials are wrong, whatever the request: ``CONFIG_STATUS`` (405: another
    service at that path) and redirects (the client follows none: an http:// URL behind an ingress sending to https)."""
    return status in CONFIG_STATUS or 300 <= status < 400


def _is_retried(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def _config_hint(status: int, path: str) -> tuple[str, str]:
    """The configuration key most likely wrong when a request fails with ``status``, and why."""
    if status in (401, 403):
        return "model.api_key", ("the server refused the credentials (a missing, wrong or rotated key, or a "
                                 "user:password in model.server_url)")
    if status == 407:
        return "model.server_url", "a proxy between here and the server wants credentials"
    if 300 <= status < 400:
        return "model.server_url", "the server redirects (not followed): give the URL it redirects to"
    if status == 405:
        return "model.server_url", "that path does not take this request there: is it the vLLM server's base URL?"
    if path.endswith("/models"):
        return "model.server_url", "no model list there: give the server's base URL, without /v1"
    return "model.served_model_name", ("the server does not serve a model of that name (see its /v1/models), "
                                       "or model.server_url is not the server's base URL (give it without /v1)")


def in_flight_cap(cfg: ModelConfig) -> int:
    """Requests in flight per client: every session of every batch the model stage may have in flight (it runs at
    most ``max_concurrency`` batches of at most ``max_batch_size``), so a server sees them all and batches them."""
    return cfg.max_batch_size * cfg.max_concurrency


def backoff_delay(attempt: int, base: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``base * 2**attempt`` with +-50 % jitter, capped."""
    return min(base * (2**attempt), MAX_BACKOFF_SECS) * (0.5 + rand())


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds the response's ``Retry-After`` asks for, capped; None without a finite, non-negative number (``nan``
    passed ``float`` and slept for ever: a request that never ended, its sessions never released)."""
    try:
        secs = float(resp.headers["retry-after"])
    except (KeyError, ValueError):
        return None
    return min(secs, MAX_BACKOFF_SECS) if math.isfinite(secs) and secs >= 0 else None


def _error_text(resp: httpx.Response, limit: int = 300) -> str:
    """The error message of a failed response, whatever its body (a gateway's may be a JSON string, or no JSON)."""
    try:
        body = resp.json()
    except (ValueError, httpx.DecodingError, RecursionError):
        try:
            return resp.text[:limit]
        except (ValueError, httpx.DecodingError):
            return "(undecodable body)"
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message")
        return str(msg or body)[:limit]
    return str(body)[:limit]


class _Aborted(Exception):
    """A chat completion the server ended before the model did (``finish_reason`` abort or error)."""


def _score(logprobs: Any, prefix: str = "") -> float | None:
    """``answer_score`` from a chat completion's ``logprobs`` (``content``: one entry per generated token, each with
    its ``token``, ``logprob`` and ``top_logprobs``), after the continued ``prefix``; None when the server sent none or
    an unexpected shape."""
    try:
        content = logprobs["content"]
        tokens = [str(c["token"]) for c in content]
        candidates = []
        for c in content:  # the top-k holds the sampled token too, unless it ranked below them
            top = [(str(t["token"]), float(t["logprob"])) for t in c.get("top_logprobs") or ()]
            if not any(t == c["token"] for t, _ in top):
                top.append((str(c["token"]), float(c["logprob"])))
            candidates.append(top)
    except (TypeError, KeyError, ValueError, AttributeError, ArithmeticError):
        return None
    return answer_score(tokens, candidates, prefix)


class ServerClient:
    """``ModelClient`` over an OpenAI-compatible vLLM server."""

    def __init__(
        self, cfg: ModelConfig, *, transport: httpx.AsyncBaseTransport | None = None, sleep=asyncio.sleep
    ) -> None:
        assert cfg.server_url
        self.cfg = cfg
        self.base_url = cfg.server_url.rstrip("/")
        self.display_url = redact_url(self.base_url)  # the only form of the URL that is logged or reported
        self.model: str | None = cfg.served_model_name
        self.name = cfg.served_model_name or (cfg.path.name if cfg.path is not None else "vllm-server")
        self._count = token_counter(cfg.path)
        self.max_in_flight = in_flight_cap(cfg)
        self._sem = asyncio.Semaphore(self.max_in_flight)  # below the pool's size: a request never waits for a
        # connection inside httpx, where the wait would count against the timeout and fail as a PoolTimeout
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key is not None else {}
        # Credentials in the URL go to httpx as basic auth, not in its base URL, which httpx logs with each request.
        auth: httpx.BasicAuth | None = None
        userinfo = USERINFO.match(self.base_url)
        if userinfo:
            user, _, password = userinfo.group(2)[:-1].partition(":")
            auth = httpx.BasicAuth(unquote(user), unquote(password))
        self._secrets = [x for x in (cfg.api_key.get_secret_value() if cfg.api_key is not None else None,
                                     userinfo.group(2)[:-1] if userinfo else None) if x]
        self._http = httpx.AsyncClient(
            base_url=USERINFO.sub(r"\1", self.base_url, count=1),
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(cfg.request_timeout_secs),
            # + 2: discovery and health checks never queue behind a full batch
            limits=httpx.Limits(max_connections=self.max_in_flight + 2, max_keepalive_connections=self.max_in_flight),
            transport=transport,
        )

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def _scrub(self, text: str) -> str:
        """``text`` (a server's error message, an exception's text) without our URL's credentials or the API key,
        in case a server or a library echoes them."""
        text = text.replace(self.base_url, self.display_url)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def start(self) -> None:
        """Find the served model's name if it is not configured; a server that is still down is not an error here
        (the daemon waits for it through ``check_health`` and retries)."""
        if not getattr(self._count, "exact", True):
            log.warning("model.path (%s) has no tokenizer.json: prompt sizes are estimated (%s), so a prompt may be "
                        "cut more than it needs, or refused by the server as too long (dead-lettered as "
                        "model_rejected); copy the served model's tokenizer.json there", self.cfg.path,
                        "a token per 4 ASCII characters and per byte of other text")
        if self.model is None:
            try:
                await self.discover()
            except ModelError as exc:
                if exc.kind == "config":
                    log.error("model server misconfigured (discovery deferred): %s", exc)
                else:
                    log.warning("model name discovery deferred: %s", exc)

    async def _cards(self) -> list[dict[str, Any]]:
        """The model cards the server lists at ``/v1/models`` (each with its ``id``); ModelError(kind="config") when
        it lists none."""
        # beside the requests' bound (the pool keeps connections for it): behind busy requests the health round's
        # check timed out, and a server whose context is too short was not found before sessions were blamed
        resp = await self._request("GET", "/v1/models", None, bounded=False)
        try:
            data = resp.json().get("data") or []
            cards = [{**m, "id": str(m["id"])} for m in data]
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ModelError(f"model.server_url: GET {self.display_url}/v1/models is not a model list",
                             kind="config") from exc
        if not cards:
            raise ModelError(f"model.server_url: GET {self.display_url}/v1/models lists no model", kind="config")
        return cards

    async def _models(self) -> list[str]:
        """The ids the server lists at ``/v1/models``; ModelError(kind="config") when it lists none."""
        return [c["id"] for c in await self._cards()]

    async def discover(self) -> str:
        """The served model's name, from the server's ``/v1/models`` (its first); ModelError when it cannot say."""
        self.model = (await self._models())[0]
        if self.cfg.served_model_name is None:
            self.name = self.model
        return self.model

    async def verify(self) -> None:
        """Check what ``check_health`` cannot (vLLM's ``/health`` needs no credentials and names no model): that
        the credentials are accepted and the configured model is served. ModelError: ``config`` when they are not,
        ``outage`` when the server cannot be reached."""
        cards = await self._cards()
        ids = [c["id"] for c in cards]
        if self.cfg.served_model_name is not None and self.cfg.served_model_name not in ids:
            raise ModelError(
                f"model.served_model_name: {self.cfg.served_model_name!r} is not served by {self.display_url} "
                f"(it serves {', '.join(repr(i) for i in ids[:5])})", kind="config")
        # The server's context length, where it lists it (vLLM does): model.max_model_len bounds only the in-process
        # engine, and a server started with a shorter --max-model-len refused every long prompt with 400 (each
        # session dead-lettered as model_rejected) while check-config found the settings sound.
        card = next(c for c in cards if c["id"] == (self.cfg.served_model_name or ids[0]))
        limit = card.get("max_model_len")
        needed = self.cfg.max_prompt_tokens + self.cfg.max_new_tokens
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < needed:
            raise ModelError(
                f"model.max_prompt_tokens + model.max_new_tokens: {self.cfg.max_prompt_tokens} + "
                f"{self.cfg.max_new_tokens} = {needed} tokens, above the {limit} the server at {self.display_url} "
                f"serves (its --max-model-len): lower them, or start the server with a longer context",
                kind="config")

    async def _request(self, method: str, url: str, payload: dict[str, Any] | None, *, bounded: bool = True
                       ) -> httpx.Response:
        """One request with bounded concurrency (``bounded``) and retries; the response when 2xx, else ModelError."""
        attempts = self.cfg.max_retries + 1
        last = ""
        busy = dropped = False
        reached = False  # a request got past connecting once (else it never reached the server: ``unsent``)
        for attempt in range(attempts):
            wait: float | None = None
            try:
                async with self._sem if bounded else contextlib.nullcontext():
                    resp = await self._http.request(method, url, json=payload)
            except (httpx.TransportError, httpx.DecodingError) as exc:  # refused/reset, timeouts, a garbled body
                last = self._scrub(f"{type(exc).__name__}: {exc}")
                busy = False
                # reset or closed once connected (not refused, not a timeout): what a server dying under it does; kept
                # over the retries after it (refused while the server restarts)
                dropped = dropped or isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
                # (a proxy refusing the CONNECT tunnel to a server that is down, ProxyError, never forwarded it either)
                reached = reached or not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                                                    | httpx.ProxyError)
            else:
                reached = True
                if resp.is_success:
                    return resp
                status = resp.status_code
                last = self._scrub(f"HTTP {status}: {_error_text(resp)}")
                if _is_config(status):
                    key, why = _config_hint(status, url)
                    raise ModelError(f"{key}: {method} {self.display_url}{url}: {last}; {why}", kind="config")
                if not _is_retried(status):
                    raise ModelError(f"{method} {self.display_url}{url} rejected the request: {last}",
                                     kind="rejected")
                busy = status in BUSY_STATUS
                # a reverse proxy's 502: its upstream closed the connection (a server dying under this request) or
                # refused it (one not up), which the model stage tells apart by whether the server was up when sent
                dropped = dropped or status == 502
                wait = _retry_after(resp)
            if attempt + 1 < attempts:
                delay = max(wait or 0.0, backoff_delay(attempt, self.cfg.retry_backoff_secs))
                log.debug("retrying %s %s in %.2f s after %s", method, url, delay, last)
                await self._sleep(delay)
        raise ModelError(f"{method} {self.display_url}{url} failed after {attempts} attempt(s): {last}", kind="outage",
                         busy=busy, dropped=dropped, unsent=not reached)

    async def _one(self, messages: list[Message], max_tokens: int, temperature: float, regex: str | None) -> Completion:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            # No per-request seed: on a CPU vLLM server a seeded sampled request (the Judge's malformed-answer retry)
            # during another prompt's chunked prefill kills the engine core (docs: platform notes); greedy answers need
            # none, and a retry need not be reproducible.
        }
        if regex:
            payload["structured_outputs"] = {"regex": regex}
        prefix = continued(messages)
        if prefix:  # continue the final assistant message instead of starting a new one (vLLM's chat parameters)
            payload["add_generation_prompt"] = False
            payload["continue_final_message"] = True
        payload["logprobs"] = True  # for the score (rationad.answer.answer_score)
        payload["top_logprobs"] = SCORE_LOGPROBS
        resp = await self._request("POST", "/v1/chat/completions", payload)
        # Anything but the shape vLLM returns (a gateway's own 2xx body: content as a list of parts, usage not an
        # object, counts not numbers) is an outage like an empty body, never one session's fault: it raised a plain
        # TypeError, and every session was dead-lettered as judge_failed (review 2026-12-07).
        try:
            body = resp.json()
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            usage = body.get("usage") or {}
            if not isinstance(text, str) or not isinstance(usage, dict):
                raise TypeError(f"content {type(text).__name__}, usage {type(usage).__name__}")
            if choice.get("finish_reason") in ("abort", "error"):
                # vLLM answers 200 with what it had when it aborts requests in flight (a pause or sleep of the
                # server, its fault tolerance): taken for the model's answer, an empty one was retried sampled and
                # cached, a partial one answered from a cut rationale (review 2026-12-07); as the engine client does
                raise _Aborted(choice.get("finish_reason"))
            return Completion(
                text=prefix + text,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                score=_score(choice.get("logprobs"), prefix),
            )
        except _Aborted as exc:
            raise ModelError(f"the server ended the request unfinished (finish_reason={exc})", kind="outage") from None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError, RecursionError) as exc:
            raise ModelError(f"malformed chat completion response: {self._scrub(resp.text[:300])}",
                             kind="outage") from exc

    async def generate(
        self, conversations: list[list[Message]], *, max_tokens: int, temperature: float, regex: str | None
    ) -> list[Completion]:
        if not conversations:
            return []
        if self.model is None:
            await self.discover()
        return await gather_all(self._one(c, max_tokens, temperature, regex) for c in conversations)

    async def check_health(self) -> bool:
        try:
            resp = await self._http.get("/health", timeout=self.cfg.health_timeout_secs)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()
