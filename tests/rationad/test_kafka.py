"""The Kafka clients built from ``[kafka]``: the consumer settings reach aiokafka, and static membership
(``kafka.group_instance_id``) fails at start, naming the key, when the brokers cannot honour it."""

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, UnknownError

from rationad import kafka
from rationad.config import ConfigError, KafkaConfig


def test_settings_reach_the_consumer_constructor(monkeypatch):
    seen = {}

    def record(self, *topics, **kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "__init__", record)
    cfg = KafkaConfig(group_id="g", auto_offset_reset="none", group_instance_id="rationad-0", session_timeout_ms=7000)
    consumer = kafka.make_consumer(cfg, max_partition_fetch_bytes=123)
    assert isinstance(consumer, AIOKafkaConsumer)
    assert seen["group_id"] == "g"
    assert seen["auto_offset_reset"] == "none"
    assert seen["group_instance_id"] == "rationad-0"
    assert seen["session_timeout_ms"] == 7000
    assert seen["enable_auto_commit"] is False
    assert seen["max_partition_fetch_bytes"] == 123


def test_defaults_are_earliest_and_dynamic_membership():
    kw = kafka.consumer_kwargs(KafkaConfig())
    assert kw["auto_offset_reset"] == "earliest"
    assert kw["group_instance_id"] is None


@pytest.mark.parametrize("reset", ["earliest", "latest", "none"])
async def test_aiokafka_accepts_every_offset_reset(reset):
    # The real constructor (no broker needed until start): "none" must be a value aiokafka knows.
    c = kafka.make_consumer(KafkaConfig(auto_offset_reset=reset, group_instance_id="host-a"))
    assert c._auto_offset_reset == reset
    assert c._group_instance_id == "host-a"


def test_static_membership_problem_names_the_key_and_the_old_brokers():
    assert kafka.static_membership_problem("a", {1: (0, 7), 2: (0, 5)}) is None
    msg = kafka.static_membership_problem("a", {1: (0, 7), 2: (0, 4), 3: None})
    assert msg.startswith("kafka.group_instance_id = 'a'")
    assert "broker 2: v4" in msg and "broker 3: none" in msg and "broker 1" not in msg


class _FakeClient:
    def __init__(self, join_max: int | None):
        self.join_max = join_max
        self.closed = False
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(nodeId=1)])

    async def bootstrap(self):
        pass

    async def send(self, node_id, request):
        versions = [(0, 0, 12), (18, 0, 3)] + ([(11, 0, self.join_max)] if self.join_max is not None else [])
        return SimpleNamespace(api_versions=versions)

    async def close(self):
        self.closed = True


async def test_start_refuses_a_broker_without_join_group_v5(monkeypatch):
    started = []

    async def fake_start(self):
        started.append(True)

    monkeypatch.setattr(AIOKafkaConsumer, "start", fake_start)
    c = kafka.make_consumer(KafkaConfig(group_instance_id="host-a"))
    c._client = _FakeClient(join_max=4)
    with pytest.raises(ConfigError, match=r"kafka\.group_instance_id = 'host-a'.*JoinGroup v5"):
        await c.start()
    assert not started, "must not join (as a silently dynamic member) before the check"
    assert c._client.closed


async def test_a_static_member_starts_while_one_listed_broker_is_unreachable(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: the JoinGroup version check asked every broker in the
    metadata, and one it could not reach (NodeNotReadyError) ended start-up: a static member restarted in a loop
    while any one broker was down. Brokers that answer are checked; an old one among them is still refused."""
    from aiokafka.errors import NodeNotReadyError

    started = []

    async def fake_start(self):
        started.append(True)

    class OneDown(_FakeClient):
        def __init__(self, join_max):
            super().__init__(join_max)
            self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(nodeId=n) for n in (1, 2, 3)])

        async def send(self, node_id, request):
            if node_id == 3:
                raise NodeNotReadyError(f"Attempt to send a request to node which is not ready (node id {node_id}).")
            return await super().send(node_id, request)

    monkeypatch.setattr(AIOKafkaConsumer, "start", fake_start)
    c = kafka.make_consumer(KafkaConfig(group_instance_id="host-a"))
    c._client = OneDown(join_max=9)
    await c.start()
    assert started == [True]
    c = kafka.make_consumer(KafkaConfig(group_instance_id="host-a"))
    c._client = OneDown(join_max=4)
    with pytest.raises(ConfigError, match=r"broker 1: v4, broker 2: v4"):
        await c.start()


async def test_start_turns_a_refused_join_into_a_config_error(monkeypatch):
    async def refused(self):
        raise KafkaError(repr(UnknownError()))  # what aiokafka 0.14 raises for FENCED_INSTANCE_ID (82)

    stopped = []

    async def fake_stop(self):
        stopped.append(True)

    monkeypatch.setattr(AIOKafkaConsumer, "start", refused)
    monkeypatch.setattr(AIOKafkaConsumer, "stop", fake_stop)
    c = kafka.make_consumer(KafkaConfig(group_instance_id="host-a"))
    c._client = _FakeClient(join_max=7)
    with pytest.raises(ConfigError, match=r"kafka\.group_instance_id = 'host-a'.*refused"):
        await c.start()
    assert stopped


async def test_a_join_that_fails_on_the_broker_going_away_is_not_a_config_error(monkeypatch):
    """Found by review: a static member's start that lost the broker (aiokafka re-bootstraps in start) or met a
    coordinator moving was a ConfigError blaming the instance id: exit 2, never restarted by systemd. It stays the
    broker's error (exit 1, the supervisor retries)."""
    from aiokafka.errors import CoordinatorNotAvailableError, KafkaConnectionError

    async def fake_stop(self):
        pass

    monkeypatch.setattr(AIOKafkaConsumer, "stop", fake_stop)
    for exc in (KafkaConnectionError("Unable to bootstrap from [('kafka', 9092)]"), CoordinatorNotAvailableError()):
        async def gone(self, exc=exc):
            raise exc

        monkeypatch.setattr(AIOKafkaConsumer, "start", gone)
        c = kafka.make_consumer(KafkaConfig(group_instance_id="host-a"))
        c._client = _FakeClient(join_max=7)
        with pytest.raises(type(exc)):
            await c.start()


@pytest.mark.parametrize("refusal, names", [
    # Found by review (2026-12-06), failing before its fix: every refused join was blamed on kafka.group_instance_id,
    # a missing group permission too.
    ("GroupAuthorizationFailedError", r"^kafka\.group_id = 'rationad': the broker does not authorize"),
    # Found by review (2026-12-07): aiokafka's start raises TopicAuthorizationFailed for a subscribed topic the
    # principal may not describe, and it was blamed on the instance id too ("unset it").
    ("TopicAuthorizationFailedError", r"^input\.topics: the broker does not authorize this principal"),
])
async def test_an_acl_refusal_at_the_join_names_what_the_acl_is_on_not_the_instance_id(monkeypatch, refusal, names):
    import aiokafka.errors

    async def refused(self):
        raise getattr(aiokafka.errors, refusal)()

    async def fake_stop(self):
        pass

    monkeypatch.setattr(AIOKafkaConsumer, "start", refused)
    monkeypatch.setattr(AIOKafkaConsumer, "stop", fake_stop)
    c = kafka.make_consumer(KafkaConfig(group_id="rationad", group_instance_id="host-a"))
    c._client = _FakeClient(join_max=7)
    with pytest.raises(ConfigError, match=names):
        await c.start()


def _start_refused(monkeypatch, error: type[Exception]) -> list:
    """aiokafka's start raising ``error``; the list the consumer's stops are noted in."""
    async def refused(self):
        raise error()

    stopped = []

    async def fake_stop(self):
        stopped.append(True)

    monkeypatch.setattr(AIOKafkaConsumer, "start", refused)
    monkeypatch.setattr(AIOKafkaConsumer, "stop", fake_stop)
    return stopped


async def test_an_input_topic_the_acl_hides_names_input_topics_for_a_dynamic_member_too(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: only a static member's start mapped
    TopicAuthorizationFailed to the error naming input.topics (exit 2); a dynamic member's (no kafka.group_instance_id)
    came as a traceback (exit 1, retried by the supervisor with a model load each time)."""
    from aiokafka.errors import TopicAuthorizationFailedError

    stopped = _start_refused(monkeypatch, TopicAuthorizationFailedError)
    c = kafka.make_consumer(KafkaConfig(group_id="rationad"))
    c._client = _FakeClient(join_max=None)  # would fail the static-membership check: not asked
    with pytest.raises(ConfigError, match=r"^input\.topics: the broker does not authorize this principal"):
        await c.start()
    assert stopped


@pytest.mark.parametrize("instance_id", [None, "host-a"])
async def test_a_session_timeout_the_coordinator_refuses_names_the_key(monkeypatch, instance_id):
    """Found by review, failing before its fix: a session timeout outside the brokers' bounds came as a traceback
    (dynamic membership: exit 1, retried with a model load each time) or blamed kafka.group_instance_id (static)."""
    from aiokafka.errors import InvalidSessionTimeoutError

    stopped = _start_refused(monkeypatch, InvalidSessionTimeoutError)
    c = kafka.make_consumer(KafkaConfig(group_id="rationad", group_instance_id=instance_id,
                                        session_timeout_ms=3_000, heartbeat_interval_ms=1_000))
    c._client = _FakeClient(join_max=7)
    with pytest.raises(ConfigError, match=r"^kafka\.session_timeout_ms = 3000: the group coordinator refused it"):
        await c.start()
    assert stopped


async def test_start_without_instance_id_skips_the_check(monkeypatch):
    started = []

    async def fake_start(self):
        started.append(True)

    monkeypatch.setattr(AIOKafkaConsumer, "start", fake_start)
    c = kafka.make_consumer(KafkaConfig())
    c._client = _FakeClient(join_max=None)  # would fail the check
    await c.start()
    assert started


_MEMBER = textwrap.dedent("""
    import asyncio, sys, time
    from rationad.config import KafkaConfig
    from rationad.kafka import make_consumer

    async def main(bootstrap, group, topic, instance):
        cfg = KafkaConfig(bootstrap_servers=bootstrap, group_id=group, group_instance_id=instance or None)
        c = make_consumer(cfg)
        c.subscribe([topic])
        t0 = time.monotonic()
        await c.start()  # returns once the first assignment arrived
        print(f"assigned {time.monotonic() - t0:.2f}", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:5]))
""")


def _member(bootstrap: str, group: str, topic: str, instance: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _MEMBER, bootstrap, group, topic, instance],
                            stdout=subprocess.PIPE, text=True)


def _assigned_within(proc: subprocess.Popen, secs: float) -> float | None:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], secs)
    line = proc.stdout.readline() if ready else ""
    return float(line.split()[1]) if line.startswith("assigned") else None


@pytest.mark.integration
def test_static_member_takes_its_place_back_after_kill9(broker):
    """On the real test broker: after a SIGKILL, a member restarted with the same group_instance_id is assigned at
    once; a dynamic member in the same situation is not (noida-db 0.2.3 never expires the dead member, see
    docs/operations.md), which is what static membership is for."""
    from rationad.broker import create_topics

    topic = f"static-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(broker.bootstrap, {topic: 2}))
    results = {}
    for instance in ("rationad-0", ""):
        group = f"g-{topic}-{instance or 'dynamic'}"
        first = _member(broker.bootstrap, group, topic, instance)
        procs = [first]
        try:
            assert _assigned_within(first, 30) is not None
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            t0 = time.monotonic()
            second = _member(broker.bootstrap, group, topic, instance)
            procs.append(second)
            took = _assigned_within(second, 12)
            results[instance or "dynamic"] = took if took is None else time.monotonic() - t0
        finally:
            for p in procs:
                p.kill()
                p.wait(10)
    assert results["rationad-0"] is not None and results["rationad-0"] < 15, results
    assert results["dynamic"] is None, f"noida-db now expires dead members: {results}; update docs and tests"


def _coordinator(instance_id=None):
    c = SimpleNamespace(member_id="m-1", generation=4, _group_instance_id=instance_id, rejoins=0, sent=[], left=[],
                        _rebalance_timeout_ms=30_000, group_id="g", dead=0)
    c.request_rejoin = lambda: setattr(c, "rejoins", c.rejoins + 1)
    c.reset_generation = lambda: aiokafka_gc().GroupCoordinator.reset_generation(c)
    c.coordinator_dead = lambda: setattr(c, "dead", c.dead + 1)
    return c


def aiokafka_gc():
    from aiokafka.consumer import group_coordinator as gc

    kafka.keep_group_member_ids()
    return gc


def _refusing_join(c, code, meanwhile=None):
    """A rebalance of coordinator ``c`` whose JoinGroup is answered with error ``code`` (``meanwhile`` runs while
    the request is in flight)."""
    gc = aiokafka_gc()

    async def send(request):
        if type(request).__name__ == "LeaveGroupRequest":
            c.left.append(request._member_id)
            return None
        c.sent.append(request._member_id)
        if meanwhile:
            meanwhile()
        return SimpleNamespace(error_code=code, member_id="")

    c._send_req = send
    assignor = SimpleNamespace(name="roundrobin", metadata=lambda topics: b"m")
    return gc.CoordinatorGroupRebalance(c, "g", 1, SimpleNamespace(topics={"t"}, active=True), [assignor], 10_000, 0)


def test_a_refused_commit_keeps_the_member_id_for_the_next_join_only():
    gc = aiokafka_gc()
    c = _coordinator()
    for _ in range(4):  # one commit refused on four partitions: four resets in a row
        gc.GroupCoordinator.reset_generation(c)
    # aiokafka's own state is as before (its heartbeat loop ends on an unknown id), a rejoin is requested ...
    assert (c.member_id, c.generation, c.rejoins) == ("", -1, 4)
    # ... and its next JoinGroup offers the id again; refused there (UNKNOWN_MEMBER_ID), it is not offered again
    assert asyncio.run(_refusing_join(c, 25).perform_group_join()) is None
    assert asyncio.run(_refusing_join(c, 25).perform_group_join()) is None
    assert c.sent == ["m-1", ""] and c.member_id == ""


def test_an_id_set_aside_during_a_join_that_fails_is_offered_at_the_next_one():
    """Found by review: a refusal (a late commit's) landing while a JoinGroup was in flight set the id aside, and
    the join, failing for another reason (NOT_COORDINATOR here), threw it away."""
    gc = aiokafka_gc()
    c = _coordinator()
    asyncio.run(_refusing_join(c, 16, meanwhile=lambda: gc.GroupCoordinator.reset_generation(c)).perform_group_join())
    asyncio.run(_refusing_join(c, 25).perform_group_join())
    assert c.sent == ["m-1", "m-1"]


def test_leaving_after_a_refused_commit_names_the_forgotten_member():
    """Found by review: after a reset aiokafka sends no LeaveGroup (its generation is gone), so the coordinator
    kept counting the member that left."""
    gc = aiokafka_gc()
    c = _coordinator()
    _refusing_join(c, 25)  # installs the fake transport
    gc.GroupCoordinator.reset_generation(c)
    asyncio.run(gc.GroupCoordinator._maybe_leave_group(c))
    asyncio.run(_refusing_join(c, 25).perform_group_join())
    assert c.left == ["m-1"] and c.sent == [""]  # left by its id, not offered again
    offered = _coordinator()
    gc.GroupCoordinator.reset_generation(offered)
    asyncio.run(_refusing_join(offered, 16).perform_group_join())  # offered at a JoinGroup that failed: not a member
    asyncio.run(gc.GroupCoordinator._maybe_leave_group(offered))
    assert offered.sent == ["m-1"] and offered.left == ["m-1"]


def test_no_member_id_is_kept_for_a_static_member_or_one_never_in_a_generation():
    gc = aiokafka_gc()
    static = _coordinator("rationad-0")  # the coordinator knows a static member by its instance id
    gc.GroupCoordinator.reset_generation(static)
    asyncio.run(_refusing_join(static, 25).perform_group_join())
    assert static.sent == [""]
    unconfirmed = _coordinator()
    unconfirmed.generation = -1  # an id only offered, never in a generation
    gc.GroupCoordinator.reset_generation(unconfirmed)
    asyncio.run(_refusing_join(unconfirmed, 25).perform_group_join())
    assert unconfirmed.sent == [""]


@pytest.mark.integration
def test_a_commit_refused_mid_rebalance_does_not_wedge_the_group(broker, caplog):
    """On the real test broker: members that commit their offsets when partitions are revoked (as the daemon does)
    are all assigned again after a member joins and after one leaves. noida-db refuses a commit made during a
    rebalance with ILLEGAL_GENERATION; aiokafka then forgot its member id and rejoined as a new member, the broker
    kept waiting for (and electing) the forgotten one, and no member was ever assigned again."""
    from aiokafka import ConsumerRebalanceListener

    from rationad.broker import create_topics

    topic = f"wedge-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(broker.bootstrap, {topic: 4}))

    async def scenario():
        members = []
        for _ in range(2):
            c = kafka.make_consumer(KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"g-{topic}",
                                                session_timeout_ms=10_000))

            class CommitOnRevoke(ConsumerRebalanceListener):
                def __init__(self, consumer):
                    self.consumer = consumer

                async def on_partitions_revoked(self, revoked):
                    if revoked:
                        try:
                            await self.consumer.commit({tp: 0 for tp in revoked})
                        except KafkaError:
                            pass  # refused: the partitions' next owner reads from the last committed offset

                async def on_partitions_assigned(self, assigned):
                    pass

            c.subscribe([topic], listener=CommitOnRevoke(c))
            members.append(c)

        async def poll(c):
            while True:
                await c.getmany(timeout_ms=100)

        async def until(check, secs):
            deadline = time.monotonic() + secs
            while time.monotonic() < deadline and not check():
                await asyncio.sleep(0.2)
            return check()

        a, b = members
        await asyncio.wait_for(a.start(), 30)
        polls = [asyncio.ensure_future(poll(a))]
        try:
            assert await until(lambda: len(a.assignment()) == 4, 30)
            await asyncio.wait_for(b.start(), 30)
            polls.append(asyncio.ensure_future(poll(b)))
            assert await until(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, 40), \
                (a.assignment(), b.assignment())
            polls.pop(0).cancel()
            await asyncio.wait_for(a.stop(), 30)
            assert await until(lambda: len(b.assignment()) == 4, 40), b.assignment()
        finally:
            for p in polls:
                p.cancel()
            for c in members:
                try:
                    await asyncio.wait_for(c.stop(), 15)
                except TimeoutError:
                    pass  # a wedged member's stop waits up to its request timeout

    asyncio.run(scenario())
    # the path under test ran: a commit was refused mid-rebalance (were it accepted, nothing here would be tested)
    assert any("IllegalGeneration" in r.getMessage() for r in caplog.records), "no commit was refused"


def _joined(assignment_bytes: bytes):
    """aiokafka's own join completion, on a coordinator of topic ``t`` given ``assignment_bytes`` by SyncGroup: the
    partitions it then owns."""
    from aiokafka.consumer.subscription_state import SubscriptionState

    gc = aiokafka_gc()
    kafka.read_empty_assignments()

    async def run():
        sub = SubscriptionState()
        sub.subscribe({"t"})

        async def stopped():
            return None

        c = SimpleNamespace(group_id="g", _subscription=sub, _stop_commit_offsets_refresh_task=stopped,
                            _lookup_assignor=lambda name: SimpleNamespace(on_assignment=lambda a: None),
                            start_commit_offsets_refresh_task=lambda assignment: None)
        await gc.GroupCoordinator._on_join_complete(c, 1, "m-1", "roundrobin", assignment_bytes)
        return sub.assigned_partitions()

    return asyncio.run(run())


def test_a_member_the_leader_left_out_owns_nothing_and_carries_on():
    """Seen in a CI run of the failure tests: a coordinator answers a member missing from the leader's assignment
    with no bytes, aiokafka failed to decode them (ValueError) and its coordination task ended; the member must own
    nothing."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
    from aiokafka.structs import TopicPartition

    assert _joined(b"") == set()
    two = ConsumerProtocolMemberAssignment(0, [("t", [0, 2])], b"").encode()
    assert _joined(two) == {TopicPartition("t", 0), TopicPartition("t", 2)}


def _committing(c, code, meanwhile=None):
    """Coordinator ``c`` answering an offset commit of partition t/0 with error ``code`` (``meanwhile`` runs while
    the request is in flight)."""
    async def send(request):
        if meanwhile:
            meanwhile()
        return SimpleNamespace(topics=[("t", [(0, code)])])

    c._send_req = send
    c.coordinator_id = 1


def test_a_commit_refused_for_a_generation_the_member_has_left_does_not_reset_the_new_one():
    """KAFKA-9823: a commit sent in generation 4 and refused (ILLEGAL_GENERATION) after the member joined generation
    5 made aiokafka forget generation 5 and rejoin: a needless rebalance of the whole group. The commit still fails;
    the member keeps its generation. A refusal in the generation it was sent in still resets, as before."""
    from aiokafka.errors import IllegalGenerationError
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    gc = aiokafka_gc()
    kafka.mend_group_membership()
    offsets = {TopicPartition("t", 0): OffsetAndMetadata(10, "")}

    def joined():
        c.generation, c.member_id = 5, "m-2"

    c = _coordinator()
    _committing(c, 22, meanwhile=joined)
    with pytest.raises(IllegalGenerationError):
        asyncio.run(gc.GroupCoordinator._do_commit_offsets(c, None, offsets))
    assert (c.generation, c.member_id, c.rejoins) == (5, "m-2", 0)
    assert kafka.KEPT_MEMBER_ID not in vars(c)  # nothing set aside either: the member is in its generation

    def next_generation():  # the usual case: a dynamic member keeps its id, the generation moves on
        c.generation = 5

    c = _coordinator()
    _committing(c, 22, meanwhile=next_generation)
    with pytest.raises(IllegalGenerationError):
        asyncio.run(gc.GroupCoordinator._do_commit_offsets(c, None, offsets))
    assert (c.generation, c.member_id, c.rejoins) == (5, "m-1", 0)
    for meanwhile in (None, lambda: gc.GroupCoordinator.reset_generation(c)):  # refused in its own generation, or
        c = _coordinator()                                                     # after a reset: reset as before
        _committing(c, 22, meanwhile=meanwhile)
        with pytest.raises(IllegalGenerationError):
            asyncio.run(gc.GroupCoordinator._do_commit_offsets(c, None, offsets))
        assert (c.generation, c.member_id) == (-1, "") and c.rejoins >= 1
