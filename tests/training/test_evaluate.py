"""Evaluation bookkeeping (pure logic) with a fake model client: view weighting, metrics, table and plot.

The real serving path (vLLM engine) is exercised by the slow integration smoke test in test_pipeline_smoke.py."""

import asyncio
import dataclasses
import json

import pytest

from rationad.config import ModelConfig
from rationad.model.base import Completion
from rationad.prompt import build_view
from rationad.records import LogLine, Session

from training.evaluate import EvalSet, judge_set, pr_plot, results_table, set_metrics
from training.example import Example


class FakeClient:
    """Says anomalous when the prompt mentions an exception; cites L1 (and L9, absent, for 'cite-bad')."""

    name = "fake"

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        out = []
        for conv in conversations:
            user = conv[-1]["content"]
            verdict = "anomalous" if "xception" in user else "normal"
            refs = "L1 and L9" if "cite-bad" in user else "L1"
            said = " L1 x5 receive start." if "xception" in user else ""  # a count the session does not have
            out.append(Completion(f"<think>{refs} decide it.{said}</think>\n<answer>{verdict}</answer>", 10, 10))
        return out

    def count_tokens(self, text):
        return len(text) // 4 + 1


def _session(key, msgs, label):
    return Session(key=key, lines=[LogLine(key, m, m) for m in msgs], close_reason="t", label=label, source_id=key)


def _ex(sid, msgs, label):
    return Example("hdfs", "hdfs", sid, build_view("hdfs", msgs), label, "t")


def test_judge_set_weights_views_by_their_sessions(tmp_path):
    ok, bad, cite = ["Receiving block {*}"], ["writeBlock received exception {*}"], ["cite-bad line"]
    es = EvalSet("HDFS sessions (test)", "hdfs",
                 [_session("a", ok, "normal"), _session("b", bad, "anomalous"), _session("c", cite, "normal")],
                 [[_ex("a", ok, "normal")] * 3 + [_ex("a2", ok, "anomalous")],  # one view, 4 sessions, 1 missed
                  [_ex("b", bad, "anomalous")] * 2,
                  [_ex("c", cite, "normal")]])
    s = asyncio.run(judge_set(es, FakeClient(), ModelConfig(path=None), tmp_path, chunk=2))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 0, 1, 4)
    assert s["labelled"] == 7 and s["judged_prompts"] == 3
    assert s["recall"] == round(2 / 3, 4) and s["precision"] == 1.0
    assert s["grounded_rate"] == round(6 / 7, 4)  # the 'c' view cites L9, absent from its 1-row session
    assert s["format_valid_rate"] == 1.0
    # 'b' says L1 x5 of a row seen once, and names the wrong role; 'c' is served no rationale (its one sentence cites
    # L9, absent) and still counts, checked on what it wrote (review, 2026-12-06: dropping it flattered the model)
    assert s["faithful_rate"] == round(2 / 3, 4)
    assert s["judged_cut_rate"] == 0.0

    rows = [json.loads(x) for x in (tmp_path / "hdfs_sessions_test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [sorted({p.split(":")[0] for p in r["problems"]}) for r in rows] == [[], ["count", "role"], []]
    assert rows[2]["rationale"] == ""  # served up to the sentence citing a line not in the session: none
    results = {"sft": {"sets": {es.name: s}}}
    assert "| SFT | HDFS sessions (test) | 1.000 | 0.667 | 0.800 | 0.800 | 1.000 |" in results_table(results)
    pr_plot(results, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_set_metrics_count_rationales_cut_at_the_token_budget():
    points = [{"verdict": "normal", "labels": ["normal"], "grounded": True, "rationale": "L1 x1 routine. …",
               "problems": []},
              {"verdict": "anomalous", "labels": ["anomalous"], "grounded": True, "rationale": "L1 x1 fails.",
               "problems": []},
              {"verdict": None, "labels": ["normal"], "grounded": True, "rationale": "", "problems": []}]
    s = set_metrics(points)
    assert s["judged_cut_rate"] == 0.5 and s["judged_format_valid_rate"] == round(2 / 3, 4)


def test_an_answer_served_without_its_rationale_still_counts_for_faithfulness():
    """Found by review (2026-12-06): a rationale served cut to nothing (its sentences cited absent lines) dropped out
    of faithful_rate with its problems, so a model citing missing lines looked more faithful."""
    points = [{"verdict": "normal", "labels": ["normal"], "grounded": True, "rationale": "L1 x1 routine.",
               "problems": []},
              {"verdict": "anomalous", "labels": ["anomalous"], "grounded": False, "rationale": "",
               "problems": ["count: says L1 x5, the session has it 1 times"]}]
    assert set_metrics(points)["faithful_rate"] == 0.5


def test_set_metrics_read_each_answer_s_score_for_the_set_s_precision_recall_curve():
    """The evaluation counted every scored answer as "unscored" (it dropped the score): no average precision or
    best-F1 threshold per set, though every answer of the serving path has one."""
    points = [{"verdict": v, "score": sc, "labels": [lab], "grounded": True, "rationale": "L1 x1.", "problems": []}
              for v, sc, lab in (("anomalous", 0.9, "anomalous"), ("normal", 0.3, "anomalous"),
                                 ("normal", 0.01, "normal"), ("normal", 0.002, "normal"))]
    s = set_metrics(points)
    assert s["scored"] == 4 and s["unscored"] == 0 and s["average_precision"] == 1.0
    assert s["best_f1"] == 1.0 and 0.01 < s["best_f1_threshold"] < 0.3


def test_kb_baseline_scores_the_same_sets():
    from training.evaluate import kb_baseline

    ok = ["INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /1.2.3.4:5 dest: /1.2.3.4:50010"]
    bad = ok + ["WARN dfs.DataNode$DataXceiver: writeBlock blk_1 received exception java.io.IOException: x"]
    es = EvalSet("HDFS sessions (test)", "hdfs", [_session("a", ok, "normal"), _session("b", bad, "anomalous")],
                 [[_ex("a", ok, "anomalous")], [_ex("b", bad, "anomalous")] * 2])
    s = kb_baseline([es])["sets"][es.name]
    # "a" has one receive start and no completion: a sequence signal, so the rules flag it too
    assert (s["tp"], s["fn"], s["fp"]) == (3, 0, 0)


def test_release_choice_ignores_validation_sets_too_small_to_measure():
    from training.evaluate import MIN_ANOMALIES, f1_of

    res = {"sets": {"hdfs": {"f1": 0.8, "tp": 900, "fn": 300}, "bgl": {"f1": 0.0, "tp": 0, "fn": 2},
                    "spirit": {"f1": 1.0, "tp": MIN_ANOMALIES - 1, "fn": 0}}}
    assert f1_of(res) == 0.8
    res["sets"]["spirit"]["tp"] = MIN_ANOMALIES
    assert f1_of(res) == pytest.approx(0.9)
    res["sets"]["hdfs"]["served"] = {"f1": 0.6}  # SFT or GRPO is chosen on what is served, as the gate decides
    assert f1_of(res) == pytest.approx(0.8)


def test_a_template_level_set_judges_each_template_once_and_checks_the_served_rationales(tmp_path):
    from training.evaluate import session_set

    windows = [_session("w1", ["connection opened to 10.0.0.1", "connection closed after 5 s"], "normal"),
               _session("w2", ["connection opened to 10.0.0.2", "java.io.IOException: reset by peer"], "normal"),
               _session("w3", ["connection opened to 10.0.0.3", "connection closed after 9 s"], "normal")]
    es = session_set("Unseen system by template (test)", "generic", windows, "three windows", level="template")
    s = asyncio.run(judge_set(es, FakeClient(), ModelConfig(path=None), tmp_path, chunk=2))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (0, 1, 0, 2) and s["flag_rate"] == round(1 / 3, 4)
    assert s["judged_prompts"] == 3  # the three distinct templates, each once
    rows = [json.loads(x) for x in (tmp_path / "unseen_system_by_template_test.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["normal", "anomalous", "normal"]
    # The anomalous template's rationale claims "L1 x5" of a template seen once in its prompt: unfaithful.
    assert rows[1]["problems"] and not rows[0]["problems"] and not rows[2]["problems"]
    assert s["faithful_rate"] == round(2 / 3, 4) and s["grounded_rate"] == 1.0


def test_fragment_set_cuts_the_most_common_views_as_the_daemon_cuts_them():
    from training.evaluate import fragment_set

    def ex(sid, msgs, label):
        e = _ex(sid, msgs, label)
        e.extra["session"] = _session(sid, msgs, label)
        return e

    life = ["Receiving block blk_1", "Receiving block blk_1", "Received block blk_1", "PacketResponder 1 terminating",
            "addStoredBlock blk_1"]
    short = ["Receiving block blk_2", "Received block blk_2"]  # under 4 lines: never cut
    odd = ["Receiving block blk_3", "allocateBlock blk_3", "writeBlock received exception", "Received block blk_3"]
    es = fragment_set([ex("a", life, "normal"), ex("a2", life, "normal"), ex("s", short, "normal"),
                       ex("b", odd, "anomalous")], "test", max_views=5)
    assert es.name == "HDFS fragments (test)" and es.source == "hdfs" and es.level == "session"
    got = {s.source_id: ([ln.message for ln in s.lines], s.label, s.close_reason) for s in es.sessions}
    assert got == {"a#head2": (life[:2], "normal", "max_open"), "a#tail": (life[2:], "normal", "gap"),
                   "b#head2": (odd[:2], "anomalous", "max_open"), "b#tail": (odd[2:], "anomalous", "gap")}
    assert [s.source_id for s in es.sessions][:2] == ["a#head2", "a#tail"]  # the most common view first
    assert [[m.label for m in ms] for ms in es.members] == [["normal"], ["normal"], ["anomalous"], ["anomalous"]]
    assert len(fragment_set([ex("a", life, "normal"), ex("b", odd, "anomalous")], "test", 1).sessions) == 2


def test_a_grpo_adapter_trained_from_another_sft_adapter_is_left_out(tmp_path):
    """Found by review: evaluate judged (and could choose, and the gate release) a GRPO adapter trained from an
    earlier SFT adapter, after SFT was retrained without GRPO."""
    import hashlib
    import json

    from training.evaluate import grpo_follows_sft

    (tmp_path / "sft" / "adapter").mkdir(parents=True)
    (tmp_path / "grpo").mkdir()
    (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").write_bytes(b"sft weights")
    sha = hashlib.sha256(b"sft weights").hexdigest()[:16]
    (tmp_path / "grpo" / "grpo_metrics.json").write_text(json.dumps({"identity": {"sft_adapter": {"sha256": sha}}}))
    assert grpo_follows_sft(tmp_path)
    (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").write_bytes(b"sft retrained")
    assert not grpo_follows_sft(tmp_path)
    (tmp_path / "grpo" / "grpo_metrics.json").unlink()
    assert not grpo_follows_sft(tmp_path)  # provenance unknown


class ScoringClient(FakeClient):
    """FakeClient with a score: that of the first word of ``scores`` the prompt holds (by default 0.9 for an
    exception, 0.003 for a 'doubtful' line), else 0.0001."""

    def __init__(self, scores: dict[str, float] | None = None):
        self.scores = scores or {"xception": 0.9, "doubtful": 0.003}

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        out = await super().generate(conversations, max_tokens=max_tokens, temperature=temperature, regex=regex)
        return [dataclasses.replace(c, score=next((v for w, v in self.scores.items() if w in u), 0.0001))
                for c, u in zip(out, (conv[-1]["content"] for conv in conversations), strict=True)]


def test_judge_set_reports_the_verdicts_served_at_the_session_threshold(tmp_path):
    """The release gate compared written (greedy) answers, while the daemon serves a session verdict at
    ``judge.threshold_session`` (0.0007): a session answered normal with score 0.003 is flagged when served. Each
    point now carries the verdict served at its session's threshold (an unfinished one at ``threshold_unfinished``),
    and the set its ``served`` metrics."""
    doubt, ok, bad = ["doubtful Receiving block {*}"], ["Receiving block {*}"], ["writeBlock received exception {*}"]
    sessions = [_session("d", doubt, "anomalous"), _session("o", ok, "normal"), _session("b", bad, "anomalous"),
                _session("u", doubt, "normal")]
    sessions[3].close_reason = "max_open"  # unfinished: served at threshold_unfinished (0.5), so not flagged
    es = EvalSet("HDFS sessions (val)", "hdfs", sessions,
                 [[_ex("d", doubt, "anomalous")], [_ex("o", ok, "normal")], [_ex("b", bad, "anomalous")],
                  [_ex("u", doubt, "normal")]])
    s = asyncio.run(judge_set(es, ScoringClient(), ModelConfig(path=None), tmp_path, chunk=4))
    assert (s["tp"], s["fn"], s["fp"]) == (1, 1, 0)  # the written answers: 'd' answered normal
    assert s["served"] | {"thresholds": None} == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 2, "fp": 0,
                                                   "fn": 0, "tn": 2, "thresholds": None, "unjudged_flagged": 0}
    assert s["served"]["thresholds"] == [0.0007, 0.5]
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "hdfs_sessions_val.jsonl").read_text().splitlines())}
    assert [(rows[k]["verdict"], rows[k]["served_verdict"]) for k in "dobu"] == [
        ("normal", "anomalous"), ("normal", "normal"), ("anomalous", "anomalous"), ("normal", "normal")]


def test_templates_are_served_at_the_template_threshold_and_windows_by_their_highest_template(tmp_path):
    """Found by review: BGL and Spirit templates (one per prompt, as the template book asks) were served at the
    session threshold (0.0007), so a template written normal with score 0.003 counted as flagged, where the daemon
    judges bgl by template at ``threshold_template`` (0.5). A window judged by template is served anomalous when
    its highest template score reaches that threshold, whatever the answers written."""
    from training.evaluate import session_set, template_set

    def scored():  # a 'doubtful' template written normal at 0.003, a 'likely' one written normal at 0.6
        return ScoringClient({"likely": 0.6, "doubtful": 0.003})

    ex = [Example("bgl", "bgl", f"t{i}", build_view("bgl", [tpl]), lab, "t", {"template": tpl})
          for i, (tpl, lab) in enumerate([("doubtful kernel line <*>", "normal"), ("likely kernel line", "anomalous")])]
    s = asyncio.run(judge_set(template_set(ex, "BGL templates (val)", "bgl", 0), scored(), ModelConfig(path=None),
                              tmp_path, chunk=4))
    assert s["served"]["thresholds"] == [0.5]
    assert (s["served"]["tp"], s["served"]["fp"]) == (1, 0) and (s["tp"], s["fp"]) == (0, 0)
    windows = [_session("w1", ["connection opened", "likely reset seen"], "anomalous"),
               _session("w2", ["connection opened", "doubtful close seen"], "normal")]
    s = asyncio.run(judge_set(session_set("Unseen system by template (val)", "generic", windows, "two", "template"),
                              scored(), ModelConfig(path=None), tmp_path, chunk=4))
    rows = [json.loads(x) for x in (tmp_path / "unseen_system_by_template_val.jsonl").read_text().splitlines()]
    assert [(r["verdict"], r["served_verdict"], r["threshold"]) for r in rows] == [
        ("normal", "anomalous", 0.5), ("normal", "normal", 0.5)]


def test_an_answer_on_void_evidence_is_served_normal_at_any_threshold(tmp_path):
    """The daemon serves an anomalous answer whose evidence names no trouble as normal (``unsupported``), whatever
    its score; the served metrics must too."""
    from training.evaluate import session_set

    es = session_set("BGL windows (val)", "bgl", [_session("v", ["connection opened to node 4"], "normal")], "one")

    class Void(FakeClient):  # anomalous, resting on a line that names no trouble, score 0.9
        async def generate(self, conversations, *, max_tokens, temperature, regex):
            return [Completion("<think>L1 contains 'opened': a network or service connection problem.</think>\n"
                               "<answer>anomalous</answer>", 10, 10, 0.9) for _ in conversations]

    s = asyncio.run(judge_set(es, Void(), ModelConfig(path=None), tmp_path, chunk=2))
    row = json.loads((tmp_path / "bgl_windows_val.jsonl").read_text())
    assert (row["verdict"], row["served_verdict"], row["score"]) == ("normal", "normal", 0.0)
    assert s["served"]["fp"] == 0 and s["served"]["tn"] == 1


def test_served_metrics_need_every_point_served():
    """Verdicts judged before served ones were kept (a re-judge mixes them with new ones) have no served metrics:
    the written answers must not be passed off as served."""
    pts = [{"verdict": "anomalous", "labels": ["anomalous"], "grounded": True, "served_verdict": "anomalous",
            "threshold": 0.0007},
           {"verdict": "normal", "labels": ["normal"], "grounded": True}]
    assert set_metrics(pts)["served"] is None
    assert set_metrics(pts[:1])["served"]["tp"] == 1


def test_the_evaluate_stage_scores_with_the_rules_cut_to_training_evidence(monkeypatch, tmp_path, template_examples):
    """The served rules hold words read off validation and test templates (``training.leakage``): the stage judges,
    and scores the knowledge-base baseline, with them cut (``training.held_out_rules``), and serves them again after."""
    from types import SimpleNamespace

    from rationad.template_rules import match_rule

    from training import evaluate
    from training.splits import split_examples

    class Stop(Exception):
        pass

    seen = []

    def kb(sets):
        seen.append(match_rule("memory test: miscompare on chip 3")[0])
        raise Stop

    corpus = SimpleNamespace(splits=split_examples(template_examples))
    monkeypatch.setattr(evaluate, "eval_inputs", lambda *a: (evaluate.EvalParams(), SimpleNamespace(datasets=tmp_path),
                                                            corpus))
    monkeypatch.setattr(evaluate, "build_sets", lambda *a, **k: [])
    monkeypatch.setattr(evaluate, "kb_baseline", kb)
    with pytest.raises(Stop):
        evaluate.run_stage({}, tmp_path / "c.toml", tmp_path / "out", tmp_path, False)
    assert seen == [None]  # "miscompare" matches test templates only: not a trouble word while judging
    assert (tmp_path / "out" / "eval" / "train_rules.json").is_file()
    assert match_rule("memory test: miscompare on chip 3")[0].verdict == "anomalous"
