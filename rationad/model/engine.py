"""The in-process backend: vLLM's v1 ``AsyncLLM`` in this process (its engine core runs in a child process).

Conversations are rendered with the model's chat template (``add_generation_prompt=True``) by vLLM's own renderer,
so the prompt is token-for-token the one the OpenAI server would build. All conversations of a call are submitted
at once and vLLM batches them. Output is constrained to ``regex`` when one is given (vLLM structured outputs),
greedy at temperature 0. The engine is seeded once (``SEED``); sampled requests carry that seed too on a GPU, never
on a CPU (see ``EngineClient._sampling``). An optional LoRA adapter (``model.adapter``) is served on top of the base
weights. Importing this module imports vLLM and torch: ``base.make_client`` does so only on demand.

Failures are classified for the daemon (``base.ModelError.kind``). An engine core that dies (``EngineDeadError``, or
``AsyncLLM.errored``) is built again in this process (``EngineClient._restart``), and the requests it dropped are an
outage with ``dropped`` set, as a ``vllm-server`` that dies under them: the model stage then finds a session whose
own request kills the engine, sends it alone and dead-letters it (before 2026-12-07 the daemon exited instead, and a
restarted daemon read the same session first and died again, for ever). An engine that dies
``DEATHS_WITHOUT_ANSWER`` times with no request answered between, or cannot be built again, is ``dead`` for good:
the daemon drains and exits so its supervisor restarts it.

The engine core and its worker are separate processes that would outlive a ``kill -9`` of this one (vLLM on CPU
spawns them, and nothing in them watches their parent): about 4 GB each, orphaned. ``engine_core_main`` wraps the
engine core's entry point with a watchdog that kills the engine core and its descendants once this process is gone;
``_owned_engine_core`` installs it while the engine is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rationad.config import ModelConfig
from rationad.answer import answer_score
from rationad.model.base import SCORE_LOGPROBS, Completion, Message, ModelError, continued, gather_all, token_counter
from rationad.model.dtype import resolve_dtype

log = logging.getLogger(__name__)

SEED = 0
# vLLM gives up compiling a structured-output regex after VLLM_REGEX_COMPILATION_TIMEOUT_S (default 5 s) and fails
# the request. Compiling ANSWER_REGEX for this tokenizer takes about 3 s on a busy 2-core machine, so the default
# fails requests under load. The compiled grammar is cached, so only the first request pays. An operator's own
# setting wins.
REGEX_COMPILATION_TIMEOUT_S = "60"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
OWNER_PID_ENV = "RATIONAD_ENGINE_OWNER_PID"  # set while the engine core is started: the PID it must not outlive
OWNER_POLL_SECS = 0.5
DEATHS_WITHOUT_ANSWER = 10  # engine deaths in a row with no request answered between: it cannot serve here
# (the model stage retries a batch OUTAGE_SPLIT_AFTER times before it splits it: a poison session kills the engine
# several times before any of its batch-mates is answered)

_real_run_engine_core: Callable[..., Any] | None = None  # vLLM's entry point while _owned_engine_core wraps it


def engine_core_main(*args: Any, **kwargs: Any) -> Any:
    """The engine core process's entry point: vLLM's ``EngineCoreProc.run_engine_core`` behind an owner watchdog.

    vLLM starts the engine core with ``multiprocessing`` (always "spawn" on CPU: vllm/platforms/cpu.py), and its
    workers from there; workers watch the engine core through a pipe, but the engine core watches nothing, so a
    SIGKILL of its owner (a shell's ``kill -9``, a test harness, a supervisor that signals one PID) leaves it and
    its worker running. A parent-death signal (``PR_SET_PDEATHSIG``) would fire when the forking *thread* exits,
    and vLLM forks from whatever thread builds the engine (a worker thread here), so the watchdog polls
    ``getppid()`` instead: it changes only when the owner process is gone. A spawned child finds this function by
    its module path (it is pickled by reference), so the wrapping needs nothing from the child's environment but
    ``OWNER_PID_ENV``.

    It leaves its owner's process group for a group of its own (its workers follow it): a terminal's Ctrl-C goes to
    the whole foreground process group, and vLLM's engine core takes SIGINT as "shut down now", so the daemon lost
    its model in the middle of its own graceful stop (``model_blocked``, ``fatal``, exit 1, the batches in flight not
    judged). The owner stops the engine core itself (SIGTERM from ``AsyncLLM.shutdown``); a supervisor stopping a
    whole cgroup (systemd, a container runtime) still reaches it. (Blocking SIGINT cannot do it: a spawned child
    starts with an empty signal mask, and threads started while its entry point is unpickled take signals.)
    """
    with contextlib.suppress(OSError):  # (a session leader cannot: then it stays where it is)
        os.setpgid(0, 0)
    owner = int(os.environ.get(OWNER_PID_ENV) or 0)
    if owner:
        _watch_owner(owner)
    real = _real_run_engine_core  # set when forked from a process that wraps the entry point
    if real is None:  # spawned: a fresh interpreter, where vLLM's entry point is its own
        from vllm.v1.engine.core import EngineCoreProc

        real = EngineCoreProc.run_engine_core
    return real(*args, **kwargs)


def _watch_owner(owner: int, poll_secs: float = OWNER_POLL_SECS) -> None:
    """End this process and its descendants as soon as ``owner`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == owner:
            time.sleep(poll_secs)
        log.warning(
            "the engine's owner process %d is gone: ending the engine core %d and its workers", owner, os.getpid()
        )
        _kill_own_tree()

    if os.getppid() != owner:  # the owner died before this process got here
        _kill_own_tree()
    threading.Thread(target=watch, name="rationad-owner-watchdog", daemon=True).start()


def _kill_own_tree() -> None:
    """SIGKILL this process's descendants (vLLM's workers), then this process: nobody is left to shut down for."""
    with contextlib.suppress(Exception):  # if this fails the workers still end: they watch this process by a pipe
        import psutil  # a dependency of vLLM

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _owned_engine_core() -> Iterator[None]:
    """While the engine is built (vLLM starts its engine core then), start the engine core through
    ``engine_core_main``, told to die with this process."""
    global _real_run_engine_core
    from vllm.v1.engine.core import EngineCoreProc

    real = EngineCoreProc.__dict__.get("run_engine_core")
    if not isinstance(real, staticmethod):  # another vLLM than the pinned one: start it as it is
        log.warning(
            "cannot watch the vLLM engine core (no EngineCoreProc.run_engine_core): it may outlive a "
            "SIGKILL of this process"
        )
        yield
        return
    _real_run_engine_core = real.__func__
    EngineCoreProc.run_engine_core = staticmethod(engine_core_main)  # type: ignore[method-assign]
    os.environ[OWNER_PID_ENV] = str(os.getpid())
    try:
        yield
    finally:
        EngineCoreProc.run_engine_core = real  # type: ignore[method-assign]
        os.environ.pop(OWNER_PID_ENV, None)
        _real_run_engine_core = None


def lora_rank(adapter: Path) -> int:
    """The smallest rank vLLM accepts that fits the adapter's ``r``."""
    r = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))
    for rank in LORA_RANKS:
        if rank >= r:
            return rank
    raise ModelError(f"model.adapter: LoRA rank {r} exceeds vLLM's maximum {LORA_RANKS[-1]}", retryable=False)


def _score(token_ids: Any, logprobs: Any, prefix: str = "") -> float | None:
    """``answer_score`` from vLLM's sample logprobs: one ``{token id: Logprob}`` per generated token, after the
    continued ``prefix``."""
    if not logprobs or len(logprobs) != len(token_ids):
        return None
    tokens: list[str] = []
    candidates: list[list[tuple[str, float]]] = []
    for tid, top in zip(token_ids, logprobs, strict=True):
        sampled = top.get(tid)
        if sampled is None:
            return None
        tokens.append(sampled.decoded_token or "")
        candidates.append([(lp.decoded_token or "", lp.logprob) for lp in top.values()])
    return answer_score(tokens, candidates, prefix)


class EngineClient:
    """``ModelClient`` over an in-process vLLM ``AsyncLLM``."""

    def __init__(self, cfg: ModelConfig) -> None:
        assert cfg.path is not None
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.name = cfg.served_model_name or self.path.name
        self._count = token_counter(self.path)
        self._llm: Any = None
        # A start abandoned for a stop leaves its build running in a worker thread (a thread cannot be interrupted):
        # ``aclose`` moves the generation on, and an engine built for an older one is shut down as soon as it is
        # built instead of being kept (``_keep``). The lock makes aclose's take and the build's store one step each.
        self._generation = 0
        self._lock = threading.Lock()
        self._lora: Any = None
        self._chat_params: Any = None
        self._continue_params: Any = None
        self._seed_requests = False  # per-request seeds: only off a CPU (see _sampling)
        self._dead = False  # the engine cannot serve again in this process (DEATHS_WITHOUT_ANSWER, a rebuild failed)
        self._deaths = 0  # engine deaths since a request was last answered
        self._rebuilding: asyncio.Future | None = None  # the engine built again after its core died (``_restart``)
        self.restarting_since: float | None = None  # monotonic time that rebuild began (the daemon's liveness)
        self.start_secs: float | None = None
        # The engine's progress, for the request timeout: requests in flight, and when it last made a token (or the
        # first of them was sent)
        self._in_flight = 0
        # Each engine's requests in flight (``_final`` tasks, by ``id`` of the engine): a rebuild ends those of the
        # engine that died before it shuts that engine down (``_restart``)
        self._requests: dict[int, set[asyncio.Task]] = {}
        self._progress = time.monotonic()
        # A request was given up because the engine made no token for request_timeout_secs, and none has been made
        # since: the engine is stuck (alive, not errored), and health says so, or the health round cleared the outage
        # every 10 s and the liveness rule (restart an in-process engine down past server.stall_secs) never fired.
        self._stuck = False

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    async def start(self) -> None:
        """Build the engine (30-70 s on a 2-core CPU). Runs in a worker thread so the event loop stays responsive
        (the health endpoint keeps answering); vLLM starts its output reader on the first request, in this loop.

        Cancelling it returns at once, but the build goes on in its thread: ``aclose`` then makes the build shut
        the engine down once it is built (``_keep``). A process that exits first (``rationad run`` does not wait for
        its executor's threads) takes the engine core with it: its watchdog (``engine_core_main``) kills it and its
        workers once this process is gone."""
        if self._llm is not None:
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # _build stores the engine itself: a thread future holding it as its result would keep it alive past
        # aclose(), and its __del__ would then run at interpreter exit when vLLM's module globals are gone.
        await asyncio.to_thread(self._build, self._generation)
        self.start_secs = loop.time() - t0
        log.info("vLLM engine started in %.1f s", self.start_secs)

    def _build(self, generation: int) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.platforms import current_platform
        from vllm.renderers.params import ChatParams
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("VLLM_REGEX_COMPILATION_TIMEOUT_S", REGEX_COMPILATION_TIMEOUT_S)  # engine core inherits
        # vLLM's CPU backend otherwise sizes its KV cache from free RAM and refuses to start on a busy host. 2 GiB
        # holds 46,592 tokens of the 135M model's KV in float32 (vLLM's log on an AVX2 CPU; twice as many in
        # bfloat16): about 22 sequences of max_model_len 2,048 tokens, more of the usual shorter ones; the rest of the
        # model.max_batch_size x max_concurrency in flight wait in vLLM's queue, within model.request_timeout_secs.
        # GPUs ignore it.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        self._seed_requests = not current_platform.is_cpu()
        kwargs: dict[str, Any] = {}
        if self.cfg.adapter is not None:
            adapter = Path(self.cfg.adapter)
            kwargs = {"enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank(adapter)}
            self._lora = LoRARequest(lora_name=adapter.name or "adapter", lora_int_id=1, lora_path=str(adapter))
        args = AsyncEngineArgs(
            model=str(self.path),
            served_model_name=self.name,
            dtype=resolve_dtype(self.cfg.dtype, on_cpu=current_platform.is_cpu()),
            max_model_len=self.cfg.max_model_len,
            enforce_eager=True,
            seed=SEED,
            disable_log_stats=True,
            **kwargs,
        )
        self._chat_params = ChatParams(
            chat_template_kwargs={"add_generation_prompt": True, "continue_final_message": False, "tokenize": False}
        )
        self._continue_params = ChatParams(  # a conversation ending with an assistant message: continue it
            chat_template_kwargs={"add_generation_prompt": False, "continue_final_message": True, "tokenize": False}
        )
        try:
            with _owned_engine_core():
                llm = AsyncLLM.from_engine_args(args)
        except Exception as exc:
            raise ModelError(f"cannot start the vLLM engine for {self.path}: {exc}", retryable=False) from exc
        self._keep(llm, generation)

    def _keep(self, llm: Any, generation: int) -> None:
        """Store the engine built for ``generation``; shut it down instead (in this, the build's thread) when the
        client was closed while it was built: its start was abandoned for a stop."""
        with self._lock:
            if generation == self._generation:
                self._llm = llm
                return
        log.info("the vLLM engine finished loading after its start was abandoned: shutting it down")
        try:  # stops and joins the engine-core process; no output reader was started (no request was made)
            llm.shutdown()
        except Exception:  # nobody awaits this thread any more: say it here
            log.exception("shutting down the engine of an abandoned start failed")

    def _sampling(self, max_tokens: int, temperature: float, regex: str | None) -> Any:
        """Request parameters. No per-request seed on a CPU: vLLM 0.32's CPU runner cannot rewind a request's own
        generator when that request's prompt is prefilled in chunks ("CPU Generator does not use offset" in
        ``gpu_model_runner._bookkeeping_sync``), which kills the engine core, and the Judge's retry of a malformed
        answer samples at 0.7 beside long prompts. Greedy decoding stays deterministic (the engine is seeded);
        sampled output on a CPU then depends on the batch it ran in."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            seed=SEED if self._seed_requests else None,
            structured_outputs=StructuredOutputsParams(regex=regex) if regex else None,
            # every step's output (the latest replaces one not read yet: no backlog), so that the request timeout
            # sees the engine making tokens (``_one``); the last is what FINAL_ONLY would give
            output_kind=RequestOutputKind.CUMULATIVE,
            logprobs=SCORE_LOGPROBS,  # for the score (rationad.answer.answer_score)
        )

    async def generate(
        self, conversations: list[list[Message]], *, max_tokens: int, temperature: float, regex: str | None
    ) -> list[Completion]:
        llm = self._llm
        if self._dead:
            raise ModelError("the vLLM engine core is dead", kind="dead")
        if self._rebuilding is not None:
            raise ModelError("the vLLM engine is being built again after its core died", kind="outage", unsent=True)
        if llm is None:
            raise ModelError("the vLLM engine is not started", kind="outage", unsent=True)
        if getattr(llm, "errored", False):  # died before this request was sent: never reached it
            raise self._died(llm, None, in_flight=False)
        if not conversations:
            return []
        try:
            params = self._sampling(max_tokens, temperature, regex)
            renderer = llm.renderer
            prefixes = [continued(c) for c in conversations]
            inputs: list[Any] = [None] * len(conversations)
            for chat_params, wanted in ((self._chat_params, False), (self._continue_params, True)):
                idx = [i for i, p in enumerate(prefixes) if bool(p) == wanted]
                if idx:
                    _, rendered = await renderer.render_chat_async(
                        [conversations[i] for i in idx], chat_params, renderer.default_chat_tok_params
                    )
                    for i, r in zip(idx, rendered, strict=True):
                        inputs[i] = r
            return await gather_all(self._one(llm, i, params, p) for i, p in zip(inputs, prefixes, strict=True))
        except Exception as exc:
            error = self._classify(llm, exc)
            if error is None or error is exc:
                raise
            raise error from exc

    def _died(self, llm: Any, exc: BaseException | None, *, in_flight: bool) -> ModelError:
        """``llm``'s engine core died: the error for a request that met it (``in_flight``: sent before, dropped by
        the death). The first to notice starts the rebuild, or, past ``DEATHS_WITHOUT_ANSWER``, gives up for good."""
        if not self._dead and self._rebuilding is None and llm is self._llm:
            self._deaths += 1
            if self._deaths >= DEATHS_WITHOUT_ANSWER:
                self._dead = True
                log.error("the vLLM engine core died %d times with no request answered between: giving up",
                          self._deaths)
            else:
                log.warning("the vLLM engine core died (%r): building the engine again", exc)
                self.restarting_since = time.monotonic()
                self._rebuilding = asyncio.ensure_future(self._restart(llm))
        if self._dead:
            return ModelError(f"the vLLM engine core is dead: {exc!r}", kind="dead")
        return ModelError(f"the vLLM engine core died: {exc!r}; building it again", kind="outage", dropped=in_flight,
                          unsent=not in_flight)

    async def _restart(self, old: Any) -> None:
        """Shut down the engine whose core died and build it again (30-70 s on a 2-core CPU); one that cannot be
        built makes this client dead for good."""
        try:
            with self._lock:
                if self._llm is old:
                    self._llm = None
                generation = self._generation
            # The requests still in flight on it end now, as dropped: vLLM marks an engine errored before its output
            # handler fails them, and that handler, cancelled by the shutdown below first, failed none (review: they
            # waited for ever, holding their partitions, kept alive by the new engine's tokens)
            for task in list(self._requests.get(id(old), ())):
                task.cancel()
            try:
                await self._shut(old)
            except Exception:  # noqa: BLE001 - its core is gone already; what is left is the new build's concern
                log.exception("shutting down the engine whose core died failed")
            try:
                await asyncio.to_thread(self._build, generation)
            except Exception as exc:  # noqa: BLE001 - whatever it was, no engine serves: dead, and said so
                log.error("the vLLM engine could not be built again: %r", exc)
                self._dead = True
                return
            self._stuck = False  # the old engine's: the new one has made no request wait yet
            log.info("vLLM engine built again in %.1f s", time.monotonic() - (self.restarting_since or 0.0))
        finally:
            self._rebuilding = None
            self.restarting_since = None

    def _classify(self, llm: Any, exc: Exception) -> ModelError | None:
        """The ModelError for a failure of ``generate`` (``exc`` itself if it is one already), or None to let an
        unexpected exception through as it is. A dead engine wins over what the failing request looked like: once
        the engine core is gone every request fails, whatever it was."""
        from vllm.exceptions import VLLMClientError, VLLMError
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, EngineDeadError) or getattr(llm, "errored", False):
            return self._died(llm, exc, in_flight=True)
        if isinstance(exc, ModelError):
            return exc
        # vLLM says a request is at fault with its client errors (VLLMValidationError: a prompt too long, a bad
        # parameter); its plain ValueError / TypeError are its own or our code's faults (a wrong argument, a state it
        # did not expect), the same for every session: not the request's, so they go through as unexpected errors
        # (the model stage retries them and dead-letters a session only after delivery.max_attempts).
        if isinstance(exc, VLLMClientError):
            return ModelError(f"vLLM rejected the request: {exc}", kind="rejected")
        if isinstance(exc, VLLMError):  # failing for now (EngineGenerateError...), engine alive: an outage
            return ModelError(f"vLLM engine failed: {exc!r}", kind="outage")
        return None

    async def _final(self, llm: Any, engine_input: Any, params: Any) -> Any:
        final = None
        async for out in llm.generate(engine_input, params, f"rationad-{uuid.uuid4().hex}", lora_request=self._lora):
            final = out
            self._progress = time.monotonic()  # a token made: the engine works
            self._stuck = False
        return final

    async def _one(self, llm: Any, engine_input: Any, params: Any, prefix: str = "") -> Completion:
        """One request. Given up (vLLM aborts it: its ``generate`` does when cancelled, and the model stage retries
        the batch as an outage) once the engine has gone ``model.request_timeout_secs`` without making a token for any
        request of this client while this one waited: a request the engine never finished held its batch, and the
        partitions behind it, for ever. Not from when it was sent: up to model.max_batch_size x max_concurrency
        requests are in flight and a CPU engine runs about 22 at once (its KV cache), so the last wait their turn for
        minutes while the engine works, and a bound on each request's own time failed them and threw the batch's work
        away (an evaluation's chunk of 20 long windows on 2 cores went past 120 s)."""
        timeout = self.cfg.request_timeout_secs
        if self._in_flight == 0:
            self._progress = time.monotonic()
        self._in_flight += 1
        task = asyncio.ensure_future(self._final(llm, engine_input, params))
        mine = self._requests.setdefault(id(llm), set())
        mine.add(task)
        try:
            while not task.done():
                left = self._progress + timeout - time.monotonic()
                if left <= 0:  # no token for timeout seconds: the engine is stuck, not busy
                    self._stuck = True
                    raise ModelError(f"vLLM made no token within model.request_timeout_secs={timeout:g} s",
                                     kind="outage")
                await asyncio.wait({task}, timeout=left)
            if task.cancelled():  # ended by ``_restart``: its engine died under it
                raise ModelError("the vLLM engine core died under this request; building it again", kind="outage",
                                 dropped=True)
            final = task.result()
            self._progress = time.monotonic()
            self._deaths = 0
        finally:
            self._in_flight -= 1
            mine.discard(task)
            if not mine and self._requests.get(id(llm)) is mine:
                del self._requests[id(llm)]
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if final is None or not final.outputs:
            raise ModelError("vLLM returned no output", retryable=True)
        choice = final.outputs[0]
        if choice.finish_reason in ("error", "abort"):  # e.g. the grammar failed to compile: no text was made
            raise ModelError(f"vLLM could not complete the request (finish_reason={choice.finish_reason})")
        return Completion(
            text=prefix + choice.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(choice.token_ids),
            score=_score(choice.token_ids, getattr(choice, "logprobs", None), prefix),
        )

    async def check_health(self) -> bool:
        """False before start, after aclose, while the engine is built again after its core died (a death found here,
        with no request in flight, starts that), for good once it is dead, and while the engine is stuck (a request
        given up for no token, none made since)."""
        llm = self._llm
        if self._dead or llm is None or self._rebuilding is not None:
            return False
        healthy = not self._stuck
        if healthy:
            try:
                await llm.check_health()
            except Exception:  # any failure of the health probe means unhealthy
                healthy = False
        if getattr(llm, "errored", False):
            self._died(llm, None, in_flight=False)
            return False
        return healthy

    async def aclose(self) -> None:
        """Shut the engine down; its engine-core process is stopped and joined. An engine still being built (a
        start cancelled for a stop) is not waited for: its build shuts it down when it ends (``_keep``)."""
        with self._lock:  # a build still running for an abandoned start shuts its engine down itself (``_keep``)
            self._generation += 1
            llm, self._llm = self._llm, None
        if self._rebuilding is not None:  # its build goes on in its thread and shuts its engine down (``_keep``)
            self._rebuilding.cancel()
            await asyncio.gather(self._rebuilding, return_exceptions=True)
        if llm is not None:
            await self._shut(llm)

    @staticmethod
    async def _shut(llm: Any) -> None:
        # Stop reading engine outputs first: otherwise the reader sees the engine core exit and logs an
        # EngineDeadError for what is a normal shutdown.
        handler = getattr(llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        await asyncio.to_thread(llm.shutdown)  # stops and joins the engine-core process (a few seconds)
        del llm
        gc.collect()  # collect it now, while vLLM's modules are intact (its __del__ shuts down again)
