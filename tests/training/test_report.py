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
    assert "Release gate (`training/gate.py`): failed: loses on HDFS (val): F1 0.7400 < released 0.7700" in text


def test_results_say_the_figures_were_judged_with_the_rules_cut_to_training_evidence(tmp_path):
    (tmp_path / "eval").mkdir()
    kb = {"precision": 0.5, "recall": 0.6, "f1": 0.524, "flag_rate": 0.1, "labelled": 247, "judged_prompts": 247,
          "format_valid_rate": None, "grounded_rate": None, "note": "knowledge-base rules only"}
    test = {"kb": {"sets": {"BGL templates (test)": kb}}}
    (tmp_path / "eval/metrics.json").write_text(json.dumps({"test": test, "rules_dropped": ["miscompare", "\\bpanic"]}))
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert "cut to the words training-split templates evidence" in text and "dropped `miscompare`, `\\bpanic`." in text


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


def test_results_list_every_continuation_the_adapter_grew_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(folder, lr, seed, src):
        (tmp_path / folder / "adapter").mkdir(parents=True)
        m = {"examples": 509, "steps": 64, "seconds": 2000.0, "train_loss": 0.2, "stopped_early": False,
             "params": {"lora_r": 16, "lora_alpha": 32, "learning_rate": lr, "seed": seed, "batch_size": 8,
                        "grad_accum": 1, "layers_from": 14},
             "continued_from": src, "log": [{"step": 5, "loss": lr * 1000}]}
        (tmp_path / folder / "sft_metrics.json").write_text(json.dumps(m))

    run("out/sft1", 3e-4, 3, {"adapter": "models/rel", "name": "rel", "version": "0.1.0"})
    run("out/sft2", 2e-4, 4, {"adapter": "out/sft1/adapter"})
    run("out/sft", 1.5e-4, 5, {"adapter": "out/sft2/adapter"})
    text = write_results(tmp_path / "out", tmp_path / "RESULTS.md", "cpu.toml").read_text()
    first = text.index("- which continued out/sft2/adapter: SFT from out/sft1/adapter, 509 examples, 64 steps")
    second = text.index("- which continued out/sft1/adapter: SFT from rel 0.1.0 (models/rel), 509 examples")
    assert text.index("SFT continuing the adapter out/sft2/adapter on 509 examples") < first < second
    assert "at lr 0.0002 (seed 4)" in text and "loss by step: 5: 0.300" in text


def test_results_show_the_chain_of_runs_a_resumed_stage_took(tmp_path):
    (tmp_path / "sft").mkdir()
    m = {"examples": 509, "steps": 282, "seconds": 6600.0, "train_loss": 0.4, "params": {"lora_r": 8},
         "log": [], "runs": [{"from_step": 0, "to_step": 120, "seconds": 3600.0, "resumed_from": None},
                             {"from_step": 120, "to_step": 282, "seconds": 3000.0,
                              "resumed_from": "build/sft/checkpoints/checkpoint-120"}]}
    (tmp_path / "sft/sft_metrics.json").write_text(json.dumps(m))
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert ("- SFT reached its end in 2 runs, each resuming the last one's checkpoint; runs: 0->120 (3600.0 s), "
            "120->282 (3000.0 s, from checkpoint-120).") in text


def test_results_and_manifest_name_the_rank_cut_a_continuation_started_from(tmp_path, monkeypatch):
    from training.export import derived_from

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cut/adapter").mkdir(parents=True)
    cut = {"from": "models/rel", "source": {"name": "rel", "version": "0.2.0", "adapter_sha256": "08e0"},
           "rank": [16, 8], "lora_alpha": [32, 16], "modules": 112,
           "energy_kept": {"min": 0.918, "median": 0.983, "mean": 0.979}}
    (tmp_path / "cut/adapter/shrink.json").write_text(json.dumps(cut))
    (tmp_path / "out/sft").mkdir(parents=True)
    m = {"examples": 509, "steps": 36, "seconds": 1714.0, "train_loss": 0.09, "params": {"lora_r": 8},
         "continued_from": {"adapter": "cut/adapter"}}
    (tmp_path / "out/sft/sft_metrics.json").write_text(json.dumps(m))
    text = write_results(tmp_path / "out", tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert ("- which started from rel 0.2.0 (adapter sha256 08e0) cut from LoRA r=16 to r=8 by the truncated SVD of "
            "each update") in text
    assert derived_from(m) == cut
    assert derived_from({"continued_from": {"adapter": "models/rel"}}) is None and derived_from(None) is None
    # continued once more (0.2.1: the cut, 36 steps, then 24): the chain still names the cut, in the manifest too
    (tmp_path / "out2/sft").mkdir(parents=True)
    m2 = {"examples": 192, "steps": 24, "seconds": 1018.0, "train_loss": 0.09, "params": {"lora_r": 8},
          "continued_from": {"adapter": "out/sft/adapter"}}
    (tmp_path / "out2/sft/sft_metrics.json").write_text(json.dumps(m2))
    assert derived_from(m2) == cut
    text = write_results(tmp_path / "out2", tmp_path / "RESULTS2.md", "cpu.toml").read_text()
    assert "- which started from rel 0.2.0 (adapter sha256 08e0) cut from LoRA r=16 to r=8" in text


def test_an_adapter_released_as_cut_names_its_source_with_no_training_since(tmp_path, monkeypatch):
    from training.export import released_cut

    monkeypatch.chdir(tmp_path)
    cut = {"from": "models/rel", "source": {"name": "rel", "version": "0.2.0", "adapter_sha256": "08e0"},
           "rank": [16, 12], "lora_alpha": [32, 24], "modules": 112,
           "energy_kept": {"min": 0.973, "median": 0.995, "mean": 0.994}}
    (tmp_path / "out/sft/adapter").mkdir(parents=True)
    (tmp_path / "out/sft/adapter/shrink.json").write_text(json.dumps(cut))
    assert released_cut(tmp_path / "out", "sft", None) == (cut, True)
    text = write_results(tmp_path / "out", tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert ("- The released adapter is rel 0.2.0 (adapter sha256 08e0) cut from LoRA r=16 to r=12 by the truncated "
            "SVD of each update") in text and "with no training since" in text

