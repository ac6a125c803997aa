import jsonschema
import orjson

from rationad.answer import parse_completion
from rationad.events import ModelInfo, build_event, encode, event_id, headers, schema
from rationad.prompt import build_view, view_of
from rationad.records import LogLine, Session


def make(key="blk_1", first=10, topic="logs", partition=0):
    lines = [LogLine(key=key, message=m, raw=f"081109 2035{i:02d} 1 {m} {key}", ts=1226262930.0 + i, topic=topic,
                     partition=partition, offset=first + i)
             for i, m in enumerate(["INFO a: start", "WARN b: exception while serving", "INFO a: start"])]
    return Session(key=key, lines=lines, close_reason="gap", topic=topic, partition=partition)


def test_event_matches_committed_schema_and_cites_session_lines():
    s = make()
    view = build_view("hdfs", [line.message for line in s.lines])
    a = parse_completion("<think>L2 reports an exception; L9 is invented.</think><answer>anomalous</answer>", view)
    e = build_event(s, view, a, ModelInfo("m", "1"), cached=False, now=0)
    jsonschema.Draft202012Validator(schema()).validate(orjson.loads(encode(e)))
    assert e["verdict"] == "anomalous" and e["session"]["key"] == "blk_1"
    assert [ev["ref"] for ev in e["evidence"]] == ["L2"]
    assert e["evidence"][0]["line"] == s.lines[1].raw and e["evidence"][0]["offset"] == 11
    assert e["grounded"] is False and e["ungrounded_refs"] == ["L9"]
    assert dict(headers(e))["ce_id"] == e["id"].encode()


def test_event_id_is_deterministic_per_session_and_model():
    m = ModelInfo("m", "1")
    assert event_id(make(), m) == event_id(make(), m)
    assert event_id(make(), m) != event_id(make(first=11), m)
    assert event_id(make(), m) != event_id(make(key="blk_2"), m)
    assert event_id(make(), m) != event_id(make(), ModelInfo("m", "2"))
    assert event_id(make(), m) != event_id(make(partition=1), m)


def _forwarded(first_internal, sources, texts=None, key="blk_1"):
    """A session of lines that came through the repartition topic: internal offsets from ``first_internal``, input
    positions ``sources``."""
    texts = texts or [f"INFO a: line {i}" for i in range(len(sources))]
    lines = [LogLine(key=key, message=t, raw=t, ts=1226262930.0 + i, topic="rationad-repartition", partition=3,
                     offset=first_internal + i, source=src) for i, (t, src) in enumerate(zip(texts, sources))]
    return Session(key=key, lines=lines, close_reason="gap", topic="rationad-repartition", partition=3)


def test_lines_forwarded_again_in_another_order_keep_their_event_id():
    """Found by review (2026-12-07), failing before its fix: a line without a time (an HDFS line with no header)
    sorts in its session by the lines that arrived on the internal partition before it; forwarded again after a
    restart, the lines of two input partitions arrived in another order, the session held them in another order, and
    the digest of their text gave the same lines another id."""
    from rationad.windows import Sessionizer, WindowSpec

    def session(order):
        w = Sessionizer(WindowSpec(mode="session", gap_secs=300.0, max_lines=100), topic="rationad-repartition")
        for internal, (ts, src, text) in enumerate(order):
            w.add(LogLine(key="blk_7", message=text, raw=text, ts=ts, topic="rationad-repartition",
                          offset=internal, source=src), 1.7e9)
        (s,) = w.flush("end_of_input")
        return s

    a = (1226262975.0, ("logs", 0, 10), "081109 203615 148 INFO Receiving block blk_7")
    u = (None, ("logs", 1, 5), "blk_7 terminating (a line with no header)")
    b = (1226262980.0, ("logs", 0, 11), "081109 203620 35 INFO addStoredBlock: blk_7")
    first, again = session([a, b, u]), session([a, u, b])
    assert [x.raw for x in first.lines] != [x.raw for x in again.lines]  # the orders the sessions hold differ
    m = ModelInfo("m", "1")
    assert event_id(first, m) == event_id(again, m)


def test_lines_forwarded_again_keep_their_event_id():
    """Found by review (2026-12-06), failing before its fix: the id named the internal topic's offsets, so lines
    forwarded again after a restart between the hops (new internal offsets; the new owner of the internal partition
    has no memory of them) were judged under a new id and consumers could not drop the copy."""
    m = ModelInfo("m", "1")
    srcs = [("logs", 0, 100), ("logs", 0, 101), ("logs", 2, 7)]
    assert event_id(_forwarded(10, srcs), m) == event_id(_forwarded(5_000, srcs), m)
    assert event_id(_forwarded(10, srcs), m) != event_id(_forwarded(10, srcs[:2] + [("logs", 2, 8)]), m)
    assert event_id(_forwarded(10, srcs), m) != event_id(_forwarded(10, srcs, key="blk_2"), m)
    # the lines of one input record filling two sessions of one key: told apart by their text
    one = [("logs", 0, 100)] * 2
    assert event_id(_forwarded(10, one, ["a", "b"]), m) != event_id(_forwarded(12, one, ["c", "d"]), m)
    # a session that began inside a pack (part 1: a line of its key in that pack went to the session before) and the
    # same lines forwarded again in a pack of their own (part 0): one id (found by review of the first fix)
    inside, alone = _forwarded(10, srcs), _forwarded(5_000, srcs)
    inside.part = 1
    assert event_id(inside, m) == event_id(alone, m)


def test_revision_is_in_the_event_but_not_in_its_id():
    """The revision lives in memory and starts at 1 again after a restart: in the id it gave the same lines read
    again another id (a duplicate consumers could not drop; found by review, 2026-12-06)."""
    m = ModelInfo("m", "1")
    first = make()
    revised = make()
    revised.revision = 2
    assert event_id(revised, m) == event_id(first, m)
    shorter = make()
    shorter.lines = shorter.lines[:2]
    assert event_id(shorter, m) != event_id(first, m)  # other lines, another id
    view = build_view("hdfs", [line.message for line in revised.lines])
    a = parse_completion("<think>L2 reports an exception.</think><answer>anomalous</answer>", view)
    e = build_event(revised, view, a, m, cached=False, now=0)
    validator = jsonschema.Draft202012Validator(schema())
    validator.validate(orjson.loads(encode(e)))
    assert e["session"]["revision"] == 2 and e["session"]["key"] == "blk_1"
    assert build_event(first, view, a, m, cached=False, now=0)["session"]["revision"] == 1
    e["session"]["revision"] = 0
    assert not validator.is_valid(e)
    del e["session"]["revision"]  # optional: events from before the field still validate
    validator.validate(e)


def test_a_revision_is_judged_with_its_earlier_lines_and_cites_them_from_their_own_offsets():
    earlier = make(first=10)
    revised = make(first=40)
    revised.revision, revised.context = 2, earlier.lines
    revised.lines = revised.lines[1:2]  # this revision holds one line of its own
    view = view_of(revised, "hdfs")
    assert [(r.ref, r.count) for r in view.rows] == [("L1", 2), ("L2", 2)] and view.line_count == 4
    a = parse_completion("<think>L1 starts; L2 reports an exception.</think><answer>anomalous</answer>", view)
    e = build_event(revised, view, a, ModelInfo("m", "1"), cached=False, now=0)
    jsonschema.Draft202012Validator(schema()).validate(orjson.loads(encode(e)))
    # The session is this revision's (its offsets, its line count); the context is counted apart and citable.
    assert (e["session"]["first_offset"], e["session"]["line_count"], e["session"]["context_lines"]) == (41, 1, 3)
    assert [(ev["ref"], ev["offset"]) for ev in e["evidence"]] == [("L1", 10), ("L2", 11)]
    assert event_id(revised, ModelInfo("m", "1")) != event_id(earlier, ModelInfo("m", "1"))


def test_a_template_rationale_citing_a_row_its_prompt_did_not_have_is_not_served_as_grounded():
    """Found by review (2026-12-03), failing before its fix: a template is judged alone (its prompt's one row is L1);
    a rationale citing L2 was served in the window event as grounded, where L2 is another template."""
    from rationad.answer import parse_completion
    from rationad.events import ModelInfo, build_template_event
    from rationad.prompt import build_view
    from rationad.records import LogLine, Session
    from rationad.template_book import TemplateBook

    msgs = ["ERROR disk failed 3", "INFO ok 1"]
    s = Session(key="w", lines=[LogLine(key="w", message=m, raw=m, offset=10 + i) for i, m in enumerate(msgs)],
                close_reason="gap", topic="logs")
    book = TemplateBook()
    uses = book.uses(s)
    err, ok = uses[0].state, uses[1].state
    a = parse_completion("<think>L1 x1 reports a failure, as L2 does.</think>\n<answer>anomalous</answer>",
                         build_view("generic", [err.template], templated=True))
    assert a.ok and a.ungrounded_refs == ("L2",)
    book.judged(err.template, "anomalous", a.rationale, score=0.9, answer_verdict="anomalous", problems=a.problems,
                ungrounded=a.ungrounded_refs)
    book.judged(ok.template, "normal", "L1 x1 routine.", score=0.01, answer_verdict="normal")
    e = build_template_event(s, book.decide(uses), ModelInfo("m"), source="generic", threshold=0.5, now=0)
    assert e["grounded"] is False and e["ungrounded_refs"] == [f"{err.id}:L2"]



def test_a_window_decided_again_after_a_label_changed_its_verdict_gets_another_id():
    """Found by review (2026-12-07), failing before its fix: a window decided normal (its event delivered, its input
    not yet committed) and decided again after a rebalance, once an operator had labelled its template anomalous, got
    the same event id with the opposite verdict, so a consumer dropping duplicates by id dropped the anomaly. The
    window's verdict is part of its id; a label that changes no verdict changes no id (review 2026-12-07: a
    template labelled with the verdict the model gave made a window decided again a second alert under another id,
    failing before its fix)."""
    from rationad.events import ModelInfo, build_template_event
    from rationad.labels import Label
    from rationad.records import LogLine, Session
    from rationad.template_book import TemplateBook, template_of

    line = LogLine(key="w", message="fan 3 failed", raw="fan 3 failed", offset=10)
    s = Session(key="w", lines=[line], close_reason="count", topic="logs")
    tpl = template_of(line.message)
    book = TemplateBook()
    book.state(tpl)
    book.judged(tpl, "normal", "L1 routine. Nothing signals trouble: normal.", score=0.01)

    def decided() -> dict:
        return build_template_event(s, book.decide(book.uses(s)), ModelInfo("m", "1"), source="bgl", now=0)

    first = decided()
    assert first["id"] == decided()["id"]  # decided again as it was: a duplicate, dropped by id
    agreeing = Label(tpl, "normal", "routine fan check", "ada", 0.5)  # the verdict the model gave
    book.set_label(agreeing.id, agreeing)
    assert decided()["verdict"] == "normal" and decided()["id"] == first["id"]
    label = Label(tpl, "anomalous", "page the DC team", "ada", 1.0)
    book.set_label(label.id, label)
    second = decided()
    assert (first["verdict"], second["verdict"]) == ("normal", "anomalous")
    assert second["id"] != first["id"]
    relabelled = Label(tpl, "anomalous", "page the DC team at once", "bob", 2.0)  # same verdict, reworded
    book.set_label(relabelled.id, relabelled)
    assert decided()["id"] == second["id"]


def _restart_specs():
    from rationad.windows import WindowSpec

    return [WindowSpec(mode="session", gap_secs=10.0, max_lines=2, max_span_secs=100.0, max_open_secs=60.0,
                       carry_context=False),
            WindowSpec(mode="fixed", window_lines=2, max_open_secs=60.0)]


def _line(key, ts, offset):
    return LogLine(key=key, message="m", raw="m", ts=ts, offset=offset, topic="logs")


def test_a_revision_read_again_after_a_restart_keeps_its_event_id():
    """Found by review (2026-12-06), failing before its fix: revision 2 of a key (revision 1 closed by max_open)
    read again after a restart from its first offset is revision 1 there: the same lines got another id, so the
    duplicate an at-least-once restart produces could not be dropped."""
    from rationad.windows import Sessionizer

    m = ModelInfo("m", "1")
    for spec in _restart_specs():
        w = Sessionizer(spec, topic="logs")
        w.add(_line("a", 1000.0, 0), 0.0)
        assert len(w.tick(60.0)) == 1  # revision 1, closed by max_open
        (r2,) = w.add(_line("a", 1001.0, 1), 61.0) + w.add(_line("a", 1002.0, 2), 61.0)
        assert r2.revision == 2
        again_w = Sessionizer(spec, topic="logs")  # the restart reads from offset 1
        (again,) = again_w.add(_line("a", 1001.0, 1), 90.0) + again_w.add(_line("a", 1002.0, 2), 90.0)
        assert [ln.offset for ln in again.lines] == [ln.offset for ln in r2.lines]
        assert event_id(again, m, "template") == event_id(r2, m, "template")


def test_a_session_cut_by_the_wall_clock_and_read_again_longer_gets_another_id():
    """Found by review (2026-12-06), failing before its fix: a session closed by max_open, read again after a
    restart with the lines that came since (a backlog closes nothing by the wall clock), had the id of the shorter
    one: a consumer dropping duplicates dropped the fuller verdict, and the later lines with it."""
    from rationad.windows import Sessionizer, WindowSpec

    m = ModelInfo("m", "1")
    spec = WindowSpec(mode="session", gap_secs=86_400.0, max_lines=1000, max_span_secs=None, max_open_secs=600.0)
    w = Sessionizer(spec, topic="logs")
    w.add(_line("a", 1000.0, 10), 0.0)
    w.add(_line("a", 1001.0, 11), 1.0)
    (cut,) = w.tick(600.0)
    again = Sessionizer(spec, topic="logs")
    for offset, ts in ((10, 1000.0), (11, 1001.0), (12, 2000.0), (13, 2001.0)):
        again.add(_line("a", ts, offset), 700.0)
    (whole,) = again.flush("end_of_input")
    assert len(whole.lines) == 4 and event_id(whole, m) != event_id(cut, m)


def _judged_window(msgs: list[str], *, why: tuple[str, str] = ("L1 x1 reports a failure.", "ok"),
                   scores: tuple[float, float] = (0.9, 0.1), label_normal: bool = False):
    """(a window of ``msgs``, its decision): templates of ERROR lines judged anomalous, the others normal (with
    ``why`` and ``scores`` for each kind; ``label_normal``: the normal ones labelled so by an operator)."""
    from rationad.labels import Label
    from rationad.records import LogLine, Session
    from rationad.template_book import TemplateBook

    s = Session(key="w", lines=[LogLine(key="w", message=m, raw=m, offset=i) for i, m in enumerate(msgs)],
                close_reason="gap", topic="logs")
    book = TemplateBook()
    uses = book.uses(s)
    for u in uses:
        bad = u.state.template.startswith("ERROR")
        book.judged(u.state.template, "anomalous" if bad else "normal", why[0] if bad else why[1],
                    score=scores[0] if bad else scores[1], answer_verdict="anomalous" if bad else "normal")
        if label_normal and not bad:
            book.set_label(u.state.id, Label(u.state.template, "normal", "fine", "op", 1.0))
    return s, book.decide(uses)


def _wide_template_window(templates: int, lines_each: int, chars: int):
    """A window of ``templates`` anomalous templates (each a distinct word), ``lines_each`` lines of about ``chars``
    characters each, judged anomalous, and one normal template."""
    msgs = [f"ERROR {chr(65 + t % 26)}{chr(65 + t // 26)} failed " + "x" * chars + f" {n}"
            for t in range(templates) for n in range(lines_each)] + ["INFO ok 1"]
    return _judged_window(msgs)


def test_a_template_event_too_large_for_the_output_topic_is_cut_to_fit():
    """Found by review (2026-12-06), failing before its fix: a window of 30 anomalous templates quoting 20 lines of
    1.9 KB each made a 1.3 MB event (the output topic takes 1 MiB by default): it was dead-lettered and the anomaly
    never reached the output topic. Its templates' lines, then its last templates, are left out until it fits."""
    from rationad.events import build_template_event, fit_template_event

    s, decision = _wide_template_window(30, 20, 1_900)
    e = build_template_event(s, decision, ModelInfo("m"), source="generic", threshold=0.5, now=0)
    assert len(encode(e)) > 1_048_576  # the case: the whole event does not fit
    assert fit_template_event(e, 10 ** 9) is e  # one that fits is itself
    for limit in (1_048_576, 65_536, 16_384):
        cut = fit_template_event(e, limit)
        assert len(encode(cut)) <= limit, limit
        jsonschema.Draft202012Validator(schema()).validate(orjson.loads(encode(cut)))
        assert {k: cut[k] for k in ("id", "verdict", "score", "rationale")} == \
            {k: e[k] for k in ("id", "verdict", "score", "rationale")}
        assert cut["templates"][0]["id"] == e["templates"][0]["id"]  # the first anomalous template stays
        assert len(cut["templates"]) + cut.get("omitted_templates", 0) == len(e["templates"])
        assert len(cut["evidence"]) == sum(t["verdict"] == "anomalous" for t in cut["templates"])
        assert [ev["ref"] for ev in cut["evidence"]] == [ev["ref"] for ev in e["evidence"]][:len(cut["evidence"])]
    assert e["templates"][0]["lines"] != e["templates"][0]["lines"][:1]  # the original is left as it was


def test_a_template_longer_than_a_line_is_cut_in_an_event_that_does_not_fit():
    from rationad.events import build_template_event, fit_template_event

    s, decision = _wide_template_window(3, 1, 60_000)
    e = build_template_event(s, decision, ModelInfo("m"), source="generic", threshold=0.5, now=0)
    assert len(encode(e)) > 180_000
    cut = fit_template_event(e, 32_768)
    assert len(encode(cut)) <= 32_768 and "omitted_templates" not in cut
    assert all(t["template"].endswith(" …") and len(t["template"]) <= 2_000 for t in cut["templates"])


def test_anomalous_templates_are_left_out_only_after_every_text_is_cut_short():
    """Found by review of the fix above (2026-12-06): 150 anomalous templates of about 1,950 characters (1.2 MB)
    lost 21 of them to fit 1 MiB, where texts cut to 200 characters keep all 150."""
    from rationad.events import build_template_event, fit_template_event

    s, decision = _wide_template_window(150, 1, 1_900)
    e = build_template_event(s, decision, ModelInfo("m"), source="generic", threshold=0.5, now=0)
    cut = fit_template_event(e, 1_048_576)
    assert len(encode(cut)) <= 1_048_576
    assert len(e["templates"]) == 150 and [t["id"] for t in cut["templates"]] == [t["id"] for t in e["templates"]]
    assert "omitted_templates" not in cut and len(cut["evidence"]) == 150


def test_a_cut_event_fits_and_leaves_out_labelled_normal_templates_before_any_anomalous_one():
    """Found by review of the fix above (2026-12-06), failing before its fix: the bytes of omitted_templates itself
    were not counted, so at some limits the cut event was still over it, or the anomalous pass left out an
    anomalous template while labelled normal ones were still listed (5 and 126 of the limits below)."""
    from rationad.events import build_template_event, fit_template_event

    def word(i: int) -> str:
        return chr(65 + i % 26) + chr(65 + i // 26)

    msgs = [f"ERROR {word(i)} x{'y' * 50}" for i in range(100)] + [f"WARN {word(i)} z{'w' * 50}" for i in range(40)]
    s, decision = _judged_window(msgs, why=("x", "x"), scores=(0.5, 0.5), label_normal=True)
    e = build_template_event(s, decision, ModelInfo("m"), source="generic", threshold=0.5, now=0)
    assert len(e["templates"]) == 140
    for limit in range(4_000, len(encode(e)), 7):  # the event with one template left is about 3.2 KB
        cut = fit_template_event(e, limit)
        assert len(encode(cut)) <= limit, limit
        verdicts = [t["verdict"] for t in cut["templates"]]
        assert verdicts.count("anomalous") == 100 or "normal" not in verdicts, limit


def _citing_every_row(n: int, fill: str, max_rationale_chars: int) -> dict:
    """The event of an anomalous session of ``n`` distinct lines of about 2,000 ``fill`` characters whose rationale
    cites every row."""
    msgs = [f"ERROR worker {chr(65 + i % 26)}{chr(65 + i // 26)} failed: " + fill * 1_990 for i in range(n)]
    lines = [LogLine(key="k", message=m, raw=m, ts=1.0 + i, topic="logs", offset=i) for i, m in enumerate(msgs)]
    s = Session(key="k", lines=lines, close_reason="gap", topic="logs")
    view = build_view("generic", msgs, max_prompt_tokens=10 ** 6)
    think = ", ".join(r.ref for r in view.rows) + " report failures."
    a = parse_completion(f"<think>{think}</think>\n<answer>anomalous</answer>", view)
    return build_event(s, view, a, ModelInfo("m", "1"), cached=False, now=0, max_rationale_chars=max_rationale_chars)


def test_a_session_event_citing_many_long_lines_is_cut_to_fit():
    """Found by review (2026-12-06), failing before its fix: each cited row quotes a line of up to 2,000 characters
    (a JSON input's whole record), so a rationale citing 120 rows of long lines made an event over the output
    topic's 1 MiB: it was dead-lettered and the anomaly never reached consumers. Evidence is cut, then left out."""
    from rationad.events import fit_session_event

    e = _citing_every_row(100, "\U0001F525", 700)
    assert len(encode(e)) > 1_048_576 and len(e["evidence"]) == 100
    assert fit_session_event(e, 10 ** 9) is e
    for limit in (1_048_576, 65_536, 16_384):
        cut = fit_session_event(e, limit)
        assert len(encode(cut)) <= limit, limit
        jsonschema.Draft202012Validator(schema()).validate(orjson.loads(encode(cut)))
        assert {k: cut[k] for k in ("id", "verdict", "score", "rationale")} == \
            {k: e[k] for k in ("id", "verdict", "score", "rationale")}
        assert cut["evidence"][0]["ref"] == "L1" and len(cut["evidence"]) + cut.get("omitted_evidence", 0) == 100
    assert len(e["evidence"][0]["line"]) > 200  # the original is left as it was


def test_fitting_a_session_event_encodes_it_a_few_times_not_once_per_dropped_entry(monkeypatch):
    import rationad.events as events

    e = _citing_every_row(400, "x", 2_000)
    calls = []
    real = events.encode
    monkeypatch.setattr(events, "encode", lambda ev: calls.append(1) or real(ev))
    cut = events.fit_session_event(e, 8_192)
    assert len(real(cut)) <= 8_192 and cut["omitted_evidence"] > 300
    # no more left out than it takes to fit: one more entry like the last kept would not
    assert len(real(cut)) + len(orjson.dumps(cut["evidence"][-1])) + 1 > 8_192
    assert len(calls) <= 4, len(calls)  # was one encode per dropped entry: quadratic in the cited rows


def test_a_rationale_cut_to_output_max_rationale_chars_ends_at_a_word_with_the_cut_mark():
    """Found by review (2026-12-07): the rationale was sliced at output.max_rationale_chars, so a citation at the cut
    ("L12") was served as another line ("L1"), with nothing saying it was cut."""
    from rationad.answer import CUT_MARK
    from rationad.events import cut_text

    text = "L3 and L7 report the disk failing; L12 shows the retry failing too."
    limit = text.index("L12") + 2  # a slice would end in "L1"
    cut = cut_text(text, limit)
    assert cut.endswith(CUT_MARK) and len(cut) <= limit and not cut[: -len(CUT_MARK)].endswith("L1")
    assert cut == "L3 and L7 report the disk failing;" + CUT_MARK
    assert cut_text(text, len(text)) == text


def test_a_normal_template_window_is_cached_only_when_its_templates_verdicts_were():
    """Found by review (2026-12-07), failing before its fix: a normal window said its verdict came from the cache
    (``all`` of no anomalous template) even when the model had just judged its templates."""
    from rationad.events import build_template_event
    from rationad.template_book import TemplateBook

    def window(raw):
        return Session(key="stream", lines=[LogLine(key="stream", message=raw, raw=raw, topic="logs", offset=1)],
                       close_reason="window_full", topic="logs")

    book = TemplateBook()
    for raw, cached in [("session opened for user bob", False), ("heartbeat ok from node 7", True)]:
        st = book.observe(raw, 0.0)
        book.judged(st.template, "normal", "L1 is a routine status message.", cached=cached, score=0.01,
                    answer_verdict="normal")
        w = window(raw)
        e = build_template_event(w, book.decide(book.uses(w)), ModelInfo("m", "1"), source="generic", now=0)
        assert (e["verdict"], e["cached"]) == ("normal", cached)


def test_the_same_lines_judged_unfinished_and_then_finished_get_two_ids():
    """Found by review (2026-12-07), failing before its fix: a session cut by ``max_open`` (judged as unfinished: its
    own prompt note and ``judge.threshold_unfinished``) and the same lines read again after a restart and closed by
    their gap were judged under one id, possibly with opposite verdicts: consumers dropping duplicates by id kept
    the first."""
    m = ModelInfo("m", "1")
    cut, gap = make(), make()
    cut.close_reason = "max_open"
    assert cut.unfinished and not gap.unfinished
    assert event_id(cut, m) != event_id(gap, m)
    assert event_id(gap, m) == event_id(make(), m)  # finished sessions keep the ids they had
    evicted = make()
    evicted.close_reason = "evicted"
    assert event_id(evicted, m) == event_id(cut, m)  # both unfinished: the same judgement


def _two_template_window():
    from rationad.records import LogLine, Session
    from rationad.template_book import TemplateBook

    lines = [LogLine(key="w", message=m, raw=m, offset=10 + i) for i, m in enumerate(["fan 3 failed", "user 7 login"])]
    s = Session(key="w", lines=lines, close_reason="count", topic="logs")
    book = TemplateBook()
    uses = book.uses(s)
    return s, book, uses[0].state.template, uses[1].state.template


def test_a_window_decided_again_once_a_failed_template_was_judged_gets_another_id():
    """Found by review (2026-12-07), failing before its fix: a window decided normal while its failing template's
    judgement had failed (unjudged), and decided again from the same lines once it was judged anomalous, kept its
    id."""
    from rationad.events import build_template_event

    s, book, err, ok = _two_template_window()
    book.judged(ok, "normal", "L1 x1 routine.", score=0.01)
    book.judged(err, None, "", failed="timeout")
    first = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    book.judged(err, "anomalous", "L1 x1 reports a failure.", score=0.9)
    second = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    assert (first["verdict"], second["verdict"]) == ("normal", "anomalous")
    assert first["unjudged_templates"] and not second["unjudged_templates"]
    assert first["id"] != second["id"]
    # decided again with the same verdict once the failed template was judged: a duplicate, not a second alert
    # (review of ef1b635: the unjudged templates split it)
    s, book, err, ok = _two_template_window()
    book.judged(err, None, "", failed="timeout")
    book.judged(ok, "anomalous", "L2 x1 reports a failure.", score=0.9)
    third = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    book.judged(err, "normal", "L1 x1 routine.", score=0.01)
    fourth = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    assert (third["verdict"], fourth["verdict"]) == ("anomalous", "anomalous") and third["unjudged_templates"]
    assert third["id"] == fourth["id"]


def test_an_anomalous_template_without_a_score_carries_the_window_past_its_threshold():
    """Found by review (2026-12-07), failing before its fix: an anomalous answer without a score (an unconstrained
    model, a cache entry from before scores) decided the window, whose score came from its other templates only:
    verdict anomalous with score 0.2 under threshold 0.5, dropped by a consumer filtering on score >= threshold."""
    from rationad.events import build_template_event

    s, book, err, ok = _two_template_window()
    book.judged(err, "anomalous", "L1 x1 reports a failure.", score=None)
    book.judged(ok, "normal", "L1 x1 routine.", score=0.2)
    e = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    assert e["verdict"] == "anomalous" and e["score"] >= e["threshold"]
    book.judged(err, "normal", "L1 x1 routine.", score=None)  # an unscored normal answer adds nothing
    e = build_template_event(s, book.decide(book.uses(s)), ModelInfo("m"), source="bgl", threshold=0.5, now=0)
    assert e["verdict"] == "normal" and e["score"] == 0.2
