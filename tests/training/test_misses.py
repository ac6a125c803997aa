"""The failure-kind table: views per kind and split, and what a model flags of each kind."""

from rationad.prompt import build_view
from training.example import Example
from training.misses import kind_table

RECV = "Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010"
EMPTY = "INFO dfs.DataNode$DataXceiver: Receiving empty packet for block blk_1"


def ex(sid: str, msgs: list[str], label: str = "anomalous") -> Example:
    return Example("hdfs", "hdfs", sid, build_view("hdfs", msgs), label, "test")


def test_kinds_are_counted_per_split_and_flagged_at_the_threshold():
    splits = {"train": [ex("t1", [RECV, EMPTY]), ex("t2", [RECV, EMPTY]), ex("t3", [RECV, RECV])],
              "val": [ex("v1", [RECV, EMPTY]), ex("v2", [RECV, RECV, EMPTY]), ex("v3", [RECV, RECV]),
                      ex("v4", [RECV], "normal")],
              "test": []}
    rows = kind_table(splits, {"v1": 0.9, "v2": 0.0001, "v3": 0.5, "v4": 0.9}, 0.001)
    assert rows[0].endswith("| val views flagged at 0.001 |")
    assert "| empty packet received | 1 (2) | 2 (2) | 0 (0) | 1 of 2 |" in rows
    assert "| lifecycle | 1 (1) | 1 (1) | 0 (0) | 1 of 1 |" in rows
    assert len(rows) == 4  # normal views are not a failure kind
    assert kind_table(splits, None, 0.5)[2] == "| empty packet received | 1 (2) | 2 (2) | 0 (0) |"


def test_a_score_under_any_session_of_a_view_counts_for_that_view():
    # v1 and v2 are one view; the evaluation scored it under v2's id, not the representative's
    splits = {"train": [], "val": [ex("v1", [RECV, EMPTY]), ex("v2", [RECV, EMPTY])], "test": []}
    assert kind_table(splits, {"v2": 0.9}, 0.5)[2] == "| empty packet received | 0 (0) | 1 (2) | 0 (0) | 1 of 1 |"
