"""``auto`` dtype: bfloat16 only where the CPU computes it, explicit choices untouched, GPUs left to vLLM."""

from rationad.model.dtype import cpu_has_native_bf16, resolve_dtype


def test_auto_on_cpu_follows_the_bf16_flags(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor : 0\nflags : fpu sse avx avx2 fma\n")
    amx = tmp_path / "amx"
    amx.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(avx2) and cpu_has_native_bf16(amx)
    assert resolve_dtype("auto", on_cpu=True, cpuinfo=avx2) == "float32"
    assert resolve_dtype("auto", on_cpu=True, cpuinfo=amx) == "bfloat16"
    assert not cpu_has_native_bf16(tmp_path / "missing")  # unknown CPU: the safe choice
    assert resolve_dtype("auto", on_cpu=True, cpuinfo=tmp_path / "missing") == "float32"


def test_explicit_dtype_and_gpus_are_left_alone(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("flags : avx2\n")
    assert resolve_dtype("bfloat16", on_cpu=True, cpuinfo=avx2) == "bfloat16"
    assert resolve_dtype("float16", on_cpu=False) == "float16"
    assert resolve_dtype("auto", on_cpu=False) == "auto"
