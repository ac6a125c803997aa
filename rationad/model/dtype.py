"""The model's dtype: ``auto`` serves bfloat16 where the hardware computes it and float32 on CPUs that would emulate it.

vLLM's own ``auto`` takes the checkpoint's dtype (bfloat16 for SmolLM2). On a CPU without AMX or avx512_bf16 (an
AVX2-only EPYC, for one) bfloat16 matmuls are emulated: 16 judgements took 104 s in bfloat16 and 33 s in float32
there (``bench/dtype.py``). GPUs keep vLLM's ``auto``.
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bfloat16 natively (its flags name AMX-bf16 or avx512_bf16); False if unknown."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_dtype(requested: str, *, on_cpu: bool, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The dtype to give vLLM: an explicit one as is; ``auto`` on a CPU by its bfloat16 support."""
    if requested != "auto" or not on_cpu:
        return requested
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"
