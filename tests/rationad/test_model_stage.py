"""The model stage's failure policy (rationad/model_stage.py): an outage dead-letters nothing; a session whose own
request keeps failing while the model answers is dead-lettered, and never holds its batch-mates or its partition.
Driven through the daemon with the HTTP client over ``httpx.MockTransport`` (fakes: unit tests of the policy)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import orjson
import pytest

from tests.rationad import test_daemon as td
from tests.rationad.fakes import ANOMALOUS, Rec
from tests.rationad.model.test_server import make as make_client


@pytest.fixture(autouse=True)
def _undo():
    yield
    td._patch.undo()


def server(handler):
    """The HTTP client over ``handler``, no retries inside it (the model stage's policy is what is tested)."""
    return make_client(handler, served_model_name="m", max_retries=0, retry_backoff_secs=0.0)


def answer(text: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": text}}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


async def run(d, consumer, until, secs: float) -> None:
    task = asyncio.create_task(d.run())
    for _ in range(int(secs * 100)):
        await asyncio.sleep(0.01)
        if until():
            break
    d.request_stop()
    await task


async def test_an_outage_dead_letters_no_session():
    """Every request fails (a gateway's 503 with a JSON string body, once taken for a poison session) for 3 s, then
    the model is back: both sessions are judged, none dead-lettered."""
    state = {"down": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        if state["down"]:
            return httpx.Response(503, content=b'"Service Unavailable"', headers={"content-type": "application/json"})
        return answer(ANOMALOUS)

    s = td.settings(delivery={"max_attempts": 1})
    recs = [Rec(0, td.line("a")), Rec(1, td.line("a")), Rec(2, td.line("b")), Rec(3, td.line("b"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(handler))
    asyncio.get_running_loop().call_later(3, state.update, {"down": False})
    await run(d, consumer, lambda: td.final_commit(consumer) == 4, 10)
    assert producer.on("rationad.dlq") == []
    assert sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")) == ["a", "b"]


def _poisoned(fail):
    """A model server's handler: healthy, model "m", ``fail(request)`` for a prompt naming "poison", an anomalous
    answer otherwise."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if any("poison" in m["content"] for m in json.loads(request.content)["messages"]):
            return fail(request)
        return answer(ANOMALOUS)

    return handler


@pytest.mark.parametrize("kind", ["timeout", "500", "empty-choices", "non-json-200", "429", "503"])
async def test_a_session_whose_own_request_always_fails_does_not_wedge_its_batch_or_partition(kind, monkeypatch):
    """Found by review (2026-12-03), failing before its fix: an outage-like failure of one prompt's request only was
    retried for ever with its whole batch; its batch-mate was never judged and the partition never committed.
    A 429 or 503 ("later") is charged only after BUSY_PATIENCE_SECS (shortened here)."""
    monkeypatch.setattr("rationad.model_stage.BUSY_PATIENCE_SECS", 1.0, raising=False)
    def fail(request: httpx.Request) -> httpx.Response:
        if kind == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if kind in ("500", "429", "503"):  # 429, 503: "later", but the model answers every other request
            return httpx.Response(int(kind), json={"error": {"message": "refused"}})
        if kind == "empty-choices":
            return httpx.Response(200, json={"choices": [], "usage": {}})
        return httpx.Response(200, content=b"<html>proxy error page</html>")

    s = td.settings(delivery={"max_attempts": 2})
    recs = [Rec(0, td.line("p", "INFO poison")), Rec(1, td.line("p", "INFO poison")),
            Rec(2, td.line("q", "ERROR x")), Rec(3, td.line("q", "ERROR x"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(_poisoned(fail)))
    await run(d, consumer, lambda: td.final_commit(consumer) == 4, 15)
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["q"]
    assert [dict(x.headers)["rationad-error-type"] for x in producer.on("rationad.dlq")] == [b"model_failed"]
    assert td.final_commit(consumer) == 4


async def test_a_rate_limit_that_lets_the_probe_through_dead_letters_no_session():
    """Found by review (2026-12-06), failing before its fix: a gateway's token limiter refused every real request
    with 429 and let the stage's one-token probe through, so the stage took the model for up and the session's
    own request for the fault: after a few rounds it was dead-lettered as model_failed (and readiness said ready).
    A 429 (408, 503) says "later", whatever the request: it is waited out like any outage."""
    state = {"limited": True, "probes": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if json.loads(request.content)["max_tokens"] <= 1:
            state["probes"] += 1
            return answer("x")
        if state["limited"]:
            return httpx.Response(429, json={"error": {"message": "rate limit: tokens per minute"}})
        return answer(ANOMALOUS)

    s = td.settings(delivery={"max_attempts": 2})
    recs = [Rec(0, td.line("a")), Rec(1, td.line("a"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(handler))
    asyncio.get_running_loop().call_later(5, state.update, {"limited": False})
    await run(d, consumer, lambda: td.final_commit(consumer) == 2, 20)
    assert producer.on("rationad.dlq") == []
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["a"]


async def test_one_session_a_gateway_always_refuses_as_busy_is_dead_lettered_after_the_patience_with_one_slot(
        monkeypatch):
    """Found by review (2026-12-06) of a first fix that charged a "later" failure only when the model answered other
    requests meanwhile: with one call slot nothing else is ever answered while that session retries, so one request a
    gateway always refuses (429) held every partition for ever. It is charged after BUSY_PATIENCE_SECS (1 s here)."""
    monkeypatch.setattr("rationad.model_stage.BUSY_PATIENCE_SECS", 1.0, raising=False)

    handler = _poisoned(lambda request: httpx.Response(429, json={"error": {"message": "too many tokens"}}))
    s = td.settings(delivery={"max_attempts": 2}, model={"max_concurrency": 1, "max_batch_size": 1,
                                                         "retry_backoff_secs": 0.0})
    recs = [Rec(0, td.line("p", "INFO poison")), Rec(1, td.line("p", "INFO poison")),
            Rec(2, td.line("q", "ERROR x")), Rec(3, td.line("q", "ERROR x"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(handler))
    await run(d, consumer, lambda: td.final_commit(consumer) == 4, 20)
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["q"]
    assert [dict(x.headers)["rationad-error-type"] for x in producer.on("rationad.dlq")] == [b"model_failed"]


class _SlowRejecting:
    """A model that answers after 0.2 s, and rejects (400) any batch holding a "poison" prompt."""

    name = "slow"

    async def start(self): ...

    async def check_health(self):
        return True

    def count_tokens(self, t):
        return len(t) // 4 + 1

    async def aclose(self): ...

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        from rationad.model.base import Completion, ModelError

        await asyncio.sleep(0.2)
        if any("poison" in c[-1]["content"] for c in conversations):
            raise ModelError("HTTP 400: prompt too long", kind="rejected")
        return [Completion(ANOMALOUS, 1, 1) for _ in conversations]


async def test_a_rejection_in_another_batch_does_not_dead_letter_an_identical_good_session():
    """Found by review (2026-12-03), failing before its fix: a session waiting on an identical session's request in
    another batch took that batch's rejection (caused by a batch-mate) and was dead-lettered."""
    from rationad.config import Settings
    from rationad.judge import Judge, Judgement
    from rationad.metrics import Metrics
    from rationad.model_stage import ModelStage, Pending
    from rationad.records import LogLine, Session

    def pending(key, msg):
        return Pending(Session(key=key, lines=[LogLine(key=key, message=msg, raw=msg)], close_reason="gap"),
                       hold=None, closed_at=0.0, is_revoked=lambda: False)

    s = Settings(cache={"enabled": False}, model={"retry_backoff_secs": 0.0})
    stage = ModelStage(s, Judge(_SlowRejecting(), s.model, "generic"), None, None, Metrics(),
                       spawn=lambda c, n: asyncio.ensure_future(c), on_dead=lambda r: None, on_state=lambda: None)
    other = asyncio.ensure_future(stage._judge([pending("a", "ERROR disk failed"), pending("b", "ERROR poison")]))
    await asyncio.sleep(0.05)
    [(_, result)] = await stage._judge([pending("c", "ERROR disk failed")])  # waits on a's request in flight
    await other
    assert isinstance(result, Judgement) and result.answer.verdict == "anomalous"



@pytest.mark.parametrize("status", [401, 403])
async def test_a_request_refused_for_its_content_dead_letters_that_session_alone(status):
    """Found by review (2026-12-07): a filter in front of the model server (a WAF's default deny) refuses a request
    quoting an attack with 403, read as a rotated API key: the daemon paused and the batch, its good session too, was
    retried for ever. The minimal request passes, so only the refused session is dead-lettered; a key refused for
    everything (the probe refused too) still blocks."""
    import httpx

    from rationad.config import Settings
    from rationad.judge import Judge, Judgement
    from rationad.metrics import Metrics
    from rationad.model.server import ServerClient
    from rationad.model_stage import ModelStage, Pending
    from rationad.records import LogLine, Session

    refuse_all = [False]

    def handler(request):
        if refuse_all[0] or b"UNION SELECT" in request.content:
            return httpx.Response(status, json={"error": {"message": "Request blocked by rule 942100"}})
        text = "<think>L1 reports a failure.</think>\n<answer>anomalous</answer>"
        return httpx.Response(200, json={"choices": [{"message": {"content": text}}], "usage": {}})

    def pending(key, msg):
        return Pending(Session(key=key, lines=[LogLine(key=key, message=msg, raw=msg)], close_reason="gap"),
                       hold=None, closed_at=0.0, is_revoked=lambda: False)

    s = Settings(cache={"enabled": False}, model={"backend": "vllm-server", "server_url": "http://vllm:8000",
                                                  "served_model_name": "m", "max_retries": 0,
                                                  "retry_backoff_secs": 0.0})
    client = ServerClient(s.model, transport=httpx.MockTransport(handler))
    stage = ModelStage(s, Judge(client, s.model, "generic"), None, None, Metrics(),
                       spawn=lambda c, n: asyncio.ensure_future(c), on_dead=lambda r: None, on_state=lambda: None)
    batch = [pending("web1", "WARN query failed: id=1 UNION SELECT password FROM users"),
             pending("disk", "ERROR disk failed")]
    out = dict((p.session.key, r) for p, r in await asyncio.wait_for(stage._judge(batch), 30))
    assert out["web1"].reason == "model_rejected"
    assert str(status).encode() in dict(out["web1"].headers)["rationad-error-reason"]
    assert isinstance(out["disk"], Judgement) and out["disk"].answer.verdict == "anomalous"
    assert stage.blocked is None
    refuse_all[0] = True  # a rotated key: everything refused, the probe too
    task = asyncio.ensure_future(stage._judge([pending("disk2", "ERROR disk 2 failed")]))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if stage.blocked:
            break
    task.cancel()
    assert stage.blocked and "model misconfigured" in stage.blocked


@pytest.mark.parametrize("cached", [True, False])
async def test_only_a_model_answer_clears_a_block_a_cached_verdict_does_not(cached):
    """Found by review (2026-12-06), failing before its fix: a batch answered wholly from the verdict cache (most
    template judgements after a restart) cleared a block set because the model rejects every request, so readiness
    flapped and input resumed while the model still refused everything; only a model's answer may clear it."""
    from types import SimpleNamespace

    from rationad.model_stage import Pending

    d, _, _ = td.make(td.settings(), [])

    async def judge_many(sessions):
        return [SimpleNamespace(cached=cached) for _ in sessions]

    d.stage.judge = SimpleNamespace(judge_many=judge_many)
    d.stage.block("model rejects every request: 400", by_requests=True)
    pending = Pending(session=object(), hold=None, closed_at=0.0, is_revoked=lambda: False)
    assert len(await d.stage._judge([pending])) == 1
    assert (d.stage.blocked is None) == (not cached)


async def test_a_minimal_request_answered_clears_a_block_set_by_rejected_requests():
    """Found by review (2026-12-06) of the change above: with cached verdicts no longer clearing it, a block set
    because every request was rejected stayed for ever once the model was fixed, if the session that next reached
    it was rejected for its own content: the probe proved the model answers, yet input stayed paused."""
    from types import SimpleNamespace

    from rationad.model.base import ModelError
    from rationad.model_stage import Pending
    from rationad.records import LogLine, Session

    d, _, _ = td.make(td.settings(), [])

    async def judge_many(sessions):
        raise ModelError("prompt too long", kind="rejected")

    async def generate(*a, **kw):
        return []  # the minimal probe is answered

    d.stage.judge = SimpleNamespace(judge_many=judge_many, client=SimpleNamespace(generate=generate),
                                    probe_request=lambda templated=False: ([{"role": "user", "content": "p"}], None))
    d.stage.block("model rejects every request: 400", by_requests=True)
    session = Session(key="k", lines=[LogLine(key="k", message="m", raw="m", ts=0.0, offset=0)], close_reason="gap")
    [(_, result)] = await d.stage._judge([Pending(session=session, hold=None, closed_at=0.0,
                                                  is_revoked=lambda: False)])
    assert result.reason == "model_rejected" and d.stage.blocked is None


@pytest.mark.parametrize("status", [400, 403, 500])
async def test_a_server_refusing_every_constrained_request_dead_letters_no_session(status):
    """Found by review, failing before its fix: the probe was one word with no system prompt, no answer regex and
    one token, so a server or filter refusing what every real request carries (structured outputs, the <think>
    text) answered it, and each session in turn was taken to be at fault: every session dead-lettered and
    committed. The probe is shaped like a real request now: refused too, so nothing is dead-lettered."""
    refused = {"n": 0}

    def handler(request):
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if "structured_outputs" in json.loads(request.content):
            refused["n"] += 1
            return httpx.Response(status, json={"error": {"message": "refused"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": ANOMALOUS}}],
                                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    client = make_client(handler, served_model_name="m", max_retries=0, retry_backoff_secs=0.0)
    s = td.settings(delivery={"max_attempts": 2})
    recs = [Rec(0, td.line("a", "ERROR x")), Rec(1, td.line("a", "ERROR x")),
            Rec(2, td.line("b", "INFO y")), Rec(3, td.line("b", "INFO y"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=client)
    task = asyncio.create_task(d.run())
    try:
        for _ in range(300):
            await asyncio.sleep(0.01)
            if refused["n"] >= 6:
                break
    finally:
        d.request_stop()
        await task
        td._patch.undo()
    assert refused["n"] >= 6
    assert producer.on("rationad.dlq") == [] and producer.on("rationad.anomalies") == []
    assert (td.final_commit(consumer) or 0) == 0


async def test_requests_refused_with_403_keep_input_paused_while_the_model_list_is_allowed():
    """Found by review, failing before its fix: with every request refused (403, the probe too) but GET /v1/models
    allowed (path-scoped auth, a WAF), the health round's model listing lifted the block every 10 s: readiness and
    consumption flapped."""
    from rationad import daemon as daemon_mod

    def handler(request):
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        return httpx.Response(403, json={"error": {"message": "forbidden"}})

    td._patch.setattr(daemon_mod, "MODEL_HEALTH_INTERVAL_SECS", 0.3)
    client = make_client(handler, served_model_name="m", max_retries=0, retry_backoff_secs=0.0)
    d, consumer, producer = td.make(td.settings(model={"retry_backoff_secs": 1.0}),
                                    [{td.TP: [Rec(0, td.line("a", "ERROR x")), Rec(1, td.line("a", "ERROR x"))]}],
                                    model=client)
    task = asyncio.create_task(d.run())
    states = []
    try:
        for _ in range(60):
            await asyncio.sleep(0.1)
            if d._started and d.stage.blocked:
                states.append(d._ready()[0])
    finally:
        d.request_stop()
        await task
        td._patch.undo()
    assert len(states) > 30 and not any(states), states
    assert producer.on("rationad.dlq") == [] and (td.final_commit(consumer) or 0) == 0


async def test_a_batch_mate_answered_at_once_is_emitted_without_waiting_for_the_other_s_retries(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a batch split to judge its sessions one by one settled
    them together, so a batch-mate (on another partition) answered at once waited for the other's whole retry budget,
    BUSY_PATIENCE_SECS (600 s) and more for one the server keeps calling busy, with its partition's commit."""
    monkeypatch.setattr("rationad.model_stage.BUSY_PATIENCE_SECS", 6.0, raising=False)
    from aiokafka.structs import TopicPartition

    tp1 = TopicPartition("logs", 1)
    handler = _poisoned(lambda request: httpx.Response(429, json={"error": {"message": "too many tokens"}}))
    s = td.settings(delivery={"max_attempts": 2}, model={"retry_backoff_secs": 0.1})
    batches = [{td.TP: [Rec(0, td.line("p", "INFO poison")), Rec(1, td.line("p", "INFO poison"))],
                tp1: [Rec(0, td.line("q", "ERROR x")), Rec(1, td.line("q", "ERROR x"))]}]
    d, consumer, producer = td.make(s, batches, model=server(handler))
    consumer.tps = [td.TP, tp1]
    await run(d, consumer, lambda: producer.on("rationad.anomalies") != [], 5)  # well within the patience
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["q"]
    assert producer.on("rationad.dlq") == []  # p is still being retried


def _bad_gateway(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, text="<html><center><h1>502 Bad Gateway</h1></center></html>")


def _crashing_server(latency: float, proxied: bool = False):
    """A model server's handler: a request naming "poison" takes the server down 0.05 s after it arrives (every
    request in flight then loses its connection, and connections are refused for 0.5 s while it restarts); a request
    takes ``latency`` s, a probe 0.02 s. ``proxied``: behind a reverse proxy (nginx, an ingress), which answers 502
    for both."""
    import time as _time

    loop = asyncio.get_running_loop()
    state = {"epoch": 0, "down_until": 0.0}

    def crash():
        state["epoch"] += 1
        state["down_until"] = _time.monotonic() + 0.5

    async def handler(request: httpx.Request) -> httpx.Response:
        if _time.monotonic() < state["down_until"]:
            if proxied:
                return _bad_gateway(request)
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        body = json.loads(request.content)
        epoch = state["epoch"]
        if any("poison" in m["content"] for m in body["messages"]):
            loop.call_later(0.05, crash)
        await asyncio.sleep(0.02 if body["max_tokens"] <= 4 else latency)  # generating
        if state["epoch"] != epoch:
            if proxied:
                return _bad_gateway(request)
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=request)
        return answer(ANOMALOUS)

    return handler


@pytest.mark.parametrize("refusal", [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ProxyError("503 Service Unavailable"),  # an HTTPS proxy refusing the tunnel (review of the first fix)
], ids=["direct", "https_proxy"])
async def test_a_session_whose_requests_were_refused_while_the_server_restarted_is_not_charged(refusal):
    """Left by the last sessions, failing before its fix: a request refused at connect (a server restarting) never
    reached the server, yet when the probe after the third such outage found the server back, the session was charged
    an attempt ("fails while the model answers"), and dead-lettered after delivery.max_attempts restarts."""
    state = {"refused": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        if body["max_tokens"] > 4 and state["refused"] < 3:  # the server came back between the third and the probe
            state["refused"] += 1
            raise type(refusal)(str(refusal), request=request)
        return answer(ANOMALOUS)

    s = td.settings(delivery={"max_attempts": 1}, model={"retry_backoff_secs": 0.05})
    recs = [Rec(0, td.line("a", "ERROR x")), Rec(1, td.line("a", "ERROR x"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(handler))
    await run(d, consumer, lambda: td.final_commit(consumer) == 2, 30)
    assert state["refused"] == 3 and not producer.on("rationad.dlq")
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["a"]


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind_a_proxy"])
async def test_a_session_whose_request_takes_the_server_down_is_dead_lettered_not_retried_for_ever(proxied):
    """Found by review (2026-12-07), failing before its fix: a request that crashes the server (the connection reset,
    then refused while the server restarts) was charged an attempt only if the probe sent after it was answered,
    which it never is: retried for ever, taking the server down every 30 s, its partition never committed. Sent again
    only once a probe is answered, and charged when the probe after it is not. Behind a reverse proxy the reset and
    the refusals are both 502 (left by the last session, failing before: the culprit was retried as in an outage)."""
    s = td.settings(delivery={"max_attempts": 2}, model={"retry_backoff_secs": 0.1})
    recs = [Rec(0, td.line("p", "INFO poison")), Rec(1, td.line("p", "INFO poison")),
            Rec(2, td.line("q", "ERROR x")), Rec(3, td.line("q", "ERROR x"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(_crashing_server(0.1, proxied)))
    await run(d, consumer, lambda: td.final_commit(consumer) == 4, 30)
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["q"]
    assert [dict(x.headers)["rationad-error-type"] for x in producer.on("rationad.dlq")] == [b"model_failed"]


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind_a_proxy"])
async def test_a_server_refusing_connections_for_a_while_dead_letters_no_session(proxied):
    """The other side of the test above: every connection refused for 3 s (a restart of the server alone) is an
    outage, whatever the probes say: both sessions are judged once it is back, none dead-lettered."""
    state = {"down": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if state["down"]:
            if proxied:
                return _bad_gateway(request)
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        return answer(ANOMALOUS)

    s = td.settings(delivery={"max_attempts": 1}, model={"retry_backoff_secs": 0.1})
    recs = [Rec(0, td.line("a")), Rec(1, td.line("a")), Rec(2, td.line("b")), Rec(3, td.line("b"))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(handler))
    asyncio.get_running_loop().call_later(3, state.update, {"down": False})
    await run(d, consumer, lambda: td.final_commit(consumer) == 4, 20)
    assert producer.on("rationad.dlq") == []
    assert sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")) == ["a", "b"]


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind_a_proxy"])
async def test_sessions_in_flight_when_another_request_takes_the_server_down_are_not_charged(proxied, monkeypatch):
    """Found by review (2026-12-07) of the first fix above: a crash drops every connection, so batch-mates in flight
    beside the culprit were charged too and dead-lettered after delivery.max_attempts crashes. A suspect session is
    sent again alone (no other request of the stage in flight), so only the culprit is charged. And only after a
    probe sent alone right before it is answered: with every retry's jitter the same, the suspects probe together,
    are answered, and wait for the lane behind the culprit; behind a proxy each was refused at once (502, read as
    dropped) while the server restarted and charged as the culprit (a clean-clone CI run, 2026-12-07; failing before
    its fix)."""
    import rationad.model_stage as model_stage

    monkeypatch.setattr(model_stage.random, "random", lambda: 0.0)
    s = td.settings(delivery={"max_attempts": 2}, model={"retry_backoff_secs": 0.1})
    recs = []
    for key in ["p", *"abcdefgh"]:
        text = "INFO poison" if key == "p" else "ERROR x"
        recs += [Rec(len(recs), td.line(key, text)), Rec(len(recs) + 1, td.line(key, text))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=server(_crashing_server(0.5, proxied)))
    await run(d, consumer, lambda: td.final_commit(consumer) == len(recs), 60)
    judged = sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies"))
    assert judged == list("abcdefgh")
    assert [(orjson.loads(x.value)["session"]["key"], dict(x.headers)["rationad-error-type"])
            for x in producer.on("rationad.dlq")] == [("p", b"model_failed")]


async def test_the_lane_lets_one_request_alone_and_shared_ones_go_on_when_it_is_cancelled():
    from rationad.model_stage import _Lane

    lane, order = _Lane(), []

    async def shared(name, secs):
        async with lane.shared():
            order.append(f"{name}+")
            await asyncio.sleep(secs)
            order.append(f"{name}-")

    async def alone(name):
        async with lane.alone():
            order.append(f"{name}+")
            await asyncio.sleep(0.05)
            order.append(f"{name}-")

    first = asyncio.ensure_future(shared("s1", 0.1))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(alone("A"))
    await asyncio.sleep(0.01)
    later = asyncio.ensure_future(shared("s2", 0.01))  # comes after the request waiting to go alone
    await asyncio.gather(first, waiting, later)
    assert order == ["s1+", "s1-", "A+", "A-", "s2+", "s2-"]

    order.clear()
    first = asyncio.ensure_future(shared("s1", 0.1))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(alone("A"))
    await asyncio.sleep(0.01)
    later = asyncio.ensure_future(shared("s2", 0.01))
    await asyncio.sleep(0.01)
    waiting.cancel()  # a stop while it waited: the shared request it held back goes on at once
    await asyncio.wait_for(later, 0.05)
    await first
    assert order == ["s1+", "s2+", "s2-", "s1-"]


class _PoisonedEngine:
    """The part of vLLM's ``AsyncLLM`` the in-process client uses: a request naming "poison" kills the engine core
    0.05 s after it arrives, and every request in flight then fails as vLLM's do (``EngineDeadError``)."""

    def __init__(self, latency: float) -> None:
        from types import SimpleNamespace

        self.latency = latency
        self.errored = False
        self.renderer = SimpleNamespace(render_chat_async=self._render, default_chat_tok_params=None)

    async def _render(self, conversations, chat_params, tok_params):
        return None, [json.dumps(c) for c in conversations]

    async def generate(self, engine_input, params, request_id, lora_request=None):
        from types import SimpleNamespace

        from vllm.v1.engine.exceptions import EngineDeadError

        if "poison" in engine_input:
            asyncio.get_running_loop().call_later(0.05, setattr, self, "errored", True)
        await asyncio.sleep(0.02 if params.max_tokens <= 4 else self.latency)
        if self.errored:
            raise EngineDeadError()
        yield SimpleNamespace(prompt_token_ids=[1], outputs=[
            SimpleNamespace(text=ANOMALOUS, token_ids=[4], finish_reason="stop", logprobs=None)])

    async def check_health(self) -> None:
        if self.errored:
            from vllm.v1.engine.exceptions import EngineDeadError

            raise EngineDeadError()

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("max_attempts", [1, 2])
async def test_a_session_whose_request_kills_the_in_process_engine_is_dead_lettered_and_the_rest_judged(
        tmp_path, max_attempts):
    """Left by the last session, failing before its fix: the in-process engine's death stopped the daemon (exit 1), and
    the restarted daemon read the same session first and died again, for ever, its partition never committed. The
    engine is built again in the process; the requests it dropped are suspects, sent again alone, and the one that
    kills it alone delivery.max_attempts times is dead-lettered, as with a vllm-server. An engine built again at once
    answers the probe right after the crash: that says nothing of which request took it down (found under load, failing
    before: innocent sessions in flight beside the culprit were charged for it)."""
    import random

    random.seed(3)  # the retries' jitter
    from rationad.config import ModelConfig
    from rationad.model.engine import EngineClient

    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    client._llm = _PoisonedEngine(0.3)
    builds = []

    def build(generation: int) -> None:
        builds.append(generation)
        client._keep(_PoisonedEngine(0.3), generation)

    client._build = build
    s = td.settings(model={"backend": "vllm-engine", "path": str(tmp_path), "retry_backoff_secs": 0.1},
                    delivery={"max_attempts": max_attempts})
    recs = []
    for key in ["p", *"abcdefgh"]:
        text = "INFO poison" if key == "p" else "ERROR x"
        recs += [Rec(len(recs), td.line(key, text)), Rec(len(recs) + 1, td.line(key, text))]
    d, consumer, producer = td.make(s, [{td.TP: recs}], model=client)
    await run(d, consumer, lambda: td.final_commit(consumer) == len(recs), 60)
    assert d.exit_code == 0 and not d.stage.dead
    assert sorted(orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")) == list("abcdefgh")
    assert [(orjson.loads(x.value)["session"]["key"], dict(x.headers)["rationad-error-type"])
            for x in producer.on("rationad.dlq")] == [("p", b"model_failed")]
    assert len(builds) >= 2  # built again after each death


async def test_a_request_refused_while_the_in_process_engine_is_built_again_is_not_charged(tmp_path):
    """Found by review (the flaky test above, 1 run in 4 with max_attempts=1), failing before its fix: a session's
    request refused by the in-process client because its engine was being built again never reached a model, but
    the probe sent after it found the rebuild done and was answered, and the session was charged an attempt
    ("session_fails_while_model_answers") and dead-lettered as model_failed. Here each of the session's first three
    requests meets a rebuild that ends at once after refusing it."""
    from rationad.config import ModelConfig
    from rationad.model.engine import EngineClient
    from rationad.model_stage import PROBE_TOKENS

    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    client._llm = _PoisonedEngine(0.01)
    real, refusals = client.generate, [3]

    async def generate(conversations, *, max_tokens, **kw):
        if max_tokens > PROBE_TOKENS and refusals[0]:
            refusals[0] -= 1
            client._rebuilding = asyncio.get_running_loop().create_future()  # being built again...
            try:
                return await real(conversations, max_tokens=max_tokens, **kw)
            finally:
                client._rebuilding = None  # ...and built: the probe after the refusal is answered
        return await real(conversations, max_tokens=max_tokens, **kw)

    client.generate = generate
    s = td.settings(model={"backend": "vllm-engine", "path": str(tmp_path), "retry_backoff_secs": 0.1},
                    delivery={"max_attempts": 1})
    d, consumer, producer = td.make(s, [{td.TP: [Rec(0, td.line("a", "ERROR x")), Rec(1, td.line("a", "ERROR x"))]}],
                                    model=client)
    await run(d, consumer, lambda: td.final_commit(consumer) == 2, 20)
    assert refusals == [0]
    assert producer.on("rationad.dlq") == []
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["a"]


async def test_a_request_dropped_while_the_model_answers_the_probe_after_it_is_sent_alone_not_charged():
    """Found under load (2026-12-07), failing before its fix: a session whose request lost its connection three rounds
    running (an in-process engine or a server that died under it and came back at once, a network resetting
    connections) was charged an attempt whenever the probe after it was answered, and dead-lettered after
    delivery.max_attempts: innocent sessions in flight beside a culprit were charged for it. A dropped request is
    charged only when it was alone; the probe answered sends it alone next."""
    state = {"resets": 4}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        if body["max_tokens"] > 4 and state["resets"] > 0:  # real requests, not the probe
            state["resets"] -= 1
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=request)
        return answer(ANOMALOUS)

    s = td.settings(delivery={"max_attempts": 1}, model={"retry_backoff_secs": 0.1})
    d, consumer, producer = td.make(s, [{td.TP: [Rec(0, td.line("a", "ERROR x")), Rec(1, td.line("a", "ERROR x"))]}],
                                    model=server(handler))
    await run(d, consumer, lambda: td.final_commit(consumer) == 2, 20)
    assert producer.on("rationad.dlq") == []
    assert [orjson.loads(e.value)["session"]["key"] for e in producer.on("rationad.anomalies")] == ["a"]


async def test_a_session_refused_by_a_server_too_short_for_every_prompt_is_not_blamed_before_the_health_check():
    """Found by review (2026-12-07), failing before its fix: only the health round's check (``verify``) blocked a
    server whose context is shorter than the prompts, and it queued behind busy requests (or had not run yet), so a
    long session refused with 400 was dead-lettered as model_rejected while a one-line probe was answered. The
    server's check is asked before a session is blamed, beside the requests' bound."""
    from rationad.model.server import ServerClient
    from rationad.model_stage import Pending
    from rationad.records import LogLine, Session

    answer = "<think>L1 reports a failure.</think>\n<answer>anomalous</answer>"
    slow = asyncio.Event()

    async def handler(request):
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        user = json.loads(request.content)["messages"][1]["content"]
        if "LONG" in user:
            return httpx.Response(400, json={"error": {"message": "This model's maximum context length is 512"}})
        if "SLOW" in user:
            await slow.wait()  # every request slot busy
        return httpx.Response(200, json={"choices": [{"message": {"content": answer}, "finish_reason": "stop"}],
                                         "usage": {}})

    s = td.settings(model={"backend": "vllm-server", "server_url": "http://vllm:8000", "served_model_name": "m",
                           "max_retries": 0, "retry_backoff_secs": 0.0, "max_batch_size": 1, "max_concurrency": 1,
                           "health_timeout_secs": 1})
    client = ServerClient(s.model, transport=httpx.MockTransport(handler))
    d, _, _ = td.make(s, [], model=client)
    try:
        busy = asyncio.ensure_future(client.generate([[{"role": "system", "content": "s"},
                                                       {"role": "user", "content": "SLOW"}]],
                                                     max_tokens=8, temperature=0.0, regex=None))
        await asyncio.sleep(0.05)
        await d._check_model()  # the health round, with every slot busy
        assert d.stage.blocked_by_check
        d.stage.answered(checked=True)  # as if the round had not run yet
        slow.set()
        await busy
        session = Session(key="big", lines=[LogLine(key="big", message="ERROR LONG disk failed", raw="x")],
                          close_reason="gap")
        judging = asyncio.ensure_future(d.stage._judge([Pending(session, hold=None, closed_at=0.0,
                                                                 is_revoked=lambda: False)]))
        for _ in range(50):
            if judging.done() or d.stage.blocked_by_check:
                break
            await asyncio.sleep(0.02)
        assert not judging.done(), judging.result()  # not dead-lettered: it waits for the server to be fit
        assert d.stage.blocked_by_check
        judging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await judging
    finally:
        await client.aclose()
        td._patch.undo()


async def test_a_session_refused_for_its_size_is_cut_harder_before_it_is_blamed():
    """Found by review (2026-12-07), failing before its fix: without the model's tokenizer the prompt's size is an
    estimate that random letters beat up to three times, so the server refused the session (over its context) and it
    was dead-lettered as model_rejected while the probe was answered. It is sent again with half its prompt budget
    (down to 256 tokens) before it is blamed."""
    from rationad.config import Settings
    from rationad.judge import Judge, Judgement
    from rationad.metrics import Metrics
    from rationad.model.base import Completion, ModelError
    from rationad.model_stage import ModelStage, Pending
    from rationad.records import LogLine, Session

    seen = []

    class ShortContext(_SlowRejecting):
        """Counts four characters a token (the estimate); its real context takes 1,500 characters of prompt."""

        async def generate(self, conversations, *, max_tokens, temperature, regex):
            sizes = [len(c[-1]["content"]) for c in conversations]
            seen.extend(sizes)
            if max(sizes) > 1_500 and max_tokens > 4:
                raise ModelError("HTTP 400: This model's maximum context length is 512 tokens", kind="rejected")
            return [Completion(ANOMALOUS, 1, 1) for _ in conversations]

    def word(i: int) -> str:  # distinct letters-only ids: no digits for the template masking to make one
        return "".join(chr(65 + (i // 26 ** k) % 26) for k in range(3)) * 10

    lines = [LogLine(key="k", message=f"ERROR id {word(i)} failed", raw="x", offset=i) for i in range(200)]
    s = Settings(cache={"enabled": False}, model={"retry_backoff_secs": 0.0})
    client = ShortContext()
    stage = ModelStage(s, Judge(client, s.model, "generic"), None, None, Metrics(),
                       spawn=lambda c, n: asyncio.ensure_future(c), on_dead=lambda r: None, on_state=lambda: None)
    p = Pending(Session(key="k", lines=lines, close_reason="gap"), hold=None, closed_at=0.0, is_revoked=lambda: False)
    [(_, result)] = await asyncio.wait_for(stage._judge([p]), 30)
    assert isinstance(result, Judgement) and result.answer.verdict == "anomalous"
    assert p.session.extra["max_prompt_tokens"] in (512, 256) and seen[0] > 1_500
    # the event names the budget: the same lines judged whole (read again) are not its duplicate
    from rationad.events import ModelInfo, event_id

    whole = Session(key="k", lines=lines, close_reason="gap")
    assert event_id(p.session, ModelInfo("m")) != event_id(whole, ModelInfo("m"))
    # replay does the same (it recorded the session as model_rejected)
    from rationad.replay import judge_refused_alone

    again = Session(key="k", lines=lines, close_reason="gap")
    [judged] = await judge_refused_alone(Judge(client, s.model, "generic"), [again])
    assert judged.answer.verdict == "anomalous" and again.extra["max_prompt_tokens"] in (512, 256)
    # Found by review of the first version, failing on it: with the probe refused too (a server refusing every
    # request) no session is at fault, and none is cut: every session in flight was cut to 256 tokens for good.
    client.generate = lambda *a, **kw: _refuse()
    stuck = Pending(Session(key="s", lines=lines, close_reason="gap"), hold=None, closed_at=0.0,
                    is_revoked=lambda: False)
    judging = asyncio.ensure_future(stage._judge([stuck]))
    for _ in range(50):
        if stage.blocked:
            break
        await asyncio.sleep(0.02)
    judging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await judging
    assert stage.blocked and "max_prompt_tokens" not in stuck.session.extra


async def _refuse():
    from rationad.model.base import ModelError

    raise ModelError("HTTP 400: --max-logprobs", kind="rejected")
