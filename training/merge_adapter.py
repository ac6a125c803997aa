"""Merge a LoRA adapter into its base model: a plain model folder that vLLM serves (used by ``scripts/setup.sh``).

    python -m training.merge_adapter --base BASE --adapter models/rationad-smollm2-135m-lora [--cache DIR]

The folder is ``<cache>/merged-<hash>`` (default cache ``~/.cache/rationad/models``), the hash covering the base
folder's name and the adapter's files, so a new adapter gives a new folder and a rerun is a fast no-op. The adapter's
``manifest.json`` is copied in (the daemon stamps its name and version into events) and the base's tokenizer saved.
The folder's path is the last line of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path

from training.prepare_base import cache_root, clear_stale, is_complete, publish

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "manifest.json", "neighbours.json")
DONE = ".complete"


class MergeError(Exception):
    """A missing or unreadable base or adapter file (the message names it)."""


def merged_key(base: Path, adapter: Path) -> str:
    """The base by its config and weights, not only its folder's name (two bases named alike, or one prepared again
    in place, shared a merge: review 2026-12-07), and the adapter's files."""
    from training.prepare_base import BaseModelError
    from training.sft import weights_sha256

    h = hashlib.sha256(base.resolve().name.encode())
    if (base / "config.json").is_file():  # (a folder without it or its weights fails the merge itself, naming them)
        h.update((base / "config.json").read_bytes())
    with contextlib.suppress(BaseModelError):
        h.update(weights_sha256(base).encode())
    for name in ADAPTER_FILES:
        f = adapter / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def check_inputs(base: Path, adapter: Path) -> None:
    if not (base / "config.json").is_file():
        raise MergeError(f"{base / 'config.json'}: base model folder is missing or incomplete")
    for name in ADAPTER_FILES[:2]:
        if not (adapter / name).is_file():
            raise MergeError(f"{adapter / name}: adapter file is missing")


def merge(base: Path, adapter: Path, out: Path, dtype: str = "bfloat16") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    clear_stale(out)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        try:
            model = PeftModel.from_pretrained(model, adapter)
        except Exception as exc:  # noqa: BLE001 - peft raises several types for a corrupt adapter
            raise MergeError(f"{adapter / 'adapter_model.safetensors'}: cannot load the adapter: {exc}") from exc
        merged = model.merge_and_unload()
        merged.to(getattr(torch, dtype)).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        for name in ADAPTER_FILES[2:]:  # the model's identity and, when it was trained with one, its neighbour index
            if (adapter / name).is_file():
                shutil.copy2(adapter / name, tmp / name)
        (tmp / DONE).write_text("ok\n")
        publish(tmp, out)  # (another setup may have made it meanwhile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def merged_folder(base: Path, adapter: Path, cache: Path | None = None) -> Path:
    """The merged folder for (base, adapter), built once."""
    check_inputs(base, adapter)
    out = (cache or cache_root()) / f"merged-{merged_key(base, adapter)}"
    if is_complete(out):  # its marker, config and weights (a marker alone passed a folder without weights)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return merge(base, adapter, out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="merge a LoRA adapter into its base model (cached)")
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    a = ap.parse_args(argv)
    try:
        print(merged_folder(a.base.expanduser(), a.adapter.expanduser(), a.cache))
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
