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
    book.judged("disk {*} ok", "normal", "routine")
    assert book.decide(uses) is None
    book.judged("disk {*} failed", "anomalous", "a disk failed")
    d = book.decide(uses)
    assert d.verdict == "anomalous" and [u.state.template for u in d.anomalous] == ["disk {*} failed"]


def test_an_operator_label_wins_and_a_failed_template_does_not_count():
    book = TemplateBook()
    uses = book.uses(window("disk 3 failed", "fan 2 noisy"))
    book.judged("disk {*} failed", "anomalous", "a disk failed")
    book.judged("fan {*} noisy", None, "", failed="model_rejected", now=10.0)
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
    book.judged(a.template, "normal", "")
    c = book.observe("gamma", 0)  # templates waiting for the model do not count: alpha stays
    assert len(book) == 3 and book.get(a.id) is a
    book.start_judging(b)
    book.judged(c.template, "anomalous", "")
    book.judged(book.observe("delta", 0).template, "normal", "")  # three judged: the oldest (alpha) goes
    assert book.get(a.id) is None and book.get(b.id) is b and book.get(c.id) is c
    book.observe("epsilon", 0)  # gamma and delta are the two judged ones; beta, being judged, is not counted
    assert len(book) == 4 and book.get(b.id) is b


def test_pending_huge_templates_do_not_flush_the_judged_ones():
    """Found by review (2026-12-06), failing before its fix: the byte bound counted templates waiting for the model,
    which cannot be forgotten, so two pending 10,000-character templates in a book of 22,000 characters pushed out
    76 of its 200 judged templates (with 20,000 all of them; each then waits on the model again). (Bytes as
    ``sys.getsizeof`` counts them: each short template is about 65.)"""
    import sys

    book = TemplateBook(max_templates=1000, max_bytes=28_000)
    for i in range(200):
        book.judged(book.observe(f"ok event {chr(65 + i % 26)}{chr(65 + i // 26)} done", 0).template, "normal", "")
    for k in "ab":
        book.observe(k + " " + "q-" * 5000, 1)  # waiting for the model
    assert len(book) == 202
    for k in "ab":  # once judged they count, and the least recently seen judged ones make room for them
        book.judged(k + " " + "q-" * 5000, "normal", "")
    book.observe("one more", 2)
    assert book.bytes <= 28_000 + sys.getsizeof("one more") and 100 < len(book) < 202  # judged ones within the bound


def test_an_empty_template_is_the_message_itself_and_a_long_one_is_cut_with_a_marker():
    assert template_of("12345") == "{*}"
    assert template_of("   ") == "   "
    long = "x" * 5000
    s = template_session(long)
    assert s.extra == {"templated": True} and s.key == template_id(long)

    class Client:
        name = "fake"
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
    book.judged(a.template, "normal", "")
    book.judged(book.observe("beta", 13.0).template, "normal", "")  # alpha is forgotten
    assert book.get(a.id) is None
    again = book.observe("alpha", 20.0)
    assert (again.count, again.first_seen, again.last_seen) == (4, 10.0, 20.0)


def test_a_failed_template_forgotten_and_seen_again_waits_out_its_retry_delay():
    """Found by review (2026-12-06), failing before its fix: an evicted template came back with no failure, so one
    the model always refuses was sent again (and dead-lettered again, its windows waiting) each time it returned in
    a stream of many templates, instead of once per FAILED_RETRY_SECS."""
    from rationad.template_book import FAILED_RETRY_SECS

    book = TemplateBook(max_templates=1)
    x = book.observe("alpha", 10.0)
    book.start_judging(x)
    book.judged(x.template, None, "", failed="model_rejected", now=10.0)
    book.judged(book.observe("beta", 11.0).template, "normal", "")  # alpha is forgotten
    assert book.get(x.id) is None
    again = book.observe("alpha", 12.0)
    assert again.failed == "model_rejected" and not book.needs_model(again, 12.0)
    assert book.needs_model(again, 10.0 + FAILED_RETRY_SECS)


def test_counts_carried_from_the_catalog_seed_the_templates_when_they_are_seen():
    """A replica with a stable instance name (``kafka.group_instance_id``) continues its catalog counts after a
    restart instead of writing a new key per start."""
    book = TemplateBook()
    tid = template_id("alpha")
    book.carry_counts({tid: (41, 5.0)})
    st = book.observe("alpha", 30.0)
    assert (st.count, st.first_seen, st.last_seen) == (42, 5.0, 30.0)
    assert book.observe("beta", 31.0).count == 1


def test_two_templates_sharing_an_id_are_held_apart(monkeypatch):
    """Found by review (2026-12-04), failing before its fix: states were looked up by the 12-digit id, which can be
    crafted to collide (about 2^24 hashes); the second template took the first one's place, both verdicts landed on
    it, and a window waiting for the first waited for ever (its hold pinned the partition's commit). Verdicts now go
    by template text, and a label applies to the template it names."""
    import rationad.template_book as tb

    a, b = "disk {*} failed", "fan {*} noisy"
    real = tb.template_id
    monkeypatch.setattr(tb, "template_id", lambda t: "t-0000000000aa" if t in (a, b) else real(t))
    book = TemplateBook()
    uses = book.uses(window("disk 3 failed", "fan 2 noisy"))
    assert [u.state.id for u in uses] == ["t-0000000000aa"] * 2
    book.judged(a, "anomalous", "a disk failed")
    assert book.decide(uses) is None  # b is still waiting for its own verdict, not given a's
    book.judged(b, "normal", "routine")
    d = book.decide(uses)
    assert d.verdict == "anomalous" and [u.state.template for u in d.anomalous] == [a]
    assert [(u.state.template, u.state.verdict) for u in book.uses(window("fan 1 noisy"))] == [(b, "normal")]
    book.set_label("t-0000000000aa", Label(a, "normal", "scratch disk", "ops", 1.0))
    assert [(u.state.template, u.state.verdict) for u in uses] == [(a, "normal"), (b, "normal")]
    book.set_label("t-0000000000aa", Label(b, "anomalous", "fan dying", "ops", 2.0))  # the id's label is now b's
    # ... and a's is gone, as on a replica restarted from the labels topic, which keeps one label an id (review
    # 2026-12-07, failing before: a kept the replaced label, normal here, anomalous after a restart)
    assert book.decide(uses).verdict == "anomalous"
    assert [(u.state.template, u.state.label is not None) for u in book.decide(uses).anomalous] == [(a, False),
                                                                                                   (b, True)]
    restarted = TemplateBook()
    restarted.set_label("t-0000000000aa", Label(b, "anomalous", "fan dying", "ops", 2.0))
    again = restarted.uses(window("disk 3 failed"))
    restarted.judged(a, "anomalous", "a disk failed")
    assert [u.state.verdict for u in again] == [u.state.verdict for u in book.uses(window("disk 3 failed"))]


def test_the_book_is_bounded_in_bytes_as_well_as_in_templates():
    """Found by review: bounded by count only (100,000 templates of up to 64 KiB each: 6 GiB); judged templates past
    ``max_bytes`` of template text are forgotten too, least recently seen first."""
    book = TemplateBook(max_templates=1_000, max_bytes=10_000)
    for i in range(50):
        msg = f"ERROR {chr(65 + i % 26)}{chr(65 + i // 26)} " + "x" * 1_000
        book.judged(book.observe(msg, now=float(i)).template, "normal", "fine")
    assert 9 <= len(book) <= 10 and book.bytes <= 10_000
    assert book.states()[-1].template.startswith("ERROR XB")  # the latest stays


def test_the_byte_bound_counts_what_the_text_takes_in_memory():
    """Found by review (2026-12-06), failing before its fix: the bound counted characters, and a string with one
    character outside the Basic Multilingual Plane takes 4 bytes a character: a hostile source held 4x the bound."""
    import sys

    book = TemplateBook(max_templates=1_000, max_bytes=100_000)
    for i in range(50):
        msg = f"\U0001F525 {chr(65 + i % 26)}{chr(65 + i // 26)} " + "x" * 2_000  # an emoji, then ASCII
        book.judged(book.observe(msg, now=float(i)).template, "normal", "fine")
    held = sum(sys.getsizeof(st.template) for st in book.states())
    assert held <= 100_000 and book.bytes == held and len(book) <= 13


def test_the_byte_count_stays_true_when_a_templates_text_is_encoded_later():
    """Found by review of the fix above (2026-12-06), failing before its own fix: ``sys.getsizeof`` of a non-ASCII
    string grows once a UTF-8 copy of it is cached (orjson encodes it for the catalog), so the size taken away at
    eviction was more than the size added: the count drifted down (below zero) and the book held 21x its bound."""
    import orjson

    book = TemplateBook(max_templates=100_000, max_bytes=100_000)
    for i in range(2_000):
        msg = f"\U0001F525 \u00e9 {chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{chr(65 + i // 676)} " + "x" * 200
        st = book.observe(msg, now=float(i))
        book.judged(st.template, "normal", "fine")
        orjson.dumps(st.template)  # as the catalog record does
        assert 0 <= book.bytes <= 100_000 + st.nbytes
    assert book.bytes == sum(st.nbytes for st in book.states())


def test_a_template_served_normal_on_void_evidence_does_not_raise_its_windows_score():
    """Its score is the model's (events show it), but no threshold makes it anomalous: it ranks the window at 0."""
    book = TemplateBook()
    uses = book.uses(window("conn 1 close", "disk 2 ok"))
    why = ("unsupported: the anomalous answer's evidence is void (L1 'close': the line names no trouble): served as "
           "normal")
    book.judged("conn {*} close", "normal", "L1 contains 'close': ...", score=0.99, answer_verdict="anomalous",
                problems=(why,), unsupported=True)
    book.judged("disk {*} ok", "normal", "routine", score=0.01)
    d = book.decide(uses)
    assert d.verdict == "normal" and d.score == 0.01
    assert uses[0].state.score == 0.99 and uses[0].state.window_score == 0.0
    # the catalog (``rationad templates``) shows why the rationale's "anomalous" was not served
    from rationad.template_stage import stat_of

    assert stat_of(uses[0].state, "m@1", "r0").rationale == f"L1 contains 'close': ... [{why}]"
