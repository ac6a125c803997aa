"""The template catalog without a broker: the record format, aggregation over replicas, the listing merged with
operator labels and its table. The real broker is in tests/integration/test_labels.py."""

from __future__ import annotations

import orjson
import pytest

from rationad.catalog import TemplateStat, aggregate, decode_stat, encode_stat, format_table, listing, select
from rationad.labels import Label
from rationad.templates import template_id

T1 = "generating core.{*}"
T2 = "instruction cache parity error corrected"


def stat(template=T1, instance="r0", **kw) -> TemplateStat:
    return TemplateStat(**({"template": template, "verdict": "normal", "source": "model", "rationale": "routine",
                            "model_version": "m@1", "count": 10, "first_seen": 100.0, "last_seen": 200.0,
                            "instance": instance} | kw))


def test_a_stat_round_trips_keyed_by_template_and_instance():
    s = stat(instance="pod-7", verdict=None, source="pending")
    key, value = encode_stat(s)
    assert key == f"{template_id(T1)}/pod-7".encode() and s.id == template_id(T1)
    assert decode_stat(key, value) == s
    assert decode_stat(key, None) is None


@pytest.mark.parametrize("key, value, why", [
    (None, b"{}", "no key"),
    (b"t-000000000000", b"{}", "not <template id>/<instance>"),
    (b"nope/r0", b"{}", "not a template id"),
    (f"{template_id(T1)}/r0".encode(), b"{", "not JSON"),
    (f"{template_id(T1)}/r1".encode(), encode_stat(stat())[1], "is not the one of the stat"),
    (f"{template_id(T1)}/r0".encode(), encode_stat(stat(count=-1))[1], "count"),
    (f"{template_id(T1)}/r0".encode(), encode_stat(stat(verdict="odd"))[1], "unknown verdict"),
    (f"{template_id(T1)}/r0".encode(), encode_stat(stat(source="oracle"))[1], "unknown source"),
    (f"{template_id(T1)}/r0".encode(), orjson.dumps({"template": T1}), "must be strings"),
])
def test_garbage_is_a_value_error(key, value, why):
    with pytest.raises(ValueError, match=why):
        decode_stat(key, value)


def test_aggregate_sums_replicas_and_takes_the_latest_verdict():
    got = aggregate([
        stat(instance="r0", count=10, first_seen=100.0, last_seen=200.0, verdict="normal", rationale="old"),
        stat(instance="r1", count=5, first_seen=50.0, last_seen=300.0, verdict="anomalous", rationale="new",
             model_version="m@2"),
        stat(instance="r2", count=1, first_seen=400.0, last_seen=400.0, verdict=None, source="pending", rationale=""),
        stat(template=T2, instance="r0", count=99, verdict=None, source="pending", rationale=""),
    ])
    assert [s.template for s in got] == [T2, T1]  # most seen first
    t1 = got[1]
    assert (t1.count, t1.first_seen, t1.last_seen) == (16, 50.0, 400.0)
    # a replica that has not judged it yet does not hide the others' verdict
    assert (t1.verdict, t1.source, t1.rationale, t1.model_version) == ("anomalous", "model", "new", "m@2")
    assert t1.instance == "r0,r1,r2"
    assert (got[0].verdict, got[0].source) == (None, "pending")


def test_listing_merges_labels_and_lists_forced_ones():
    stats = aggregate([stat(), stat(template=T2, verdict="anomalous", rationale="parity", count=3)])
    labels = [Label(T2, "normal", "corrected parity errors are routine here", "ada", 500.0),
              Label("never seen {*}", "anomalous", "page me", "bob", 600.0, forced=True)]
    rows = listing(stats, labels)
    by = {r["template"]: r for r in rows}
    assert (by[T2]["verdict"], by[T2]["source"], by[T2]["model_verdict"]) == \
        ("normal", "operator", "anomalous")
    assert by[T2]["rationale"].startswith("corrected") and by[T2]["labelled_by"] == "ada" and not by[T2]["forced"]
    assert (by[T1]["source"], by[T1]["labelled_by"]) == ("model", None)
    forced = by["never seen {*}"]
    assert rows[-1] is forced and forced["forced"] and not forced["seen"] and forced["count"] == 0
    assert [r["template"] for r in select(rows, source="operator")] == [T2, "never seen {*}"]
    assert [r["template"] for r in select(rows, verdict="normal", source="model")] == [T1]
    pending = listing([stat(template="p", verdict=None, source="pending")], [])
    assert select(rows + pending, verdict="pending") == pending
    assert select(rows, verdict="pending") == []


def test_the_table_fits_the_width_and_escapes_log_text():
    stats = [stat(template="evil \x1b[31m " + "x" * 300, rationale="why " * 100, count=12345)]
    labels = [Label("never seen {*}", "anomalous", "page me", "bob", 600.0, forced=True)]
    text = format_table(listing(stats, labels), width=140)
    lines = text.splitlines()
    assert lines[0].startswith("ID") and "RATIONALE" in lines[0]
    assert "\x1b" not in text and "\\x1b" in text
    assert all(len(ln) <= 140 for ln in lines), [len(ln) for ln in lines]
    assert "12,345" in lines[1] and "1970-01-01 00:01:40" in lines[1]
    assert "operator*" in lines[2] and lines[-1].startswith("* forced")


def test_a_stat_with_a_time_no_datetime_can_show_is_refused():
    """Found by review (2026-12-03), failing before its fix: ``first_seen`` 1e20 was accepted as a finite number and
    ``rationad templates`` then failed with OverflowError on the whole listing."""
    key, value = encode_stat(TemplateStat("blk_<*> x", None, "pending", "", "", 1, 0.0, 0.0, "i"))
    for bad in (1e20, -1.0):
        with pytest.raises(ValueError, match="first_seen"):
            decode_stat(key, orjson.dumps({**orjson.loads(value), "first_seen": bad}))



def test_a_replica_with_a_static_member_id_keeps_one_catalog_name_across_restarts():
    """Found by review (2026-12-03): every process start wrote its templates under a new instance name, so the
    compacted catalog gained a key per template per restart for ever. With ``kafka.group_instance_id`` (set by
    deploy/ for both systemd and Kubernetes) the name is the group and member id; without one, host and start time as before."""
    from rationad.config import Settings
    from rationad.daemon import _instance

    # Unique within its group only (KIP-345), and the catalog topic may be shared by groups: qualified by the group.
    assert _instance(Settings(kafka={"group_id": "g1", "group_instance_id": "host-a"})) == "g1:host-a"
    assert _instance(Settings(kafka={"group_id": "g2", "group_instance_id": "host-a"})) == "g2:host-a"
    a = _instance(Settings())
    assert "@" in a and a.rsplit("@", 1)[1].isdigit()


def test_the_catalog_keeps_the_model_s_verdict_under_a_label_and_a_cleared_label_leaves_no_operator_row():
    """Found by review: replicas wrote a labelled template's label as its catalog verdict (source "operator"), so
    ``rationad templates`` lost the model's verdict (``model_verdict`` null) and, after ``label --clear``, a stale
    stat (a replica that forgot the template, an earlier process) kept listing the cleared label as "operator"."""
    from rationad.template_book import TemplateState
    from rationad.template_stage import stat_of

    st = TemplateState(T1, template_id(T1), count=3, first_seen=1.0, last_seen=2.0, model_verdict="anomalous",
                       rationale="L1 reports a parity error.")
    st.label = Label(T1, "normal", "known noise", "ops", 5.0)
    written = stat_of(st, "m@1", "r0")
    assert (written.verdict, written.source, written.rationale) == ("anomalous", "model", "L1 reports a parity error.")
    (row,) = listing(aggregate([written]), [st.label])
    assert (row["verdict"], row["source"], row["model_verdict"]) == ("normal", "operator", "anomalous")
    (row,) = listing(aggregate([written]), [])  # the label cleared: the model's verdict applies again
    assert (row["verdict"], row["source"]) == ("anomalous", "model")
    legacy = stat(source="operator", verdict="normal", rationale="known noise", last_seen=900.0, instance="old")
    (row,) = listing(aggregate([legacy, stat(verdict="anomalous", instance="r1")]), [])
    assert (row["verdict"], row["source"]) == ("anomalous", "model")  # a model stat wins over a legacy label
    (row,) = listing(aggregate([legacy]), [])
    assert (row["verdict"], row["source"], row["rationale"]) == (None, "pending", "")  # no label is in force


def test_two_templates_of_one_id_are_listed_apart_and_a_label_marks_only_its_own(monkeypatch):
    """A crafted id collision (review 2026-12-07, failing before): the catalog merged the two templates into one row
    (an anomalous one could vanish from ``--verdict anomalous``), and a label naming one was shown on the other."""
    import rationad.catalog as catalog_mod
    import rationad.labels as labels_mod

    hostile = "WARN hostile line {*} crafted to share an id"
    shared = lambda t: "t-0000000000aa" if t in (T2, hostile) else template_id(t)  # noqa: E731
    monkeypatch.setattr(catalog_mod, "template_id", shared)
    monkeypatch.setattr(labels_mod, "template_id", shared)
    stats = aggregate([stat(template=T2, verdict="anomalous", rationale="parity", count=3, instance="r0"),
                       stat(template=hostile, verdict="normal", rationale="routine", count=6, instance="r1")])
    assert [(s.template, s.verdict) for s in stats] == [(hostile, "normal"), (T2, "anomalous")]
    rows = listing(stats, [Label(hostile, "normal", "mine", "mallory", 5.0)])
    by = {r["template"]: r for r in rows}
    assert (by[T2]["verdict"], by[T2]["source"]) == ("anomalous", "model")  # not the other template's label
    assert (by[hostile]["source"], by[hostile]["labelled_by"]) == ("operator", "mallory")
    assert len(rows) == 2
