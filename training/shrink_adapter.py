"""Lower a LoRA adapter's rank without training: the best rank-k approximation of each module's update.

    python -m training.shrink_adapter --adapter models/rationad-smollm2-135m-lora --rank 8 --out build/shrink/adapter

A LoRA module adds ``dW = (alpha / r) * B @ A`` (``B``: out x r, ``A``: r x in) to a base weight. The closest matrix
of rank k to ``dW`` in the Frobenius and spectral norms is its truncated SVD (Eckart-Young), and the SVD of a rank-r
product needs no out x in matrix: with ``B = Qb Rb`` and ``A^T = Qa Ra`` (thin QR), ``dW = scale * Qb (Rb Ra^T) Qa^T``,
so the SVD of the small r x r core ``Rb Ra^T = U S V^T`` gives ``dW``'s singular vectors ``Qb U`` and ``Qa V``. The
new module keeps the k largest: ``B' = Qb U_k sqrt(S_k / s')``, ``A' = sqrt(S_k / s') V_k^T Qa^T`` with the new
scale ``s' = alpha' / k`` (``alpha' = 2k``, as ``cpu.toml``'s ``alpha / r = 2``), so ``s' B' A'`` is exactly the
truncated update. The share of each update's energy kept (``sum S_k^2 / sum S^2``) is printed and written to
``shrink.json`` beside the adapter; whether the smaller adapter judges as well is for the release gate to say
(``python -m training.pipeline --config training/configs/cpu.toml --stages gate``), as for any candidate.

Why: the released 0.2.0 adapter was trained at r=16 (5,239,544 bytes, over ``[release] max_adapter_bytes``); a new
training run at r=8 is an hour or more on these CPUs and may not match it, a rank cut of the released update is
seconds.

A cut adapter is a starting point: ``training.sft --init-adapter`` continues it at its new rank (its lineage, with
``shrink.json``, reaches the exported manifest as ``derived_from``), and the release gate decides as for any
candidate. Measured on 0.2.0 (training/RESULTS.md, "Cutting 0.2.0 to rank 8"): the cut alone lost HDFS recall on
validation, and short continuations from it did not win it all back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training.prompt_stamp import stamp

SUFFIX_A, SUFFIX_B = ".lora_A.weight", ".lora_B.weight"


class ShrinkError(SystemExit):
    """The adapter cannot be shrunk as asked (the message names the file or setting)."""


def shrink_pair(a, b, scale: float, rank: int, new_scale: float):
    """``(A', B', kept)``: the rank-``rank`` factors whose update ``new_scale * B' @ A'`` is the best rank-``rank``
    approximation of ``scale * b @ a``, and the share of the update's squared Frobenius norm it keeps."""
    import torch

    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    qb, rb = torch.linalg.qr(b64)          # b = qb rb, qb: out x r
    qa, ra = torch.linalg.qr(a64.T)        # a^T = qa ra, qa: in x r
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # the r x r core of b @ a
    s = s * scale
    k = min(rank, s.numel())
    root = torch.sqrt(s[:k] / new_scale)
    new_b = (qb @ u[:, :k]) * root
    new_a = root[:, None] * (vh[:k] @ qa.T)
    total = float((s ** 2).sum())
    kept = float((s[:k] ** 2).sum()) / total if total else 1.0
    return new_a.to(a.dtype), new_b.to(b.dtype), kept


def shrink(adapter: Path, rank: int, out: Path) -> dict[str, Any]:
    """Write ``out`` (adapter_config.json, adapter_model.safetensors, shrink.json) with every LoRA module cut to
    ``rank``; returns the report written to ``shrink.json``. The source's manifest stays behind (it describes the
    source's training and figures, and export writes the new adapter's own) but for the prompt it was trained on:
    the cut's manifest names that ``prompt_version`` (``training.prompt_stamp``)."""
    from safetensors.torch import load_file, save_file

    cfg_file, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise ShrinkError(f"{f}: adapter file is missing")
    cfg = json.loads(cfg_file.read_text())
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_rslora") or cfg.get("use_dora"):
        raise ShrinkError(f"{cfg_file}: per-module ranks, rsLoRA and DoRA are not supported")
    if (adapter / "neighbours.json").is_file():
        raise ShrinkError(f"{adapter / 'neighbours.json'}: adapters shipped with labelled neighbours are not supported")
    if not 0 < rank < r:
        raise ShrinkError(f"--rank {rank}: must be between 1 and the adapter's r - 1 ({r - 1})")
    tensors = load_file(str(weights))
    new_alpha = 2 * rank
    scale, new_scale = alpha / r, new_alpha / rank
    result, kept = {}, {}
    for name in sorted(tensors):
        if not name.endswith(SUFFIX_A):
            if not name.endswith(SUFFIX_B):
                raise ShrinkError(f"{weights}: unexpected tensor {name} (only LoRA A/B weights are supported)")
            continue
        module = name[: -len(SUFFIX_A)]
        b_name = module + SUFFIX_B
        if b_name not in tensors:
            raise ShrinkError(f"{weights}: {name} has no {b_name}")
        new_a, new_b, kept[module] = shrink_pair(tensors[name], tensors[b_name], scale, rank, new_scale)
        result[name], result[b_name] = new_a.contiguous(), new_b.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(result, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "r": rank, "lora_alpha": new_alpha}, indent=2) + "\n")
    values = sorted(kept.values())
    source = json.loads((adapter / "manifest.json").read_text()) if (adapter / "manifest.json").is_file() else {}
    report = {"from": str(adapter), "source": {k: source.get(k) for k in ("name", "version", "adapter_sha256")},
              "rank": [r, rank], "lora_alpha": [alpha, new_alpha], "modules": len(kept),
              "energy_kept": {"min": values[0], "median": values[len(values) // 2],
                              "mean": sum(values) / len(values)},
              "lowest": sorted(kept.items(), key=lambda kv: kv[1])[:5]}
    (out / "shrink.json").write_text(json.dumps(report, indent=1) + "\n")
    if source.get("prompt_version"):  # the cut was trained on the source's prompt: judged and served with it (review:
        stamp(out, source["prompt_version"])  # without it, a cut of 0.3.2 was served the bare prompt, no rule sentence)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="cut a LoRA adapter to a lower rank (truncated SVD of each update)")
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    rep = shrink(a.adapter, a.rank, a.out)
    e = rep["energy_kept"]
    print(f"[shrink] {rep['modules']} modules, r {rep['rank'][0]} -> {rep['rank'][1]}: energy kept min {e['min']:.4f}"
          f" median {e['median']:.4f} mean {e['mean']:.4f} -> {a.out}")


if __name__ == "__main__":
    main()
