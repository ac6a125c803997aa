"""The rationale builder: verdict = label, citations in the session, no angle brackets, short."""

import re

from rationad.answer import parse_completion
from rationad.faithful import TRAINING_ONLY
from rationad.prompt import ANSWER_REGEX, answer_regex, build_view
from training.example import Example
from training.rationales import _with_walk, agreement_report, build, hdfs_rationale, template_rationale


def _check_all(examples):
    rs = [build(ex) for ex in examples]
    for ex, r in zip(examples, rs):
        parsed = parse_completion(r.completion, ex.view)
        assert parsed.ok and parsed.verdict == ex.label
        assert parsed.cited, f"no citation in {r.think!r}"
        assert not parsed.ungrounded_refs
        assert "<" not in r.think and ">" not in r.think
        assert 40 <= len(r.think) <= 700
        assert re.fullmatch(ANSWER_REGEX, r.completion)
        assert re.fullmatch(answer_regex([row.ref for row in ex.view.rows]), r.completion)  # what serving admits
    rep = agreement_report(examples, rs)
    assert rep["agreement"] == 1.0 and rep["agree_with_label"] == len(examples)
    return rs, rep


def test_hdfs_rationales_agree_and_cite_session_lines(hdfs_examples):
    rs, rep = _check_all(hdfs_examples)
    # The knowledge base explains nearly every HDFS label (sequence and error signals).
    assert rep["unexplained_by_kb"].get("hdfs", 0) <= len(hdfs_examples) * 0.02


def test_template_rationales_agree_and_say_when_unexplained(template_examples):
    rs, rep = _check_all(template_examples)
    unexplained = [r for r in rs if not r.explained]
    assert len(unexplained) == rep["unexplained_by_kb"]["bgl"] > 0
    # They say so in words an operator can read, never "the expert label" (issue 16, item 5)
    assert all("on this system" in r.think for r in unexplained)
    assert not any(TRAINING_ONLY.search(r.think) for r in rs)


def test_hdfs_missing_completion_is_explained_from_counts():
    msgs = ["INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"] * 3 + [
        "INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/a. blk_1",
        "INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1",
    ]
    view = build_view("hdfs", msgs)
    r = hdfs_rationale(view, "anomalous")
    assert r.explained and "3 receive starts but 1 completions" in r.think and "L1" in r.think and "L3" in r.think
    contradicted = hdfs_rationale(view, "normal")
    assert contradicted.verdict == "normal" and not contradicted.explained
    assert "completed before: normal" in contradicted.think and not TRAINING_ONLY.search(contradicted.think)


def test_template_with_severity_word():
    view = build_view("bgl", ["machine check interrupt (bit={*}): L2 dcache unit data parity error"], templated=True)
    r = template_rationale(view, "anomalous")
    assert r.explained and r.think.startswith("L1 contains 'machine check'")
    ex = Example("bgl", "bgl", "x", view, "anomalous", "t")
    assert build(ex).verdict == "anomalous"


def test_hdfs_analysis_walks_the_rows_before_the_verdict():
    # An incomplete write: the verdict follows a walk through every row and the lifecycle tally, so the
    # first tokens of the analysis are the same for a normal and an anomalous session.
    view = build_view("hdfs", ["INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/a. blk_1",
                               "INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"])
    r = hdfs_rationale(view, "anomalous")
    assert r.think.startswith("L1 x1 allocated, L2 x1 receive start. Starts 1, received 0, acknowledged 0, registered 0; "
                            "error lines 0.")
    assert "1 receive starts but 0 completions" in r.think and r.think.endswith("anomalous.")
    msgs = (["INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"] * 2
            + ["INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1"] * 2
            + ["INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: Redundant addStoredBlock request received "
               "for blk_1 on 10.0.0.2:50010 size 67108864"])
    r = hdfs_rationale(build_view("hdfs", msgs), "anomalous")
    assert r.think.startswith("L1 x2 receive start, L2 x2 received, L3 x1 ERROR redundant addStoredBlock. "
                              "Starts 2, received 2, acknowledged 0, registered 0; error lines 1. L3 shows redundant")


def test_hdfs_tally_has_one_form_with_or_without_receive_starts():
    # A lifecycle's tail (no receive start) gets the whole lifecycle's tally with Starts 0, not a short form of its
    # own: a model trained on both forms wrote the short one for whole lifecycles (training/RESULTS.md).
    tail = build_view("hdfs", ["INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1",
                               "INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
                               "10.0.0.2:50010 is added to blk_1 size 67108864"])
    r = hdfs_rationale(tail, "normal")
    assert "Starts 0, received 1, acknowledged 0, registered 1; error lines 0." in r.think
    assert "Error lines" not in r.think and r.think.endswith("normal.")


def test_hdfs_walk_keeps_the_conclusion_when_the_session_is_long():
    walk = [f"L{i} x2 {'routine' if i % 3 else 'received'}" for i in range(1, 60)]
    think = _with_walk(walk, "Starts 3, received 3, acknowledged 3, registered 3; error lines 0.",
                       ["Every replica completed."], "No failure signal: normal.")
    assert len(think) <= 700 and think.endswith("Every replica completed. No failure signal: normal.")
    kept = think.split(". ")[0].split(", ")
    # minor rows go first: every lifecycle row stays (the walk leaves CONCLUSION_CHARS whatever follows it)
    assert {e for e in walk if "received" in e} <= set(kept) and len(kept) < len(walk)
    assert [int(e.split()[0][1:]) for e in kept] == sorted(int(e.split()[0][1:]) for e in kept)


def test_longest_hdfs_rationale_fits_the_generation_budgets(hdfs_examples):
    # GRPO samples and the daemon answers within a token budget; a rationale longer than it would be cut
    # (an invalid format) at the very places where it walks the most rows.
    import tomllib
    from pathlib import Path

    import pytest

    from rationad.config import ModelConfig
    from rationad.model.base import token_counter
    from training.prepare_base import BaseModelError, prepare

    try:
        count = token_counter(prepare())
    except BaseModelError as exc:
        pytest.skip(f"no base model: {exc}")
    longest = max(count(build(ex).completion) for ex in hdfs_examples)
    budgets = {"daemon max_new_tokens": ModelConfig.model_fields["max_new_tokens"].default}
    for cfg in sorted((Path(__file__).resolve().parents[2] / "training/configs").glob("*.toml")):
        grpo = tomllib.loads(cfg.read_text()).get("grpo")
        if grpo is not None:  # the template-only experiments run no GRPO
            budgets[cfg.name] = grpo["max_completion_length"]
    assert longest > 100 and all(longest < b for b in budgets.values()), (longest, budgets)


def test_the_walk_the_daemon_writes_is_how_every_trained_hdfs_analysis_starts(hdfs_examples):
    """rationad.facts.evidence is given to a model trained with ``+walk`` to continue: it is the text the training
    rationales start with, character for character, whatever the label and whether the knowledge base explains it.
    A walk too long for the analysis budget drops the same minor rows in both, leaving the model ``CONCLUSION_CHARS``
    (until 2026-12-06 the training rationales left their own conclusion's length: 72 of 20,000 sessions differed)."""
    from rationad.facts import evidence, hdfs_walk

    trimmed = 0
    for ex in hdfs_examples:
        start = evidence(ex.view)
        trimmed += ", ".join(hdfs_walk(ex.view)) not in start
        for label in ("normal", "anomalous"):
            r = hdfs_rationale(ex.view, label)
            assert r.completion.startswith(start), (start, r.think)
    assert trimmed  # the examples hold walks too long for the budget


def test_a_long_walk_is_trimmed_alike_whatever_the_conclusion_after_it():
    from rationad.facts import evidence
    from rationad.prompt import build_view

    start = "INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010"
    received = "INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1"
    routine = [f"INFO dfs.DataNode$DataXceiver: 10.0.0.{i}:50010 Served block blk_1 to /10.0.0.{i} stream {i}x"
               for i in range(40)]
    view = build_view("hdfs", [start, *routine, received], max_prompt_tokens=100_000)
    served = evidence(view)
    for label in ("normal", "anomalous"):  # a short conclusion (normal) kept more rows than the daemon did
        assert hdfs_rationale(view, label).completion.startswith(served)


def test_the_rule_sentence_the_daemon_writes_is_how_every_trained_template_analysis_starts(template_examples):
    from rationad.facts import rule_evidence

    for ex in template_examples:
        start = rule_evidence(ex.view)
        assert start is not None
        for label in ("normal", "anomalous"):
            assert template_rationale(ex.view, label).completion.startswith(start)
