"""training.shrink_adapter: the rank-k factors reproduce the truncated SVD of each LoRA update."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from training.shrink_adapter import ShrinkError, shrink, shrink_pair  # noqa: E402

MOD = "base_model.model.model.layers.14.self_attn.q_proj"


def _adapter(tmp_path, a, b, r=6, alpha=12.0):
    d = tmp_path / "src"
    d.mkdir()
    safetensors_torch.save_file({MOD + ".lora_A.weight": a, MOD + ".lora_B.weight": b},
                                str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha, "target_modules": ["q_proj"]}))
    return d


def test_pair_is_the_best_rank_k_approximation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 20, generator=g), torch.randn(12, 6, generator=g)
    new_a, new_b, kept = shrink_pair(a, b, 2.0, 3, 2.0)
    assert new_a.shape == (3, 20) and new_b.shape == (12, 3)
    full = 2.0 * (b @ a).double()
    u, s, vh = torch.linalg.svd(full)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    assert torch.allclose(2.0 * (new_b @ new_a).double(), best, atol=1e-4)
    assert kept == pytest.approx(float((s[:3] ** 2).sum() / (s ** 2).sum()), rel=1e-5)


def test_update_of_lower_true_rank_is_kept_exactly(tmp_path):
    g = torch.Generator().manual_seed(1)
    # r=6 factors whose product has rank 3: cutting to 4 loses nothing
    a = torch.randn(3, 20, generator=g).repeat(2, 1)
    b = torch.cat([torch.randn(12, 3, generator=g), torch.zeros(12, 3)], dim=1)
    src = _adapter(tmp_path, a, b)
    rep = shrink(src, 4, tmp_path / "out")
    assert rep["energy_kept"]["min"] == pytest.approx(1.0)
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (4, 8)
    t = safetensors_torch.load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    new = (8 / 4) * t[MOD + ".lora_B.weight"] @ t[MOD + ".lora_A.weight"]
    assert torch.allclose(new, (12.0 / 6) * b @ a, atol=1e-4)


def test_the_cut_names_the_prompt_its_source_was_trained_on(tmp_path):
    """Found by review: the cut kept no ``prompt_version``, so export stamped the bare prompt and a cut of 0.3.2 was
    judged and served without the rule sentence and the walk it was trained to continue."""
    from training.prompt_stamp import manifest_prompt

    g = torch.Generator().manual_seed(2)
    src = _adapter(tmp_path, torch.randn(6, 20, generator=g), torch.randn(12, 6, generator=g))
    (src / "manifest.json").write_text(json.dumps({"name": "a", "version": "0.3.2",
                                                   "prompt_version": "rationad-prompt-v1+unfinished+walk+rule"}))
    shrink(src, 4, tmp_path / "out")
    assert manifest_prompt(tmp_path / "out") == "rationad-prompt-v1+unfinished+walk+rule"


def test_bad_rank_and_missing_files_name_the_problem(tmp_path):
    g = torch.Generator().manual_seed(2)
    src = _adapter(tmp_path, torch.randn(6, 8, generator=g), torch.randn(8, 6, generator=g))
    with pytest.raises(ShrinkError, match="--rank 6"):
        shrink(src, 6, tmp_path / "out")
    with pytest.raises(ShrinkError, match="adapter_config.json"):
        shrink(tmp_path / "nowhere", 2, tmp_path / "out")

