"""Splits are deterministic, disjoint, and the unseen subset really is unseen."""

from training.splits import split_examples, unit


def test_unit_is_deterministic_and_spread():
    assert unit("a") == unit("a") != unit("b")
    vals = [unit(str(i)) for i in range(2000)]
    assert 0.45 < sum(v < 0.5 for v in vals) / 2000 < 0.55


def test_splits_deterministic_disjoint_and_unseen(hdfs_examples, template_examples):
    examples = hdfs_examples + template_examples
    a = split_examples(examples)
    b = split_examples(list(reversed(examples)))
    ids = {s: {(e.origin, e.sid) for e in a[s]} for s in a}
    assert ids == {s: {(e.origin, e.sid) for e in b[s]} for s in b}  # independent of input order
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(len(v) for v in ids.values()) == len(examples)
    train_views = {e.view_key for e in a["train"]}
    unseen = [e for e in a["test"] if e.extra["unseen"]]
    assert unseen and all(e.view_key not in train_views for e in unseen)
    assert all(e.view_key in train_views for e in a["test"] if not e.extra["unseen"])
    # templates: identical template text never crosses splits
    tpl = {s: {e.view_key for e in a[s] if e.task != "hdfs"} for s in a}
    assert not tpl["train"] & tpl["test"] and not tpl["train"] & tpl["val"]


def test_hdfs_split_does_not_depend_on_how_the_datasets_path_is_spelt(datasets, tmp_path, monkeypatch):
    """The split key holds the examples' origin: the absolute path and the config's ``../shared/datasets`` split
    alike (the released models' keys), or an evaluation run from another spelling scores trained sessions; and a
    caller reading the file itself (a benchmark choosing test-split blocks) gets the same origin."""
    import os

    from training.data_hdfs import SPLIT_ROOT
    from training.dataset import DataConfig, load_corpus

    (tmp_path / "repo").mkdir()
    (tmp_path / "shared").symlink_to(datasets.parent)
    monkeypatch.chdir(tmp_path / "repo")  # ../shared/datasets is the shared datasets here, as beside a checkout
    corpora = [load_corpus(DataConfig(datasets=d, hdfs_rendered_limit=300, use_hdfs_raw=False))
               for d in (datasets, type(datasets)(os.path.relpath(datasets)), type(datasets)(SPLIT_ROOT))]
    assert corpora[0].hash() == corpora[1].hash() == corpora[2].hash()
    assert {e.origin for e in corpora[0].splits["train"] if e.task == "hdfs"} == {
        f"{SPLIT_ROOT}/hdfs_sessions/hdfs_sessions.jsonl"}
    from training.data_hdfs import load_rendered

    alone = load_rendered(datasets / "hdfs_sessions/hdfs_sessions.jsonl", limit=300)
    assert {e.origin for e in alone} == {f"{SPLIT_ROOT}/hdfs_sessions/hdfs_sessions.jsonl"}
