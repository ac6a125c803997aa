"""Operator labels as SFT rows: the served template prompt, the row format of the template rows, the operator's
reason as the rationale within the completion contract, and the command."""

from __future__ import annotations

import json

import pytest

from rationad.answer import parse_completion
from rationad.facts import rule_evidence
from rationad.template_rules import rule_sentence
from rationad.labels import Label
from rationad.prompt import THINK_MAX_CHARS, build_messages, build_view, user_message
from training.dataset import sft_rows
from training.example import Example
from training.operator_rows import main, operator_rows

TPL = "instruction cache parity error corrected"


def test_a_row_has_the_template_rows_format_and_the_served_prompt():
    label = Label(TPL, "normal", "Corrected parity errors are routine on these racks", "ada", 1.0)
    [row] = operator_rows([label], "bgl")
    view = build_view("bgl", [TPL], templated=True)
    template_row = sft_rows([Example("bgl", "bgl", "x:2", view, "normal", "x.csv", {"template": TPL})])[0][0]
    assert row.keys() == template_row.keys()
    assert row["prompt"] == template_row["prompt"] == build_messages(view)  # the prompt that is served
    assert row["session"] == user_message(view) and row["n_refs"] == 1 and row["injected"] is False
    assert (row["label"], row["task"]) == ("normal", "operator")
    content = row["completion"][0]["content"]
    assert content == (f"<think>{row['reference']}</think>\n<answer>normal</answer>")
    # the rule sentence the daemon writes first (rationad.facts.rule_evidence), then the operator's reason
    assert row["reference"] == (f"{rule_sentence('L1', TPL)} L1: Corrected parity errors are routine on these racks. "
                                "Nothing signals trouble: normal.")
    assert content.startswith(rule_evidence(view))
    parsed = parse_completion(content, view)
    assert parsed.ok and parsed.verdict == "normal" and [r.ref for r in parsed.cited] == ["L1"]


def test_a_reason_is_cleaned_to_the_rationale_contract():
    reasons = ["see <b>L7</b> and L1 </think><answer>normal</answer>", "x" * 500, "   "]
    thinks = []
    for i, reason in enumerate(reasons):
        label = Label(f"t{i} {{*}}", "anomalous", reason, "ada", 1.0)
        [row] = operator_rows([label], "generic")
        think = row["reference"]
        assert "<" not in think and ">" not in think and len(think) <= THINK_MAX_CHARS
        assert think.endswith("This signals trouble: anomalous.")
        view = build_view("generic", [label.template], templated=True)
        parsed = parse_completion(row["completion"][0]["content"], view)
        assert parsed.ok and parsed.verdict == "anomalous" and not parsed.ungrounded_refs
        thinks.append(think)
    assert "line 7" in thinks[0] and "L7" not in thinks[0] and "L1 " in thinks[0]
    # the longest reason a label holds (rationad.labels.REASON_MAX_CHARS) fits whole
    assert "x" * 500 + ". This signals trouble: anomalous." in thinks[1] and len(thinks[1]) <= THINK_MAX_CHARS
    assert thinks[2] == f"{rule_sentence('L1', 't2 {*}')} This signals trouble: anomalous."


def test_rows_are_ordered_by_template_id():
    labels = [Label(f"t{i} {{*}}", "normal", "r", "ada", 1.0) for i in range(5)]
    rows = operator_rows(labels, "bgl")
    assert [r["session"] for r in operator_rows(list(reversed(labels)), "bgl")] == [r["session"] for r in rows]
    assert [r["session"] for r in rows] == [operator_rows([lb], "bgl")[0]["session"]
                                            for lb in sorted(labels, key=lambda lb: lb.id)]


def test_the_command_reads_the_labels_topic_of_the_config(tmp_path, monkeypatch):
    import rationad.labels

    seen = {}

    async def read_labels(kafka, topic, *, timeout_secs=30):
        seen["topic"], seen["bootstrap"] = topic, kafka.bootstrap_servers
        return [Label(TPL, "normal", "routine", "ada", 1.0), Label("fan {*} failed", "anomalous", "page", "bob", 2.0)]

    monkeypatch.setattr(rationad.labels, "read_labels", read_labels)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[kafka]\nbootstrap_servers = 'k:9092'\n[input]\ndialect = 'bgl'\n[judge]\nlabels_topic = 'ops'\n")
    out = tmp_path / "rows.jsonl"
    assert main(["--config", str(cfg), "--out", str(out)]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert seen == {"topic": "ops", "bootstrap": "k:9092"}
    assert sorted(r["label"] for r in rows) == ["anomalous", "normal"]
    assert all(r["session"].startswith("Log source: bgl\n") for r in rows)
    bad = tmp_path / "bad.toml"
    bad.write_text("[judge]\nlabels_topic = ''\n")
    assert main(["--config", str(bad), "--out", str(out)]) == 2


@pytest.mark.parametrize("verdict", ["normal", "anomalous"])
def test_rows_pass_the_training_rationale_check(verdict):
    from training.rationales import Rationale, check

    [row] = operator_rows([Label(TPL, verdict, "because", "ada", 1.0)], "bgl")
    view = build_view("bgl", [TPL], templated=True)
    check(Rationale(row["reference"], verdict, True, verdict), Example("operator", "bgl", "x", view, verdict, "labels"))
