"""The rationale builder: verdict = label, citations in the session, no angle brackets, short."""

import re

from rationad.answer import parse_completion
from rationad.prompt import ANSWER_REGEX, answer_regex, build_view

from training.example import Example
from training.rationales import agreement_report, build, hdfs_rationale, template_rationale


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
    assert all("cannot explain" in r.think or "does not explain" in r.think for r in unexplained)


def test_hdfs_missing_completion_is_explained_from_counts():
    msgs = ["INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"] * 3 + [
        "INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/a. blk_1",
        "INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1",
    ]
    view = build_view("hdfs", msgs)
    r = hdfs_rationale(view, "anomalous")
    assert r.explained and "3 receive starts but 1 completions" in r.think and "L1" in r.think and "L3" in r.think
    contradicted = hdfs_rationale(view, "normal")
    assert contradicted.verdict == "normal" and not contradicted.explained and "cannot explain" in contradicted.think


def test_template_with_severity_word():
    view = build_view("bgl", ["machine check interrupt (bit={*}): L2 dcache unit data parity error"], templated=True)
    r = template_rationale(view, "anomalous")
    assert r.explained and r.think.startswith("L1 contains 'machine check'")
    ex = Example("bgl", "bgl", "x", view, "anomalous", "t")
    assert build(ex).verdict == "anomalous"
