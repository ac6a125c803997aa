"""Baselines (training/baselines.py): the keyword rule, fitting on the training split only, and the report's
"loses to" lines. Real data from ../shared/datasets, no model."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rationad.records import LogLine, Session

from training.baselines import KEYWORDS, fit, keyword_verdict, loses, score_sets, session_counts, verdicts
from training.dataset import Corpus
from training.evaluate import EvalSet, baseline_report, hdfs_sets, template_set
from training.report import write_results
from training.splits import split_examples

pytest.importorskip("sklearn")


def test_keyword_rule_matches_word_starts_case_insensitively():
    assert keyword_verdict(["RAS KERNEL FATAL data TLB error interrupt"]) == "anomalous"
    assert keyword_verdict(["ciod: Error reading message prefix after LOGIN_MESSAGE"]) == "anomalous"
    assert keyword_verdict(["Failed to connect to {*}"]) == "anomalous"  # "fail" starts "Failed"
    assert keyword_verdict(["connection timed out after {*} seconds"]) == "anomalous"
    assert keyword_verdict(["PacketResponder {*} for block {*} terminating"]) == "normal"
    assert keyword_verdict(["the terrorist report"]) == "normal"  # "error" only at a word start
    assert keyword_verdict(["generating core.{*}", "Receiving block {*}", "no fault here"]) == "normal"
    assert keyword_verdict(["Receiving block {*}", "writeBlock {*} received exception {*}"]) == "anomalous"
    for word in KEYWORDS:  # the documented list is the list in use
        assert keyword_verdict([f"x {word.upper()} y"]) == "anomalous"


@pytest.fixture(scope="module")
def corpus(datasets, template_examples):
    from training.data_hdfs import load_rendered

    hdfs = load_rendered(datasets / "hdfs_sessions/hdfs_sessions.jsonl", limit=600, keep_sessions=True)
    return Corpus(split_examples(hdfs + template_examples), [])


def _flipped(corpus: Corpus) -> Corpus:
    """The same corpus with every validation and test label inverted: a fit that reads them changes."""
    flip = {"normal": "anomalous", "anomalous": "normal"}
    splits = {s: [replace(e, label=flip[e.label], extra=dict(e.extra)) if s != "train" else e for e in ex]
              for s, ex in corpus.splits.items()}
    return Corpus(splits, [])


def _sets(corpus: Corpus) -> list[EvalSet]:
    test = corpus.splits["test"]
    return [*hdfs_sets([e for e in test if e.task == "hdfs"], "test", 50, 0)[:1],
            template_set([e for e in test if e.task == "bgl"], "BGL templates (test)", "bgl", 0)]


def test_baselines_fit_on_the_training_split_only(corpus):
    sets = _sets(corpus)
    assert sum(len(m) for m in sets[0].members) > 50 and len(sets[1].sessions) > 100
    a, b = fit(corpus), fit(_flipped(corpus))
    for name in ("count_lr", "tfidf_lr", "knn"):
        va = [verdicts(a, name, es) for es in sets]
        vb = [verdicts(b, name, es) for es in sets]
        assert va == vb and any(v is not None for v in va)
    # no word seen only in test templates is in the TF-IDF vocabulary
    vocab = a.tfidf_lr["bgl"][0].vocabulary_
    analyse = a.tfidf_lr["bgl"][0].build_analyzer()
    train_words = {w for e in corpus.splits["train"] if e.task == "bgl" for w in analyse(e.extra["template"])}
    test_only = {w for s in sets[1].sessions for w in analyse(s.lines[0].message)} - train_words
    assert test_only and not test_only & set(vocab)


def test_baselines_score_the_sets_they_apply_to(corpus):
    sets = _sets(corpus)
    fitted = fit(corpus)
    res = score_sets(fitted, sets)
    hdfs, bgl = (es.name for es in sets)
    assert set(res["count_lr"]["sets"]) == {hdfs} and set(res["tfidf_lr"]["sets"]) == set(res["knn"]["sets"]) == {bgl}
    assert set(res["keyword"]["sets"]) == {hdfs, bgl}
    s = res["count_lr"]["sets"][hdfs]  # each verdict counts for every session its view stands for
    assert s["labelled"] == sum(len(m) for m in sets[0].members) and s["judged_prompts"] == len(sets[0].sessions)
    assert s["f1"] > 0.9 and "train-split hdfs sessions" in s["note"]
    assert res == score_sets(fit(corpus), sets)  # deterministic


def test_window_baselines_flag_a_window_when_any_template_is_flagged(corpus):
    def window(key, msgs, label):
        return Session(key=key, lines=[LogLine(key, m, m) for m in msgs], close_reason="window", label=label,
                       source_id=key)

    ok = ["generating core.2275", "generating core.2275"]
    bad = [*ok, "data TLB error interrupt"]
    sessions = [window("w1", ok, "normal"), window("w2", bad, "anomalous"), window("w3", ok[:1], "normal")]
    assert session_counts(sessions[1]) == {"generating core.{*}": 2, "data TLB error interrupt": 1}  # masked
    from training.evaluate import session_set

    es = session_set("BGL windows", "bgl", sessions, "")
    got, note = verdicts(fit(corpus), "tfidf_lr", es)
    assert got == ["normal", "anomalous", "normal"] and note.endswith("any row")
    assert verdicts(fit(corpus), "count_lr", es) is None  # no BGL sessions in the training split


def _m(f1, tp, fn, flag_rate=0.5, labelled=100):
    return {"f1": f1, "tp": tp, "fn": fn, "fp": 0, "precision": 1.0, "recall": 1.0, "flag_rate": flag_rate,
            "labelled": labelled, "format_valid_rate": 1.0, "grounded_rate": 1.0, "judged_prompts": labelled,
            "note": ""}


def test_loses_lines_name_the_baseline_the_set_and_both_scores():
    model = {"HDFS sessions (test)": _m(0.957, 900, 80), "BGL templates (test)": _m(0.605, 13, 4),
             "BGL templates (val)": _m(0.8, 2, 0), "Proxifier": _m(0.0, 0, 0, flag_rate=0.35, labelled=20)}
    base = {"count_lr": {"sets": {"HDFS sessions (test)": _m(0.999, 970, 1), "Proxifier": _m(0.0, 0, 0, 0.0, 20)}},
            "tfidf_lr": {"sets": {"BGL templates (test)": _m(0.537, 11, 6), "BGL templates (val)": _m(1.0, 2, 0)}}}
    lines = loses(model, base, "SFT")
    assert lines == ["SFT loses to template-count LR on HDFS sessions (test): F1 0.957 vs 0.999",
                     ("SFT loses to TF-IDF + LR on BGL templates (val): F1 0.800 vs 1.000 (only 2 anomalous items: "
                      "too few to decide)"),
                     "SFT loses to template-count LR on Proxifier: flagged 35% vs 0% of normal windows"]


def test_results_md_says_where_the_released_model_loses(tmp_path):
    (tmp_path / "eval").mkdir()
    model = {"sets": {"HDFS sessions (test)": _m(0.957, 900, 80), "BGL templates (test)": _m(0.605, 13, 4)}}
    ev = {"test": {"sft": model, "kb": {"sets": {}}}, "val": {"sft": {"sets": {"BGL templates (val)": _m(0.8, 5, 0)}}},
          "choice": {"released": "sft", "validation_mean_f1": {"sft": 0.9}},
          "baselines": {"trained_on": {"count_lr:hdfs": "trained on 9 train-split hdfs sessions (5 anomalous)"},
                        "test": {"count_lr": {"sets": {"HDFS sessions (test)": _m(0.999, 970, 1)}},
                                 "tfidf_lr": {"sets": {"BGL templates (test)": _m(0.537, 11, 6)}}},
                        "val": {"tfidf_lr": {"sets": {"BGL templates (val)": _m(0.7, 5, 0)}}}}}
    (tmp_path / "eval/metrics.json").write_text(json.dumps(ev))
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "cpu.toml").read_text()
    assert "## Baselines" in text and "count_lr:hdfs: trained on 9 train-split hdfs sessions" in text
    assert "- SFT (released) loses to template-count LR on HDFS sessions (test): F1 0.957 vs 0.999" in text
    assert "| test | BGL templates (test) | 17 / 100 | 0.605 | - | 0.537 |" in text
    assert "loses to TF-IDF + LR on BGL templates (test)" not in text
    assert "- SFT (released) loses to no baseline on the val sets." in text


def test_a_report_without_model_results_claims_no_win():
    base = {"test": {"keyword": {"sets": {"X": _m(0.5, 10, 10)}}}}
    text = baseline_report({}, base, "SFT")
    assert "no test results for SFT" in text and "loses to no baseline" not in text


def test_the_daemon_never_imports_scikit_learn():
    root = Path(__file__).resolve().parents[2] / "rationad"
    offenders = [p for p in root.rglob("*.py") if "sklearn" in p.read_text(encoding="utf-8")]
    assert root.is_dir() and not offenders


def test_validation_gates_on_sequences_absent_from_training_too(corpus, datasets):
    """Found by review: validation judged only its most common HDFS views, every one of them a training row, so the
    release gate could not see a candidate that learnt its rows by heart. The unseen sequences of validation are a
    set of their own, as in test."""
    from training.evaluate import EvalParams, build_sets

    sets = build_sets(corpus, EvalParams(val_hdfs_views=10), "val", val_mode=True, datasets=datasets)
    by_name = {s.name: s for s in sets}
    unseen = by_name["HDFS unseen sequences (val)"]
    train_views = {e.view_key for e in corpus.splits["train"]}
    assert unseen.sessions and all(e.view_key not in train_views for m in unseen.members for e in m)


def test_the_baselines_command_scores_the_kb_rules_as_the_evaluate_stage_does(tmp_path, monkeypatch,
                                                                                template_examples):
    """Found by review (2026-12-07): ``python -m training.baselines`` scored the KB baseline with the served rules
    (BGL test 0.622) while the evaluate and gate stages score it with the rules cut to training evidence (0.524)."""
    import json
    from types import SimpleNamespace

    from rationad.template_rules import match_rule

    from training import baselines, evaluate, pipeline
    from training.splits import split_examples

    seen = []
    corpus = SimpleNamespace(splits=split_examples(template_examples), hash=lambda: "h")
    monkeypatch.setattr(pipeline, "prepare_base", lambda cfg: tmp_path)
    monkeypatch.setattr(evaluate, "eval_inputs", lambda *a: (evaluate.EvalParams(), SimpleNamespace(datasets=tmp_path),
                                                            corpus))
    monkeypatch.setattr(evaluate, "build_sets", lambda *a, **k: [])
    monkeypatch.setattr(evaluate, "kb_baseline", lambda sets: seen.append(match_rule("memory test: miscompare")[0]))
    monkeypatch.setattr(evaluate, "baseline_results", lambda *a: {"trained_on": {}})
    monkeypatch.setattr(evaluate, "baseline_report", lambda *a: "")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'out = "{tmp_path / "out"}"\n')
    baselines.main(["--config", str(cfg)])
    assert seen == [None]  # "miscompare" is a test-only word: no rule while the KB is scored
    assert json.loads((tmp_path / "out" / "eval" / "baselines.json").read_text())["rules_dropped"]
