"""Comparing two evaluated runs: paired F1 difference with a bootstrap interval, refused when items differ."""

import json

import pytest

from training.compare import compare, paired_difference, table


def _run(tmp_path, name, verdicts):
    labels = ["anomalous"] * 4 + ["normal"] * 16
    folder = tmp_path / name
    (folder / "eval" / "sft").mkdir(parents=True)
    points = [{"id": f"t{i}", "labels": [lab], "verdict": v} for i, (lab, v) in enumerate(zip(labels, verdicts))]
    (folder / "eval" / "sft" / "bgl_templates.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    tp = sum(p["verdict"] == "anomalous" == p["labels"][0] for p in points)
    fp = sum(p["verdict"] == "anomalous" != p["labels"][0] for p in points)
    fn = 4 - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    m = {"tp": tp, "fp": fp, "fn": fn, "labelled": 20, "precision": tp / max(1, tp + fp), "recall": tp / 4, "f1": f1,
         "faithful_rate": 1.0}
    (folder / "eval" / "metrics.json").write_text(json.dumps({
        "test": {"sft": {"sets": {"BGL templates (test)": m}}},
        "baselines": {"test": {"tfidf": {"sets": {"BGL templates (test)": {"f1": 0.5}}}}}}))
    return folder


def test_identical_runs_differ_by_nothing_and_a_better_run_by_a_positive_interval(tmp_path):
    weak = ["anomalous", "normal", "normal", "normal"] + ["anomalous"] * 2 + ["normal"] * 14
    strong = ["anomalous"] * 4 + ["normal"] * 16
    a, b = _run(tmp_path, "a", weak), _run(tmp_path, "b", strong)
    same = compare(a, a)["sets"]["BGL templates (test)"]["paired"]
    assert same == {"diff": 0.0, "ci95": [0.0, 0.0]}
    res = compare(a, b)
    row = res["sets"]["BGL templates (test)"]
    assert row["paired"]["diff"] == pytest.approx(1.0 - 2 / 7, abs=1e-4) and row["paired"]["ci95"][0] > 0
    assert row["baselines"] == {"tfidf": 0.5}
    text = table(res, ("a", "b"))
    assert "| BGL templates (test) | 4 / 20 |" in text and "tfidf" in text


def test_runs_that_judged_different_items_are_not_paired():
    with pytest.raises(ValueError, match="different items"):
        paired_difference({"x": (True, True)}, {"y": (True, True)})
    with pytest.raises(ValueError, match="different items"):
        paired_difference({"x": (True, True)}, {"x": (False, True)})
