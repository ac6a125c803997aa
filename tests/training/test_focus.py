"""Continuation rows (training.focus): new kinds whole, a fixed replay sample of the rest."""

import pytest

from training.focus import focus_rows, kind


def _rows():
    rows = []
    for i in range(30):
        label = "normal" if i % 3 else "anomalous"
        rows.append({"task": "hdfs", "label": label, "session": f"h{i}", "injected": i < 4})
        rows.append({"task": "bgl", "label": "normal", "session": f"b{i}"})
    rows += [{"task": "generic", "label": "normal", "session": f"g{i}"} for i in range(5)]
    return rows


def test_new_kinds_whole_and_replay_per_task_and_label():
    rows = _rows()
    out = focus_rows(rows, {"generic", "injected"}, replay=3)
    kinds = [(kind(r), r["label"]) for r in out]
    assert kinds.count(("generic", "normal")) == 5
    assert sum(k == "injected" for k, _ in kinds) == 4
    assert kinds.count(("hdfs", "normal")) == kinds.count(("hdfs", "anomalous")) == kinds.count(("bgl", "normal")) == 3
    assert focus_rows(list(reversed(rows)), {"generic", "injected"}, replay=3) == out  # order-independent


def test_unknown_kind_is_an_error_naming_the_kinds():
    with pytest.raises(ValueError, match=r"no rows of kind \['spirit'\]"):
        focus_rows(_rows(), {"spirit"}, replay=1)


def test_fragment_rows_are_a_kind_of_their_own():
    rows = _rows() + [{"task": "hdfs", "label": "normal", "session": f"t{i}", "fragment": "tail"} for i in range(4)]
    out = focus_rows(rows, {"fragment"}, replay=2)
    assert sum(kind(r) == "fragment" for r in out) == 4
    assert sum(kind(r) == "hdfs" for r in out) == 4  # 2 of each hdfs label, no fragment among them
    assert kind({"task": "hdfs", "fragment": ""}) == "hdfs"


def test_balance_keeps_as_many_of_each_label_of_a_new_kind_as_its_rarer_one():
    rows = _rows() + [{"task": "hdfs", "label": "anomalous" if i < 7 else "normal", "session": f"t{i}",
                       "fragment": "tail"} for i in range(10)]
    out = focus_rows(rows, {"fragment", "generic"}, replay=2, balance=True)
    kinds = [(kind(r), r["label"]) for r in out]
    assert kinds.count(("fragment", "anomalous")) == kinds.count(("fragment", "normal")) == 3
    assert kinds.count(("generic", "normal")) == 5  # one label only: kept whole
    assert sum(kind(r) == "fragment" for r in focus_rows(rows, {"fragment"}, replay=2)) == 10  # off: every row
