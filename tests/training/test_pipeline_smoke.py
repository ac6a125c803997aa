"""Smoke test of the pipeline stages on a slice of the data with a few steps, on the real base model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args, timeout):
    return subprocess.run([sys.executable, "-m", "training.pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_data_sft_grpo_export_smoke(tmp_path, datasets):
    out = tmp_path / "run"
    r = _run(["--config", "training/configs/cpu.toml", "--smoke", "--out", str(out),
              "--stages", "data,sft,grpo,export"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "data/data_report.json").read_text())
    assert report["rationales"]["agreement"] == 1.0
    for stage in ("sft", "grpo"):
        assert (out / stage / "adapter/adapter_model.safetensors").stat().st_size > 100_000
    manifest = json.loads((out / "export/manifest.json").read_text())
    assert manifest["prompt_version"].startswith("rationad-prompt") and manifest["data_hash"] == report["data_hash"]
    assert (out / "export/adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_evaluate_gate_and_merge_smoke(tmp_path, datasets):
    """Evaluation and the release gate go through the daemon's vLLM serving path on merged models (vLLM engines)."""
    out = tmp_path / "run"
    r = _run(["--config", "training/configs/cpu.toml", "--smoke", "--out", str(out),
              "--stages", "data,sft,evaluate,gate"], timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "eval/metrics.json").read_text())
    sets = metrics["test"]["sft"]["sets"]
    assert sets and all(0.0 <= s["format_valid_rate"] <= 1.0 for s in sets.values())
    assert (out / "eval/pr_curve.png").stat().st_size > 1000
    # The gate judged only the released adapter: the candidate's validation scores came from the evaluate stage.
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("[gate] candidate")][0].endswith("scores cached")
    assert "scores cached" not in [ln for ln in r.stdout.splitlines() if ln.startswith("[gate] released")][0]
    gate = json.loads((out / "eval/gate.json").read_text())
    released = json.loads((ROOT / "models/rationad-smollm2-135m-lora/manifest.json").read_text())
    assert gate["scores"]["released"]["version"] == released["version"]
    assert set(gate["scores"]) == {"candidate", "released"} and isinstance(gate["passed"], bool)
    cand, rel = gate["scores"]["candidate"]["sets"], gate["scores"]["released"]["sets"]
    assert all(cand[k]["tp"] + cand[k]["fn"] >= 10 for k in gate["gating_sets"])
    assert gate["passed"] == (bool(gate["gating_sets"]) and all(cand[k]["f1"] >= rel[k]["f1"]
                                                                for k in gate["gating_sets"]))
