"""Data builders: the visible label-correction step and clear errors on bad input."""

import json

import pytest

from training.data_templates import apply_patch, load_templates, read_patch, read_templates


def _csv(tmp_path, rows):
    p = tmp_path / "t.csv"
    p.write_text("EventTemplate,Label_LogPrompt,Label_RationAnomaly_rectified\n" + "".join(f"{r}\n" for r in rows))
    return p


def _patch(tmp_path, records):
    p = tmp_path / "patch.json"
    p.write_text(json.dumps([{"instruction": "", "input": t, "label": a, "rectified": b} for t, a, b in records]))
    return p


def test_patch_changes_labels_and_checks_the_column(tmp_path):
    csv = _csv(tmp_path, ["disk <*> failed,0,1", "all good,1,0", "routine <*>,0,0", "odd one,0,1"])
    patch = _patch(tmp_path, [("disk <*> failed", "normal", "abnormal"), ("all good", "abnormal", "normal"),
                              ("not in file", "normal", "abnormal")])
    labels, rep = apply_patch(read_templates(csv), read_patch(patch), str(csv))
    assert labels == ["anomalous", "normal", "normal", "normal"]
    assert (rep.changed, rep.to_anomalous, rep.to_normal, rep.matched) == (2, 1, 1, 2)
    assert rep.disagree_with_column == ["odd one"]  # the patch does not explain that column value
    assert "changed 2 labels" in rep.text()


def test_real_patch_reproduces_rectified_column(datasets):
    for name in ("bgl", "spirit"):
        ex, rep = load_templates(datasets / f"templates/{name}_templates_dev.csv",
                                 datasets / "rationanomaly/anomaly_patch.json", name)
        assert rep.changed > 0 and rep.disagree_with_column == []
        assert all(e.view.rows[0].template.count("<*>") == 0 for e in ex)  # Loghub wildcards became {*}


def test_bad_template_rows_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"t\.csv:3: labels must be 0 or 1"):
        read_templates(_csv(tmp_path, ["fine,0,0", "bad,2,0"]))
    with pytest.raises(ValueError, match=r"t\.csv:2: empty EventTemplate"):
        read_templates(_csv(tmp_path, [",0,0"]))


def test_unknown_hdfs_template_id_names_file_and_line(tmp_path):
    from training.data_hdfs import load_rendered

    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "a", "events": ["E5", "E22"], "label": "normal"}\n'
                 '{"id": "b", "events": ["E5", "E99"], "label": "anomalous"}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:2.*E99"):
        load_rendered(p)


def test_empty_hdfs_session_is_an_error(tmp_path):
    from training.data_hdfs import load_rendered

    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "a", "events": [], "label": "normal"}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:1"):
        load_rendered(p)


def test_hdfs_block_without_label_is_an_error(tmp_path):
    from training.data_hdfs import load_raw

    log = tmp_path / "h.log"
    log.write_text("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating\n"
                   "081109 203616 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_2 terminating\n")
    labels = tmp_path / "l.csv"
    labels.write_text("BlockId,Label\nblk_1,Normal\n")
    with pytest.raises(ValueError, match=r"l\.csv: no label for block blk_2"):
        load_raw(log, labels)


def test_sft_selection_takes_the_most_frequent_hdfs_views_first():
    from rationad.prompt import build_view
    from training.dataset import DataConfig, select_sft
    from training.example import Example

    def ex(sid: str, msgs: list[str], label: str) -> Example:
        return Example("hdfs", "hdfs", sid, build_view("hdfs", msgs), label, "test")

    rare = [ex("r", ["Receiving block blk_1", "Deleting block blk_1"], "normal")]
    common = [ex(f"c{i}", ["Receiving block blk_2", "Served block blk_2"], "normal") for i in range(5)]
    middle = [ex(f"m{i}", ["Receiving block blk_3"], "normal") for i in range(3)]
    bad = [ex("a", ["Exception in receiveBlock for block blk_4"], "anomalous")]
    cfg = DataConfig(hdfs_normal_views=2, hdfs_anomalous_views=5)
    picked = select_sft(rare + common + middle + bad, cfg)
    assert {e.sid for e in picked if e.label == "normal"} == {"c0", "m0"}
    assert [e.sid for e in picked if e.label == "anomalous"] == ["a"]


def test_bf16_only_where_the_cpu_computes_it(monkeypatch):
    import torch

    from rationad.model import dtype
    from training import config

    assert config.bf16_usable(False) is False
    if torch.cuda.is_available():
        pytest.skip("GPU: bf16 follows the config")
    monkeypatch.setattr(dtype, "cpu_has_native_bf16", lambda: False)
    assert config.bf16_usable(True) is False
    monkeypatch.setattr(dtype, "cpu_has_native_bf16", lambda: True)
    assert config.bf16_usable(True) is True


def test_every_failure_kind_gets_its_minimum_before_the_most_frequent_fill_the_cap():
    from rationad.prompt import build_view
    from training.dataset import DataConfig, cover_kinds, failure_kinds, select_sft
    from training.example import Example
    from training.rationales import failure_kind

    def ex(sid: str, msgs: list[str]) -> Example:
        return Example("hdfs", "hdfs", sid, build_view("hdfs", msgs), "anomalous", "test")

    recv = "Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"
    # frequent: five views of a lost replica (each view a different count of receive starts), twice each
    gone = "WARN dfs.FSDataset: Unexpected error trying to delete block blk_1. BlockInfo not found in volumeMap."
    lost = [ex(f"d{n}{i}", [recv] * (n + 1) + [gone]) for n in range(5) for i in range(2)]
    empty = [ex("e", [recv, "INFO dfs.DataNode$DataXceiver: Receiving empty packet for block blk_1"])]
    never = [ex("n", [recv, recv])]  # a write that never completed: no error row
    assert [failure_kind(e.view) for e in (lost[0], empty[0], never[0])] == [
        "delete of an unknown block", "empty packet received", "lifecycle"]
    examples = lost + empty + never
    by_frequency = select_sft(examples, DataConfig(hdfs_anomalous_views=3))
    assert {failure_kind(e.view) for e in by_frequency} == {"delete of an unknown block"}
    covered = select_sft(examples, DataConfig(hdfs_anomalous_views=3, hdfs_min_per_failure=1))
    assert failure_kinds(covered) == {"delete of an unknown block": 1, "empty packet received": 1, "lifecycle": 1}
    # the minima first, then the best ranked of the rest, in rank order; minima beyond the cap keep the best ranked
    ranked = list("aabbbc")
    assert cover_kinds(ranked, 4, 1, str) == list("aabc")
    assert cover_kinds(ranked, 2, 1, str) == list("ab")
    assert cover_kinds(ranked, 10, 1, str) == ranked


def test_trouble_first_takes_the_normal_templates_a_trouble_rule_matches_before_the_rest():
    from rationad.prompt import build_view
    from training.dataset import DataConfig, select_sft
    from training.example import Example

    def ex(sid: str, text: str, label: str = "normal") -> Example:
        return Example("bgl", "bgl", sid, build_view("bgl", [text], templated=True), label, "test")

    routine = [ex(f"r{i}", f"generating core.{i}") for i in range(4)]
    trouble = [ex("t", "caught java.lang.IllegalStateException while reading a fan module")]
    bad = [ex("a", "data TLB error interrupt", "anomalous")]
    examples = routine + trouble + bad

    def normals(cfg: DataConfig) -> set[str]:
        return {e.sid for e in select_sft(examples, cfg) if e.label == "normal"}

    by_hash = normals(DataConfig(template_normal=2))
    assert "t" not in by_hash  # the hash order alone leaves it out (the case the option is for)
    first = normals(DataConfig(template_normal=2, template_trouble_first=True))
    assert "t" in first and len(first) == 2
    assert [e.sid for e in select_sft(examples, DataConfig(template_normal=2, template_trouble_first=True))
            if e.label == "anomalous"] == ["a", "a"]
