"""The prompt an adapter was trained on (training.prompt_stamp): read from its rows and the adapter it continued."""

import json

import pytest

from rationad.prompt import PROMPT_VERSION, build_messages, build_view
from training.prompt_stamp import manifest_prompt, stamp, trained_prompt

MSGS = ["Receiving block blk_1 src: /10.0.0.1:5", "Receiving block blk_1 src: /10.0.0.2:5"]


def row(unfinished):
    return {"prompt": build_messages(build_view("hdfs", MSGS, unfinished=unfinished)), "completion": []}


def test_rows_with_the_unfinished_note_make_an_unfinished_prompt_and_a_continuation_keeps_it(tmp_path):
    assert trained_prompt([row(False)]) == PROMPT_VERSION
    assert trained_prompt([row(False), row(True)]) == PROMPT_VERSION + "+unfinished"
    start = tmp_path / "start"
    start.mkdir()
    stamp(start, PROMPT_VERSION + "+unfinished")
    assert manifest_prompt(start) == PROMPT_VERSION + "+unfinished"
    assert trained_prompt([row(False)], start) == PROMPT_VERSION + "+unfinished"
    assert trained_prompt([row(False)], tmp_path / "no-such-adapter") == PROMPT_VERSION


def test_rows_whose_analysis_starts_with_the_walk_make_a_walk_prompt(tmp_path):
    from rationad.prompt import format_completion

    from training.rationales import hdfs_rationale

    view = build_view("hdfs", MSGS)
    walked = {**row(False), "task": "hdfs",
              "completion": [{"role": "assistant", "content": hdfs_rationale(view, "anomalous").completion}]}
    own_words = {**walked,
                 "completion": [{"role": "assistant", "content": format_completion("L1 x2 is odd.", "anomalous")}]}
    assert trained_prompt([row(False), own_words]) == PROMPT_VERSION
    assert trained_prompt([row(False), walked]) == PROMPT_VERSION + "+walk"
    assert trained_prompt([row(True), walked]) == PROMPT_VERSION + "+unfinished+walk"
    start = tmp_path / "start"
    start.mkdir()
    stamp(start, PROMPT_VERSION + "+walk")
    assert trained_prompt([row(False)], start) == PROMPT_VERSION + "+walk"  # a continuation keeps it


def test_only_the_start_the_daemon_writes_counts_as_trained():
    """The stamp compares each row's analysis with what ``rationad.facts`` writes for its prompt: an analysis in the
    walk's form with other rows or counts (as a change to the daemon's sentences would leave them) is not the walk
    the daemon serves, and a sentence in the rule's form that is not the template's rule is not its rule sentence."""
    from rationad.prompt import format_completion

    from training.rationales import hdfs_rationale, template_rationale

    view = build_view("hdfs", MSGS)
    walked = hdfs_rationale(view, "anomalous").completion
    assert walked.startswith("<think>L1 x2 unknown. Starts 0, received 0")
    other_counts = walked.replace("Starts 0, received 0", "Starts 2, received 0")
    assert trained_prompt([{**row(False), "task": "hdfs",
                            "completion": [{"role": "assistant", "content": other_counts}]}]) == PROMPT_VERSION
    tpl = build_view("bgl", ["RAS KERNEL FATAL data TLB error interrupt"], templated=True)
    ruled = template_rationale(tpl, "anomalous").completion
    assert ruled.startswith("<think>L1 contains 'FATAL'")
    other_rule = format_completion("L1 contains 'TLB': a memory page was mapped.", "normal")
    assert trained_prompt([{"prompt": build_messages(tpl), "task": "bgl",
                            "completion": [{"role": "assistant", "content": other_rule}]}]) == PROMPT_VERSION


def test_template_rows_that_start_with_their_rule_sentence_make_a_rule_prompt():
    from training.rationales import template_rationale

    view = build_view("bgl", ["RAS KERNEL FATAL data TLB error interrupt"], templated=True)
    ruled = {"prompt": build_messages(view), "task": "bgl",
             "completion": [{"role": "assistant", "content": template_rationale(view, "anomalous").completion}]}
    assert trained_prompt([ruled]) == PROMPT_VERSION + "+rule"
    assert trained_prompt([{**ruled, "task": "hdfs"}]) == PROMPT_VERSION


def test_stamp_keeps_the_manifests_other_entries(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"neighbours": {"file": "neighbours.json", "k": 3}}))
    stamp(tmp_path, PROMPT_VERSION)
    assert json.loads((tmp_path / "manifest.json").read_text()) == {
        "neighbours": {"file": "neighbours.json", "k": 3}, "prompt_version": PROMPT_VERSION}


def test_a_corrupt_manifest_is_an_error_naming_it(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="manifest.json"):
        manifest_prompt(tmp_path)
