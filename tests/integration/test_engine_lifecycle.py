"""The in-process engine's life and death on real vLLM on CPU (issue 13, items 6 and 13).

- Sampled requests whose prompts are chunk-prefilled must not kill the engine core: on vLLM CPU a per-request seed
  there raises "CPU Generator does not use offset" in the engine core, and the Judge retries malformed answers at
  temperature 0.7.
- A ``kill -9`` of the process that owns the engine must not leave the engine core and its worker running (about
  3.8 GB resident each) as orphans.

Each test starts its own engine (never two at once): about a minute each on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
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


OWNER_SCRIPT = """
import asyncio, signal, sys
from pathlib import Path

from rationad.config import ModelConfig
from rationad.model.engine import EngineClient


async def main():
    signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))  # a daemon's graceful stop goes on
    client = EngineClient(ModelConfig(backend="vllm-engine", path=Path(sys.argv[1])))
    await client.start()
    print("started", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
"""


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            pass
    return out


def test_ctrl_c_leaves_the_engine_to_its_owner_and_a_sigkilled_owner_takes_it_along(model, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole foreground process group) reached the engine core, which vLLM shuts
    down on SIGINT: the daemon lost its model in the middle of its own graceful stop (``model_blocked``, ``fatal``,
    exit 1; seen with ``rationad demo``, 2026-12-07, failing before its fix). The engine core keeps a process group of
    its own; the owner stops it. Then a ``kill -9`` of the owner alone still ends it."""
    log_path = tmp_path / "owner.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    # Output to a file, not a pipe: the engine's processes inherit it, and a pipe nobody reads would block them.
    with open(log_path, "w") as log:
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER_SCRIPT, str(model)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a shell gives a foreground job
        )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 400
        while "\nstarted\n" not in log_path.read_text(errors="replace") and owner.poll() is None:
            assert time.monotonic() < deadline, f"the engine did not start: {log_path.read_text()[-2000:]}"
            time.sleep(1)
        assert owner.poll() is None, f"the owner exited: {log_path.read_text()[-2000:]}"
        children = psutil.Process(owner.pid).children(recursive=True)
        engine = [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(engine) >= 2, f"expected the engine core and a worker below the owner: {alive(children)}"
        os.killpg(owner.pid, signal.SIGINT)  # Ctrl-C
        deadline = time.monotonic() + 30
        while "interrupted" not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # vLLM's engine core shut down within a second of the signal
        assert len(alive(engine)) == len(engine), f"Ctrl-C ended engine processes: {log_path.read_text()[-2000:]}"
        assert "received signal=SIGINT" not in log_path.read_text(errors="replace")
        owner.send_signal(signal.SIGKILL)  # only the owner's PID, as a shell, a test harness or a supervisor would
        owner.wait(10)
        deadline = time.monotonic() + 20
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert alive(children) == [], "engine processes outlived their owner"
    finally:
        if owner.poll() is None:
            children = children or psutil.Process(owner.pid).children(recursive=True)
            owner.kill()
            owner.wait(10)
        for p in children:  # never leave 4 GB orphans behind, whatever the outcome
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
