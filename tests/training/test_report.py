"""RESULTS.md writer: the release gate's verdict is part of the results."""

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
