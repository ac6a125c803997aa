"""Release gate: the decision and what export does with it (pure logic; the stage itself runs vLLM)."""

import dataclasses
import json

import pytest

from training.gate import GateError, cached_scores, candidate_identity, check_export, decide, gate_table, score_key


def _set(f1, anomalies):
    return {"f1": f1, "tp": anomalies // 2, "fn": anomalies - anomalies // 2}


def test_no_release_and_no_baseline_passes():
    assert decide({"hdfs": _set(0.1, 50)}, None)["passed"]


@pytest.mark.parametrize(("candidate", "released", "passed"), [(0.80, 0.77, True), (0.77, 0.77, True),
                                                               (0.74, 0.77, False)])
def test_a_measurable_set_must_not_regress(candidate, released, passed):
    d = decide({"hdfs": _set(candidate, 1191)}, {"hdfs": _set(released, 1191)})
    assert d["passed"] is passed and d["gating_sets"] == ["hdfs"]
    assert f"{candidate:.4f}" in d["reason"] and f"{released:.4f}" in d["reason"]


def test_small_sets_are_reported_but_do_not_outvote_a_regression():
    # the 0.1.2 candidate: better mean F1 thanks to 1 of 2 BGL and 4 of 5 Spirit anomalies, worse on HDFS
    cand = {"hdfs": _set(0.7437, 1191), "bgl": _set(0.6667, 2), "spirit": _set(0.7273, 5)}
    rel = {"hdfs": _set(0.7684, 1191), "bgl": _set(0.3636, 2), "spirit": _set(0.3571, 5)}
    d = decide(cand, rel)
    assert not d["passed"] and d["gating_sets"] == ["hdfs"]
    assert "loses on hdfs: F1 0.7437 < released 0.7684" in d["reason"]
    assert "not gating (under 10 anomalous items): bgl, spirit" in d["reason"]


def test_every_gating_set_counts_and_margin_tolerates():
    cand = {"a": _set(0.9, 20), "b": _set(0.59, 20)}
    rel = {"a": _set(0.8, 20), "b": _set(0.6, 20)}
    assert not decide(cand, rel)["passed"]
    assert decide(cand, rel, margin=0.02)["passed"]


def test_a_candidate_that_loses_to_a_baseline_is_not_released_even_without_a_release():
    baselines = {"count_lr": {"hdfs": _set(0.99, 50)}, "keyword": {"hdfs": _set(0.5, 50), "bgl": _set(0.9, 4)}}
    d = decide({"hdfs": _set(0.957, 50), "bgl": _set(0.2, 4)}, None, baselines)
    assert not d["passed"] and d["losses"] == ["hdfs: F1 0.9570 < count_lr 0.9900"]  # bgl: 4 anomalies, no vote
    assert decide({"hdfs": _set(0.99, 50)}, None, baselines)["passed"]  # a tie goes to the candidate
    assert decide({"hdfs": _set(0.98, 50)}, None, baselines, margin=0.01)["passed"]


def test_a_less_faithful_candidate_is_not_released():
    cand = {"hdfs": {**_set(0.9, 50), "faithful_rate": 0.80}}
    rel = {"hdfs": {**_set(0.9, 50), "faithful_rate": 0.95}}
    d = decide(cand, rel)
    assert not d["passed"] and d["losses"] == ["hdfs: faithful 0.8000 < released 0.9500"]
    assert decide(cand, {"hdfs": _set(0.9, 50)})["passed"]  # a released score without the rate: F1 decides


def test_the_gate_table_shows_every_rival():
    from training.gate import gate_table

    gate = {**decide({"hdfs": {**_set(0.9, 50), "faithful_rate": 0.97}}, {"hdfs": _set(0.8, 50)},
                     {"count_lr": {"hdfs": _set(0.95, 50)}}),
            "scores": {"candidate": {"sets": {"hdfs": {"f1": 0.9, "faithful_rate": 0.97}}},
                       "released": {"sets": {"hdfs": {"f1": 0.8}}}},
            "baselines": {"count_lr": {"hdfs": {"f1": 0.95}}}}
    assert "| hdfs | yes | 0.900 | 0.970 | 0.800 | - | 0.950 |" in gate_table(gate)
    assert not gate["passed"]


def test_nothing_measurable_does_not_pass():
    d = decide({"bgl": _set(1.0, 2)}, {"bgl": _set(0.0, 2)})
    assert not d["passed"] and "nothing to decide on" in d["reason"]


def _write_gate(out, passed):
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "sft" / "adapter").mkdir(parents=True, exist_ok=True)
    (out / "sft" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights judged")
    gate = {**decide({"h": _set(0.5 if passed else 0.4, 20)}, {"h": _set(0.45, 20)}), "scores": {},
            "candidate_stage": "sft", "candidate_adapter_sha256": candidate_identity(out)[1],
            "released_adapter_sha256": None}
    (out / "eval" / "gate.json").write_text(json.dumps(gate))
    return gate


def test_export_without_a_gate_names_the_missing_file(tmp_path):
    with pytest.raises(GateError, match="gate.json missing"):
        check_export(tmp_path, smoke=False, force=False)


def test_export_refuses_a_failed_gate_with_its_reason(tmp_path):
    _write_gate(tmp_path, passed=False)
    with pytest.raises(GateError, match=r"loses on h: F1 0\.4000 < released 0\.4500"):
        check_export(tmp_path, smoke=False, force=False)


def test_force_and_passed_and_smoke_export(tmp_path):
    gate = _write_gate(tmp_path, passed=False)
    assert check_export(tmp_path, smoke=False, force=True) == gate
    assert check_export(tmp_path, smoke=True, force=False) is None
    _write_gate(tmp_path, passed=True)
    assert check_export(tmp_path, smoke=False, force=False)["passed"]


def test_export_refuses_an_adapter_the_gate_did_not_judge(tmp_path):
    """Found by review: export read only the gate's verdict, so an adapter retrained (or the other stage chosen)
    after a passing gate was released unjudged."""
    _write_gate(tmp_path, passed=True)
    (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights retrained since")
    with pytest.raises(GateError, match="run the gate again"):
        check_export(tmp_path, smoke=False, force=False)
    _write_gate(tmp_path, passed=True)
    (tmp_path / "grpo" / "adapter").mkdir(parents=True)
    (tmp_path / "grpo" / "adapter" / "adapter_model.safetensors").write_bytes(b"grpo weights")
    (tmp_path / "eval" / "choice.json").write_text(json.dumps({"released": "grpo"}))
    with pytest.raises(GateError, match="the sft adapter .* the candidate now is the grpo adapter"):
        check_export(tmp_path, smoke=False, force=False)


def test_gate_and_export_refuse_a_candidate_whose_adapters_changed_since_the_evaluation(tmp_path):
    """Found by review (2026-12-07), failing before its fix: after an evaluation that chose GRPO, SFT trained again
    (``--stages sft,gate,export``): the gate judged the old GRPO adapter, trained from the replaced SFT one, and export
    released it with the old evaluation's figures. The evaluation records the adapters it judged."""
    for m in ("sft", "grpo"):
        (tmp_path / m / "adapter").mkdir(parents=True)
        (tmp_path / m / "adapter" / "adapter_model.safetensors").write_bytes(f"{m} weights".encode())
    from training.gate import adapter_sha

    (tmp_path / "eval").mkdir()
    judged = {m: adapter_sha(tmp_path / m / "adapter") for m in ("sft", "grpo")}
    (tmp_path / "eval" / "choice.json").write_text(json.dumps({"released": "grpo", "adapters": judged}))
    assert candidate_identity(tmp_path) == ("grpo", judged["grpo"])
    (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").write_bytes(b"sft trained again")
    with pytest.raises(GateError, match="choice.json: the evaluation judged the sft adapter .* now holds"):
        candidate_identity(tmp_path)


def test_export_refuses_when_the_released_adapter_changed_since_the_gate(tmp_path):
    """Found by review (2026-12-06), failing before its fix: the gate did not record which released adapter the
    candidate beat, so a run gated against 0.3.1 could replace a 0.3.3 exported since by another run."""
    from training.gate import adapter_sha

    released = tmp_path / "models" / "rationad-lora"
    released.mkdir(parents=True)
    (released / "adapter_model.safetensors").write_bytes(b"release 0.3.1")
    gate = _write_gate(tmp_path, passed=True)
    gate["released_adapter_sha256"] = adapter_sha(released)
    (tmp_path / "eval" / "gate.json").write_text(json.dumps(gate))
    assert check_export(tmp_path, smoke=False, force=False, released=released)["passed"]
    (released / "adapter_model.safetensors").write_bytes(b"release 0.3.3, exported by another run")
    with pytest.raises(GateError, match="now holds .*: run the gate again"):
        check_export(tmp_path, smoke=False, force=False, released=released)
    del gate["released_adapter_sha256"]  # a gate written before it was recorded
    (tmp_path / "eval" / "gate.json").write_text(json.dumps(gate))
    with pytest.raises(GateError, match=r"\(not recorded\)"):
        check_export(tmp_path, smoke=False, force=False, released=released)


def _eval_set(name, labels):
    from types import SimpleNamespace

    from rationad.records import LogLine, Session

    sessions = [Session(key=f"s{i}", lines=[LogLine(key=f"s{i}", message=f"line {i}", raw=f"raw {i}")],
                        close_reason="template") for i in range(len(labels))]
    return SimpleNamespace(name=name, sessions=sessions, members=[[SimpleNamespace(label=lab)] for lab in labels])


def test_score_key_names_model_serving_sessions_and_labels(tmp_path):
    sets = [_eval_set("hdfs", ["normal", "anomalous"])]
    key = score_key(tmp_path / "merged-aaaa", "float32", sets)
    assert key == score_key(tmp_path / "merged-aaaa", "float32", [_eval_set("hdfs", ["normal", "anomalous"])])
    assert key != score_key(tmp_path / "merged-bbbb", "float32", sets)  # another adapter
    assert key != score_key(tmp_path / "merged-aaaa", "bfloat16", sets)  # another dtype or prompt
    assert key != score_key(tmp_path / "merged-aaaa", "float32", [_eval_set("hdfs", ["normal", "normal"])])
    changed = _eval_set("hdfs", ["normal", "anomalous"])
    changed.sessions[1].lines[0] = dataclasses.replace(changed.sessions[1].lines[0], message="line 1 edited")
    assert key != score_key(tmp_path / "merged-aaaa", "float32", [changed])


def test_cached_scores_judge_once(tmp_path):
    calls = []

    def judge():
        calls.append(1)
        return {"sets": {"hdfs": {"f1": 0.5}}}

    first = cached_scores(tmp_path / "cache", "k1", judge)
    again = cached_scores(tmp_path / "cache", "k1", judge)
    other = cached_scores(tmp_path / "cache", "k2", judge)
    assert first == again == other == {"sets": {"hdfs": {"f1": 0.5}}}
    assert len(calls) == 2 and (tmp_path / "cache" / "k1.json").is_file()


def test_size_limit_is_checked_on_the_exported_bf16_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    from training.gate import exported_size

    save_file({"w": torch.ones(100, 100)}, str(tmp_path / "adapter_model.safetensors"))  # float32: 40,000 bytes
    ok = exported_size(tmp_path, 30_000)  # bf16: 20,000 bytes and a header
    assert ok["passed"] and 20_000 < ok["bytes"] < 20_200
    over = exported_size(tmp_path, 20_000)
    assert not over["passed"] and "over the limit of 20,000 bytes" in over["reason"]
    assert exported_size(tmp_path, 0)["passed"]


def _normal(flagged, windows=20):
    return {"f1": 0.0, "tp": 0, "fn": 0, "fp": flagged, "labelled": windows}


@pytest.mark.parametrize(("flagged", "released", "passed"), [(20, 0, False), (3, 0, False), (2, 0, True),
                                                             (5, 6, True), (7, 6, False)])
def test_an_unseen_systems_normal_windows_gate_by_the_share_flagged(flagged, released, passed):
    # 0.2.1-rc1 flagged 20 of 20 normal Proxifier windows at template level, and a gate of trained systems passed it
    d = decide({"hdfs": _set(0.9, 50), "unseen": _normal(flagged)},
               {"hdfs": _set(0.9, 50), "unseen": _normal(released)})
    assert d["passed"] is passed and d["gating_sets"] == ["hdfs", "unseen"]
    if not passed:
        assert d["losses"] == [f"unseen: flagged {flagged / 20:.0%} of normal windows > released {released / 20:.0%} "
                               "(allowance 10%)"]


def test_a_normal_only_set_loses_to_a_baseline_that_flags_less_and_small_ones_do_not_gate():
    base = {"keyword": {"unseen": _normal(0)}}
    assert not decide({"unseen": _normal(4)}, None, base)["passed"]
    assert decide({"unseen": _normal(4, windows=9), "hdfs": _set(0.9, 50)}, {"hdfs": _set(0.9, 50)},
                  base)["gating_sets"] == ["hdfs"]


def test_the_gate_table_shows_the_share_flagged_of_a_normal_only_set():
    from training.gate import gate_table

    gate = {**decide({"unseen": _normal(20)}, {"unseen": _normal(0)}),
            "scores": {"candidate": {"sets": {"unseen": _normal(20)}}, "released": {"sets": {"unseen": _normal(0)}}},
            "baselines": {"kb": {"unseen": _normal(0)}}}
    assert "| unseen | yes | flagged 100% | - | flagged 0% | - | flagged 0% |" in gate_table(gate)
    assert not gate["passed"]


def test_the_scoring_code_is_part_of_a_cached_score_s_key(tmp_path):
    """Found by review: the key named the model, its serving settings and the sessions, not the faithfulness checker
    or the parser, so after either changed the released model's cached rates were compared with the candidate's
    fresh ones, measured by other code."""
    from training.gate import SCORING_CODE, scoring_code

    (tmp_path / "rationad").mkdir()
    (tmp_path / "rationad" / "faithful.py").write_text("RULE = 1\n")
    (tmp_path / "training" / "knowledge").mkdir(parents=True)
    (tmp_path / "training" / "knowledge" / "hdfs.json").write_text("{}")
    files = ("rationad/faithful.py", "training/knowledge")
    before = scoring_code(files, tmp_path)
    assert scoring_code(files, tmp_path) == before
    (tmp_path / "rationad" / "faithful.py").write_text("RULE = 2\n")
    assert scoring_code(files, tmp_path) != before
    (tmp_path / "rationad" / "faithful.py").write_text("RULE = 1\n")
    (tmp_path / "training" / "knowledge" / "hdfs.json").write_text('{"x": 1}')
    assert scoring_code(files, tmp_path) != before
    assert {"rationad/faithful.py", "training/faithfulness.py", "rationad/answer.py"} <= set(SCORING_CODE)
    assert scoring_code()  # every listed file exists in the repository
    from training.gate import ROOT
    assert all((ROOT / f).exists() for f in SCORING_CODE)


def test_windows_the_candidate_could_not_judge_do_not_pass_as_normal():
    """Found by review: a window whose templates the model could not answer is decided normal (as the daemon
    decides it) and counted well-formed, so a candidate that answered nothing on the unseen system showed 0% flagged
    and passed the guard meant for it. Unjudged windows now count against a normal-only set like flagged ones."""
    from training.evaluate import set_metrics

    points = [{"verdict": "normal", "labels": ["normal"], "grounded": True, "unjudged": i < 15, "rationale": "",
               "problems": []} for i in range(20)]
    m = set_metrics(points)
    assert m["unjudged"] == 15 and m["judged_format_valid_rate"] == 0.25
    normal = {"tp": 0, "fn": 0, "fp": 0, "labelled": 20, "f1": 0.0}
    d = decide({"unseen": {**normal, "unjudged": m["unjudged"]}}, {"unseen": normal})
    assert not d["passed"] and "unseen" in d["reason"], d
    assert decide({"unseen": {**normal, "unjudged": 2}}, {"unseen": normal})["passed"]  # within the allowance


def test_the_gate_compares_the_verdicts_the_daemon_serves():
    """0.3.3's first candidate lost at the gate on one short HDFS view it answered normal (greedy F1 0.944) that the
    served session threshold flags (1.000 served, as the released model): it lost on a verdict nobody is served.
    The gate now compares served verdicts; a candidate that loses there is refused whatever its written answers."""
    def m(f1, served_f1):
        return {"f1": f1, "tp": 1000, "fn": 191, "served": {"f1": served_f1, "precision": 1.0, "recall": 1.0,
                                                           "tp": 1191, "fp": 0, "fn": 0, "tn": 2000}}
    released = {"hdfs": m(1.0, 1.0)}
    d = decide({"hdfs": m(0.9437, 1.0)}, released)
    assert d["passed"], d
    assert "hdfs: F1 1.0000 (written answers 0.9437) vs best other released 1.0000" in d["reason"]
    d = decide({"hdfs": m(1.0, 0.95)}, released)
    assert not d["passed"] and "hdfs: F1 0.9500 < released 1.0000" in d["reason"], d
    # a baseline has no served verdicts: its F1 as it is
    assert not decide({"hdfs": m(1.0, 0.95)}, None, {"count LR": {"hdfs": _set(0.99, 1191)}})["passed"]
    gate = {"gating_sets": ["hdfs"], "scores": {"candidate": {"sets": {"hdfs": m(0.9437, 1.0)}},
                                                "released": {"sets": released}}, "baselines": {}}
    assert "| hdfs | yes | 1.000 (0.944) | - | 1.000 | - |" in gate_table(gate)


def test_the_served_thresholds_are_part_of_a_cached_score_s_key(monkeypatch, tmp_path):
    """A cached score holds served verdicts: a new default threshold must judge both models again."""
    from rationad.config import JudgeConfig
    from training import evaluate
    from training.gate import serving_identity

    before = serving_identity(tmp_path)
    monkeypatch.setattr(evaluate, "served_judging", lambda: JudgeConfig(threshold_session=0.01))
    assert serving_identity(tmp_path) != before


def test_the_rules_judged_with_are_part_of_a_cached_score_s_key(template_examples, tmp_path):
    """Scores judged with the rules cut to training evidence (``training.held_out_rules``) are not those of the
    served rules: the key tells them apart, and the evaluate and gate stages' cut files give one key."""
    from training.gate import serving_identity
    from training.held_out_rules import held_out
    from training.splits import split_examples

    splits = split_examples(template_examples)
    served = serving_identity(tmp_path)
    with held_out(splits, tmp_path / "eval"):
        evaluated = serving_identity(tmp_path)
    with held_out(splits, tmp_path / "eval" / "gate"):
        gated = serving_identity(tmp_path)
    assert served != evaluated == gated
    assert serving_identity(tmp_path) == served


def test_served_verdicts_are_compared_only_where_both_models_have_them():
    """Found by review: a model without served verdicts (cached before they were kept) fell back to its written
    answers while the other was read served: two rules compared. Such a set compares both models' written answers."""
    served = {"f1": 1.0, "precision": 1.0, "recall": 1.0, "tp": 1191, "fp": 0, "fn": 0, "tn": 2000}
    cand = {"hdfs": {"f1": 0.9437, "tp": 1000, "fn": 191, "served": served}}
    d = decide(cand, {"hdfs": {"f1": 1.0, "tp": 1191, "fn": 0}})
    assert not d["passed"] and "F1 0.9437 < released 1.0000" in d["reason"], d
    assert "written answers: the released model's verdicts have no served ones" in d["reason"]


def test_a_window_flagged_and_unjudged_counts_once_in_the_share_not_cleared():
    """Found by review (2026-12-07): a template-level window flagged for one template with another unjudged was
    counted in both, the share reached 200%, and a released model's inflated share let a candidate that flagged
    more normal windows pass."""
    from training.evaluate import set_metrics
    from training.gate import flag_rate

    def points(flagged, unjudged_too):
        return [{"verdict": "anomalous" if i < flagged else "normal", "served_verdict": "anomalous" if i < flagged
                 else "normal", "threshold": 0.5, "labels": ["normal"], "grounded": True,
                 "unjudged": i < unjudged_too, "rationale": "r", "problems": []} for i in range(20)]

    released, candidate = set_metrics(points(4, 4)), set_metrics(points(7, 0))
    assert flag_rate(released) == 0.2 and flag_rate(candidate) == 0.35
    assert flag_rate(set_metrics(points(20, 20))) == 1.0
    d = decide({"hdfs": _set(0.9, 50), "unseen": candidate}, {"hdfs": _set(0.9, 50), "unseen": released})
    assert not d["passed"] and "unseen: flagged 35%" in d["reason"]


def test_a_candidate_leaving_normal_items_unjudged_loses_on_a_set_with_anomalies():
    """Found by review (2026-12-07): an unjudged (dead-lettered) normal item counts as a true negative in F1, so a
    candidate whose format collapsed on normal sessions passed with the same F1."""
    both = {"f1": 1.0, "tp": 20, "fn": 0, "fp": 0, "labelled": 100}
    d = decide({"hdfs": {**both, "unjudged": 60}}, {"hdfs": {**both, "unjudged": 0}})
    assert not d["passed"] and d["losses"] == ["hdfs: 60.0% of items unjudged > released 0.0% (allowance 1%)"]
    assert decide({"hdfs": {**both, "unjudged": 1}}, {"hdfs": {**both, "unjudged": 0}})["passed"]
