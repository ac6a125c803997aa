"""The in-process engine's life and death on real vLLM on CPU (issue 13, items 6 and 13).

- Sampled requests whose prompts are chunk-prefilled must not kill the engine core: on vLLM CPU a per-request seed
  there raises "CPU Generator does not use offset" in the engine core, and the Judge retries malformed answers at
  temperature 0.7.

Each test starts its own engine (never two at once): about a minute each on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from rationad.config import ModelConfig
from rationad.model.base import ModelError
from rationad.model.engine import EngineClient

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

LINE = (
    "Receiving block blk_{n} src: /10.250.{a}.{b}:54106 dest: /10.250.{a}.{b}:50010 "
    "PacketResponder {k} for block blk_{n} terminating"
)


def long_prompt(client: EngineClient, seed: int, tokens: int) -> list[dict[str, str]]:
    """A user message of about ``tokens`` tokens (distinct per seed, so no prefix is cached across prompts)."""
    lines: list[str] = []
    n = 0
    while client.count_tokens("\n".join(lines)) < tokens:
        lines.append(LINE.format(n=seed * 100_003 + n * 7919, a=seed, b=n % 250, k=n % 3))
        n += 1
    return [{"role": "user", "content": f"Session {seed}. Is it anomalous?\n" + "\n".join(lines)}]


@pytest.fixture
def kv_cache_1gib():
    old = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    yield
    if old is None:
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    else:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = old


def test_sampled_requests_with_chunk_prefilled_prompts_leave_the_engine_healthy(model, kv_cache_1gib):
    # The engine's scheduler takes max_num_batched_tokens = 2048 a step on CPU (vLLM's default for AsyncLLM's
    # ENGINE_CONTEXT) and max_model_len is 2048: prompts of about 1,500 tokens cannot share a step whole, so all but
    # the first of each step are prefilled in chunks while the others are scheduled beside them.
    loop = asyncio.new_event_loop()
    client = EngineClient(ModelConfig(backend="vllm-engine", path=model, max_model_len=2048))
    try:
        loop.run_until_complete(asyncio.wait_for(client.start(), 400))
        convs = [long_prompt(client, seed, 1500) for seed in range(4)]
        assert all(1400 < client.count_tokens(c[0]["content"]) < 1900 for c in convs)
        try:
            out = loop.run_until_complete(
                asyncio.wait_for(client.generate(convs, max_tokens=8, temperature=0.7, regex=None), 300)
            )
        except ModelError as exc:
            pytest.fail(f"sampled requests beside chunked prefills failed: {exc.kind}: {exc}")
        assert len(out) == 4
        assert all(c.prompt_tokens > 1400 and c.completion_tokens > 0 for c in out)
        assert loop.run_until_complete(client.check_health()) is True
        # and the engine still serves afterwards (a greedy request too)
        again = loop.run_until_complete(
            asyncio.wait_for(client.generate(convs[:1], max_tokens=4, temperature=0.0, regex=None), 120)
        )
        assert again[0].completion_tokens > 0
    finally:
        loop.run_until_complete(asyncio.wait_for(client.aclose(), 120))
        loop.close()
