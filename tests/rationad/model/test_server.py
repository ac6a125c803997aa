"""The HTTP client's request shape, retry/backoff policy and health check, against ``httpx.MockTransport`` (a fake
transport: this tests the client's own logic; the real server is exercised in tests/integration)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from rationad.config import ModelConfig
from rationad.model.base import ModelError
from rationad.model.server import MAX_BACKOFF_SECS, ServerClient, backoff_delay, redact_url

REGEX = r"<think>[^<>]{1,10}</think>"
CONV = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def completion_body(text: str, prompt: int = 7, completion: int = 3) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


class Recorder:
    """A scripted handler: each request pops the next response (or exception) and is recorded."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item


def make(handler, sleeps: list[float] | None = None, **cfg) -> ServerClient:
    async def fake_sleep(secs: float) -> None:
        if sleeps is not None:
            sleeps.append(secs)

    settings = {"backend": "vllm-server", "server_url": "http://vllm:8000", "served_model_name": "rationad",
                "max_retries": 3, "retry_backoff_secs": 0.5}
    settings.update(cfg)
    return ServerClient(ModelConfig(**settings), transport=httpx.MockTransport(handler), sleep=fake_sleep)


async def test_request_shape_usage_and_order():
    def echo(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json=completion_body("re:" + body["messages"][-1]["content"], 11, 5))

    rec = Recorder(echo)
    client = make(rec, api_key="s3cret-key")
    convs = [[{"role": "user", "content": str(i)}] for i in range(5)]
    out = await client.generate(convs, max_tokens=64, temperature=0.0, regex=REGEX)
    assert [c.text for c in out] == [f"re:{i}" for i in range(5)]
    assert all(c.prompt_tokens == 11 and c.completion_tokens == 5 for c in out)
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer s3cret-key"
    body = json.loads(req.content)
    assert body["model"] == "rationad" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert body["structured_outputs"] == {"regex": REGEX} and "seed" not in body  # a seeded sample can kill a CPU server
    assert body["messages"] == [{"role": "user", "content": "0"}]
    await client.generate([CONV], max_tokens=8, temperature=0.7, regex=None)
    assert "structured_outputs" not in json.loads(rec.requests[-1].content)
    assert await client.generate([], max_tokens=8, temperature=0.0, regex=None) == []
    await client.aclose()


async def test_model_name_discovered_from_v1_models():
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served-x", "object": "model"}]})
        assert json.loads(request.content)["model"] == "served-x"
        return httpx.Response(200, json=completion_body("ok"))

    rec = Recorder(route)
    client = make(rec, served_model_name=None)
    assert client.model is None
    await client.start()
    assert client.model == client.name == "served-x"
    assert (await client.generate([CONV], max_tokens=8, temperature=0, regex=None))[0].text == "ok"
    await client.aclose()


async def test_start_tolerates_a_server_that_is_not_up_yet():
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"data": [{"id": "late"}]}),
                   httpx.Response(200, json=completion_body("ok")))
    client = make(rec, served_model_name=None, max_retries=0)
    await client.start()  # does not raise: discovery is deferred to the first generate
    assert client.model is None
    out = await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert client.model == "late" and out[0].text == "ok"
    await client.aclose()


async def test_start_warns_when_prompt_sizes_are_estimated(tmp_path, caplog):
    """A model.path without tokenizer.json (the production overlay mounts only the manifest there) sizes prompts by
    an estimate: said at start, naming the key."""
    client = make(Recorder(), path=str(tmp_path))
    with caplog.at_level("WARNING", logger="rationad.model.server"):
        await client.start()
    assert any("model.path" in r.getMessage() and "tokenizer.json" in r.getMessage() for r in caplog.records)
    await client.aclose()


async def test_retries_5xx_and_connect_errors_with_exponential_backoff():
    rec = Recorder(httpx.Response(503, json={"error": {"message": "overloaded"}}), httpx.ConnectError("refused"),
                   httpx.Response(500, text="oops"), httpx.Response(200, json=completion_body("fine")))
    sleeps: list[float] = []
    client = make(rec, sleeps)
    out = await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert out[0].text == "fine" and len(rec.requests) == 4
    assert len(sleeps) == 3
    for attempt, s in enumerate(sleeps):  # base 0.5 s doubled each attempt, jittered within +-50 %
        assert 0.25 * 2**attempt <= s <= 0.75 * 2**attempt
    await client.aclose()


async def test_gives_up_after_max_retries_with_a_retryable_error():
    rec = Recorder(httpx.ConnectError("connection refused"))
    sleeps: list[float] = []
    client = make(rec, sleeps, max_retries=2)
    with pytest.raises(ModelError, match="after 3 attempt") as info:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert info.value.retryable is True and len(rec.requests) == 3 and len(sleeps) == 2
    await client.aclose()


async def test_429_honours_retry_after():
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=completion_body("x")))
    sleeps: list[float] = []
    client = make(rec, sleeps, retry_backoff_secs=0.01)
    await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert sleeps == [7.0]
    await client.aclose()


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
async def test_a_retry_after_that_is_no_wait_falls_back_to_the_backoff(value):
    """Found by review (2026-12-06), failing before its fix: ``Retry-After: nan`` parsed, and the request slept on
    it for ever (its sessions never released)."""
    rec = Recorder(httpx.Response(503, headers={"Retry-After": value}), httpx.Response(200, json=completion_body("x")))
    sleeps: list[float] = []
    client = make(rec, sleeps, retry_backoff_secs=0.01)
    await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert len(sleeps) == 1 and 0 <= sleeps[0] < 1, sleeps
    await client.aclose()


@pytest.mark.parametrize("status", [400, 413, 422, 409])  # 405 is the URL's fault: a configuration error (below)
async def test_request_errors_are_rejected_without_retry(status, caplog):
    """A 4xx about the request itself: retrying it cannot help, so only this session is dead-lettered."""
    caplog.set_level(logging.DEBUG)
    rec = Recorder(httpx.Response(status, json={"error": {"message": "prompt too long"}}))
    client = make(rec, api_key="s3cret-key")
    with pytest.raises(ModelError, match=f"HTTP {status}: prompt too long") as info:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert info.value.kind == "rejected" and info.value.retryable is False and len(rec.requests) == 1
    assert "s3cret-key" not in str(info.value) and "s3cret-key" not in caplog.text
    await client.aclose()


@pytest.mark.parametrize(("status", "cause"), [(401, "model.api_key"), (403, "model.api_key"),
                                               (404, "model.served_model_name")])
async def test_auth_and_not_found_are_configuration_errors(status, cause, caplog):
    """A rotated API key or a renamed model is no session's fault: kind "config" (the daemon pauses, not the DLQ),
    with a message that names the likely cause and never the key."""
    caplog.set_level(logging.DEBUG)
    rec = Recorder(httpx.Response(status, json={"error": {"message": "denied for s3cret-key"}}))
    client = make(rec, api_key="s3cret-key")
    with pytest.raises(ModelError, match=f"HTTP {status}") as info:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert info.value.kind == "config" and info.value.retryable is True and len(rec.requests) == 1
    assert cause in str(info.value) and "model.server_url" in str(info.value)
    assert "s3cret-key" not in str(info.value) and "s3cret-key" not in caplog.text
    await client.aclose()


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_discovery_failing_with_auth_or_not_found_is_a_configuration_error(status, caplog):
    rec = Recorder(httpx.Response(status, json={"error": {"message": "nope"}}))
    client = make(rec, served_model_name=None, api_key="s3cret-key")
    await client.start()  # deferred, but said once as an error that names the cause
    assert "model." in caplog.text and "s3cret-key" not in caplog.text
    with pytest.raises(ModelError, match=f"HTTP {status}") as info:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert info.value.kind == "config" and rec.requests[-1].url.path == "/v1/models"
    await client.aclose()


async def test_a_model_list_without_the_configured_model_is_a_configuration_error():
    rec = Recorder(httpx.Response(200, json={"data": [{"id": "other"}]}))
    client = make(rec)
    with pytest.raises(ModelError, match="served_model_name") as info:
        await client.verify()
    assert info.value.kind == "config" and "other" in str(info.value)
    ok = make(Recorder(httpx.Response(200, json={"data": [{"id": "rationad"}]})))
    await ok.verify()
    empty = make(Recorder(httpx.Response(200, json={"data": []})), served_model_name=None)
    with pytest.raises(ModelError, match="lists no model") as info:
        await empty.verify()
    assert info.value.kind == "config"
    for c in (client, ok, empty):
        await c.aclose()


@pytest.mark.parametrize("failure", [httpx.Response(503), httpx.Response(507), httpx.Response(429),
                                     httpx.Response(408), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_unavailability_is_an_outage_after_the_retries(failure):
    rec = Recorder(failure)
    client = make(rec, max_retries=1)
    with pytest.raises(ModelError, match="after 2 attempt") as info:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert info.value.kind == "outage" and info.value.retryable is True and len(rec.requests) == 2
    await client.aclose()


def test_redact_url():
    assert redact_url("http://alice:pa55@vllm:8000/") == "http://***@vllm:8000/"
    assert redact_url("https://tok@vllm.example/v1") == "https://***@vllm.example/v1"
    assert redact_url("http://al:p/a@ss@h:1/x") == "http://***@h:1/x"  # a password with / and @ in it
    assert redact_url("http://vllm:8000") == "http://vllm:8000"
    assert redact_url("http://h:1/path?q=a@b") == "http://h:1/path?q=a@b"


async def test_credentials_in_the_server_url_are_never_logged_or_reported(caplog):
    caplog.set_level(logging.DEBUG)
    for script, kind in ((httpx.ConnectError("refused"), "outage"), (httpx.Response(401), "config"),
                         (httpx.Response(400), "rejected")):
        client = make(Recorder(script), server_url="http://alice:pa55word@vllm:8000", max_retries=1)
        with pytest.raises(ModelError) as info:
            await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
        assert info.value.kind == kind
        assert "pa55word" not in str(info.value) and "alice" not in str(info.value), str(info.value)
        await client.aclose()
    client = make(Recorder(httpx.ConnectError("refused")), server_url="http://alice:pa55word@vllm:8000",
                  served_model_name=None, max_retries=0)
    await client.start()
    await client.aclose()
    assert "vllm:8000" in caplog.text and "pa55word" not in caplog.text and "alice" not in caplog.text


async def test_credentials_in_the_server_url_are_sent_as_basic_auth():
    rec = Recorder(httpx.Response(200, json=completion_body("ok")))
    client = make(rec, server_url="http://alice:pa55word@vllm:8000")
    await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert rec.requests[0].headers["authorization"].startswith("Basic ")
    assert rec.requests[0].url.host == "vllm"
    await client.aclose()


@pytest.mark.parametrize("body", [
    {"choices": []},
    # found by review (2026-12-07), failing before: a gateway's other 2xx shapes raised a plain TypeError or
    # AttributeError, taken as the session's fault (every session dead-lettered as judge_failed), not as an outage
    {"choices": [{"message": {"content": [{"type": "text", "text": "ok"}]}}]},
    {"choices": [{"message": {"content": "ok"}}], "usage": "none"},
    {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": "many"}},
    {"choices": ["ok"]},
])
async def test_malformed_success_body_is_an_outage(body):
    client = make(Recorder(httpx.Response(200, json=body)))
    with pytest.raises(ModelError, match="malformed") as exc:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert exc.value.kind == "outage"
    await client.aclose()


async def test_odd_logprobs_leave_the_answer_without_a_score():
    body = completion_body("ok")
    body["choices"][0]["logprobs"] = {"content": ["not an object"]}
    client = make(Recorder(httpx.Response(200, json=body)))
    (out,) = await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert out.text == "ok" and out.score is None
    await client.aclose()


async def test_requests_in_flight_are_bounded_by_batches_times_batch_size():
    """The cap is every session the model stage can have pending (``max_batch_size * max_concurrency``), not
    ``max_concurrency`` requests (see test_server_inflight.py)."""
    state = {"now": 0, "peak": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return httpx.Response(200, json=completion_body("ok"))

    client = make(handler, max_concurrency=2, max_batch_size=2)
    out = await client.generate([CONV] * 9, max_tokens=8, temperature=0, regex=None)
    assert len(out) == 9 and state["peak"] == 4
    await client.aclose()


async def test_one_failure_fails_the_call_and_cancels_the_rest():
    started, finished = [], []

    async def handler(request: httpx.Request) -> httpx.Response:
        content = json.loads(request.content)["messages"][0]["content"]
        started.append(content)
        if content == "bad":
            return httpx.Response(400, json={"error": {"message": "bad"}})
        await asyncio.sleep(5)
        finished.append(content)
        return httpx.Response(200, json=completion_body("ok"))

    client = make(handler)
    convs = [[{"role": "user", "content": c}] for c in ("a", "bad", "b")]
    with pytest.raises(ModelError) as info:
        await asyncio.wait_for(client.generate(convs, max_tokens=8, temperature=0, regex=None), 2)
    assert info.value.kind == "rejected" and sorted(started) == ["a", "b", "bad"] and finished == []
    await client.aclose()


async def test_check_health():
    rec = Recorder(httpx.Response(200))
    ok = make(rec)
    assert await ok.check_health() is True
    assert [(r.method, r.url.path) for r in rec.requests] == [("GET", "/health")]
    for handler in (Recorder(httpx.Response(503)), Recorder(httpx.ConnectError("refused")),
                    Recorder(httpx.ReadTimeout("slow"))):
        client = make(handler)
        assert await client.check_health() is False
        await client.aclose()
    await ok.aclose()


def test_backoff_delay_is_capped_and_jittered():
    assert backoff_delay(0, 0.5, rand=lambda: 0.0) == 0.25
    assert backoff_delay(0, 0.5, rand=lambda: 1.0) == 0.75
    assert backoff_delay(3, 0.5, rand=lambda: 0.5) == 4.0
    assert backoff_delay(30, 0.5, rand=lambda: 0.5) == MAX_BACKOFF_SECS
    assert backoff_delay(2, 0.0) == 0.0


# ---- found by review (2026-12-03): each failed before its fix ----------------------------------------------------
@pytest.mark.parametrize("body", [b"null", b'["upstream overloaded"]', b'"Service Unavailable"'])
async def test_an_error_body_that_is_not_a_json_object_is_still_an_outage(body):
    """A gateway's 503 with a JSON string or list body raised AttributeError: taken for a poison session, every
    session of a real outage was dead-lettered after ``delivery.max_attempts``."""
    client = make(lambda r: httpx.Response(503, content=body, headers={"content-type": "application/json"}),
                  max_retries=1)
    with pytest.raises(ModelError) as e:
        await client.generate([CONV], max_tokens=8, temperature=0.0, regex=None)
    assert e.value.kind == "outage"


@pytest.mark.parametrize("status", [301, 302, 307, 308, 405])
async def test_a_redirect_or_405_is_a_configuration_error(status):
    """A model.server_url that redirects (http:// behind an ingress sending to https) or points at another service
    was "rejected": every session dead-lettered, input never paused. It is a configuration error now (input pauses,
    readiness fails, the log names model.server_url)."""
    client = make(lambda r: httpx.Response(status, headers={"location": "https://vllm:8000" + r.url.path}))
    with pytest.raises(ModelError) as e:
        await client.generate([CONV], max_tokens=8, temperature=0.0, regex=None)
    assert e.value.kind == "config" and "model.server_url" in str(e.value)



async def test_verify_refuses_a_budget_above_the_server_s_context_length():
    """Found by review, failing before its fix: model.max_model_len bounds only the in-process engine, and a server
    started with a shorter --max-model-len refused every long prompt with 400 (each session dead-lettered as
    model_rejected) while the settings passed start-up and check-config."""
    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": "rationad", "max_model_len": 1024}]})

    client = make(Recorder(route), served_model_name="rationad", max_prompt_tokens=1024, max_new_tokens=256)
    with pytest.raises(ModelError, match=r"^model.max_prompt_tokens \+ model.max_new_tokens: 1024 \+ 256 = 1280 "
                                         r"tokens, above the 1024") as info:
        await client.verify()
    assert info.value.kind == "config"
    await client.aclose()
    fits = make(Recorder(route), served_model_name="rationad", max_prompt_tokens=768, max_new_tokens=256)
    await fits.verify()
    await fits.aclose()


async def test_a_connection_reset_is_told_apart_from_refused_and_timeouts_over_the_retries():
    """``ModelError.dropped`` (rationad.model_stage: a request that may take the server down): a reset once connected,
    kept over the retries after it, which meet the server restarting (refused). Refused alone, or a timeout, is not."""
    def raising(*excs):
        seq = list(excs)

        def handler(request: httpx.Request) -> httpx.Response:
            raise seq.pop(0)("failed", request=request)

        return handler

    for excs, dropped in (((httpx.RemoteProtocolError, httpx.ConnectError, httpx.ConnectError), True),
                          ((httpx.ConnectError, httpx.ConnectError, httpx.ConnectError), False),
                          ((httpx.ReadTimeout, httpx.ReadTimeout, httpx.ReadTimeout), False)):
        client = make(raising(*excs), max_retries=2, retry_backoff_secs=0.0)
        with pytest.raises(ModelError) as exc:
            await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
        assert (exc.value.kind, exc.value.dropped) == ("outage", dropped), excs
        await client.aclose()


@pytest.mark.parametrize("reason", ["abort", "error"])
@pytest.mark.parametrize("text", ["", "<think>L1 reports 'disk sda1 I/O error on wri"])
async def test_a_request_the_server_ended_unfinished_is_an_outage_not_an_answer(reason, text):
    """Found by review (2026-12-07), failing before its fix: vLLM answers 200 with what it had when it aborts the
    requests in flight (a pause or sleep of the server, its fault tolerance); the client took that for the model's
    answer: an empty one was retried sampled (and cached), a partial one answered from a cut rationale."""
    body = completion_body(text)
    body["choices"][0]["finish_reason"] = reason
    client = make(Recorder(httpx.Response(200, json=body)))
    with pytest.raises(ModelError, match=f"unfinished \\(finish_reason={reason}\\)") as exc:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert exc.value.kind == "outage"
    await client.aclose()


def _scored_body(top: list | None) -> dict:
    body = completion_body("<think>L1 ok.</think>\n<answer>normal</answer>")
    tokens = ["<think>L1 ok.</think>\n<answer>", "normal", "</answer>"]
    body["choices"][0]["logprobs"] = {"content": [
        {"token": t, "logprob": -0.01, **({"top_logprobs": top if t == "normal" else [
            {"token": t, "logprob": -0.01}, {"token": "x", "logprob": -9.0}]} if top is not None else {})}
        for t in tokens]}
    return body


@pytest.mark.parametrize("top", [None, [], [{"token": "normal", "logprob": -0.01}]],
                         ids=["absent", "empty", "top-1"])
async def test_an_answer_without_a_top_k_to_bound_the_other_word_has_no_score(top):
    """Found by review (2026-12-07), failing before its fix: a gateway that drops top_logprobs (or caps them at one)
    left the sampled token's own logprob as the bound for the other answer word, so every answer scored 0.5 and was
    served anomalous at any threshold. No score then, as from a server that sends no logprobs."""
    client = make(Recorder(httpx.Response(200, json=_scored_body(top))))
    (out,) = await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert out.score is None
    client = make(Recorder(httpx.Response(200, json=_scored_body(
        [{"token": "normal", "logprob": -0.01}, {"token": "anomalous", "logprob": -6.0}]))))
    (out,) = await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert out.score is not None and out.score < 0.01
    await client.aclose()


@pytest.mark.parametrize("raw", [
    b'{"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 1e400}}',
    b'{"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": Infinity}}',
    b"[" * 100_000 + b"]" * 100_000,
])
async def test_a_success_body_that_overflows_or_nests_too_deep_is_an_outage(raw):
    """Found by review (2026-12-07), failing before its fix: an OverflowError or a RecursionError escaped the
    client, taken as the session's fault (dead-lettered as judge_failed), where a malformed body is an outage."""
    client = make(Recorder(httpx.Response(200, content=raw, headers={"content-type": "application/json"})))
    with pytest.raises(ModelError, match="malformed") as exc:
        await client.generate([CONV], max_tokens=8, temperature=0, regex=None)
    assert exc.value.kind == "outage"
    await client.aclose()
