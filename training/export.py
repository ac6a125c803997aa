"""Export the released adapter: ``models/<name>/`` with ``adapter_config.json``, ``adapter_model.safetensors``
(bfloat16, a few MB) and ``manifest.json`` (name, version, base, data hash, prompt version, training configs,
metrics). The daemon's setup merges it into its base (``training.merge_adapter``) and stamps name and version into
its events.

The released adapter is whichever of SFT / SFT+GRPO scored better on the validation split (``evaluate`` writes
``choice.json``); without it, the SFT adapter. A real run exports only past the release gate (``training.gate``):
the candidate may not score below the adapter already released on any validation set large enough to measure.
Nor may it be larger than ``[release] max_adapter_bytes`` (``training.gate``): the written file is measured before it
replaces the released one, and ``--force-release`` does not lift that limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from training.jsonfile import read_json, write_json


def _bf16_copy(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(dst), metadata={"format": "pt"})


def base_identity(base: Path) -> dict[str, Any]:
    cfg = read_json(base / "config.json")
    source = (base / "SOURCE.md").read_text().strip() if (base / "SOURCE.md").is_file() else None
    return {"folder": base.name, "architecture": (cfg.get("architectures") or ["?"])[0],
            "hidden_size": cfg.get("hidden_size"), "layers": cfg.get("num_hidden_layers"), "source": source,
            "config_sha256": hashlib.sha256((base / "config.json").read_bytes()).hexdigest()[:16]}


def _shipped_neighbours(adapter: Path) -> dict | None:
    f = adapter / "manifest.json"
    return read_json(f).get("neighbours") if f.is_file() else None


def lineage(sft: dict[str, Any], limit: int = 20) -> list[tuple[str, dict[str, Any]]]:
    """(adapter, its SFT metrics) for each adapter an SFT run continued from, following ``continued_from`` while the
    adapter's run folder still holds its ``sft_metrics.json`` (a released adapter in ``models/`` ends the chain)."""
    out: list[tuple[str, dict[str, Any]]] = []
    src = sft.get("continued_from")
    while src and len(out) < limit:
        f = Path(src["adapter"]).parent / "sft_metrics.json"
        if not f.is_file() or any(src["adapter"] == where for where, _ in out):
            break
        m = read_json(f)
        out.append((src["adapter"], m))
        src = m.get("continued_from")
    return out


def derived_from(sft_metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The rank cut an SFT run's chain started from (``training.shrink_adapter``'s ``shrink.json`` beside an adapter
    it continued, followed through ``lineage``): source release, ranks, energy kept; None when the chain started
    elsewhere. A cut continued twice still names it."""
    sft = sft_metrics or {}
    for m in (sft, *(m for _, m in lineage(sft))):
        adapter = (m.get("continued_from") or {}).get("adapter")
        if adapter and (Path(adapter) / "shrink.json").is_file():
            return read_json(Path(adapter) / "shrink.json")
    return None


def released_cut(out: Path, stage: str, sft_metrics: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
    """(the rank cut the released adapter comes from, whether it is the adapter itself): the chain its SFT runs
    continued (``derived_from``), or, for an adapter released as cut with no training since, its own
    ``shrink.json``."""
    if stage == "sft" and (cut := derived_from(sft_metrics)) is not None:
        return cut, False
    own = out / stage / "adapter" / "shrink.json"
    return (read_json(own), True) if own.is_file() else (None, False)


def export(adapter: Path, dest: Path, manifest: dict[str, Any], *, max_bytes: int = 0) -> Path:
    """Write ``dest``; with ``max_bytes``, an adapter file over it raises :class:`training.gate.GateError` before
    anything in ``dest`` is replaced."""
    from training.gate import GateError, size_verdict
    from training.sft import file_sha256

    dest.mkdir(parents=True, exist_ok=True)
    cfg = read_json(adapter / "adapter_config.json")
    # a machine-local path means nothing elsewhere: name the base, the merge step is given the folder explicitly
    cfg["base_model_name_or_path"] = Path(str(cfg.get("base_model_name_or_path") or "base")).name
    weights = dest / "adapter_model.safetensors.new"
    _bf16_copy(adapter / "adapter_model.safetensors", weights)
    size = size_verdict(weights, max_bytes)
    if not size["passed"]:
        weights.unlink()
        raise GateError(f"export: {adapter / 'adapter_model.safetensors'}: {size['reason']}; {dest} is unchanged")
    weights.replace(dest / "adapter_model.safetensors")
    (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shipped = _shipped_neighbours(adapter)
    if shipped is not None:  # the index the model was trained with travels with it, checked by its sha256
        from training.neighbour_index import copy_shipped

        copy_shipped(adapter, dest)
        manifest = {**manifest, "neighbours": shipped,
                    "prompt_version": f"{manifest.get('prompt_version', 'rationad-prompt-v1')}+neighbours"}
    elif (dest / "neighbours.json").is_file():
        (dest / "neighbours.json").unlink()  # a release without neighbours must not leave an older one's index
    manifest = {**manifest, "adapter_bytes": size["bytes"],
                "adapter_sha256": file_sha256(dest / "adapter_model.safetensors")}
    write_json(dest / "manifest.json", manifest)
    return dest


def run_stage(cfg: dict, cfg_path: Path, out: Path, base: Path, smoke: bool, *, force: bool = False) -> Path:
    from rationad.prompt import PROMPT_VERSION

    from training.config import section
    from training.gate import ReleaseParams, check_export, released_adapter
    from training.prompt_stamp import manifest_prompt
    from training.sft import require_finished

    gate = check_export(out, smoke, force, released_adapter(cfg))
    release = section(cfg, "release", ReleaseParams, cfg_path)

    choice_file = out / "eval" / "choice.json"
    choice = read_json(choice_file) if choice_file.is_file() else {"released": "sft"}
    stage = choice["released"]
    require_finished(out / stage / f"{stage}_metrics.json")  # never release a half-trained adapter
    adapter = out / stage / "adapter"
    data = read_json(out / "data" / "data_report.json")
    metrics: dict[str, Any] = {}
    for name in ("sft/sft_metrics.json", "grpo/grpo_metrics.json", "eval/metrics.json"):
        f = out / name
        if f.is_file():
            m = read_json(f)
            m.pop("log", None)
            metrics[name.split("/")[0]] = m
    manifest = {
        "name": cfg.get("name", "rationad-lora"), "version": cfg.get("version", "0.0.0") + ("-smoke" if smoke else ""),
        "released_stage": "sft+grpo" if stage == "grpo" else "sft", "choice": choice,
        "gate": {k: gate[k] for k in ("passed", "reason")} | {"forced": force} if gate else None,
        "base": base_identity(base), "prompt_version": manifest_prompt(adapter) or PROMPT_VERSION,
        "data_hash": data["data_hash"],
        "data": {k: v for k, v in data.items() if k != "data_hash"},
        "training_config": {k: cfg.get(k) for k in ("data", "sft", "grpo", "eval", "release")},
        "config_file": str(cfg_path),
        "metrics": metrics, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    cut, untrained = released_cut(out, stage, metrics.get("sft"))
    if cut is not None:
        manifest["derived_from"] = cut | ({"trained_since": False} if untrained else {})
    dest = out / "export" if smoke else Path("models") / cfg.get("name", "rationad-lora")
    export(adapter, dest, manifest, max_bytes=release.max_adapter_bytes)
    print(f"[export] {stage} adapter -> {dest}", flush=True)
    if not smoke:  # the results that ship with the adapter
        from training.report import write_results

        results_dir = Path(__file__).resolve().parent
        if (out / "eval" / "pr_curve.png").is_file():
            shutil.copy2(out / "eval" / "pr_curve.png", results_dir / "pr_curve.png")
        write_results(out, results_dir / "RESULTS.md", str(cfg_path))
        print(f"[export] wrote {results_dir / 'RESULTS.md'}", flush=True)
    return dest
