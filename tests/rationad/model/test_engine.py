"""The in-process engine client without an engine: how failures are classified (over a fake ``AsyncLLM``) and the
request parameters. The real engine is exercised in tests/integration/test_engine_lifecycle.py and
test_model_backends.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rationad.config import ModelConfig
from rationad.model.base import ModelError
from rationad.model.engine import SEED, EngineClient


class FakeLLM:
    """The part of vLLM's ``AsyncLLM`` the client uses; ``fail`` is raised by ``generate``, which may also mark
    the engine errored (as vLLM's output handler does when the engine core dies)."""

    def __init__(self, fail: BaseException | None = None, *, errored: bool = False, dies: bool = False) -> None:
        self.fail = fail
        self.errored = errored
        self.dies = dies
        self.rendered = 0
        self.renderer = SimpleNamespace(render_chat_async=self._render, default_chat_tok_params=None)

    async def _render(self, conversations, chat_params, tok_params):
        self.rendered += 1
        return None, list(range(len(conversations)))

    async def generate(self, engine_input, params, request_id, lora_request=None):
        if self.dies:
            self.errored = True
        if self.fail is not None:
            raise self.fail
        yield SimpleNamespace(
            prompt_token_ids=[1, 2, 3], outputs=[SimpleNamespace(text="ok", token_ids=[4], finish_reason="stop")]
        )

    async def check_health(self) -> None:
        if self.errored:
            from vllm.v1.engine.exceptions import EngineDeadError

            raise EngineDeadError()


def client_over(llm: FakeLLM, tmp_path: Path) -> EngineClient:
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    client._llm = llm
    return client


async def generate(client: EngineClient) -> list:
    return await client.generate([[{"role": "user", "content": "hi"}]] * 2, max_tokens=4, temperature=0.7, regex=None)


async def test_a_dead_engine_core_is_dead_not_an_outage_and_stays_unhealthy(tmp_path):
    from vllm.v1.engine.exceptions import EngineDeadError

    llm = FakeLLM(EngineDeadError())
    client = client_over(llm, tmp_path)
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert info.value.kind == "dead" and info.value.retryable
    assert await client.check_health() is False
    with pytest.raises(ModelError) as again:  # no new request reaches a dead engine
        await generate(client)
    assert again.value.kind == "dead" and llm.rendered == 1


async def test_an_errored_engine_is_dead_before_any_request(tmp_path):
    llm = FakeLLM(errored=True)
    client = client_over(llm, tmp_path)
    assert await client.check_health() is False
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert info.value.kind == "dead" and llm.rendered == 0


async def test_whatever_a_request_raised_when_the_engine_died_under_it_it_is_dead(tmp_path):
    from vllm.v1.engine.exceptions import EngineGenerateError

    for fail in (EngineGenerateError(), ValueError("stream closed"), ModelError("vLLM returned no output")):
        client = client_over(FakeLLM(fail, dies=True), tmp_path)
        with pytest.raises(ModelError) as info:
            await generate(client)
        assert info.value.kind == "dead", fail
        assert await client.check_health() is False


async def test_a_live_engine_failing_a_request_is_an_outage_or_a_rejection(tmp_path):
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineGenerateError

    client = client_over(FakeLLM(EngineGenerateError()), tmp_path)
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert info.value.kind == "outage"
    assert await client.check_health() is True

    client = client_over(FakeLLM(VLLMValidationError("prompt too long")), tmp_path)
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert info.value.kind == "rejected" and not info.value.retryable
    assert await client.check_health() is True


async def test_a_healthy_engine_answers(tmp_path):
    client = client_over(FakeLLM(), tmp_path)
    out = await generate(client)
    assert [c.text for c in out] == ["ok", "ok"]
    assert await client.check_health() is True


def test_requests_carry_a_seed_off_a_cpu_only(tmp_path):
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    assert client._sampling(8, 0.7, None).seed is None  # the default until the engine is built: a CPU's
    client._seed_requests = True  # what _build sets on a GPU
    assert client._sampling(8, 0.7, None).seed == SEED
