"""RESULTS.md writer: the release gate's verdict and the adapter a continuation started from are part of the results."""

import json

from training.gate import decide
from training.report import write_results


def test_results_carry_the_gate_verdict(tmp_path):
    (tmp_path / "eval").mkdir()
    gate = decide({"HDFS (val)": {"f1": 0.74, "tp": 700, "fn": 491}},
                  {"HDFS (val)": {"f1": 0.77, "tp": 880, "fn": 311}})
    (tmp_path / "eval/gate.json").write_text(json.dumps(gate))
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert "Release gate (`training/gate.py`): failed: regressed on HDFS (val)" in text


def test_results_name_the_adapter_a_continuation_started_from(tmp_path):
    (tmp_path / "sft").mkdir()
    m = {"examples": 509, "steps": 56, "seconds": 3000.0, "train_loss": 0.4, "stopped_early": True,
         "params": {"lora_r": 16, "lora_alpha": 32, "learning_rate": 3e-4, "batch_size": 8, "grad_accum": 1,
                    "layers_from": 14},
         "continued_from": {"adapter": "models/rationad-smollm2-135m-lora", "name": "rationad-smollm2-135m-lora",
                            "version": "0.1.0"}, "log": [{"step": 5, "loss": 1.9}]}
    (tmp_path / "sft/sft_metrics.json").write_text(json.dumps(m))
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert ("- SFT continuing the adapter rationad-smollm2-135m-lora 0.1.0 (models/rationad-smollm2-135m-lora) on "
            "509 examples, 56 optimizer steps") in text
    assert "(stopped by the wall-clock guard)" in text and "SFT loss by step: 5: 1.900" in text
