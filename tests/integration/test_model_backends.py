"""Both model backends on the real model folder and real vLLM on CPU: the in-process ``AsyncLLM`` engine, then an
OpenAI-compatible ``vllm.entrypoints.openai.api_server`` subprocess. One module-scoped flow runs them one after the
other (never two vLLMs at once) on its own event loop, and checks that each leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rationad.answer import CLOSE_REGEX, CUT_MARK
from rationad.config import ModelConfig
from rationad.model.base import ModelError, make_client
from rationad.prompt import ANSWER_REGEX, build_messages, build_view
from tests.integration.harness import VllmServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# The regex caps the <think> text at 700 characters and every token is at least one character, so this many new
# tokens always suffice for the constrained completion to finish (the untrained base model rambles to the cap).
MAX_TOKENS = 768

SESSIONS = [
    ["Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
     "Received block blk_-1608999687919862906 of size 91178 from /10.250.19.102",
     "PacketResponder 1 for block blk_-1608999687919862906 terminating"],
    ["Receiving block blk_7503483334202473044 src: /10.251.215.16:55695 dest: /10.251.215.16:50010",
     "Exception in receiveBlock for block blk_7503483334202473044 java.io.IOException: Connection reset by peer",
     "writeBlock blk_7503483334202473044 received exception java.io.IOException: Connection reset by peer"],
    ["BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/part-00000. blk_-3544583377289625738",
     "Deleting block blk_-3544583377289625738 file /mnt/hadoop/dfs/data/current/subdir19/blk_-3544583377289625738"],
]


def prepared_model() -> Path:
    """RATIONAD_TEST_MODEL, else the base model folder from ``python -m training.prepare_base`` (cached)."""
    if os.environ.get("RATIONAD_TEST_MODEL"):
        path = Path(os.environ["RATIONAD_TEST_MODEL"]).expanduser()
    else:
        proc = subprocess.run([sys.executable, "-m", "training.prepare_base"], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not proc.stdout.strip():
            pytest.skip(f"the base model cannot be prepared (training.prepare_base exited {proc.returncode}): "
                        f"{proc.stderr[-500:]}")
        path = Path(proc.stdout.strip().splitlines()[-1])
    if not (path / "config.json").is_file():
        pytest.skip(f"no model folder at {path}")
    return path


def vllm_descendants() -> list[str]:
    """vLLM processes (engine core, workers) still running below this test process, leaving out the servers
    other tests share (session fixtures: their own process groups)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if os.getpgid(p.pid) in VllmServer.running:
                continue
            cmd = " ".join(p.cmdline())
            name = p.name()
            # only vLLM's own processes (engine core, workers, API server): the shared broker is a child too
            if "resource_tracker" not in cmd and ("vllm" in (cmd + name).lower() or "EngineCor" in name
                                                  or cmd.startswith(sys.executable)):
                out.append(f"{p.pid} {p.name()} {cmd[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def conversations(client) -> list[list[dict[str, str]]]:
    return [build_messages(build_view("hdfs", lines, count_tokens=client.count_tokens)) for lines in SESSIONS]


class Flow:
    """Starts one backend at a time on a private event loop; the fixture's teardown stops whatever is left."""

    def __init__(self, model: Path, tmp: Path) -> None:
        self.model = model
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.engine = None
        self.engine_start_secs: float | None = None
        self.server = None
        self.server_client = None
        self.engine_prompt_tokens: list[int] | None = None
        self.engine_texts: list[str] | None = None

    def run(self, coro, timeout: float = 300):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def start_engine(self, adapter: Path | None = None):
        if self.engine is not None and self.engine.cfg.adapter != adapter:
            self.stop_engine()
        if self.engine is None:
            self.stop_server()
            client = make_client(ModelConfig(backend="vllm-engine", path=self.model, adapter=adapter,
                                             served_model_name="rationad"))
            t0 = time.monotonic()
            self.run(client.start(), timeout=400)
            self.engine_start_secs = time.monotonic() - t0
            self.engine = client
        return self.engine

    def stop_engine(self) -> None:
        if self.engine is not None:
            client, self.engine = self.engine, None
            self.run(client.aclose(), timeout=120)

    def start_server(self):
        if self.server is None:
            from tests.integration.harness import VllmServer

            self.stop_engine()
            # vLLM's 5 s default regex-compilation timeout fails ANSWER_REGEX requests on a busy machine (the engine
            # client raises it itself; a server gets it from its environment).
            os.environ["VLLM_REGEX_COMPILATION_TIMEOUT_S"] = "60"
            self.server = VllmServer(self.model, log_path=self.tmp / "vllm-server.log").start(timeout=400)
            self.server_client = make_client(ModelConfig(
                backend="vllm-server", server_url=self.server.url, path=self.model, max_retries=1,
                retry_backoff_secs=0.1, request_timeout_secs=240, health_timeout_secs=2))
            self.run(self.server_client.start())
        return self.server_client

    def stop_server(self) -> None:
        if self.server_client is not None:
            self.run(self.server_client.aclose())
            self.server_client = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        try:
            self.stop_engine()
            self.stop_server()
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    model = prepared_model()
    old = {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_REGEX_COMPILATION_TIMEOUT_S")}
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    f = Flow(model, tmp_path_factory.mktemp("model-backends"))
    try:
        yield f
    finally:
        f.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_completions(out, n: int) -> None:
    assert len(out) == n
    for c in out:
        assert re.fullmatch(ANSWER_REGEX, c.text), c.text
        assert c.prompt_tokens > 100 and 0 < c.completion_tokens <= MAX_TOKENS


def test_engine_generates_constrained_answers(flow):
    client = flow.start_engine()
    assert client.name == "rationad"
    assert flow.run(client.check_health()) is True
    convs = conversations(client)
    t0 = time.monotonic()
    out = flow.run(client.generate(convs, max_tokens=MAX_TOKENS, temperature=0.0, regex=ANSWER_REGEX))
    secs = time.monotonic() - t0
    check_completions(out, len(SESSIONS))
    flow.engine_prompt_tokens = [c.prompt_tokens for c in out]
    flow.engine_texts = [c.text for c in out]
    generated = sum(c.completion_tokens for c in out)
    print(f"\nengine start {flow.engine_start_secs:.1f} s; {generated} tokens in {secs:.1f} s "
          f"= {generated / secs:.1f} generated tok/s for {len(out)} concurrent requests")
    # Greedy decoding is deterministic: the same conversation gives the same text, alone or in a batch.
    again = flow.run(client.generate(convs[:1], max_tokens=MAX_TOKENS, temperature=0.0, regex=ANSWER_REGEX))
    assert again[0].text == out[0].text
    # The tokenizer-based counter agrees with the engine's own count of the user message's tokens (roughly:
    # the engine's prompt adds the chat template and the system prompt).
    assert client.count_tokens(convs[0][1]["content"]) < out[0].prompt_tokens


def test_engine_continues_a_final_assistant_message(flow):
    """The answer after a cut rationale (rationad.answer.close_cut_thought): the conversation ends with the closed
    rationale; the engine continues it (no new assistant turn) with the answer word only, scored there."""
    client = flow.start_engine()
    conv = conversations(client)[1]
    prefix = "<think>L2 x1: an exception while receiving the block." + CUT_MARK + "</think>\n<answer>"
    [c] = flow.run(client.generate([[*conv, {"role": "assistant", "content": prefix}]], max_tokens=12,
                                   temperature=0.0, regex=CLOSE_REGEX))
    assert c.text.startswith(prefix) and re.fullmatch(ANSWER_REGEX, c.text), c.text
    assert 0 < c.completion_tokens <= 12 and c.score is not None and 0.0 <= c.score <= 1.0
    assert (c.score >= 0.5) == c.text.endswith("anomalous</answer>")


def test_engine_rejects_an_over_long_prompt_as_non_retryable(flow):
    client = flow.start_engine()
    huge = [{"role": "user", "content": "blk " * 5000}]
    with pytest.raises(ModelError) as info:
        flow.run(client.generate([huge], max_tokens=16, temperature=0.0, regex=None))
    assert info.value.retryable is False, info.value
    print(f"\nengine rejection: {info.value}")
    assert flow.run(client.check_health()) is True  # one bad request does not take the engine down


def test_engine_shutdown_leaves_no_process(flow):
    client = flow.start_engine()
    assert vllm_descendants(), "expected the engine core below this process while the engine runs"
    flow.stop_engine()
    deadline = time.monotonic() + 30
    while vllm_descendants() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vllm_descendants() == []
    assert flow.run(client.check_health()) is False


ADAPTER_SCRIPT = """
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
peft_model = get_peft_model(model, cfg)
with torch.no_grad():  # peft starts B at zero (a no-op adapter): make it change the model
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.05)
peft_model.save_pretrained(sys.argv[2])
"""


def test_engine_serves_a_lora_adapter(flow):
    adapter = flow.tmp / "adapter"
    subprocess.run([sys.executable, "-c", ADAPTER_SCRIPT, str(flow.model), str(adapter)], check=True, timeout=300)
    client = flow.start_engine(adapter=adapter)
    convs = conversations(client)[:1]
    out = flow.run(client.generate(convs, max_tokens=MAX_TOKENS, temperature=0.0, regex=ANSWER_REGEX))
    check_completions(out, 1)
    if flow.engine_texts is not None:  # the adapter is applied: greedy output differs from the base model's
        assert out[0].text != flow.engine_texts[0]
    flow.stop_engine()
    assert vllm_descendants() == []


def test_server_generates_constrained_answers(flow):
    client = flow.start_server()
    assert client.model == "rationad"  # discovered from /v1/models (--served-model-name rationad)
    assert flow.run(client.check_health()) is True
    t0 = time.monotonic()
    out = flow.run(client.generate(conversations(client), max_tokens=MAX_TOKENS, temperature=0.0,
                                   regex=ANSWER_REGEX))
    secs = time.monotonic() - t0
    check_completions(out, len(SESSIONS))
    if flow.engine_prompt_tokens is not None:  # both backends render the same chat template: same prompts
        assert [c.prompt_tokens for c in out] == flow.engine_prompt_tokens
    generated = sum(c.completion_tokens for c in out)
    print(f"\nserver: {generated} tokens in {secs:.1f} s = {generated / secs:.1f} generated tok/s")


def test_server_over_long_prompt_is_non_retryable(flow):
    client = flow.start_server()
    huge = [{"role": "user", "content": "blk " * 5000}]
    with pytest.raises(ModelError) as info:
        flow.run(client.generate([huge], max_tokens=16, temperature=0.0, regex=None))
    assert info.value.retryable is False and "HTTP 400" in str(info.value), info.value
    print(f"\nserver rejection: {info.value}")


def test_server_health_flips_when_the_server_is_killed(flow):
    client = flow.start_server()
    assert flow.run(client.check_health()) is True
    proc = flow.server.proc
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: API server and its engine core
    proc.wait(30)
    assert flow.run(client.check_health()) is False
    with pytest.raises(ModelError) as info:
        flow.run(client.generate(conversations(client)[:1], max_tokens=16, temperature=0.0, regex=None))
    assert info.value.retryable is True
    flow.stop_server()
    assert vllm_descendants() == []
