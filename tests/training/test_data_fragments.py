"""Tails and heads of a block's lifecycle as training rows (training.data_fragments), on real rendered HDFS
sessions."""

import pytest

from rationad.prompt import UNFINISHED_NOTE, user_message
from training.data_fragments import CUTS, HEAD_MIN, head_examples, overlap, tail_examples
from training.faithfulness import problems
from training.rationales import build, hdfs_rationale, hdfs_signals


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
    no_starts = [t for t in tails if "Receiving" not in " ".join(r.template for r in t.view.rows)]
    assert no_starts and all("Starts 0, received" in hdfs_rationale(t.view, t.label).think for t in no_starts)


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


def test_heads_are_unfinished_writes_labelled_by_their_own_lines(kept):
    heads = head_examples(kept, max_views=20)
    assert heads and len({h.view_key for h in heads}) == len(heads)
    by_sid = {ex.sid: ex.extra["session"] for ex in kept}
    in_progress = 0
    for h in heads:
        sid, end = h.sid.split("#to")
        s, end = by_sid[sid], int(end)
        assert end in {HEAD_MIN, *(max(HEAD_MIN, int(len(s.lines) * c)) for c in CUTS)}
        assert h.view.unfinished and f"\n{UNFINISHED_NOTE}\n" in user_message(h.view)
        r = build(h)
        assert r.explained and r.verdict == h.label and problems(r.think, h.view) == []  # what faithfulness checks
        has_error = "ERROR " in r.think.split(". ")[0]
        assert h.label == ("anomalous" if has_error else "normal")  # starts without completions: in progress
        in_progress += "a write still in progress" in r.think
    assert in_progress and {h.extra["fragment"] for h in heads} == {"head"}
    assert any(h.label == "normal" and by_sid[h.sid.split("#to")[0]].label == "anomalous" for h in heads)


def test_an_unfinished_head_is_a_write_in_progress_and_a_finished_one_a_failure():
    from rationad.prompt import build_view

    lines = ["INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/a. blk_1",
             "INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"]
    finished = hdfs_rationale(build_view("hdfs", lines), "anomalous")
    unfinished = hdfs_rationale(build_view("hdfs", lines, unfinished=True), "normal")
    assert finished.explained
    assert "1 receive starts but 0 completions: a replica was never fully received" in finished.think
    assert unfinished.explained and unfinished.kb_verdict == "normal"
    assert "1 receive starts but 0 completions so far: the session is unfinished" in unfinished.think
    assert "Every replica completed" not in unfinished.think
    # the state is the knowledge base's, not read back from a sentence
    assert hdfs_signals(build_view("hdfs", lines, unfinished=True)).in_progress
    assert not hdfs_signals(build_view("hdfs", lines)).in_progress
    done = lines + ["INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1",
                    "INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_1 terminating",
                    "INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.0.0.2:50010 is "
                    "added to blk_1 size 67108864"]
    assert not hdfs_signals(build_view("hdfs", done, unfinished=True)).in_progress
    # every replica received and acknowledged, one of two not yet registered: the note counts registrations, it does
    # not call them completions (3 received, 2 "completions" was written for 8 of 0.3.1's training rows)
    two = [lines[0]] + [lines[1]] * 2 + done[2:4] * 2 + [done[4]]
    note = hdfs_signals(build_view("hdfs", two, unfinished=True)).benign[0]
    assert "2 receive starts but 1 replicas registered by the NameNode so far: the session is unfinished" in note, note
