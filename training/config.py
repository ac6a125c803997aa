"""Training configurations are data (``training/configs/*.toml``); this reads one into the stages' dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A training config is unreadable or has an unknown key (the message names the file and key)."""


# What a config may hold at its top level: the run's name, version and output folder, and the stages' tables. A
# misspelled table ([sfft]) was never read, and its stage trained on the defaults without a word.
TOP_LEVEL = frozenset({"name", "version", "out", "base", "data", "sft", "grpo", "eval", "release"})


def load(path: Path) -> dict[str, Any]:
    try:
        cfg = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(cfg) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys or tables {unknown} (known: {sorted(TOP_LEVEL)})")
    return cfg


def section(cfg: dict[str, Any], name: str, cls: type[T], path: Path | str = "config") -> T:
    """The ``[name]`` table as ``cls``; unknown keys are an error (a typo must not silently train differently)."""
    data = dict(cfg.get(name, {}))
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: [{name}] unknown keys {unknown} (known: {sorted(known)})")
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data and isinstance(data[f.name], str) and "Path" in str(f.type):
            data[f.name] = Path(data[f.name]).expanduser()
    return cls(**data)


def bf16_usable(requested: bool) -> bool:
    """Whether to train with bf16: on a GPU when asked; on a CPU only when it computes bf16 natively (AMX or
    avx512_bf16 in /proc/cpuinfo), because elsewhere bf16 autocast is emulated and many times slower than float32
    (an AVX2-only EPYC ran one LoRA step in more than 10 minutes instead of about 20 s)."""
    import torch

    from rationad.model.dtype import cpu_has_native_bf16

    if not requested or torch.cuda.is_available():
        return requested
    usable = cpu_has_native_bf16()
    if not usable:
        print("[train] bf16 requested, but this CPU has no native bf16 (AMX / avx512_bf16): training in float32",
              flush=True)
    return usable
