"""TemplateBook: templates of lines, verdict sources, window decisions, bounds (pure logic)."""

from __future__ import annotations

from rationad.judge import Judge
from rationad.labels import Label
from rationad.model.base import approx_token_count
from rationad.records import LogLine, Session
from rationad.template_book import TemplateBook, pending_ids, template_of, template_session
from rationad.templates import template_id


def window(*messages: str) -> Session:
    return Session(key="w", lines=[LogLine("w", m, m, offset=i) for i, m in enumerate(messages)], close_reason="x")


def test_a_window_waits_for_its_templates_then_is_anomalous_when_any_is():
    book = TemplateBook()
    uses = book.uses(window("disk 1 ok", "disk 2 ok", "disk 3 failed"))
    assert [(u.state.template, len(u.lines)) for u in uses] == [("disk {*} ok", 2), ("disk {*} failed", 1)]
    assert book.decide(uses) is None and pending_ids(uses) == [template_id("disk {*} ok"), template_id("disk {*} failed")]
    book.judged(template_id("disk {*} ok"), "normal", "routine")
    assert book.decide(uses) is None
    book.judged(template_id("disk {*} failed"), "anomalous", "a disk failed")
    d = book.decide(uses)
    assert d.verdict == "anomalous" and [u.state.template for u in d.anomalous] == ["disk {*} failed"]


def test_an_operator_label_wins_and_a_failed_template_does_not_count():
    book = TemplateBook()
    uses = book.uses(window("disk 3 failed", "fan 2 noisy"))
    book.judged(template_id("disk {*} failed"), "anomalous", "a disk failed")
    book.judged(template_id("fan {*} noisy"), None, "", failed="model_rejected", now=10.0)
    book.set_label(template_id("disk {*} failed"), Label("disk {*} failed", "normal", "scratch disk", "ops", 1.0))
    d = book.decide(uses)
    assert d.verdict == "normal" and d.unjudged == [template_id("fan {*} noisy")]
    st = book.get(template_id("disk {*} failed"))
    assert (st.source, st.reason, st.model_verdict) == ("operator", "scratch disk", "anomalous")
    assert not book.needs_model(book.get(template_id("fan {*} noisy")), 11.0)  # retried later, not at once
    assert book.needs_model(book.get(template_id("fan {*} noisy")), 10.0 + 601)
    book.set_label(template_id("disk {*} failed"), None)
    assert book.get(template_id("disk {*} failed")).verdict == "anomalous"


def test_a_label_given_before_the_template_is_seen_applies_when_it_appears():
    book = TemplateBook()
    book.set_label(template_id("new {*} thing"), Label("new {*} thing", "anomalous", "never expected", "ops", 1.0))
    st = book.observe("new 5 thing", now=3.0)
    assert (st.verdict, st.source, st.count, book.needs_model(st, 3.0)) == ("anomalous", "operator", 1, False)


def test_the_book_is_bounded_and_never_forgets_a_template_a_window_may_wait_for():
    book = TemplateBook(max_templates=2)
    a, b = book.observe("alpha", 0), book.observe("beta", 0)
    book.judged(a.id, "normal", "")
    c = book.observe("gamma", 0)  # over the bound: the oldest known one (alpha) goes, beta (unknown) stays
    assert book.get(a.id) is None and book.get(b.id) is b and book.get(c.id) is c
    b.judging = True
    d = book.observe("delta", 0)  # nothing is evictable: over the bound rather than forget a pending template
    assert len(book) == 3 and book.get(d.id) is d


def test_an_empty_template_is_the_message_itself_and_a_long_one_is_cut_with_a_marker():
    assert template_of("12345") == "{*}"
    assert template_of("   ") == "   "
    long = "x" * 5000
    s = template_session(long)
    assert s.extra == {"templated": True} and s.key == template_id(long)

    class Client:
        count_tokens = staticmethod(approx_token_count)

    from rationad.config import ModelConfig
    from rationad.prompt import user_message

    view = Judge(Client(), ModelConfig(), "bgl").view(s)
    text = user_message(view)
    assert "more characters cut]" in text and len(text) < 1000


def test_a_template_forgotten_and_seen_again_keeps_counting_from_where_it_was():
    """Found by review (2026-12-03), failing before its fix: an evicted template came back with count 0 and its next
    catalog record overwrote the replica's count with a smaller one (the compacted topic keeps the latest)."""
    book = TemplateBook(max_templates=1)
    for t in (10.0, 11.0, 12.0):
        a = book.observe("alpha", t)
    book.judged(a.id, "normal", "")
    book.judged(book.observe("beta", 13.0).id, "normal", "")  # alpha is forgotten
    assert book.get(a.id) is None
    again = book.observe("alpha", 20.0)
    assert (again.count, again.first_seen, again.last_seen) == (4, 10.0, 20.0)


def test_counts_carried_from_the_catalog_seed_the_templates_when_they_are_seen():
    """A replica with a stable instance name (``kafka.group_instance_id``) continues its catalog counts after a
    restart instead of writing a new key per start."""
    book = TemplateBook()
    tid = template_id("alpha")
    book.carry_counts({tid: (41, 5.0)})
    st = book.observe("alpha", 30.0)
    assert (st.count, st.first_seen, st.last_seen) == (42, 5.0, 30.0)
    assert book.observe("beta", 31.0).count == 1
