"""The in-process engine client without an engine: how failures are classified (over a fake ``AsyncLLM``), the
request parameters, and the watchdog that makes the engine core die with its owner (plain processes, no vLLM).
The real engine is exercised in tests/integration/test_engine_lifecycle.py and test_model_backends.py."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from rationad.config import ModelConfig
from rationad.model.base import ModelError
from rationad.model.engine import SEED, EngineClient

ROOT = Path(__file__).resolve().parents[3]


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

    def shutdown(self) -> None:
        self.shut = True


class HungLLM(FakeLLM):
    """An engine that never finishes a request; ``closed`` counts the requests given up (their generators closed,
    as vLLM's ``generate`` aborts a request when cancelled)."""

    closed = 0

    async def generate(self, engine_input, params, request_id, lora_request=None):
        try:
            await asyncio.Event().wait()
            yield None
        finally:
            self.closed += 1


async def test_a_request_the_engine_never_finishes_times_out_as_an_outage(tmp_path):
    llm = HungLLM()
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path, request_timeout_secs=0.2))
    client._llm = llm
    with pytest.raises(ModelError) as info:
        await asyncio.wait_for(generate(client), 120)  # before the timeout: hung here until the 120 s guard
    assert info.value.kind == "outage" and "model.request_timeout_secs" in str(info.value)
    assert llm.closed == 2  # both requests given up, not left running


async def test_a_stuck_engine_is_unhealthy_until_it_makes_a_token_again(tmp_path):
    """Found by review, failing before its fix: an engine core alive but making no token passed vLLM's health check
    (it only checks for an error), so the health round cleared each outage the requests reported within 10 s and
    the liveness rule (restart an in-process engine down past server.stall_secs) never fired: its partitions stayed
    wedged for good."""
    llm = HungLLM()
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path, request_timeout_secs=0.2))
    client._llm = llm
    assert await client.check_health()
    with pytest.raises(ModelError):
        await asyncio.wait_for(generate(client), 120)
    assert not await client.check_health()
    client._llm = FakeLLM()  # the engine makes tokens again
    assert [c.text for c in await generate(client)] == ["ok", "ok"]
    assert await client.check_health()


class QueuedLLM(FakeLLM):
    """An engine that runs one request at a time, each for ``secs``: the last of a batch waits its turn."""

    def __init__(self, secs: float) -> None:
        super().__init__()
        self.secs = secs
        self.turn = asyncio.Lock()

    async def generate(self, engine_input, params, request_id, lora_request=None):
        async with self.turn:
            await asyncio.sleep(self.secs)
        yield SimpleNamespace(
            prompt_token_ids=[1], outputs=[SimpleNamespace(text="ok", token_ids=[4], finish_reason="stop")]
        )


async def test_a_request_waiting_its_turn_while_the_engine_works_is_not_timed_out(tmp_path):
    """Found by review (2026-12-07) of the timeout above: it counted a request's wait in the engine's queue, and a CPU
    engine runs about 22 of the up to 128 requests in flight at once, so on a slow host the last of a batch timed out
    while the engine worked, the batch's work was thrown away and the sessions ended dead-lettered. The bound is on
    the engine finishing nothing."""
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path, request_timeout_secs=0.3))
    client._llm = QueuedLLM(0.12)
    got = await asyncio.wait_for(
        client.generate([[{"role": "user", "content": "hi"}]] * 5, max_tokens=4, temperature=0.0, regex=None), 60)
    assert [c.text for c in got] == ["ok"] * 5  # 0.6 s in all, each finishing 0.12 s after the one before


def client_over(llm: FakeLLM, tmp_path: Path) -> EngineClient:
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    client._llm = llm
    return client


async def generate(client: EngineClient) -> list:
    return await client.generate([[{"role": "user", "content": "hi"}]] * 2, max_tokens=4, temperature=0.7, regex=None)


def rebuilding(client: EngineClient, *engines: FakeLLM | Exception, hold: threading.Event | None = None) -> list:
    """Make ``client``'s rebuilds (``_build``, run in a worker thread) install ``engines`` in turn (an exception: that
    build fails), each once ``hold`` is set; returns the list of builds made."""
    made: list = []

    def build(generation: int) -> None:
        if hold is not None:
            hold.wait(5)
        nxt = engines[len(made)]
        made.append(nxt)
        if isinstance(nxt, Exception):
            raise nxt
        client._keep(nxt, generation)

    client._build = build
    return made


async def rebuilt(client: EngineClient) -> None:
    for _ in range(200):
        if client._rebuilding is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not rebuilt")


async def test_an_engine_core_that_dies_under_requests_is_built_again_and_they_are_dropped(tmp_path):
    """Before 2026-12-07 a dead engine core was ``dead`` for good and the daemon exited; a session whose own request
    killed it was read first by the restarted daemon, which died again, for ever. The engine is built again in this
    process, and the requests it dropped are an outage with ``dropped`` set, as a ``vllm-server`` dying under them,
    so the model stage can find such a session and dead-letter it."""
    from vllm.v1.engine.exceptions import EngineDeadError

    old, new = FakeLLM(EngineDeadError()), FakeLLM()
    client = client_over(old, tmp_path)
    hold = threading.Event()
    made = rebuilding(client, new, hold=hold)
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert (info.value.kind, info.value.dropped) == ("outage", True)
    assert client.restarting_since is not None and await client.check_health() is False
    with pytest.raises(ModelError) as meanwhile:  # sent while it is built again: an outage it never reached
        await generate(client)
    assert (meanwhile.value.kind, meanwhile.value.dropped) == ("outage", False)
    hold.set()
    await rebuilt(client)
    assert made == [new] and client._llm is new and client.restarting_since is None and old.shut
    assert await client.check_health() is True
    assert [c.text for c in await generate(client)] == ["ok", "ok"]


@pytest.mark.parametrize("fail", ["EngineGenerateError", "ValueError", "ModelError"])
async def test_whatever_a_request_raised_when_the_engine_died_under_it_it_was_dropped(tmp_path, fail):
    from vllm.v1.engine.exceptions import EngineGenerateError

    error = {"EngineGenerateError": EngineGenerateError(), "ValueError": ValueError("stream closed"),
             "ModelError": ModelError("vLLM returned no output")}[fail]
    client = client_over(FakeLLM(error, dies=True), tmp_path)
    rebuilding(client, FakeLLM())
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert (info.value.kind, info.value.dropped) == ("outage", True)
    await rebuilt(client)
    assert await client.check_health() is True


async def test_an_engine_found_dead_with_no_request_in_flight_is_built_again_and_a_request_sent_to_it_not_dropped(
        tmp_path):
    client = client_over(FakeLLM(errored=True), tmp_path)
    client._stuck = True  # a request given up for no token before it died: the new engine is not stuck
    rebuilding(client, FakeLLM())
    assert await client.check_health() is False  # the health round finds it: the rebuild starts
    await rebuilt(client)
    assert await client.check_health() is True
    client._llm.errored = True  # dies again, idle
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert (info.value.kind, info.value.dropped) == ("outage", False)
    assert client._llm is None or client._rebuilding is not None
    await rebuilt(client)


async def test_an_engine_that_keeps_dying_with_nothing_answered_or_cannot_be_built_again_is_dead(tmp_path):
    from vllm.v1.engine.exceptions import EngineDeadError

    from rationad.model.engine import DEATHS_WITHOUT_ANSWER

    dying = [FakeLLM(EngineDeadError()) for _ in range(DEATHS_WITHOUT_ANSWER)]
    client = client_over(dying[0], tmp_path)
    rebuilding(client, *dying[1:])
    for _ in range(DEATHS_WITHOUT_ANSWER - 1):  # the tenth death is the end
        with pytest.raises(ModelError) as info:
            await generate(client)
        assert info.value.kind == "outage"
        await rebuilt(client)
    with pytest.raises(ModelError) as info:
        await generate(client)
    assert info.value.kind == "dead" and await client.check_health() is False

    for fails in (ModelError("cannot start the vLLM engine: out of memory", retryable=False),
                  RuntimeError("a bug in the build")):  # (a plain error left it unbuilt and not dead: wedged)
        client = client_over(FakeLLM(EngineDeadError()), tmp_path)
        rebuilding(client, fails)
        with pytest.raises(ModelError):
            await generate(client)
        await rebuilt(client)
        with pytest.raises(ModelError) as info:
            await generate(client)
        assert info.value.kind == "dead" and await client.check_health() is False, fails


async def test_requests_in_flight_on_an_engine_found_dead_end_as_dropped_before_its_rebuild(tmp_path):
    """Found by review (2026-12-07), failing before its fix: vLLM marks an engine errored before its output handler
    fails the requests in flight; a death found in between (the health round, a new request) rebuilt the engine and
    cancelled that handler first, so those requests waited for ever (kept alive by the new engine's tokens), holding
    their batches' partitions."""
    old = HungLLM()
    old.shutdown = lambda: None
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path, request_timeout_secs=60))
    client._llm = old
    rebuilding(client, FakeLLM())
    waiting = asyncio.ensure_future(generate(client))
    await asyncio.sleep(0.05)
    old.errored = True  # the engine core is gone; its handler has not failed the requests yet
    assert await client.check_health() is False  # found dead: rebuilt
    with pytest.raises(ModelError) as info:
        await asyncio.wait_for(waiting, 2)
    assert (info.value.kind, info.value.dropped) == ("outage", True)
    await rebuilt(client)
    assert client._requests == {} and await client.check_health() is True


async def test_an_answer_between_deaths_keeps_the_engine_serving(tmp_path):
    from vllm.v1.engine.exceptions import EngineDeadError

    from rationad.model.engine import DEATHS_WITHOUT_ANSWER

    client = client_over(FakeLLM(EngineDeadError()), tmp_path)
    engines = []
    for _ in range(DEATHS_WITHOUT_ANSWER + 2):  # each serves one call, then dies under the next
        engines.append(FakeLLM())
    rebuilding(client, *engines)
    for llm in engines:
        with pytest.raises(ModelError) as info:
            await generate(client)
        assert info.value.kind == "outage"
        await rebuilt(client)
        assert client._llm is llm
        await generate(client)  # answered
        llm.fail = EngineDeadError()


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


async def test_a_plain_value_error_of_a_live_engine_is_not_the_request_s_fault(tmp_path):
    """vLLM's plain ValueError / TypeError are its own faults (or ours), not a refused request: they were taken as
    "rejected", so a transient one dead-lettered every session of the batch at once. They now go through as they are,
    which the model stage retries (dead-lettering only a session that keeps failing, after delivery.max_attempts)."""
    for fail in (ValueError("sampling distribution replay requires temperature > 0"), TypeError("bad argument")):
        client = client_over(FakeLLM(fail), tmp_path)
        with pytest.raises(type(fail)) as info:
            await generate(client)
        assert info.value is fail
        assert await client.check_health() is True


async def test_a_healthy_engine_answers(tmp_path):
    client = client_over(FakeLLM(), tmp_path)
    out = await generate(client)
    assert [c.text for c in out] == ["ok", "ok"]
    assert await client.check_health() is True


async def test_a_start_cancelled_for_a_stop_ends_at_once_and_the_engine_it_was_building_is_shut_down(
    tmp_path, monkeypatch
):
    """The daemon abandons the engine's start when a stop comes (rationad/daemon.py ``_start``), but the build runs in
    a thread that cannot be interrupted: the cancelled start must return at once, ``aclose`` must neither wait for the
    build nor raise, and the engine the build makes afterwards must be shut down, not kept (before: it was stored
    after the close, its engine core running on, about 4 GB, in a process that was stopping). vLLM's engine
    constructor is replaced by a slow fake; the rest of the build is the client's own."""
    from vllm.v1.engine.async_llm import AsyncLLM

    class Loaded(FakeLLM):
        shut = 0

        def shutdown(self) -> None:
            self.shut += 1

    engines, building, release = [], threading.Event(), threading.Event()

    def from_engine_args(args, **kw):  # a long load (the real one: 30-70 s on a 2-core CPU, minutes on a GPU)
        building.set()
        release.wait(30)
        engines.append(Loaded())
        return engines[-1]

    monkeypatch.setattr(AsyncLLM, "from_engine_args", from_engine_args)
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    task = asyncio.create_task(client.start())
    assert await asyncio.to_thread(building.wait, 60)  # vLLM's imports first
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    await asyncio.wait_for(client.aclose(), 1)
    release.set()
    for _ in range(500):  # the build's thread ends on its own
        if engines and engines[0].shut:
            break
        await asyncio.sleep(0.01)
    assert engines and engines[0].shut == 1, "the engine of the abandoned start was not shut down"
    assert client._llm is None and not await client.check_health()

    # a start that is not abandoned keeps its engine, and aclose shuts that one down as before
    await asyncio.wait_for(client.start(), 5)
    assert client._llm is engines[1] and engines[1].shut == 0
    await client.aclose()
    assert engines[1].shut == 1 and client._llm is None


def test_requests_carry_a_seed_off_a_cpu_only(tmp_path):
    client = EngineClient(ModelConfig(backend="vllm-engine", path=tmp_path))
    assert client._sampling(8, 0.7, None).seed is None  # the default until the engine is built: a CPU's
    client._seed_requests = True  # what _build sets on a GPU
    assert client._sampling(8, 0.7, None).seed == SEED


def test_the_engine_core_entry_point_is_wrapped_only_while_the_engine_is_built():
    from vllm.v1.engine.core import EngineCoreProc

    from rationad.model import engine

    real = EngineCoreProc.run_engine_core
    with engine._owned_engine_core():
        # what a spawned child unpickles: our wrapper, found by its module path
        assert pickle.loads(pickle.dumps(EngineCoreProc.run_engine_core)) is engine.engine_core_main
        assert os.environ[engine.OWNER_PID_ENV] == str(os.getpid())
        assert engine._real_run_engine_core is real
    assert EngineCoreProc.run_engine_core is real
    assert engine.OWNER_PID_ENV not in os.environ


# An owner starts a child that watches it (as engine_core_main does in the engine core); the child starts a
# grandchild (as the engine core starts its worker). Both must die once the owner is SIGKILLed.
WATCHED = """
import os, subprocess, sys, time
from rationad.model.engine import _watch_owner
_watch_owner(int(sys.argv[1]), poll_secs=0.1)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), grandchild.pid, flush=True)
time.sleep(600)
"""
OWNER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=sys.stdout)
time.sleep(600)
"""


def test_the_watchdog_ends_the_engine_process_and_its_descendants_when_the_owner_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", OWNER, WATCHED], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    procs: list[psutil.Process] = []
    try:
        assert owner.stdout is not None
        child_pid, grandchild_pid = map(int, owner.stdout.readline().split())
        procs = [psutil.Process(child_pid), psutil.Process(grandchild_pid)]
        time.sleep(0.5)
        assert all(p.is_running() for p in procs)  # the watchdog leaves a live owner's processes alone
        owner.send_signal(signal.SIGKILL)
        owner.wait(5)
        deadline = time.monotonic() + 10
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs):
            assert time.monotonic() < deadline, "the watched process or its child outlived the owner"
            time.sleep(0.1)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(5)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
