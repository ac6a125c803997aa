"""``rationad.topics`` against a fake admin client: which topics count as missing, that nothing is created, and the
errors' wording. The real broker (noida-db, auto-creation off) is in tests/integration/test_operations.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from rationad import topics
from rationad.config import ConfigError, KafkaConfig


class FakeAdmin:
    """Only the calls that cannot create a topic: ``describe_topics`` (which can) is missing on purpose."""

    existing: set[str] = set()
    auto_create: str | None = "false"  # None: DescribeConfigs fails
    limits: dict[str, int] = {}  # topics' max.message.bytes (none said: the broker will not say)
    retention: dict[str, int] = {}  # topics' retention.ms (none said: the broker will not say)
    retention_bytes: dict[str, int] = {}  # topics' retention.bytes (none said: the broker will not say)
    policy: dict[str, str] = {}  # topics' cleanup.policy (none said: the broker will not say)
    instances: list[FakeAdmin] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.closed = False
        FakeAdmin.instances.append(self)

    async def start(self):
        pass

    async def close(self):
        self.closed = True

    async def list_topics(self):
        return list(self.existing)

    async def describe_cluster(self):
        return {"controller_id": 1, "brokers": [{"node_id": 1, "host": "h", "port": 9092}]}

    async def describe_configs(self, resources):
        from aiokafka.admin.config_resource import ConfigResourceType

        if self.auto_create is None:
            raise RuntimeError("SecurityDisabledError / ClusterAuthorizationFailed")
        if [r.resource_type for r in resources] == [ConfigResourceType.TOPIC]:  # a topic's max.message.bytes
            value = self.limits.get(resources[0].name)
            entries = [] if value is None else [{"config_names": "max.message.bytes", "config_value": str(value)}]
            if resources[0].name in self.retention:
                entries.append({"config_names": "retention.ms", "config_value": str(self.retention[resources[0].name])})
            if resources[0].name in self.retention_bytes:
                entries.append({"config_names": "retention.bytes",
                                "config_value": str(self.retention_bytes[resources[0].name])})
            if resources[0].name in self.policy:
                entries.append({"config_names": "cleanup.policy", "config_value": self.policy[resources[0].name]})
            return [SimpleNamespace(to_object=lambda: {"resources": [{"error_code": 0, "config_entries": entries}]})]
        assert [r.configs for r in resources] == [{topics.AUTO_CREATE: None}]
        entry = {"config_names": topics.AUTO_CREATE, "config_value": self.auto_create}
        return [SimpleNamespace(to_object=lambda: {"resources": [{"error_code": 0, "config_entries": [entry]}]})]


@pytest.fixture
def admin(monkeypatch):
    import aiokafka.admin

    FakeAdmin.existing, FakeAdmin.auto_create, FakeAdmin.instances = {"logs", "anomalies"}, "false", []
    FakeAdmin.limits, FakeAdmin.retention, FakeAdmin.retention_bytes, FakeAdmin.policy = {}, {}, {}, {}
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", FakeAdmin)
    return FakeAdmin


KAFKA = KafkaConfig(bootstrap_servers="kafka:9092")


async def test_missing_topics_in_order_without_duplicates(admin):
    got = await topics.missing_topics(KAFKA, ["anomalies", "dlq", "logs", "dlq", "other"])
    assert got == ["dlq", "other"]
    assert all(a.closed for a in admin.instances)
    assert await topics.missing_topics(KAFKA, ["logs", "anomalies"]) == []
    assert await topics.missing_topics(KAFKA, []) == []


async def test_a_broker_that_auto_creates_has_no_missing_topics(admin):
    admin.auto_create = "true"
    assert await topics.missing_topics(KAFKA, ["dlq"]) == []


async def test_a_broker_that_will_not_say_reports_them(admin):
    admin.auto_create = None
    assert await topics.missing_topics(KAFKA, ["dlq"]) == ["dlq"]


async def test_require_topics_names_each_key(admin):
    with pytest.raises(ConfigError) as info:
        await topics.require_topics(KAFKA, {"output.topic": "anomalies", "output.dlq_topic": "anomalies.dlq"})
    msg = str(info.value)
    assert msg.startswith("output.dlq_topic: topic 'anomalies.dlq' does not exist on kafka:9092")
    assert "auto.create.topics.enable=false" in msg and "output.topic" not in msg
    admin.auto_create = None
    with pytest.raises(ConfigError, match="did not say"):
        await topics.require_topics(KAFKA, {"output.topic": "x", "output.dlq_topic": "x"})
    admin.existing |= {"anomalies.dlq"}
    await topics.require_topics(KAFKA, {"output.topic": "anomalies", "output.dlq_topic": "anomalies.dlq"})


async def test_an_output_topic_taking_smaller_records_than_output_max_message_bytes_is_named(admin):
    """Found by review (2026-12-07): the producer batches records up to output.max_message_bytes and a broker refuses
    a batch over the topic's max.message.bytes whole, so every event of a model batch was dead-lettered though each
    fit, the dead letters were refused the same way, and the daemon stopped, meeting them again after each restart."""
    admin.existing |= {"anomalies.dlq"}
    admin.limits = {"anomalies": 65_536}
    keyed = {"output.topic": "anomalies", "output.dlq_topic": "anomalies.dlq"}
    with pytest.raises(ConfigError) as info:
        await topics.require_topics(KAFKA, keyed, max_message_bytes=1_048_576)
    assert str(info.value) == ("output.max_message_bytes: 1048576 is more than topic 'anomalies' (output.topic) takes "
                               "(max.message.bytes=65536); set it at most 65536, or raise the topic's")
    await topics.require_topics(KAFKA, keyed, max_message_bytes=65_536)  # at most the limit: fine
    await topics.require_topics(KAFKA, keyed)  # not asked
    admin.limits = {}
    await topics.require_topics(KAFKA, keyed, max_message_bytes=1_048_576)  # the broker will not say: not refused


async def test_a_compacted_dead_letter_topic_is_refused_naming_its_key(admin):
    """Found by review (2026-12-07), failing before its fix: a compacted topic refuses records without a key
    (INVALID_RECORD), and the dead letters of undecodable records have none: the first one stopped the daemon, and
    again after each restart."""
    admin.existing |= {"anomalies.dlq"}
    keyed = {"output.topic": "anomalies", "output.dlq_topic": "anomalies.dlq"}
    admin.policy = {"anomalies.dlq": "compact,delete", "anomalies": "compact"}
    with pytest.raises(ConfigError) as info:
        await topics.require_topics(KAFKA, keyed, unkeyed=["output.dlq_topic"])
    assert str(info.value).startswith("output.dlq_topic: topic 'anomalies.dlq' is compacted "
                                      "(cleanup.policy=compact,delete)")
    assert "output.topic" not in str(info.value)  # events carry their session's key
    admin.policy = {"anomalies.dlq": "delete", "anomalies": "compact"}
    await topics.require_topics(KAFKA, keyed, unkeyed=["output.dlq_topic"])
    admin.policy = {}
    await topics.require_topics(KAFKA, keyed, unkeyed=["output.dlq_topic"])  # the broker will not say: not refused


async def test_an_unreachable_broker_is_a_topic_check_error():
    t0 = time.monotonic()
    with pytest.raises(topics.TopicCheckError, match="127.0.0.1:1"):
        await topics.missing_topics(KafkaConfig(bootstrap_servers="127.0.0.1:1"), ["x"], timeout_secs=2)
    assert time.monotonic() - t0 < 10


class _Cluster:
    def __init__(self, parts: dict[str, int], unauthorized: set[str] = frozenset()):
        self.parts = parts
        self.unauthorized_topics = set(unauthorized)  # as aiokafka's ClusterMetadata: topics the ACL hides

    def topics(self):
        return set(self.parts)

    def partitions_for_topic(self, t):
        return set(range(self.parts[t])) if t in self.parts else None


class CreatingAdmin(FakeAdmin):
    """Creates topics when allowed (``refuse`` names the error otherwise)."""

    parts: dict[str, int] = {}
    refuse: Exception | None = None
    answer_error: tuple[int, str] | None = None  # a refusal inside the CreateTopics response, as aiokafka returns it
    created: list = []

    async def create_topics(self, new):
        if self.refuse is not None:
            raise self.refuse
        if self.answer_error is not None:
            return SimpleNamespace(topic_errors=[(t.name, *self.answer_error) for t in new])
        for t in new:
            CreatingAdmin.created.append((t.name, t.num_partitions, t.replication_factor, dict(t.topic_configs)))
            CreatingAdmin.parts[t.name] = t.num_partitions

    async def list_topics(self):
        return list(self.parts)

    @property
    def _client(self):
        parts = self.parts

        async def fetch_all_metadata():
            return _Cluster({t: n for t, n in parts.items() if t not in CreatingAdmin.hidden}, CreatingAdmin.hidden)

        return SimpleNamespace(fetch_all_metadata=fetch_all_metadata)


@pytest.fixture
def creating(monkeypatch):
    import aiokafka.admin

    CreatingAdmin.parts, CreatingAdmin.refuse, CreatingAdmin.created = {"logs": 3, "more": 5}, None, []
    CreatingAdmin.answer_error, CreatingAdmin.retention, CreatingAdmin.hidden = None, {}, set()
    CreatingAdmin.policy, CreatingAdmin.limits, CreatingAdmin.retention_bytes = {}, {}, {}
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", CreatingAdmin)
    return CreatingAdmin


async def test_ensure_topic_creates_the_internal_topic_like_the_largest_input(creating):
    n = await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0,
                                  like=["logs", "more"], replication_factor=3, retention_ms=60_000)
    # delete, whatever the broker's log.cleanup.policy (review 2026-12-07: a compacted default refused the packs)
    assert n == 5 and creating.created == [("g-repartition", 5, 3, {"cleanup.policy": "delete",
                                                                    "retention.ms": "60000", "retention.bytes": "-1"})]
    assert await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                     replication_factor=3, retention_ms=60_000) == 5
    assert len(creating.created) == 1  # an existing topic is used as it is


async def test_an_existing_internal_topic_with_a_time_limit_is_used_and_logged(creating):
    # rationad before 2026-12-07 created it with a day's retention: a line waiting longer (model blocked, daemon down)
    # was deleted unjudged. It is used as it is, and the start says so with the command that lifts the limit.
    from structlog.testing import capture_logs

    creating.parts["g-repartition"] = 3
    creating.retention = {"g-repartition": 86_400_000}
    with capture_logs() as logs:
        assert await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0,
                                         like=["logs"], replication_factor=1, retention_ms=-1) == 3
    warned = [e for e in logs if e["event"] == "internal_topic_retention_short"]
    assert len(warned) == 1 and warned[0]["retention_ms"] == 86_400_000
    assert warned[0]["action"] == ("kafka-configs.sh --alter --entity-type topics --entity-name g-repartition "
                                   "--add-config retention.ms=-1")
    assert creating.created == []
    # the install upgraded with its old config.toml (retention_ms = 86400000, as shipped then): said too (review)
    with capture_logs() as logs:
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=86_400_000)
    warned = [e for e in logs if e["event"] == "internal_topic_retention_short"]
    assert len(warned) == 1 and warned[0]["action"].startswith("set repartition.retention_ms = -1 and ")
    creating.retention = {"g-repartition": -1}  # no limit: quiet
    with capture_logs() as logs:
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=-1)
    assert not [e for e in logs if e["event"] == "internal_topic_retention_short"]


async def test_the_internal_topic_is_created_without_a_time_limit_by_default(creating):
    from rationad.config import Settings

    r = Settings(input={"topics": ["logs"], "dialect": "hdfs"}).repartition
    assert r.retention_ms == -1
    await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                              replication_factor=r.replication_factor, retention_ms=r.retention_ms)
    assert creating.created == [("g-repartition", 3, 1, {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"})]


async def test_the_internal_topic_is_created_taking_the_records_the_daemon_sends_and_with_no_size_limit(creating):
    """Found by review (2026-12-07), failing before its fix: created with the broker's max.message.bytes (about 1 MiB)
    under an output.max_message_bytes of 4 MiB, it refused the larger packs (their lines dead-lettered), and the next
    start refused the topic (exit 2, which systemd does not restart); created with the broker's log.retention.bytes,
    lines waiting for a blocked model past it were deleted unjudged, and an existing topic's size limit went unsaid."""
    from structlog.testing import capture_logs

    await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                              replication_factor=1, retention_ms=-1, max_message_bytes=4_194_304)
    assert creating.created == [("g-repartition", 3, 1, {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1",
                                                         "max.message.bytes": "4194304"})]
    creating.parts["old-repartition"] = 3
    creating.retention_bytes = {"old-repartition": 10 * 2**30}
    with capture_logs() as logs:
        await topics.ensure_topic(KAFKA, "old-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=-1)
    warned = [e for e in logs if e["event"] == "internal_topic_retention_short"]
    assert len(warned) == 1 and warned[0]["retention_bytes"] == 10 * 2**30
    assert warned[0]["action"].endswith("--add-config retention.bytes=-1")


async def test_ensure_topic_that_cannot_be_created_names_the_key(creating):
    from aiokafka.errors import TopicAuthorizationFailedError

    creating.refuse = TopicAuthorizationFailedError()
    with pytest.raises(ConfigError, match=r"^repartition\.topic: cannot create the internal topic 'g-repartition'"):
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=4, like=["logs"],
                                  replication_factor=1, retention_ms=60_000)


@pytest.mark.parametrize("how", ["controller moving", "timed out", "unreachable", "no broker"])
async def test_a_creation_that_may_pass_is_not_a_configuration_error(creating, how, monkeypatch):
    """Found by review: every failure to create or check a topic at start was a ConfigError, so ``run`` exited 2 and
    systemd (RestartPreventExitStatus=2) never started it again after a broker restart or a controller failover. A
    refusal that passes is a TopicCheckError: exit 1, and the supervisor retries."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    if how == "controller moving":
        creating.answer_error = (41, "This is not the correct controller for this cluster.")
    elif how == "timed out":
        creating.refuse = KafkaTimeoutError()
    elif how == "unreachable":
        creating.refuse = KafkaConnectionError("Unable to bootstrap from [('kafka', 9092)]")
    else:
        async def never(self):
            raise asyncio.TimeoutError()
        monkeypatch.setattr(CreatingAdmin, "start", never)
    for create in (lambda: topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=4,
                                               like=["logs"], replication_factor=1, retention_ms=-1),
                   lambda: topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic")):
        with pytest.raises(topics.TopicCheckError, match=r"^(repartition\.topic|judge\.labels_topic): cannot "):
            await create()


async def test_a_topic_the_acl_hides_is_named_not_taken_for_missing(creating):
    """A topic the principal may not describe is absent from all-topics metadata (aiokafka lists it in
    ``unauthorized_topics``): read as missing, the labels topic was "no operator labels yet" (or a create refused
    for the wrong reason). Found by review (2026-12-07)."""
    creating.parts["rationad.labels"] = 1
    creating.hidden = {"rationad.labels", "g-repartition"}
    with pytest.raises(ConfigError, match=r"^judge\.labels_topic: the broker does not authorize .* 'rationad\.labels'"):
        await topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic")
    with pytest.raises(ConfigError, match=r"^repartition\.topic: the broker does not authorize"):
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=-1)
    assert creating.created == []


async def test_a_check_without_creating_refuses_what_run_refuses_and_creates_nothing(creating):
    """``check-config`` checks the template level's state topics as ``run`` does at start, creating none: a topic
    that exists with the delete policy passed check-config, then stopped ``run`` (exit 2) (review, 2026-12-07)."""
    assert await topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic", create=False) == 0
    assert creating.created == []  # missing: run creates it
    creating.parts["rationad.labels"] = 1
    creating.policy = {"rationad.labels": "delete"}
    with pytest.raises(ConfigError, match=r"^judge\.labels_topic: topic 'rationad\.labels' has cleanup\.policy=delete"):
        await topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic", create=False)
    creating.policy = {"rationad.labels": "compact"}
    assert await topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic", create=False) == 1


def test_run_exits_1_not_2_when_the_broker_fails_at_start(monkeypatch, capsys):
    from rationad import cli, daemon, logs, stop_signals

    async def run(self):
        raise topics.TopicCheckError("judge.labels_topic: cannot reach kafka:9092 to check the topic 'x': boom")

    monkeypatch.setattr(daemon.Daemon, "run", run)
    monkeypatch.setattr(logs, "configure", lambda *a, **kw: None)  # leaves the process's logging as the tests set it
    monkeypatch.setattr(stop_signals, "hold", lambda: None)
    assert cli.main(["run"]) == 1
    assert "error: judge.labels_topic: cannot reach" in capsys.readouterr().err


async def test_a_refusal_inside_the_create_topics_response_names_the_key(creating):
    # aiokafka returns CreateTopics' per-topic errors instead of raising them: they must not pass as "created"
    creating.answer_error = (29, "Topic authorization failed")
    with pytest.raises(ConfigError, match=r"^repartition\.topic: cannot create .*error 29: Topic authorization"):
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=4, like=["logs"],
                                  replication_factor=1, retention_ms=60_000)


@pytest.mark.parametrize("policy", ["compact", "compact,delete", "delete, compact"])
async def test_an_existing_compacted_internal_topic_is_refused_naming_the_key(creating, policy):
    """Found by review (2026-12-07), failing before its fix: the internal topic's cleanup policy was never checked:
    compaction deletes forwarded lines of one key before they are judged (and refuses unkeyed records)."""
    creating.parts["g-repartition"] = 3
    creating.policy = {"g-repartition": policy}
    with pytest.raises(ConfigError, match=r"repartition.topic: topic 'g-repartition' is compacted"):
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=-1)


async def test_an_existing_internal_topic_taking_smaller_records_than_the_producer_sends_is_refused(creating):
    """Found by review (2026-12-07), failing before its fix: packs are batched up to output.max_message_bytes, and
    a broker refuses a whole batch over the topic's max.message.bytes (its lines dead-lettered, not judged)."""
    creating.parts["g-repartition"] = 3
    creating.limits = {"g-repartition": 262_144}
    with pytest.raises(ConfigError, match=r"output.max_message_bytes: 1048576 is more than topic 'g-repartition'"):
        await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                  replication_factor=1, retention_ms=-1, max_message_bytes=1_048_576)
    assert await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                     replication_factor=1, retention_ms=-1, max_message_bytes=262_144) == 3
    creating.policy = {"g-repartition": "delete"}
    assert await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                     replication_factor=1, retention_ms=-1, max_message_bytes=262_144) == 3


async def test_check_config_leaves_a_missing_internal_topic_missing(creating):
    assert await topics.ensure_topic(KAFKA, "g-repartition", key="repartition.topic", partitions=0, like=["logs"],
                                     replication_factor=1, retention_ms=-1, create=False) == 0
    assert creating.created == []


@pytest.mark.parametrize("policy", ["compact,delete", "delete, compact"])
async def test_operator_labels_on_a_topic_that_also_deletes_are_refused_the_catalog_may_expire(creating, policy):
    """Found by review (2026-12-07), failing before its fix: a labels topic compacted and deleted was accepted, so
    operator labels older than its retention.ms (7 days by default) vanished, and the model decided their templates
    again after the next restart. The template catalog may expire (the docs give it a retention)."""
    creating.parts["rationad.labels"] = creating.parts["rationad.templates"] = 1
    creating.policy = {"rationad.labels": policy, "rationad.templates": policy}
    with pytest.raises(ConfigError, match=r"^judge\.labels_topic: topic 'rationad\.labels' has cleanup\.policy="):
        await topics.ensure_compacted_topic(KAFKA, "rationad.labels", key="judge.labels_topic")
    assert await topics.ensure_compacted_topic(KAFKA, "rationad.templates", key="judge.templates_topic",
                                               expiring=True) == 1
