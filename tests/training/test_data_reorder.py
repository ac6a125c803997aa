"""Adjacent-swap variants of common HDFS views as training rows (training.data_reorder), on real rendered sessions."""

from collections import Counter

import pytest

from rationad.templates import to_template
from training.data_reorder import reordered_examples, template_order
from training.knowledge import match_hdfs
from training.faithfulness import problems
from training.rationales import build, hdfs_rationale


@pytest.fixture(scope="module")
def kept(datasets):
    from training.data_hdfs import load_rendered

    return load_rendered(datasets / "hdfs_sessions/hdfs_sessions.jsonl", limit=400, keep_sessions=True)


def test_a_variant_is_its_blocks_lines_with_two_neighbouring_templates_swapped(kept):
    made = reordered_examples(kept, max_views=10, per_view=2, held_out=set())
    assert made and len({ex.view_key for ex in made}) == len(made)
    assert not {ex.view_key for ex in made} & {ex.view_key for ex in kept}  # each a view training had not
    by_sid = {ex.sid: ex.extra["session"] for ex in kept}
    for ex in made:
        sid, i = ex.sid.split("#swap")
        s, i = by_sid[sid], int(i)
        before = list(dict.fromkeys(to_template(line.message) for line in s.lines))
        after = [r.template for r in ex.view.rows]
        assert after == before[:i] + [before[i + 1], before[i]] + before[i + 2:]
        roles = {(match_hdfs(t).role if match_hdfs(t) else None) for t in before[i:i + 2]}
        assert not roles & {"write_start", "allocate"}  # the start of a write stays where it was
        assert ex.view.line_count == len(s.lines)
        assert Counter(r.template for r in ex.view.rows for _ in range(r.count)) == Counter(
            to_template(line.message) for line in s.lines)  # the same lines, none lost or added
        r = hdfs_rationale(ex.view, ex.label)
        assert r.explained and r.verdict == ex.label
        assert problems(build(ex).think, ex.view) == []  # its training rationale walks the new order faithfully
    assert Counter(ex.sid.split("#swap")[0] for ex in made).most_common(1)[0][1] <= 2


def test_a_held_out_template_order_is_never_made(kept):
    made = reordered_examples(kept, max_views=10, per_view=2, held_out=set())
    held = {template_order(made[0].view)}
    again = reordered_examples(kept, max_views=10, per_view=2, held_out=held)
    assert again and held.isdisjoint(template_order(ex.view) for ex in again)
    assert made[0].view_key not in {ex.view_key for ex in again}


def test_no_variant_per_view_is_an_error_naming_the_key(kept):
    with pytest.raises(ValueError, match="hdfs_reorder_each"):
        reordered_examples(kept, max_views=5, per_view=0, held_out=set())


def test_without_sessions_is_an_error_naming_the_example(hdfs_examples):
    with pytest.raises(ValueError, match="needs the sessions"):
        reordered_examples(hdfs_examples, max_views=5, per_view=1, held_out=set())


def test_the_pipeline_holds_out_the_orders_of_validation_and_test_views(tmp_path, monkeypatch, datasets):
    """The wiring: stage_data passes every val and test view's template order, and only those, as ``held_out``."""
    import training.data_reorder as reorder
    import training.dataset as dataset
    from training import pipeline

    seen = {}
    load = dataset.load_corpus

    def keep_corpus(*a, **kw):
        seen["corpus"] = load(*a, **kw)
        return seen["corpus"]

    def spy(examples, max_views, per_view, held_out, **kw):
        seen["held_out"] = held_out
        return []

    monkeypatch.setattr(dataset, "load_corpus", keep_corpus)
    monkeypatch.setattr(reorder, "reordered_examples", spy)
    cfg = {"data": {"datasets": str(datasets), "hdfs_reordered": 3, "other_systems": False}}
    pipeline.stage_data(cfg, tmp_path / "cfg.toml", tmp_path, tmp_path, smoke=True)  # no tokenizer: estimated counts
    splits = seen["corpus"].splits
    assert seen["held_out"] == {template_order(ex.view) for s in ("val", "test") for ex in splits[s]}
    assert seen["held_out"] - {template_order(ex.view) for ex in splits["val"]}  # test orders too, not val alone
