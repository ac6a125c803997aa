"""Tails of a block's lifecycle as training rows (training.data_fragments), on real rendered HDFS sessions."""

import pytest

from training.data_fragments import CUTS, overlap, tail_examples
from training.rationales import build, hdfs_rationale


@pytest.fixture(scope="module")
def kept(datasets):
    from training.data_hdfs import load_rendered

    return load_rendered(datasets / "hdfs_sessions/hdfs_sessions.jsonl", limit=400, keep_sessions=True)


def test_tails_are_the_lines_after_each_cut_and_explained_under_their_label(kept):
    tails = tail_examples(kept, max_views=20)
    assert tails and len({t.view_key for t in tails}) == len(tails)
    by_sid = {ex.sid: ex.extra["session"] for ex in kept}
    for t in tails:
        sid, start = t.sid.split("#from")
        s, start = by_sid[sid], int(start)
        assert start in {int(len(s.lines) * c) for c in CUTS} and t.extra["lines"] == len(s.lines) - start
        assert t.view.line_count == len(s.lines) - start
        r = hdfs_rationale(t.view, t.label)
        assert r.explained and r.verdict == t.label
        build(t)  # the rationale contract (format, grounded refs) holds
    assert {t.label for t in tails} == {"normal", "anomalous"}
    assert "Starts" not in " ".join(hdfs_rationale(t.view, t.label).think for t in tails
                                    if t.view.rows and "Receiving" not in " ".join(r.template for r in t.view.rows))


def test_tails_of_the_most_common_views_first(kept):
    few = tail_examples(kept, max_views=1)
    assert 1 <= len(few) <= len(CUTS)
    assert {t.view_key for t in few} <= {t.view_key for t in tail_examples(kept, max_views=20)}


def test_without_sessions_is_an_error_naming_the_example(hdfs_examples):
    with pytest.raises(ValueError, match="needs the sessions"):
        tail_examples(hdfs_examples, max_views=5)


def test_overlap_counts_evaluation_fragments_seen_in_training(kept):
    from rationad.records import Session

    tails = tail_examples(kept, max_views=20)
    whole = [ex.extra["session"] for ex in kept[:5]]  # whole lifecycles are not tails
    assert overlap(tails, whole) == 0
    first = tails[0]
    sid, start = first.sid.split("#from")
    src = next(ex.extra["session"] for ex in kept if ex.sid == sid)
    same = Session(key=src.key, lines=src.lines[int(start):], close_reason="gap")
    assert overlap(tails, [same]) == 1 and overlap([], [same]) == 0
