"""Training windows of the other Loghub systems in LogLM's parsing data (training.data_other)."""

import json

import pytest

from rationad.prompt import user_message

from training.data_bgl import PROXIFIER, TROUBLE, unseen_system_lines
from training.data_other import WINDOW, other_system_examples, system_lines
from training.rationales import build, generic_rationale


@pytest.fixture(scope="module")
def loglm(datasets):
    return datasets / "loglm/Instruction_Dataset_of_LogLM.json"


@pytest.fixture(scope="module")
def examples(loglm):
    return other_system_examples(loglm)


def test_blocks_are_the_other_systems_and_never_the_held_out_one(loglm):
    blocks = system_lines(loglm)
    assert sorted(blocks) == ["hadoop", "hpc", "linux", "zookeeper"]
    assert all(len(b) == 200 for b in blocks.values())
    held_out = set(unseen_system_lines(loglm))
    assert held_out and not held_out & {ln for b in blocks.values() for ln in b}
    assert any("MRAppMaster" in ln for ln in blocks["hadoop"])
    assert any("authentication failure" in ln for ln in blocks["linux"])


def test_windows_are_labelled_by_what_their_lines_report(examples):
    normal = [e for e in examples if e.label == "normal"]
    anomalous = [e for e in examples if e.label == "anomalous"]
    assert len(normal) > 50 and len(anomalous) > 20
    for e in examples:
        assert e.task == e.source == e.view.source == "generic" and e.view.line_count == WINDOW
        troubled = [r for r in e.view.rows if TROUBLE.search(r.template)]
        if e.label == "normal":
            assert not troubled and "trouble_ref" not in e.extra
        else:
            assert [r.ref for r in troubled] == [e.extra["trouble_ref"]]
        assert not PROXIFIER.search(user_message(e.view))
    assert not any(e.sid.startswith("hadoop") for e in anomalous)  # its one match is a setting, not trouble


def test_generic_rationales_cite_the_trouble_line_or_the_whole_window(examples):
    for e in examples:
        r = build(e)
        assert r.verdict == e.label and r.explained
        if e.label == "anomalous":
            assert r.think.startswith(e.extra["trouble_ref"] + " reports '")
        else:
            assert r.think.startswith(f"L1 to {e.view.rows[-1].ref} are routine")
    with pytest.raises(ValueError, match="labelled anomalous"):
        generic_rationale(examples[0].view, "anomalous", None)


def test_wrong_layout_names_the_file(tmp_path):
    bad = tmp_path / "loglm.json"
    bad.write_text(json.dumps([{"instruction": "Convert the following logs into templates", "input": "x"}]))
    with pytest.raises(ValueError, match="loglm.json: expected 1400"):
        system_lines(bad)


def test_templates_are_the_daemons_template_prompt_for_a_system_without_a_dialect(loglm):
    from types import SimpleNamespace

    from rationad.judge import Judge
    from rationad.model.base import ModelConfig
    from rationad.prompt import approx_tokens
    from rationad.template_book import template_of, template_session
    from training.data_other import TEMPLATES_PER_SYSTEM, other_system_templates

    rows = other_system_templates(loglm)
    blocks = system_lines(loglm)
    assert len(rows) == sum(min(TEMPLATES_PER_SYSTEM, len({template_of(ln) for ln in b})) for b in blocks.values())
    assert len({e.view_key for e in rows}) == len(rows)
    client = SimpleNamespace(name="none", count_tokens=approx_tokens)  # only the judge's view: no model is called
    judge = Judge(client, ModelConfig(), "generic", say_unfinished=False)
    for e in rows:
        tpl = e.extra["template"]
        assert e.task == "generic_template" and e.view.source == "generic" and len(e.view.rows) == 1
        assert user_message(e.view) == user_message(judge.view(template_session(tpl)))  # what is served
        real = not e.sid.startswith("hadoop")
        assert e.label == ("anomalous" if real and TROUBLE.search(tpl) else "normal")
        r = build(e)
        assert r.verdict == e.label and "the expert label" not in r.think
    assert 0 < sum(e.label == "anomalous" for e in rows) < len(rows) // 4


def test_the_start_a_rewrite_is_given_is_how_the_trained_windows_start(examples):
    """``rationad.faithful.window_start`` gives a rewrite of a window the first sentence its trained rationales
    start with for that verdict: where it gives one for a training window's label, that window's rationale starts
    with it; a window with a line reporting trouble is never said to be routine. Nearly every anomalous window gets
    one; a normal window only when no line has any failure word (22 of 67: "Interrupted while waiting", "not" ...)."""
    from rationad.faithful import window_start

    given = {"normal": 0, "anomalous": 0}
    for e in examples:
        start = window_start(e.view, e.label)
        assert start is None or build(e).completion.startswith(start), (start, build(e).completion)
        given[e.label] += start is not None
        assert e.label == "normal" or window_start(e.view, "normal") is None
    anomalous = sum(e.label == "anomalous" for e in examples)
    assert given["anomalous"] >= 0.9 * anomalous and given["normal"] >= 10, (given, anomalous)


def test_bgl_windows_carry_the_experts_corrected_labels(datasets):
    """Found by review (2026-12-07): the BGL_2k windows set kept Loghub's alert column while training corrects the
    same templates with the experts' patch (the datasets' README: before training or evaluating), so 4 windows
    labelled normal held templates the model was taught are anomalous, scored as its false positives."""
    from training.data_bgl import bgl_windows, corrected_line_labels

    log = datasets / "loghub/BGL_2k.log"
    labels = corrected_line_labels(datasets / "loghub/BGL_2k.log_structured.csv",
                                   datasets / "rationanomaly/anomaly_patch.json")
    assert len(labels) == 2000
    loghub = bgl_windows(log)
    corrected = bgl_windows(log, labels=labels)
    assert [s.key for s in loghub] == [s.key for s in corrected] and len(corrected) == 20
    assert sum(s.label == "anomalous" for s in loghub) == 12
    assert sum(s.label == "anomalous" for s in corrected) == 16
    assert all(b.label == "anomalous" for a, b in zip(loghub, corrected) if a.label == "anomalous")


def test_the_bgl_dialect_gives_the_model_loghub_s_content(datasets):
    """Found by review (2026-12-07): the bgl dialect kept BGL's TYPE COMPONENT LEVEL fields (``RAS KERNEL INFO``) in
    the message, while the model's template training and the experts' corrections are written over Loghub's content:
    no BGL template prompt the daemon served was one the model had been trained on. Every BGL_2k message is the
    content now, so a line whose Loghub template is a training template is served that template's prompt."""
    import csv

    from rationad.dialects import bgl_fields
    from rationad.prompt import build_view, user_message
    from rationad.template_book import template_of, template_session
    from training.data_templates import from_loghub

    lines = (datasets / "loghub/BGL_2k.log").read_text(encoding="utf-8").splitlines()
    with (datasets / "loghub/BGL_2k.log_structured.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [bgl_fields(ln)[2] for ln in lines] == [r["Content"] for r in rows]

    def served(message):
        return user_message(build_view("bgl", [ln.message for ln in template_session(template_of(message)).lines],
                                       templated=True))

    row = next(r for r in rows if r["EventTemplate"] == "instruction cache parity error corrected")
    trained = user_message(build_view("bgl", [from_loghub(row["EventTemplate"])], templated=True))
    assert served(bgl_fields(lines[rows.index(row)])[2]) == trained
