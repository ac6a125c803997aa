"""Template-level judging in the daemon (``judge.level = "template"``), with the scripted consumer, fake producer and
fake model of tests/rationad/fakes.py (the real broker and vLLM: tests/integration/test_template_level.py)."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import pytest

import rationad.daemon as daemon_mod
from rationad.config import Settings
from rationad.daemon import Daemon
from rationad.labels import Label
from rationad.model.base import ModelError
from rationad.offsets import PartitionOffsets
from rationad.records import LogLine, Session
from rationad.prompt import cache_key
from rationad.template_book import template_of, template_session
from rationad.templates import template_id
from tests.rationad.fakes import ANOMALOUS, NORMAL, FakeConsumer, FakeModel, FakeProducer, Rec
from tests.rationad.test_daemon import TP, run_until

_patch = pytest.MonkeyPatch()


@pytest.fixture(autouse=True)
def _undo_patches():
    yield
    _patch.undo()


class FakeLabelBook:
    """Stands in for labels.LabelBook (its broker side is tested in tests/integration/test_labels.py)."""

    preset: list[Label] = []

    def __init__(self, kafka, topic, *, on_change=None) -> None:
        self.on_change = on_change

    async def start(self, timeout_secs: float = 30) -> None:
        pass

    def labels(self) -> list[Label]:
        return list(self.preset)

    def __len__(self) -> int:
        return len(self.preset)

    async def aclose(self) -> None:
        pass


def settings(**sections) -> Settings:
    base = {
        "input": {"dialect": "generic"},  # no key: fixed windows over the stream, template level by default
        "sessions": {"mode": "fixed", "window_lines": 3},
        "cache": {"enabled": False},
        "server": {"enabled": False},
        "model": {"retry_backoff_secs": 0.0, "batch_wait_ms": 0},
        "delivery": {"commit_interval_ms": 10, "drain_timeout_secs": 2},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return Settings(**base)


class CountingModel(FakeModel):
    """Counts prompts (one per template) and can be held back until ``release`` is set."""

    def __init__(self, answer=None) -> None:
        super().__init__(answer)
        self.prompts: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        await self.release.wait()
        self.prompts += [c[-1]["content"] for c in conversations]
        return await super().generate(conversations, max_tokens=max_tokens, temperature=temperature, regex=regex)


def make(s: Settings, batches, *, model=None, labels: list[Label] = (), producer: FakeProducer | None = None
         ) -> tuple[Daemon, FakeConsumer, FakeProducer]:
    consumer = FakeConsumer(batches, [TP])
    producer = producer or FakeProducer(max_request_size=1_048_576)

    async def nothing(*a, **kw):
        return 1

    FakeLabelBook.preset = list(labels)
    _patch.setattr("rationad.topics.require_topics", nothing)
    _patch.setattr("rationad.topics.ensure_compacted_topic", nothing)
    _patch.setattr("rationad.labels.LabelBook", FakeLabelBook)
    _patch.setattr(daemon_mod, "make_consumer", lambda cfg, **kw: consumer)
    _patch.setattr(daemon_mod, "make_producer", lambda cfg, **kw: producer)
    return Daemon(s, client=model or CountingModel()), consumer, producer


def recs(lines: list[str], start: int = 0) -> dict:
    return {TP: [Rec(start + i, text.encode()) for i, text in enumerate(lines)]}


def events(producer: FakeProducer, s: Settings) -> list[dict]:
    return [orjson.loads(x.value) for x in producer.on(s.output.topic)]


ROUTINE = [f"INFO served request {i} in {i * 3} ms" for i in range(1, 10)]  # one template
DISK = "ERROR disk sda{n} failed: I/O error at sector {n}"  # another


def test_level_defaults_follow_the_dialect():
    assert Settings(input={"dialect": "hdfs"}).judge_level() == "session"
    assert Settings(input={"dialect": "bgl"}).judge_level() == "template"
    assert settings().judge_level() == "template"
    assert Settings(input={"dialect": "bgl"}, judge={"level": "session"}).judge_level() == "session"


async def test_each_template_is_judged_once_and_windows_are_decided_from_their_templates():
    s = settings(output={"emit_normal": True})
    lines = ROUTINE[:3] + [ROUTINE[3], DISK.format(n=1), ROUTINE[4]] + ROUTINE[5:8] + [DISK.format(n=7)] + ROUTINE[8:] \
        + ROUTINE[:1]
    model = CountingModel()
    d, consumer, producer = make(s, [recs(lines)], model=model)
    await run_until(d, lambda: len(events(producer, s)) == 4)
    evs = sorted(events(producer, s), key=lambda e: e["session"]["first_offset"])  # produced as decided
    assert [e["verdict"] for e in evs] == ["normal", "anomalous", "normal", "anomalous"]
    assert len(model.prompts) == 2, model.prompts  # two templates, whatever the number of windows
    bad = evs[1]
    assert bad["judge_level"] == "template"
    (t,) = bad["templates"]
    assert t["template"] == "ERROR disk sda{*} failed: I/O error at sector {*}"
    assert t["id"] == template_id(t["template"]) and t["source"] == "model" and t["count"] == 1
    assert [x["offset"] for x in t["lines"]] == [4]  # the window's own line of it
    assert bad["evidence"] == [{"ref": "L2", "template": t["template"], "count": 1, "line": DISK.format(n=1),
                                "offset": 4}]
    assert consumer.committed_offset(TP) == len(lines)


async def test_a_template_is_queued_when_first_seen_and_its_window_waits_for_the_verdict():
    s = settings()
    model = CountingModel()
    model.release.clear()  # the model is slow
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=model)
    task = asyncio.create_task(run_until(d, lambda: len(events(producer, s)) == 1))
    for _ in range(200):
        if d.templates and d.templates.waiting_windows == 1:
            break
        await asyncio.sleep(0.01)
    assert d.templates.waiting_windows == 1  # closed, held: nothing committed past it
    assert all(c.get(TP, 0) == 0 for c in consumer.commits)
    model.release.set()
    await task
    assert [e["verdict"] for e in events(producer, s)] == ["anomalous"]
    assert d.metrics.windows_decided.labels("waited")._value.get() == 1


async def test_an_operator_label_wins_over_the_model_for_later_windows_and_is_listed():
    s = settings(output={"emit_normal": True})
    tpl = "ERROR disk sda{*} failed: I/O error at sector {*}"
    label = Label(tpl, "normal", "sda is a scratch disk, failures expected", "oncall", 1.0)
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], labels=[label])
    await run_until(d, lambda: len(events(producer, s)) == 1)
    (ev,) = events(producer, s)
    assert ev["verdict"] == "normal"
    (t,) = ev["templates"]
    assert (t["source"], t["verdict"], t["labelled_by"]) == ("operator", "normal", "oncall")
    assert t["rationale"] == label.reason
    assert d.client.prompts == [p for p in d.client.prompts if "disk" not in p]  # a labelled template costs no call


async def test_a_label_arriving_while_running_flips_the_next_window():
    s = settings()
    tpl = "ERROR disk sda{*} failed: I/O error at sector {*}"
    first = recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])
    second = recs([DISK.format(n=2), ROUTINE[2], ROUTINE[3]], start=3)
    d, consumer, producer = make(s, [first], model=CountingModel())
    task = asyncio.create_task(run_until(d, lambda: consumer.committed_offset(TP) == 6, timeout=15))
    while len(events(producer, s)) < 1:
        await asyncio.sleep(0.01)
    d.templates.on_label(template_id(tpl), Label(tpl, "normal", "expected here", "oncall", 2.0))
    consumer.batches.append(second)
    await task
    assert [e["verdict"] for e in events(producer, s)] == ["anomalous"]  # the second window is normal: no event


async def test_a_template_the_model_rejects_is_dead_lettered_and_the_window_still_decided():
    s = settings(output={"emit_normal": True})

    def answer(text: str) -> str:
        if "disk" in text:
            raise ModelError("400 prompt refused", kind="rejected")
        return NORMAL

    class Rejecting(CountingModel):
        async def generate(self, conversations, **kw):
            for c in conversations:
                answer(c[-1]["content"])
            return await super().generate(conversations, **kw)

    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=Rejecting())
    await run_until(d, lambda: len(events(producer, s)) == 1)
    (ev,) = events(producer, s)
    assert ev["verdict"] == "normal" and ev["unjudged_templates"] == [template_id(
        "ERROR disk sda{*} failed: I/O error at sector {*}")]
    (dl,) = producer.on(s.output.dlq_topic)
    assert dict(dl.headers)["rationad-error-type"] == b"model_rejected"
    assert consumer.committed_offset(TP) == 3
    # It names the line it was met in, as read, and where (review 2026-12-07, failing before: the masked template
    # only, at topic "", partition 0, offset 0)
    assert {k: v for k, v in dl.headers if k.startswith("rationad-source")} == {
        "rationad-source-topic": TP.topic.encode(), "rationad-source-partition": str(TP.partition).encode(),
        "rationad-source-offset": b"0"}
    assert orjson.loads(dl.value)["session"]["example"] == {
        "line": DISK.format(n=1), "topic": TP.topic, "partition": TP.partition, "offset": 0}


async def test_windows_waiting_on_a_failed_template_are_decided_before_its_dead_letter_is_acknowledged():
    """Found by review (2026-12-07), failing before its fix: the windows waiting for a template whose judgement failed
    were decided only once its dead letter was acknowledged, so while the dead-letter topic was unavailable they, and
    their partition's commit, were held (later windows of the template were decided at once)."""
    from aiokafka.errors import KafkaConnectionError

    s = settings(output={"emit_normal": True})
    dlq_down = [True]

    class Rejecting(CountingModel):
        async def generate(self, conversations, **kw):
            if any("disk" in c[-1]["content"] for c in conversations):
                raise ModelError("400 prompt refused", kind="rejected")
            return await super().generate(conversations, **kw)

    producer = FakeProducer(fail=lambda rec: KafkaConnectionError() if rec.topic == s.output.dlq_topic and dlq_down[0]
                            else None)
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=Rejecting(),
                                 producer=producer)
    task = asyncio.create_task(d.run())
    try:
        await _wait(lambda: len(events(producer, s)) == 1)
        (ev,) = events(producer, s)
        assert ev["unjudged_templates"] and producer.on(s.output.dlq_topic) == []  # its dead letter still retried
        dlq_down[0] = False
        await _wait(lambda: len(producer.on(s.output.dlq_topic)) == 1)
    finally:
        await _stop(d, task)


async def test_a_template_served_from_the_book_keeps_its_verdict_cache_entry(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a template the book serves never asks the verdict cache
    again, so the cache evicted the templates judged first, the busiest, and with them their entries in the durable
    table: a restart or a new replica asked the model again for each. Each catalog round keeps the entries of the
    templates it served (made recent, written again to the store)."""
    from rationad import template_stage

    monkeypatch.setattr(template_stage, "CACHE_KEEP_SECS", 0.0, raising=False)
    s = settings(sessions={"window_lines": 1}, cache={"enabled": True, "max_entries": 3})
    hot = "INFO heartbeat from node {n} ok"
    once = [f"WARN fan {w} slow" for w in ("alpha", "beta", "gamma", "delta", "epsilon")]
    model = CountingModel()
    d, consumer, producer = make(s, [recs([hot.format(n=0), once[0]])], model=model)
    task = asyncio.create_task(d.run())
    try:
        for i in range(1, len(once)):
            assert await _wait(lambda: len(model.prompts) == i + 1)
            d.templates.catalog_records()  # a catalog round
            consumer.batches.append(recs([hot.format(n=i), once[i]], start=2 * i))
        assert await _wait(lambda: len(model.prompts) == len(once) + 1)
        view = d.judge.view(template_session("INFO heartbeat from node {*} ok"))
        assert d.judge.cache.get(cache_key(view, d.judge.start(view))) is not None
    finally:
        await _stop(d, task)


async def test_a_labelled_template_keeps_the_model_s_verdict_across_a_restart_without_a_model_call():
    """Found by review (2026-12-07), failing before its fix: a labelled template is never sent to the model, so after
    a restart (labels loaded before any line) its catalog record said "pending" and events lost its model_verdict,
    though docs/operations.md says the model's verdict stays shown beside the label. It is read from the verdict
    cache, whose entry is kept while the label stands."""
    from rationad.catalog import decode_stat

    s = settings(cache={"enabled": True})
    tpl = "ERROR disk sda{*} failed: I/O error at sector {*}"
    first, _, _ = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])])
    task = asyncio.create_task(first.run())
    assert await _wait(lambda: len(first.client.prompts) == 2)
    await _stop(first, task)
    label = Label(tpl, "normal", "sda is a scratch disk", "oncall", 1.0)
    model = CountingModel()
    s = settings(cache={"enabled": True}, output={"emit_normal": True})
    d, consumer, producer = make(s, [recs([DISK.format(n=2), ROUTINE[0], ROUTINE[1]])], model=model, labels=[label])
    d.judge.cache = first.judge.cache  # what a restart recovers from the durable table
    await run_until(d, lambda: len(events(producer, s)) == 1)
    assert not any("disk" in p for p in model.prompts)  # still no model call for a labelled template
    (ev,) = events(producer, s)
    (t,) = [t for t in ev["templates"] if t["template"] == tpl]
    assert (ev["verdict"], t["source"], t["model_verdict"]) == ("normal", "operator", "anomalous")
    stats = {st.template: st for st in (decode_stat(r.key, r.value) for r in producer.on(s.judge.templates_topic))}
    assert (stats[tpl].verdict, stats[tpl].source) == ("anomalous", "model")


async def test_the_catalog_gets_every_changed_template_with_its_counts():
    s = settings()
    lines = [ROUTINE[0], ROUTINE[1], DISK.format(n=1)]
    d, consumer, producer = make(s, [recs(lines)])
    await run_until(d, lambda: len(events(producer, s)) == 1)  # stopping publishes what changed
    from rationad.catalog import decode_stat

    stats = {st.template: st for st in (decode_stat(r.key, r.value) for r in producer.on(s.judge.templates_topic))}
    assert stats["INFO served request {*} in {*} ms"].count == 2
    assert stats["INFO served request {*} in {*} ms"].verdict == "normal"
    assert stats["ERROR disk sda{*} failed: I/O error at sector {*}"].verdict == "anomalous"
    assert {st.source for st in stats.values()} == {"model"}


async def test_a_catalog_record_the_producer_refuses_costs_only_itself():
    """Found by review (2026-12-06), failing before its fix: a record the producer refused at once (over its size
    limit: a huge template) ended the publish round, and the changes after it were lost until their templates were
    seen again."""
    from aiokafka.errors import MessageSizeTooLargeError

    s = settings()
    d, consumer, producer = make(s, [recs([ROUTINE[0], ROUTINE[1], DISK.format(n=1)])])
    await run_until(d, lambda: len(events(producer, s)) == 1)
    for st in d.templates.book.states():
        st.dirty = True
    sent = []

    class Refusing:
        async def send(self, topic, key, value):
            if not sent and not getattr(self, "refused", False):
                self.refused = True
                raise MessageSizeTooLargeError("too large")
            sent.append(key)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    changed = len(d.templates.book.states())
    assert changed >= 2
    assert await d.templates.publish(Refusing()) == changed - 1 and len(sent) == changed - 1


class _CatalogProducer:
    """Acknowledges catalog records, or fails each send's future (a broker hiccup) while ``failing``."""

    def __init__(self) -> None:
        self.failing = False
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, topic, key, value):
        from aiokafka.errors import KafkaTimeoutError

        fut = asyncio.get_running_loop().create_future()
        if self.failing:
            fut.set_exception(KafkaTimeoutError("leader moved"))
        else:
            self.sent.append((key, value))
            fut.set_result(None)
        return fut


def _catalog_stage(**cache):
    from rationad.events import ModelInfo
    from rationad.metrics import Metrics
    from rationad.template_stage import TemplateStage

    s = Settings(input={"dialect": "generic"}, sessions={"mode": "fixed", "window_lines": 3},
                 server={"enabled": False}, cache=cache)
    return TemplateStage(s, None, None, ModelInfo("m"), Metrics(), "src", spawn=None, instance="g:i")


def _latest(sent):
    from rationad.catalog import aggregate, decode_stat

    return {st.id: st for st in aggregate(decode_stat(k, v) for k, v in sent)}


async def test_a_catalog_record_whose_send_failed_is_sent_again_next_round():
    """Found by review (2026-12-07): a template was marked published before its record was acknowledged, so a
    failed send lost the model's verdict from the catalog until the template changed again, which a rare template
    may never do (``rationad templates --verdict anomalous`` did not list it)."""
    ts, p = _catalog_stage(), _CatalogProducer()
    st = ts.book.observe("ERROR raid controller fault", 1000.0)
    await ts.publish(p)
    ts.book.judged(st.template, "anomalous", "L1 reports a fault.", score=0.9)
    p.failing = True
    assert await ts.publish(p) == 0
    p.failing = False
    assert await ts.publish(p) == 1
    assert _latest(p.sent)[st.id].verdict == "anomalous"
    assert await ts.publish(p) == 0  # and once written, not again


async def test_a_template_forgotten_with_a_change_unpublished_is_published_next_round():
    """Found by review (2026-12-07): a full book forgets its least recently seen template, and one whose verdict
    arrived while it was that template was forgotten before the next round: the catalog kept it "pending"."""
    ts, p = _catalog_stage(max_entries=3), _CatalogProducer()
    book = ts.book
    routine = [f"INFO service{c} request done" for c in "abc"]
    for m in routine:
        book.judged(book.observe(m, 1.0).template, "normal", "routine")
    rare = book.observe("ERROR raid controller fault", 2.0)
    book.start_judging(rare)
    await ts.publish(p)
    for m in routine:
        book.observe(m, 3.0)
    book.judged(rare.template, "anomalous", "L1 reports a fault.", score=0.97)
    assert book.get(rare.id) is None  # forgotten at once
    await ts.publish(p)
    assert _latest(p.sent)[rare.id].verdict == "anomalous"


async def test_a_hostile_catalog_count_is_refused_and_one_unwritable_record_costs_only_itself():
    """Found by review (2026-12-07): a catalog record of this replica with a count of 2^64 - 1 was read back as its
    own count at restart; the next line made it 2^64, which JSON cannot encode, and every round raised, losing the
    other templates' records too."""
    from rationad.catalog import decode_stat

    ts, p = _catalog_stage(), _CatalogProducer()
    hot = template_of("INFO heartbeat from node 12 ok")
    value = orjson.dumps({"v": 1, "template": hot, "verdict": None, "source": "pending", "rationale": "",
                          "model_version": "x", "count": 2**64 - 1, "first_seen": 1.0, "last_seen": 2.0,
                          "instance": "g:i"})
    with pytest.raises(ValueError, match="count must be an integer from 0 to 2"):
        decode_stat(f"{template_id(hot)}/g:i".encode(), value)
    ts.book.carry_counts({template_id(hot): (2**64 - 1, 1.0)})  # had it been let through
    ts.book.observe("INFO heartbeat from node 12 ok", 10.0)
    ts.book.observe("WARN queue 3 slow", 10.0)
    assert await ts.publish(p) == 1  # the other template's record is written
    assert [k.split(b"/")[0].decode() for k, _ in p.sent] == [template_id(template_of("WARN queue 3 slow"))]


async def test_session_level_stays_as_it_was():
    s = settings(judge={"level": "session"}, output={"emit_normal": True})
    model = CountingModel(lambda text: ANOMALOUS if "ERROR" in text else NORMAL)
    d, consumer, producer = make(s, [recs(ROUTINE[:3] + ROUTINE[3:6])], model=model)
    await run_until(d, lambda: len(events(producer, s)) == 2)
    assert len(model.prompts) == 1  # two identical-looking windows: one call through the verdict dedup
    assert {e["judge_level"] for e in events(producer, s)} == {"session"}
    assert d.templates is None


async def test_a_window_waiting_on_a_revoked_partition_is_dropped_for_its_new_owner():
    s = settings()
    model = CountingModel()
    model.release.clear()
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=model)
    task = asyncio.create_task(d.run())
    try:
        for _ in range(300):
            if d.templates and d.templates.waiting_windows == 1:
                break
            await asyncio.sleep(0.01)
        assert d.templates.waiting_windows == 1
        await d._on_revoked([TP])
        assert all(c.get(TP, 0) == 0 for c in consumer.commits)  # the new owner re-reads the window
        model.release.set()
        for _ in range(300):
            if d.delivery.held == 0:
                break
            await asyncio.sleep(0.01)
        assert d.delivery.held == 0 and events(producer, s) == []  # decided, but not ours to emit any more
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_a_model_with_neighbours_sees_operator_labels_among_them(tmp_path):
    from rationad.neighbours import Known, NeighbourIndex
    from rationad.template_book import template_session

    spec = NeighbourIndex([Known("ERROR fan {*} failed", "anomalous", "a hardware error")]).save(
        tmp_path / "neighbours.json") | {"k": 2}
    (tmp_path / "manifest.json").write_text(orjson.dumps({"name": "m", "neighbours": spec}).decode())
    s = settings(model={"path": str(tmp_path)})
    preset = Label("ERROR disk sdz{*} failed: I/O error", "normal", "disk drill on this rack", "oncall", 1.0)
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], labels=[preset])
    await run_until(d, lambda: consumer.committed_offset(TP) == 3)
    (disk,) = [p for p in d.client.prompts if "I/O error at sector" in p]
    # the operator's label (loaded at start) is the nearest known template; the shipped one follows
    assert 'N1 normal "ERROR disk sdz{*} failed: I/O error" reason "disk drill on this rack"' in disk
    assert 'N2 anomalous "ERROR fan {*} failed" reason "a hardware error"' in disk
    # a label cleared while running leaves the neighbours
    d._on_label(preset.id, None)
    view = d.judge.view(template_session("ERROR disk sda{*} failed: I/O error at sector {*}"))
    assert [n.label for n in view.neighbours] == ["anomalous"]


Y_LINE = "WARN cache {n} slow"  # a third template


class GatedModel(FakeModel):
    """Answers ERROR/disk anomalous, else normal; a prompt containing a gated word waits for its gate."""

    def __init__(self) -> None:
        super().__init__(lambda text: ANOMALOUS if "disk" in text else NORMAL)
        self.gates: dict[str, asyncio.Event] = {}

    async def generate(self, conversations, **kw):
        for word, ev in self.gates.items():
            if any(word in c[-1]["content"] for c in conversations):
                await ev.wait()
        return await super().generate(conversations, **kw)


async def _wait(cond, secs=5.0):
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def _stop(d, task):
    d.request_stop()
    await asyncio.wait_for(task, 20)


# ---- found by review (2026-12-03): each failed before its fix
async def test_window_is_decided_when_a_label_is_cleared_while_it_waits_on_another_template():
    """X is known by its label, the window waits for Y; the label is cleared (X goes to the model), Y is judged first:
    the window must wait for X now, not be dropped from every waiting list (its offset would never commit)."""
    s = settings()
    x_tpl = template_of(DISK.format(n=1))
    label = Label(x_tpl, "normal", "scratch disk", "oncall", 1.0)
    model = GatedModel()
    model.gates = {"disk": asyncio.Event(), "served request": asyncio.Event()}  # both slow
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=model, labels=[label])
    task = asyncio.create_task(d.run())
    try:
        assert await _wait(lambda: d.templates and d.templates.waiting_windows == 1)  # waits on ROUTINE only
        d.templates.on_label(label.id, None)   # label cleared: X unknown again, sent to the model (gated)
        model.gates["served request"].set()    # ROUTINE judged first: window dropped from every waiting list
        await asyncio.sleep(0.3)
        model.gates["disk"].set()              # X judged: nothing left to wake the window
        decided = await _wait(lambda: consumer.committed_offset(TP) == 3, 3)
        assert decided, (f"window never decided: waiting_windows={d.templates.waiting_windows}, "
                         f"held={d.delivery.held}, _waiting={ {k: len(v) for k, v in d.templates._waiting.items()} }")
    finally:
        await _stop(d, task)


async def test_a_label_counts_for_a_waiting_window_whose_template_was_evicted():
    """The book (bound 1: a template waiting for the model does not count) evicts X, judged, while a window of X and
    Y waits for Y; a label on X given then decides that window (a label wins for every window decided after it)."""
    s = settings(cache={"max_entries": 1})  # the template book's bound
    model = GatedModel()
    model.gates = {"cache": asyncio.Event()}  # Y slow
    d, consumer, producer = make(s, [recs([DISK.format(n=1)])], model=model)
    x = template_of(DISK.format(n=1))
    task = asyncio.create_task(d.run())
    try:
        assert await _wait(lambda: (st := d.templates.book.get(template_id(x))) is not None and st.known)
        consumer.batches.append(recs([Y_LINE.format(n=1), Y_LINE.format(n=2)], start=1))   # window 0-2 waits on Y
        assert await _wait(lambda: d.templates.waiting_windows == 1)
        consumer.batches.append(recs([ROUTINE[0], ROUTINE[1], ROUTINE[2]], start=3))    # new template: X evicted
        assert await _wait(lambda: d.templates.book.get(template_id(x)) is None)
        d.templates.on_label(template_id(x), Label(x, "normal", "scratch disk", "oncall", 2.0))  # label wins...
        model.gates["cache"].set()
        assert await _wait(lambda: consumer.committed_offset(TP) == 6)
        # ... for every window decided after it: the window (decided now) must be normal (no event, emit_normal off)
        assert [e["verdict"] for e in events(producer, s)] == [], events(producer, s)
    finally:
        await _stop(d, task)


async def test_event_matches_the_decision_it_was_built_from():
    """A label landing between a window's decision and its send does not give an event whose templates contradict
    its verdict: the event is built when the window is decided."""
    s = settings()
    d, consumer, producer = make(s, [])
    ts = d.templates
    d.delivery.producer = producer
    st = ts.book.observe(DISK.format(n=1), 1.0)
    ts.book.judged(st.template, "anomalous", "L1 x1 disk failed.", score=0.9, now=1.0)
    spawned = []
    ts._spawn = lambda coro, name: spawned.append(coro)
    line = LogLine(key="k", message=DISK.format(n=1), raw=DISK.format(n=1), offset=0)
    session = Session(key="k", lines=[line], close_reason="window_full", topic=TP.topic, partition=TP.partition)
    ts.close(session, d.delivery.hold(PartitionOffsets(), 0), 1.0, lambda: False)  # decided anomalous now
    ts.on_label(st.id, Label(st.template, "normal", "scratch disk", "oncall", 2.0))  # lands before the task runs
    await spawned[0]
    (ev,) = events(producer, s)
    assert ev["verdict"] == "anomalous"
    t_verdicts = [t["verdict"] for t in ev["templates"]]
    assert "anomalous" in t_verdicts and ev["evidence"], (ev["verdict"], t_verdicts, ev["rationale"], ev["evidence"])


async def test_window_rationale_cites_only_its_anomalous_templates_refs():
    """A template's rationale was written about its own one-row prompt (``L1 x1``): in the window's rationale that
    row is the template's place in the window."""
    s = settings()
    d, consumer, producer = make(s, [recs([ROUTINE[0], DISK.format(n=1), DISK.format(n=2)])], model=GatedModel())
    await run_until(d, lambda: len(events(producer, s)) == 1)
    (ev,) = events(producer, s)
    refs = {e["ref"] for e in ev["evidence"]}
    assert refs == {"L2"}
    assert "L1" not in ev["rationale"] and "L2" in ev["rationale"], ev["rationale"]  # L1: the normal ROUTINE template


async def test_a_template_the_model_failed_is_retried_by_the_daemons_clock():
    """Found by review (2026-12-04), failing before its fix: a failed template's time was the system clock's while
    lines are seen by the daemon's (rationad.clock), so with the wall clock stepped back the retry after
    FAILED_RETRY_SECS waited as long again (here, with the clocks far apart, for ever)."""
    from rationad.clock import SteadyClock
    from rationad.template_book import FAILED_RETRY_SECS

    t = {"wall": 1_000_000.0, "mono": 0.0}
    answered: list[str] = []

    class RejectingUntilLater(CountingModel):  # refuses the disk template until the retry is due
        async def generate(self, conversations, **kw):
            if t["mono"] < FAILED_RETRY_SECS and any("disk" in c[-1]["content"] for c in conversations):
                raise ModelError("400 prompt refused", kind="rejected")
            answered.extend(c[-1]["content"] for c in conversations if "disk" in c[-1]["content"])
            return await super().generate(conversations, **kw)

    s = settings()
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=RejectingUntilLater())
    d.clock = SteadyClock(wall=lambda: t["wall"], mono=lambda: t["mono"])
    task = asyncio.create_task(d.run())
    try:
        assert await _wait(lambda: len(producer.on(s.output.dlq_topic)) == 1)  # the first answer failed
        t["wall"], t["mono"] = t["wall"] - 3_600, FAILED_RETRY_SECS + 1  # stepped back; the retry is due
        consumer.batches.append(recs([DISK.format(n=2), ROUTINE[2], ROUTINE[3]], start=3))
        assert await _wait(lambda: len(answered) == 1), "the failed template was not asked again"
    finally:
        await _stop(d, task)


async def test_a_window_closing_while_a_failed_template_is_retried_waits_for_the_retry():
    """Found by review (2026-12-07), failing before its fix: a failed template counted as known while its retry was in
    flight, so the window holding the very line that sent it to the model again was decided at once with it
    unjudged (normal), and the retry's verdict reached no event of it."""
    from rationad.clock import SteadyClock
    from rationad.template_book import FAILED_RETRY_SECS

    t = {"wall": 1_000_000.0, "mono": 0.0}

    class RejectingUntilLater(CountingModel):
        async def generate(self, conversations, **kw):
            if t["mono"] < FAILED_RETRY_SECS and any("disk" in c[-1]["content"] for c in conversations):
                raise ModelError("503 overloaded", kind="rejected")
            return await super().generate(conversations, **kw)

    s = settings(output={"emit_normal": True})
    d, consumer, producer = make(s, [recs([DISK.format(n=1), ROUTINE[0], ROUTINE[1]])], model=RejectingUntilLater())
    d.clock = SteadyClock(wall=lambda: t["wall"], mono=lambda: t["mono"])
    task = asyncio.create_task(d.run())
    try:
        assert await _wait(lambda: len(events(producer, s)) == 1)  # decided with the template unjudged
        t["mono"] = FAILED_RETRY_SECS + 1
        consumer.batches.append(recs([DISK.format(n=2), ROUTINE[2], ROUTINE[3]], start=3))
        assert await _wait(lambda: len(events(producer, s)) == 2)
        later = events(producer, s)[1]
        assert later["unjudged_templates"] == [] and later["verdict"] == "anomalous"
    finally:
        await _stop(d, task)


async def test_two_templates_sharing_an_id_are_judged_apart_and_no_window_waits_for_ever():
    """Found by review (2026-12-04), failing before its fix (the book test: tests/rationad/test_template_book.py):
    with a crafted 12-digit id collision, the first template's verdict never came and every later window holding it
    waited for ever, pinning the partition's commit while input flowed."""
    import rationad.template_book as tb

    a, b = "ERROR disk sda1 failed: I/O error at sector 1", "WARN fan speed low on rack"
    ta, tb_ = template_of(a), template_of(b)
    real = tb.template_id
    _patch.setattr(tb, "template_id", lambda t: "t-0000000000aa" if t in (ta, tb_) else real(t))
    s = settings(output={"emit_normal": True})
    batches = [recs([a, b, ROUTINE[0]], 0), recs([ROUTINE[1], ROUTINE[2], ROUTINE[3]], 3), recs([a, ROUTINE[4],
                                                                                                 ROUTINE[5]], 6)]
    d, consumer, producer = make(s, batches)
    await run_until(d, lambda: consumer.committed_offset(TP) == 9, timeout=10)
    got = sorted((e["session"]["first_offset"], e["verdict"]) for e in events(producer, s))
    assert got == [(0, "anomalous"), (3, "normal"), (6, "anomalous")]


async def test_a_template_flagged_on_void_evidence_is_served_normal_and_shown_with_the_models_answer():
    """0.3.1 flagged every Proxifier template with "L1 contains 'close': a network or service connection problem":
    the word is in the line but names no trouble. The window is normal; its event lists the template with the
    answer the model wrote and why it was not served (rationale_problems)."""
    s = settings(output={"emit_normal": True})
    close = "proxy.cse.cuhk.edu.hk:5070 close, 403 bytes sent, 426 bytes received, lifetime 00:02"
    void = ("<think>L1 contains 'close': a network or service connection problem. This signals trouble: anomalous."
            "</think>\n<answer>anomalous</answer>")
    held = ("<think>L1 contains 'failed': an operation failed or a component reports an error. This signals trouble: "
            "anomalous.</think>\n<answer>anomalous</answer>")
    model = CountingModel(lambda text: void if "close" in text else held if "ERROR" in text else NORMAL)
    lines = [close, ROUTINE[0], ROUTINE[1], close.replace("5070", "5071"), DISK.format(n=1), ROUTINE[2]]
    d, consumer, producer = make(s, [recs(lines)], model=model)
    await run_until(d, lambda: len(events(producer, s)) == 2)
    first, second = sorted(events(producer, s), key=lambda e: e["session"]["first_offset"])
    assert first["verdict"] == "normal", first
    (t,) = first["templates"]
    assert t["verdict"] == "normal" and t["model_verdict"] == "anomalous"
    assert t["rationale_problems"][-1].startswith("unsupported:"), t["rationale_problems"]
    assert second["verdict"] == "anomalous"  # a failure word the line holds: served as the model answered
    assert [x["verdict"] for x in second["templates"]] == ["normal", "anomalous"]


async def test_a_window_of_long_anomalous_templates_reaches_the_output_topic():
    """Found by review (2026-12-06), failing before its fix: three 60 KB lines whose templates are twice as long
    (each digit run a variable) made a 1.6 MB event; it was dead-lettered as undeliverable and the anomaly never
    reached the output topic. The event is cut to fit (events.fit_template_event)."""
    from tests.rationad.test_daemon import final_commit

    s = settings()
    lines = [f"ERROR{c} " + "1\x01" * 30000 for c in "ABC"]
    d, consumer, producer = make(s, [recs(lines)], model=CountingModel())
    await run_until(d, lambda: final_commit(consumer) == 3)
    (e,) = events(producer, s)
    assert e["verdict"] == "anomalous" and len(e["templates"]) + e.get("omitted_templates", 0) == 3
    assert producer.on(s.output.dlq_topic) == []


async def test_a_window_that_waited_for_a_template_verdict_counts_as_a_model_wait_in_the_latency():
    """Found by review (2026-12-06), failing before its fix: every template-level window was recorded as
    cache="hit", also those that waited minutes for a template's model call, so RationadSlowVerdicts (which watches
    cache="miss") could never fire at template level, the default for bgl and generic."""
    s = settings(output={"emit_normal": True})
    d, consumer, producer = make(s, [recs(ROUTINE[:3])], model=CountingModel())  # waits for its template

    def count(how: str) -> float:
        return d.metrics.registry.get_sample_value("rationad_session_latency_seconds_count", {"cache": how}) or 0

    def second_window_once_the_first_is_out() -> bool:
        if len(events(producer, s)) == 1 and not consumer.batches:
            consumer.batches.append(recs(ROUTINE[3:6], start=3))  # the same template, known by now
        return len(events(producer, s)) == 2

    await run_until(d, second_window_once_the_first_is_out)
    assert (count("miss"), count("hit")) == (1, 1)


async def test_one_fetch_of_distinct_lines_stops_at_the_pending_limit_and_loses_nothing():
    """Found by review: the pending limit was checked only between fetches, and at template level every new template
    is a pending judgement, so one fetch of distinct lines queued far past it (400,000 templates, 700 MB, from 2 MiB
    of records). The batch now stops at the limit and the rest waits in Kafka."""
    _patch.setattr(daemon_mod, "YIELD_EVERY_LINES", 10)
    s = settings(delivery={"max_pending_sessions": 20}, output={"emit_normal": True})
    words = [a + b for a in "bcdfghjklmnpqrstvwxz" for b in "aeiou"]  # 100 distinct words, no digits: 100 templates
    lines = [f"INFO job {w} started" for w in words] + [f"INFO job {w} started" for w in words[:50]]
    model = CountingModel()
    model.release.clear()
    d, consumer, producer = make(s, [recs(lines)], model=model)
    most = 0

    async def watch():
        nonlocal most
        while True:
            most = max(most, d.delivery.held)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    task = asyncio.create_task(run_until(d, lambda: consumer.committed_offset(TP) == len(lines), timeout=30))
    for _ in range(300):
        if consumer.seeks:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert consumer.seeks and consumer.paused, "the batch went on past the pending limit"
    assert most <= 20 + 10 + 4, most  # the limit, one yield interval of lines, their windows
    model.release.set()
    assert await task == 0
    watcher.cancel()
    spans = sorted((e["session"]["first_offset"], e["session"]["last_offset"]) for e in events(producer, s))
    # every line in exactly one decided window of three: nothing lost, nothing twice
    assert spans == [(i, i + 2) for i in range(0, len(lines), 3)], spans
    assert len(model.prompts) == 100  # each template judged once
    # records read again after the stop are counted once (review: the whole batch was counted each time it was cut)
    assert d.metrics.records_received.labels(TP.topic)._value.get() == len(lines)


async def test_a_long_line_is_masked_once_not_again_when_its_window_closes():
    """Found by review: a message past the template memo's key size (8,192 characters) was masked as it arrived and
    again when its window closed, about 20 ms each for 60 KB on the event loop."""
    import rationad.template_book as book_mod

    calls = []
    real = book_mod.to_template

    def counted(message):
        calls.append(len(message))
        return real(message)

    _patch.setattr(book_mod, "to_template", counted)
    s = settings(output={"emit_normal": True})
    long_line = "INFO " + "payload " * 2000  # 16 KB: past the memo
    d, consumer, producer = make(s, [recs([long_line, ROUTINE[0], ROUTINE[1]])])
    await run_until(d, lambda: len(events(producer, s)) == 1)
    assert sum(1 for n in calls if n > 8192) == 1, calls


async def test_forgotten_templates_awaiting_the_catalog_are_bounded_in_bytes_too():
    """Found by review (2026-12-07), failing before its fix: while the catalog topic refused writes (a missing Write
    grant, a partition without a leader: retriable), every forgotten template's state waited for the next round,
    bounded by count only (judge templates: 100,000 of up to 64 KB each), so distinct long lines grew memory far past
    cache.max_bytes. The waiting ones are held within cache.max_bytes as well, the oldest given up first."""
    ts, p = _catalog_stage(max_bytes=1024 * 1024), _CatalogProducer()
    p.failing = True  # retriable: every record is kept for the next round
    for i in range(300):
        st = ts.book.observe(f"ERROR hostile {chr(97 + i % 26)}{chr(97 + i // 26)} " + "x" * 60_000, 1000.0 + i)
        ts.book.start_judging(st)
        ts.book.judged(st.template, "normal", "routine", score=0.1)
        if i % 30 == 29:
            await ts.publish(p)
    held = ts.book.take_unpublished()
    assert ts.book.bytes <= ts.book.max_bytes
    assert len(held) >= 10 and sum(st.nbytes for st in held) <= ts.book.max_bytes  # was 17 MiB of template text
    number = [ord(st.template[14]) - 97 + 26 * (ord(st.template[15]) - 97) for st in held]
    assert number == sorted(number) and number[-1] >= 250  # the newest kept, the oldest given up


async def test_a_label_replaced_by_another_template_s_on_a_shared_id_sends_the_first_to_the_model():
    """A crafted id collision (review 2026-12-07): X was known by its label alone; a label for Y on the same id
    replaces it (the labels topic keeps one label an id), so X has no verdict any more and goes to the model, as a
    cleared label's template does, instead of keeping the replaced label on this replica only."""
    import rationad.labels as labels_mod
    import rationad.template_book as book_mod

    x, y = template_of(DISK.format(n=1)), template_of(Y_LINE.format(n=1))
    real = template_id
    shared = lambda t: "t-0000000000aa" if t in (x, y) else real(t)  # noqa: E731
    for mod in (book_mod, labels_mod, daemon_mod):
        if hasattr(mod, "template_id"):
            _patch.setattr(mod, "template_id", shared)
    _patch.setattr(sys.modules["rationad.template_stage"], "template_id", shared)
    lx = Label(x, "normal", "scratch disk", "oncall", 1.0)
    model = CountingModel()
    d, consumer, _ = make(settings(), [recs([DISK.format(n=1), DISK.format(n=2), DISK.format(n=3)])], model=model,
                          labels=[lx])
    task = asyncio.create_task(d.run())
    try:
        assert await _wait(lambda: consumer.committed_offset(TP) == 3)
        assert model.prompts == []  # X decided by its label
        d.templates.on_label("t-0000000000aa", Label(y, "anomalous", "cache dying", "oncall", 2.0))
        assert await _wait(lambda: any("disk" in p for p in model.prompts))
        assert d.templates.book.state(x).label is None
    finally:
        await _stop(d, task)
