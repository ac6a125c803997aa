"""Faithfulness (issue 16, item 5): every rationale the training data writes passes the checks, and the served kinds
of wrong statement (a walk role, a tally, a pair count, and the session-level checks) are each caught."""

from rationad.prompt import build_view
from training.faithfulness import faithful, problems
from training.rationales import build, hdfs_rationale

STARTS = ["INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"] * 3
MSGS = STARTS + ["INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/a. blk_1",
                 "INFO dfs.DataNode$PacketResponder: Received block blk_1 of size 67108864 from /10.0.0.1"]


def test_every_training_rationale_is_faithful(hdfs_examples, template_examples):
    for ex in list(hdfs_examples) + list(template_examples):
        r = build(ex)
        assert problems(r.think, ex.view) == [], (ex.view, r.think)


def test_wrong_statements_about_an_hdfs_session_are_caught():
    view = build_view("hdfs", MSGS)
    right = hdfs_rationale(view, "anomalous").think
    assert faithful(right, view) and "Starts 3, received 1" in right and "3 receive starts but 1 completions" in right
    kinds = lambda text: sorted({p.split(":")[0] for p in problems(text, view)})  # noqa: E731
    assert kinds(right.replace("Starts 3, received 1", "Starts 5, received 3")) == ["tally"]
    assert kinds(right.replace("3 receive starts but 1", "3 receive starts but 2")) == ["pair"]
    assert kinds(right.replace("L1 x3 receive start", "L1 x3 received")) == ["role"]
    assert kinds(right.replace("L1 x3", "L1 x5")) == ["count"]
    assert kinds(right.replace("L2 x1 allocated", "L2 x1 ERROR exception in receiveBlock")) == ["role"]
    assert kinds("L1 contains 'RECEPTED'. " + right) == ["quote"]


def test_the_short_tally_of_earlier_models_is_checked_by_its_number():
    # Models released before one tally form write "Error lines N." where a session has no receive start: true when N
    # is the session's error rows, whatever the lifecycle.
    view = build_view("hdfs", MSGS)
    kinds = lambda text: sorted({p.split(":")[0] for p in problems(text, view)})  # noqa: E731
    assert kinds("L1 x3 receive start, L2 x1 allocated, L3 x1 received. Error lines 0.") == []
    assert kinds("L1 x3 receive start, L2 x1 allocated, L3 x1 received. Error lines 2.") == ["tally"]
