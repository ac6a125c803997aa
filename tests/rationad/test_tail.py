"""``rationad tail`` shows log text (rationale, cited lines, session keys) from the verdict topic to a person's
terminal: nothing in it may drive the terminal (clear the screen, ring the bell, set the title, hide text)."""

from __future__ import annotations

import re

import orjson
import pytest

from rationad.tail import _COLOURS, format_event, render

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x07 \x9b31m \u202eevil\u2066 \x7f\x00 \u200fRLM \u061cALM \u200eLRM"


def hostile_event() -> dict:
    return {
        "id": "e\x1b[1A1",
        "verdict": "anomalous",
        "rationale": f"L1 says {HOSTILE}\nANOMALOUS blk_fake forged header",
        "evidence": [{"ref": "L1\x1b[0m", "count": 2, "offset": 5, "line": f"081109 INFO {HOSTILE} blk_1"}],
        "grounded": False,
        "ungrounded_refs": ["L9\x07"],
        "rationale_problems": [f"quote: {HOSTILE}"],
        "session": {"key": "blk_1\x1b[8m", "line_count": 3, "first_time": "t0\x1b[K", "last_time": None},
    }


def terminal_controls(text: str) -> list[str]:
    """Every character a terminal may act on, other than newline: C0 (tab aside), DEL, C1, bidi controls."""
    return [ch for ch in text if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F
            or "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" or ch in "\u2028\u2029\u061c\u200e\u200f"]


@pytest.mark.parametrize("colour", [False, True])
def test_hostile_log_text_cannot_drive_the_terminal(colour):
    out = render(hostile_event(), colour)
    own = out
    for code in _COLOURS.values():  # the program's own colours stay
        own = own.replace(code, "")
    assert terminal_controls(own) == [], terminal_controls(own)
    if colour:
        assert _COLOURS["anomalous"] in out and _COLOURS["end"] in out
    else:
        assert terminal_controls(out) == []
    # shown, escaped, not dropped: the operator can see that the line held them
    assert "\\x1b[2J" in out and "\\x07" in out and "\\u202e" in out and "\\x9b" in out
    # a newline in the rationale cannot start a line that looks like another event's header
    assert not any(re.match(r"(\S+ +)?ANOMALOUS", line) for line in out.splitlines()[1:])


def test_json_output_is_escaped_too_and_still_the_same_event():
    event = hostile_event()
    out = format_event(event, colour=False, as_json=True)
    assert terminal_controls(out) == [] and "\n" not in out
    assert orjson.loads(out) == event


def test_plain_event_renders_as_before():
    event = {"id": "abc", "verdict": "normal", "rationale": " L1 is a routine write. ",
             "evidence": [{"ref": "L1", "count": 4, "offset": 12, "line": "081109 INFO write\tblk_7"}],
             "grounded": True, "session": {"key": "blk_7", "line_count": 4, "first_time": "t0", "last_time": "t1"}}
    assert render(event, False).splitlines() == [
        "NORMAL    blk_7 4 lines, t0 .. t1, id abc",
        "  L1 is a routine write.",
        "  L1 x4 @12: 081109 INFO write\tblk_7",
    ]


def test_what_the_session_refutes_is_shown_under_the_rationale():
    event = {"id": "abc", "verdict": "anomalous", "rationale": "L1 x5 receive start.", "evidence": [], "grounded": True,
             "rationale_problems": ["count: says L1 x5, the session has it 3 times"],
             "session": {"key": "blk_7", "line_count": 3, "first_time": "t0", "last_time": "t1"}}
    assert render(event, False).splitlines()[-1] == "  (not so: count: says L1 x5, the session has it 3 times)"


def test_a_revision_says_how_many_earlier_lines_it_was_judged_with():
    event = {"id": "abc", "verdict": "normal", "rationale": "L1 ...", "evidence": [], "grounded": True,
             "session": {"key": "blk_7", "line_count": 2, "first_time": "t0", "last_time": "t1", "revision": 3,
                         "context_lines": 25}}
    head = "NORMAL    blk_7 revision 3 (+25 earlier lines), 2 lines, t0 .. t1, id abc"
    assert render(event, False).splitlines()[0] == head


def _fake_consumer(monkeypatch, batch: dict) -> None:
    """aiokafka's consumer replaced by one that returns ``batch`` (partition -> record values) once, then nothing."""
    from types import SimpleNamespace

    import aiokafka

    class Consumer:
        def __init__(self, *a, **kw):
            self.batches = [{tp: [SimpleNamespace(value=v, offset=n) for n, v in enumerate(values)]
                             for tp, values in batch.items()}]

        async def start(self):
            pass

        async def stop(self):
            pass

        async def getmany(self, timeout_ms=0):
            return self.batches.pop(0) if self.batches else {}

        def assignment(self):
            return set()

    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", Consumer)


@pytest.mark.parametrize("key", [None, "k"])
async def test_tail_skips_records_that_are_json_but_not_events(monkeypatch, key):
    """Found by review (2026-12-03), failing before its fix: a JSON list, or an event whose ``session`` is null,
    raised AttributeError and ended the on-call operator's tail (records that are not JSON were already skipped)."""
    import io

    from rationad import tail as tail_mod
    from rationad.config import Settings

    _fake_consumer(monkeypatch, {"tp": [b"[1, 2]", b'{"session": null, "verdict": "anomalous", "evidence": [3]}',
                                        b'{"verdict": "anomalous", "session": {"key": "k"}}']})
    out = io.StringIO()
    assert await tail_mod.tail(Settings(), key=key, limit=1, idle_exit_secs=0.5, out=out) == 1
    assert "ANOMALOUS" in out.getvalue()
    assert render({"session": None, "evidence": [3, {"line": "x"}], "ungrounded_refs": "L1"}, False)


async def test_tail_limit_stops_at_its_count_across_partitions(monkeypatch):
    """Found by review (2026-12-06), failing before its fix: --limit broke only the loop over one partition's
    records; a batch of three partitions printed three events for --limit 1."""
    import io

    from rationad import tail as tail_mod
    from rationad.config import Settings

    def event(key):
        return b'{"verdict": "anomalous", "session": {"key": "%s"}}' % key.encode()

    _fake_consumer(monkeypatch, {"tp0": [event("a"), event("b")], "tp1": [event("c")], "tp2": [event("d")]})
    out = io.StringIO()
    assert await tail_mod.tail(Settings(), limit=1, idle_exit_secs=0.2, out=out) == 1
    assert out.getvalue().count("ANOMALOUS") == 1


@pytest.mark.parametrize("as_json", [False, True])
async def test_tail_skips_a_record_nested_deeper_than_it_can_write_back(monkeypatch, as_json):
    """Found by review (2026-12-07), failing before its fix: a record on the output topic nested a few hundred levels
    deep (orjson reads 1,024, writes 254; repr gives up at about 1,000) ended tail with a traceback, and the events
    after it were never shown."""
    import io

    from rationad import tail as tail_mod
    from rationad.config import Settings

    deep = b'{"verdict": "anomalous", "session": {"key": "k"}, "rationale": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    good = b'{"verdict": "anomalous", "session": {"key": "after"}}'
    _fake_consumer(monkeypatch, {"tp": [deep, good]})
    out = io.StringIO()
    assert await tail_mod.tail(Settings(), limit=1, idle_exit_secs=0.5, as_json=as_json, out=out) == 1
    assert "after" in out.getvalue()


async def test_idle_exit_counts_the_time_without_events_shown(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: "exit after this many seconds without events" was reset
    by every record fetched, events the filters dropped included: ``--verdict anomalous --idle-exit 1`` never exited
    while normal events flowed."""
    import asyncio
    import io
    from types import SimpleNamespace

    import aiokafka

    from rationad import tail as tail_mod
    from rationad.config import Settings

    class Flowing:  # a normal event every poll, for ever
        def __init__(self, *a, **kw):
            self.n = 0

        async def start(self):
            pass

        async def stop(self):
            pass

        def assignment(self):
            return set()

        async def getmany(self, timeout_ms=0):
            await asyncio.sleep(0.05)
            self.n += 1
            return {"tp": [SimpleNamespace(value=b'{"verdict": "normal", "session": {"key": "k"}}', offset=self.n)]}

    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", Flowing)
    shown = await asyncio.wait_for(tail_mod.tail(Settings(), verdict="anomalous", idle_exit_secs=0.5,
                                                 out=io.StringIO()), 5)
    assert shown == 0


@pytest.mark.parametrize("secs", ["nan", "-5", "0", "inf", "soon"])
def test_idle_exit_takes_only_seconds_above_zero(secs, capsys):
    """Found by review (2026-12-07), failing before its fix: ``nan`` never exited, -5 exited at the first poll."""
    from rationad.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tail", "--idle-exit", secs])
    assert exc.value.code == 2 and "--idle-exit" in capsys.readouterr().err


async def test_tail_reads_again_what_a_fetch_that_met_an_undecodable_record_drained():
    """Found by the review of the undecodable-record fix, failing before its own: aiokafka drains partitions in order
    and moves each drained one's position, and the records drained before a partition whose decoding raises leave
    with the exception. A partition that had returned nothing yet (tail started at the end) was not read again from
    where it started: its events were never shown. The consumer here follows aiokafka 0.14's semantics (the real
    broker's case: tests/integration/test_undecodable_record.py)."""
    from types import SimpleNamespace

    from aiokafka.structs import TopicPartition

    from rationad.tail import _getmany

    bad = object()

    class Consumer:
        def __init__(self, logs):
            self.logs, self.pos = logs, {tp: 0 for tp in logs}  # started at the end: both partitions empty then

        def assignment(self):
            return set(self.logs)

        def highwater(self, tp):
            return len(self.logs[tp])

        async def position(self, tp):
            return self.pos[tp]

        def seek(self, tp, offset):
            self.pos[tp] = offset

        async def getmany(self, *tps, timeout_ms=0, max_records=None):
            out = {}
            for tp in tps or sorted(self.logs, key=lambda t: t.partition):
                got = []
                for offset, value in enumerate(self.logs[tp][self.pos[tp]:][: max_records or 500], self.pos[tp]):
                    if value is bad:
                        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                    got.append(SimpleNamespace(offset=offset, value=value))
                if got:
                    self.pos[tp] = got[-1].offset + 1
                    out[tp] = got
            return out

    a, b = TopicPartition("out", 0), TopicPartition("out", 1)
    consumer = Consumer({a: [], b: []})
    next_of: dict = {}
    assert await _getmany(consumer, next_of, False) == {}  # nothing yet: where each partition starts is noted
    consumer.logs = {a: [b"A-first"], b: [bad, b"B-after"]}  # then an event, and an undecodable record beside it
    shown = []
    for _ in range(3):
        shown += [r.value for records in (await _getmany(consumer, next_of, False)).values() for r in records]
    assert shown == [b"A-first", b"B-after"]
