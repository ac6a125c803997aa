"""The labelled-neighbour index of a template model: built from training templates only, never a template's own
label, rationales that say what the neighbours say, and the index travelling with the adapter to the release."""

import json
from copy import deepcopy

import pytest

from rationad.answer import parse_completion
from rationad.faithful import TRAINING_ONLY, problems
from rationad.neighbours import INDEX_FILE, NeighbourIndex, NeighbourIndexError, for_model
from training.neighbour_index import attach, build_index, reason, ship
from training.rationales import build
from training.splits import split_examples


@pytest.fixture(scope="module")
def splits(template_examples):
    return split_examples(deepcopy(template_examples))


def test_reason_says_why_in_operator_words():
    assert reason("machine check interrupt", "anomalous") != ""
    assert reason("alpha beta gamma", "normal") == "a routine status message"
    assert reason("alpha beta gamma", "anomalous") == "came with failures on its system"


def test_index_holds_training_templates_only_and_training_never_sees_itself(splits):
    index = build_index(splits["train"])
    train_templates = {e.view.rows[0].template for e in splits["train"]}  # as served: {*} masks
    assert len(index) == len(train_templates) and {e.template for e in index.entries} == train_templates
    attach(splits, index, 3)
    for ex in splits["train"]:
        assert ex.view.rows[0].template not in [n.template for n in ex.view.neighbours]
    test = splits["test"]
    assert all(len(ex.view.neighbours) == 3 for ex in test if len(index.nearest(ex.view.rows[0].template, 3)) == 3)
    assert not any(ex.view.rows[0].template in train_templates for ex in test)  # nothing of the test split leaks in


def test_rationales_say_what_the_neighbours_say_and_stay_grounded(splits):
    index = build_index(splits["train"])
    attach(splits, index, 3)
    checked = 0
    for ex in splits["train"][:300]:
        r = build(ex)
        parsed = parse_completion(r.completion, ex.view)
        assert parsed.ok and parsed.verdict == ex.label and not parsed.ungrounded_refs
        assert not TRAINING_ONLY.search(r.think) and problems(r.think, ex.view) == []  # every claim checks out
        if ex.view.neighbours:
            checked += 1
            listed = ", ".join(f"{n.ref} {n.label}" for n in ex.view.neighbours)
            assert f"Similar known templates: {listed}." in r.think
    assert checked > 100


def test_ship_names_the_index_in_the_adapter_manifest(tmp_path, splits):
    index = build_index(splits["train"])
    data = tmp_path / "data"
    data.mkdir()
    index.save(data / INDEX_FILE)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"name": "kept"}))
    spec = ship(data / INDEX_FILE, 3, adapter)
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["name"] == "kept" and manifest["neighbours"] == spec and spec["k"] == 3
    loaded = for_model([adapter])
    assert loaded.k == 3 and len(loaded.index) == len(index)
    with pytest.raises(NeighbourIndexError, match="missing"):
        ship(tmp_path / "nowhere.json", 3, adapter)


def test_a_run_without_neighbours_removes_an_earlier_run_s_index_from_its_adapter(tmp_path, splits):
    """Found by review, failing before its fix: retraining with data.neighbours = 0 into the folder an earlier run
    shipped an index to kept its file and manifest entry, so evaluation, the gate, the daemon and export served
    neighbour prompts the adapter was never trained on."""
    from rationad.prompt import build_messages, build_view

    from training.config import load
    from training.pipeline import ship_neighbours

    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    build_index(splits["train"]).save(data / INDEX_FILE)
    # the rows of the run trained without neighbours (the shipped k is the one they show)
    row = {"prompt": build_messages(build_view("bgl", ["node 1 link ok"], templated=True)), "completion": []}
    (data / "sft_train.jsonl").write_text(json.dumps(row) + "\n")
    adapter = tmp_path / "out" / "sft" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "manifest.json").write_text(json.dumps({"prompt_version": "rationad-prompt-v1+walk"}))
    ship(data / INDEX_FILE, 3, adapter)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text("[data]\nneighbours = 0\n")
    ship_neighbours(load(cfg_path), cfg_path, tmp_path / "out", adapter)
    assert for_model([adapter]) is None and not (adapter / INDEX_FILE).exists()
    assert json.loads((adapter / "manifest.json").read_text()) == {"prompt_version": "rationad-prompt-v1+walk"}


def test_export_and_merge_carry_the_index(tmp_path, splits):
    import torch
    from safetensors.torch import save_file

    from training.export import export
    from training.merge_adapter import merged_key

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"w": torch.ones(2, 3)}, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    base = tmp_path / "base"
    base.mkdir()
    plain_key = merged_key(base, adapter)
    NeighbourIndex([]).save(tmp_path / INDEX_FILE)
    ship(tmp_path / INDEX_FILE, 3, adapter)
    assert merged_key(base, adapter) != plain_key  # a merged model is rebuilt when its index changes
    dest = export(adapter, tmp_path / "release", {"name": "n", "prompt_version": "rationad-prompt-v1"})
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["neighbours"]["k"] == 3 and manifest["prompt_version"] == "rationad-prompt-v1+neighbours"
    assert for_model([dest]).k == 3
    (adapter / "manifest.json").unlink()  # the next release trained without neighbours leaves no stale index
    export(adapter, dest, {"name": "n", "prompt_version": "rationad-prompt-v1"})
    assert not (dest / INDEX_FILE).exists() and for_model([dest]) is None
