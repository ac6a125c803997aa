"""Operator labels without a broker: the record format (round trip, tombstones, garbage), and how a ``LabelBook``
applies records. The real broker is in tests/integration/test_labels.py."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from rationad.config import KafkaConfig
from rationad.labels import Label, LabelBook, decode_label, encode_label, write_label
from rationad.templates import template_id

TEMPLATE = "ciod: failed to read message prefix on control stream (CioStream socket to {*})"


def label(**kw) -> Label:
    return Label(**({"template": TEMPLATE, "verdict": "normal", "reason": "expected during drains", "by": "ada",
                     "at": 1_700_000_000.5} | kw))


def test_a_label_round_trips_keyed_by_its_template_id():
    lb = label(forced=True)
    key, value = encode_label(lb)
    assert key == template_id(TEMPLATE).encode() == lb.id.encode() and lb.id.startswith("t-") and len(lb.id) == 14
    assert decode_label(key, value) == lb
    assert orjson.loads(value)["v"] == 1


def test_a_tombstone_clears():
    assert decode_label(label().id.encode(), None) is None


@pytest.mark.parametrize("key, value, why", [
    (None, b"{}", "no key"),
    (b"not-an-id", None, "not a template id"),
    (b"\xff\xfe", b"{}", "not UTF-8"),
    (template_id(TEMPLATE).encode(), b"{nope", "not JSON"),
    (template_id(TEMPLATE).encode(), b"[1, 2]", "not a JSON object"),
    (template_id(TEMPLATE).encode(), orjson.dumps({"template": TEMPLATE, "verdict": "normal"}), "without 'reason'"),
    (template_id(TEMPLATE).encode(), orjson.dumps({"template": TEMPLATE, "verdict": "fine", "reason": "r", "by": "b",
                                                   "at": 1.0}), "verdict must be one of"),
    (template_id(TEMPLATE).encode(), orjson.dumps({"template": TEMPLATE, "verdict": "normal", "reason": "r",
                                                   "by": "b", "at": "yesterday"}), "finite Unix time"),
    (template_id("other {*}").encode(), encode_label(label())[1], "not the id of the label's template"),
    (template_id(TEMPLATE).encode(), orjson.dumps({"v": 2}), "label format 2"),
    # found by review (2026-12-07): ``by`` goes into every event of the template; one of 100 KB from any writer of the
    # topic made each of them too large for the output topic, dead-lettering the template's anomalies
    (template_id(TEMPLATE).encode(), orjson.dumps({"template": TEMPLATE, "verdict": "anomalous", "reason": "r",
                                                   "by": "x" * 100_000, "at": 1.0}), "by .100000. at most 200"),
    (template_id(TEMPLATE).encode(), orjson.dumps({"template": TEMPLATE, "verdict": "anomalous", "reason": "r" * 501,
                                                   "by": "b", "at": 1.0}), "reason .501 characters. must be at most"),
])
def test_garbage_is_a_value_error(key, value, why):
    with pytest.raises(ValueError, match=why):
        decode_label(key, value)


def test_a_label_checks_its_fields():
    with pytest.raises(ValueError, match="verdict"):
        label(verdict="ok")
    with pytest.raises(ValueError, match="finite"):
        label(at=float("nan"))


def _rec(key, value, offset=0, partition=0, timestamp=0):
    return SimpleNamespace(key=key, value=value, topic="labels", partition=partition, offset=offset,
                           timestamp=timestamp)


def test_the_book_keeps_the_last_label_per_template_and_skips_garbage():
    changes = []
    book = LabelBook(KafkaConfig(), "labels", on_change=lambda tid, lb: changes.append((tid, lb)))
    a, b = label(), label(verdict="anomalous", reason="it is not")
    book._apply(_rec(*encode_label(a)))
    book._apply(_rec(b"garbage", b"{}"))
    book._apply(_rec(*encode_label(b)))
    assert book.get(TEMPLATE) == b and book.get_id(b.id) == b and book.labels() == [b] and book.skipped == 1
    assert changes == []  # the state start() loads is read with labels(), not announced
    book._live = True
    book._apply(_rec(*encode_label(b)))  # a replayed record changes nothing
    other = label(template="x {*}")
    book._apply(_rec(*encode_label(other)))
    book._apply(_rec(b.id.encode(), None))
    book._apply(_rec(b.id.encode(), None))  # clearing twice announces once
    assert changes == [(other.id, other), (b.id, None)]
    assert book.get(TEMPLATE) is None and book.labels() == [other]


def test_after_the_topic_grows_the_newest_record_of_a_key_wins_across_partitions():
    """Found by review (2026-12-06), failing before its fix: partitions added to the labels topic move a key to
    another partition, while its older records stay the latest of partition 0 (compaction is per partition); read
    back in fetch order, that old label came back after a restart over the clear (or the newer label) written since."""
    a, b = label(), label(verdict="anomalous", reason="it is not")
    for newer in (None, b):
        book = LabelBook(KafkaConfig(), "labels")
        book._apply(_rec(a.id.encode(), encode_label(b)[1] if newer else None, partition=1, timestamp=2_000))
        book._apply(_rec(*encode_label(a), offset=3, partition=0, timestamp=1_000))  # fetched last, written first
        assert book.get_id(a.id) == newer
    book = LabelBook(KafkaConfig(), "labels")  # within one partition the offset order decides, whatever the clocks
    book._apply(_rec(*encode_label(a), offset=0, timestamp=5_000))
    book._apply(_rec(*encode_label(b), offset=1, timestamp=1_000))
    assert book.get_id(a.id) == b


def test_an_on_change_that_raises_does_not_stop_the_book():
    book = LabelBook(KafkaConfig(), "labels", on_change=lambda tid, lb: 1 / 0)
    book._live = True
    book._apply(_rec(*encode_label(label())))
    assert book.get(TEMPLATE) == label()


async def test_write_label_needs_an_id_to_clear_and_a_matching_one():
    with pytest.raises(ValueError, match="template id"):
        await write_label(KafkaConfig(bootstrap_servers="127.0.0.1:1"), "labels", None)
    with pytest.raises(ValueError, match="not the id"):
        await write_label(KafkaConfig(bootstrap_servers="127.0.0.1:1"), "labels", label(), tid="t-000000000000")


def test_a_label_for_the_empty_template_is_refused():
    """Found by review (2026-12-03): such a label was accepted, and a model with a neighbour index then failed at
    every start (the labels topic is read whole at start): a crash loop."""
    from rationad.templates import template_id

    for template in ("", "   "):
        value = orjson.dumps({"v": 1, "template": template, "verdict": "normal", "reason": "", "by": "x", "at": 0})
        with pytest.raises(ValueError, match="empty"):
            decode_label(template_id(template).encode(), value)


@pytest.mark.parametrize("later", [b"", b'{"v": 2, "template": "x"}'], ids=["empty value", "newer format"])
def test_an_unreadable_record_under_a_labels_key_clears_it_as_compaction_would(later):
    """Found by review (2026-12-03), failing before its fix: a record that cannot be decoded (an empty value written
    with kcat to clear a label, a newer label format during an upgrade) left the key's older label in force on a
    running replica, while one started after compaction, and ``rationad templates``, saw none."""
    changes = []
    book = LabelBook(KafkaConfig(), "labels", on_change=lambda tid, lb: changes.append((tid, lb)))
    a = label()
    book._apply(_rec(*encode_label(a)))
    book._live = True
    book._apply(_rec(a.id.encode(), later))
    assert book.get_id(a.id) is None and changes == [(a.id, None)] and book.skipped == 1
    fresh = LabelBook(KafkaConfig(), "labels")
    fresh._apply(_rec(a.id.encode(), later))
    assert fresh.get_id(a.id) is None


async def test_closing_the_book_is_bounded_by_its_callers_timeout(monkeypatch):
    """Found by a second review (2026-12-05), failing before its fix: ``aclose`` caught the CancelledError that the
    daemon's ``wait_for(closer, 30)`` sends at its timeout and went on to a follower that did not stop: the bound did
    not hold. A follow task that swallows a cancellation (Python 3.11's wait_for, gh-86296) no longer matters either."""
    import asyncio

    import rationad.tasks as tasks_mod
    from rationad.labels import LabelBook
    from tests.rationad.fakes import swallows_one_cancellation

    monkeypatch.setattr(tasks_mod, "STOP_CANCEL_WAIT_SECS", 0.05)

    class Follower:  # a broker gone: stop() does not return
        async def stop(self):
            await asyncio.sleep(3600)

    book = LabelBook.__new__(LabelBook)
    book._live, book._follower = True, Follower()
    book._task = asyncio.create_task(swallows_one_cancellation())
    await asyncio.sleep(0)
    outer = asyncio.create_task(asyncio.wait_for(book.aclose(), 0.5))
    done, _ = await asyncio.wait({outer}, timeout=3)
    assert done and isinstance(outer.exception(), asyncio.TimeoutError)
    book._task and book._task.cancel()


async def test_a_clear_writes_its_tombstone_to_every_partition(monkeypatch):
    """Found by review (2026-12-06): after partitions were added, a clear went to the key's new partition only; once
    compaction dropped that lone tombstone (delete.retention.ms), the old label left in another partition was the
    only record of the key, and in force again."""
    import rationad.labels as labels_mod
    import rationad.topics

    sent = []

    class Producer:
        async def start(self):
            pass

        async def stop(self):
            pass

        async def partitions_for(self, topic):
            return {0, 1, 2}

        async def send_and_wait(self, topic, key=None, value=None, partition=None):
            sent.append((key, value, partition))

    created = []

    async def ensure(*a, **kw):
        created.append(kw.get("replication_factor"))

    monkeypatch.setattr(rationad.topics, "ensure_compacted_topic", ensure)
    monkeypatch.setattr(labels_mod, "make_producer", lambda kafka: Producer())
    tid = label().id
    await write_label(KafkaConfig(), "labels", None, tid=tid, replication_factor=3)
    assert created == [3]  # as the daemon creates its internal topics
    assert sent == [(tid.encode(), None, p) for p in (0, 1, 2)]
    sent.clear()
    await write_label(KafkaConfig(), "labels", label())
    assert len(sent) == 1 and sent[0][2] is None  # a label goes where its key hashes


class _Log:
    """A consumer over scripted partition logs, as aiokafka behaves around an undecodable record (``BAD``):
    ``getmany`` drains partition by partition, moving each one's position, and loses what it drained when a later
    partition raises; a fetch that raises leaves its partition's position where it was."""

    BAD = object()

    def __init__(self, tps) -> None:
        self.logs: dict = {tp: [] for tp in tps}
        self.at: dict = {tp: 0 for tp in tps}
        self.position_calls = 0

    def assignment(self):
        return set(self.logs)

    def highwater(self, tp):
        return len(self.logs[tp])

    async def position(self, tp):
        self.position_calls += 1
        return self.at[tp]

    def seek(self, tp, offset):
        self.at[tp] = offset

    async def seek_to_beginning(self, *tps):
        for tp in tps:
            self.at[tp] = 0

    async def getmany(self, *tps, timeout_ms=0, max_records=None):
        out = {}
        for tp in tps:
            got = []
            while self.at[tp] < len(self.logs[tp]) and (max_records is None or len(got) < max_records):
                value = self.logs[tp][self.at[tp]]
                if value is self.BAD:
                    if got:
                        break
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                got.append(SimpleNamespace(offset=self.at[tp], value=value))
                self.at[tp] += 1
            if got:
                out[tp] = got
        return out


async def test_an_undecodable_labels_record_is_stepped_past_with_no_position_asked_per_poll():
    """A poll asks no positions (every 500 ms, for a rare rewind): the follower notes the next offset of what it
    returned. After a decode error, each partition goes back to that, so the records before the bad one in the same
    poll are read once, and a bad record stepped past is not met (nor counted) again at a later rewind."""
    from aiokafka import TopicPartition

    from rationad.labels import TopicFollower

    p0, p1 = TopicPartition("labels", 0), TopicPartition("labels", 1)
    follower = TopicFollower(KafkaConfig(), "labels")
    follower.consumer = c = _Log([p0, p1])
    follower.partitions = [p0, p1]
    read = []

    def apply(rec):
        read.append(rec.value)

    c.logs[p0] += [b"a"]
    assert await follower.poll(apply) == 1 and c.position_calls == 0
    c.logs[p0] += [b"b", b"c"]
    c.logs[p1] += [_Log.BAD]  # p0's b and c are drained, then lost when p1 raises
    assert await follower.poll(apply) == 2 and follower.unreadable == 1
    c.logs[p0] += [_Log.BAD]
    c.logs[p1] += [b"d"]
    assert await follower.poll(apply) == 1 and follower.unreadable == 2  # p1 goes back past its bad record, not to it
    calls = c.position_calls
    c.logs[p0] += [b"e"]
    assert await follower.poll(apply) == 1 and c.position_calls == calls
    assert read == [b"a", b"b", b"c", b"d", b"e"]


async def test_a_labels_topic_the_acl_hides_is_an_error_not_no_labels():
    """Hidden by the ACL, the labels topic was absent from the metadata and read as "no operator labels yet": every
    label ignored with no error (review, 2026-12-07). ``refresh`` names the topic and what to grant."""
    from types import SimpleNamespace

    from rationad.config import ConfigError
    from rationad.labels import TopicFollower

    async def fetch_all_metadata():
        return SimpleNamespace(unauthorized_topics={"labels"}, partitions_for_topic=lambda t: None)

    follower = TopicFollower(KafkaConfig(), "labels")
    follower.consumer = SimpleNamespace(_client=SimpleNamespace(fetch_all_metadata=fetch_all_metadata))
    with pytest.raises(ConfigError, match=r"topic 'labels': the broker does not authorize .* Describe and Read"):
        await follower.refresh()
