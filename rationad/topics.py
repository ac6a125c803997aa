"""Are the topics the daemon writes to there? Checked at start-up, without creating them.

A producer sending to a missing topic on a broker that does not auto-create topics retries its metadata request
until ``request_timeout_ms`` and fails every send, so the daemon would stall with the records it cannot deliver.
Both ``rationad check-config`` and ``rationad run`` ask first.

Only a metadata request for *all* topics is safe to ask with: aiokafka sends ``allow_auto_topic_creation=True``
with every metadata request that names topics (``MetadataRequest`` v4+, the admin client's ``describe_topics`` and
the producer's and consumer's metadata updates alike), so naming a missing topic on a broker that auto-creates
creates it with the broker's default partition count. ``AIOKafkaAdminClient.list_topics`` asks for all topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from rationad.config import ConfigError, KafkaConfig
from rationad.kafka import common_kwargs

log = structlog.get_logger("rationad.topics")

AUTO_CREATE = "auto.create.topics.enable"


class TopicCheckError(Exception):
    """The broker could not be asked (unreachable, timed out, or it refused the metadata request), or a topic could
    not be created for a reason that passes (a controller moving, a timeout): not a configuration error, so ``run``
    exits 1 and its supervisor starts it again (systemd does not retry exit 2)."""


async def _auto_create_enabled(admin: Any) -> bool | None:
    """The broker's ``auto.create.topics.enable``; None when it will not say (old broker, ACLs, no answer)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    try:
        cluster = await admin.describe_cluster()
        node = cluster.get("controller_id")
        if node is None or node < 0:
            node = cluster["brokers"][0]["node_id"]
        resource = ConfigResource(ConfigResourceType.BROKER, str(node), {AUTO_CREATE: None})
        responses = await admin.describe_configs([resource])
        for response in responses:
            for res in response.to_object()["resources"]:
                if res["error_code"] != 0:
                    continue
                for entry in res["config_entries"]:
                    if entry["config_names"] == AUTO_CREATE and entry["config_value"] is not None:
                        return str(entry["config_value"]).strip().lower() == "true"
    except Exception:  # noqa: BLE001 - any failure here only means "cannot tell"
        return None
    return None


async def _missing(admin: Any, wanted: list[str]) -> tuple[list[str], bool | None]:
    existing = set(await admin.list_topics())
    missing = [t for t in wanted if t not in existing]
    return missing, (await _auto_create_enabled(admin) if missing else None)


async def missing_topics(kafka_cfg: KafkaConfig, topics: Iterable[str], *, timeout_secs: float = 15.0) -> list[str]:
    """The topics of ``topics`` that the broker neither has nor will create on first use, in the given order,
    without duplicates; ``[]`` when all are usable. Creates nothing.

    A topic the broker lacks is not reported when the broker says ``auto.create.topics.enable=true``
    (DescribeConfigs); when the broker will not say (an old broker, ACLs), it is reported.
    Raises ``TopicCheckError`` when the broker cannot be reached or asked within ``timeout_secs``."""
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    missing, auto_create, _, _ = await _ask(kafka_cfg, wanted, timeout_secs)
    return [] if auto_create else missing


async def require_topics(kafka_cfg: KafkaConfig, keyed: Mapping[str, str], *, timeout_secs: float = 15.0,
                         max_message_bytes: int | None = None, unkeyed: Iterable[str] = ()) -> None:
    """Fail unless every topic in ``keyed`` (config key -> topic, e.g. ``{"output.topic": "anomalies"}``) exists
    or will be auto-created, and, with ``max_message_bytes`` (``output.max_message_bytes``), takes records that large
    (its ``max.message.bytes``, where the broker says), and the topics of the ``unkeyed`` keys, which take records
    without a key, are not compacted (a compacted topic refuses them: the dead letters of undecodable records).
    Raises ``ConfigError`` naming each problem with its key (one line each), or ``TopicCheckError`` when the broker
    cannot be asked.

    The size: the producer batches records up to ``output.max_message_bytes``, and a broker refuses a batch over the
    topic's limit whole (aiokafka does not split it): every event of a model batch was dead-lettered though each fit,
    their dead letters were refused the same way, and the daemon stopped, meeting them again after each restart."""
    wanted = list(dict.fromkeys(keyed.values()))
    if not wanted:
        return
    unkeyed = [key for key in unkeyed if key in keyed]
    missing, auto_create, limits, policies = await _ask(kafka_cfg, wanted, timeout_secs,
                                                        sizes=max_message_bytes is not None,
                                                        policies=[keyed[key] for key in unkeyed])
    problems = []
    if missing and not auto_create:
        why = ("the broker does not auto-create topics (auto.create.topics.enable=false)" if auto_create is False
               else "the broker did not say whether it auto-creates topics")
        problems += [f"{key}: topic {topic!r} does not exist on {kafka_cfg.bootstrap_servers} and {why}; create it"
                     for key, topic in keyed.items() if topic in missing]
    if max_message_bytes is not None:
        problems += [_too_small(max_message_bytes, topic, key, limits[topic])
                     for key, topic in keyed.items() if limits.get(topic) is not None
                     and limits[topic] < max_message_bytes]
    problems += [f"{key}: topic {keyed[key]!r} is compacted (cleanup.policy={policies[keyed[key]]}): it refuses the "
                 "records without a key it must take (dead letters of undecodable records), and the daemon would "
                 "stop at the first; set cleanup.policy=delete on it, or name another topic"
                 for key in unkeyed if "compact" in _policies(policies.get(keyed[key]))]
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


async def _ask(kafka_cfg: KafkaConfig, wanted: list[str], timeout_secs: float, *, sizes: bool = False,
               policies: Iterable[str] = ()) -> tuple[list[str], bool | None, dict[str, int | None], dict[str, str]]:
    """(missing topics, whether the broker auto-creates, with ``sizes`` each present topic's ``max.message.bytes``
    or None where the broker will not say, and the ``cleanup.policy`` of the present ``policies`` topics that the
    broker says)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout_secs * 1000), **common_kwargs(kafka_cfg))
    try:
        return await asyncio.wait_for(_start_and_ask(admin, wanted, sizes, list(policies)), timeout_secs)
    except Exception as exc:  # unreachable, timed out (asyncio.TimeoutError), refused
        raise TopicCheckError(f"cannot list the topics of {kafka_cfg.bootstrap_servers}: {exc!r}") from exc
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a client that never connected
            pass


async def _start_and_ask(admin: Any, wanted: list[str], sizes: bool = False, policies: list[str] | None = None
                         ) -> tuple[list[str], bool | None, dict[str, int | None], dict[str, str]]:
    await admin.start()
    missing, auto_create = await _missing(admin, wanted)
    limits: dict[str, int | None] = {}
    said: dict[str, str] = {}
    policies = policies or []
    for topic in wanted:
        if topic in missing or not (sizes or topic in policies):
            continue
        configs = await _topic_configs(admin, topic)
        if sizes:
            value = configs.get("max.message.bytes")
            limits[topic] = int(value) if value is not None and value.isdigit() else None
        if topic in policies and "cleanup.policy" in configs:
            said[topic] = configs["cleanup.policy"]
    return missing, auto_create, limits, said


async def ensure_topic(kafka_cfg: KafkaConfig, topic: str, *, key: str, partitions: int, like: Iterable[str],
                       replication_factor: int, retention_ms: int, timeout_secs: float = 30.0,
                       max_message_bytes: int | None = None, create: bool = True) -> int:
    """Create ``topic`` unless it exists, with ``partitions`` partitions (0: as many as the topic of ``like`` with
    the most), and return its partition count. Raises ``ConfigError`` naming ``key`` when it cannot be created,
    ``TopicCheckError`` when that may pass (``_create``). An existing one is refused (``ConfigError``) when the broker
    says it is compacted (compaction deletes forwarded lines of one key before they are judged, and refuses the
    unkeyed ones) or takes records smaller than ``max_message_bytes`` (``output.max_message_bytes``: the producer's
    batches of packs, which the broker would refuse whole, their lines dead-lettered instead of judged). With
    ``create`` False (``rationad check-config``) a missing topic is left missing: 0."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout_secs * 1000), **common_kwargs(kafka_cfg))
    try:
        cluster = await _cluster(admin, kafka_cfg, key, topic, timeout_secs)
        if topic not in cluster.topics() and not create:
            return 0
        if topic not in cluster.topics():
            n = partitions or max((len(cluster.partitions_for_topic(t) or ()) for t in like), default=0) or 1
            # Set, whatever the broker's defaults (review 2026-12-07): the delete policy (a compacted default refused
            # the keyless packs and deleted lines waiting to be judged), no size limit (log.retention.bytes would
            # delete them too), and records as large as the daemon sends (the broker's default, about 1 MiB, refused
            # larger packs); each time, the next start refused the topic it had made.
            configs = {"cleanup.policy": "delete", "retention.ms": str(retention_ms), "retention.bytes": "-1"}
            if max_message_bytes is not None:
                configs["max.message.bytes"] = str(max_message_bytes)
            await _create(admin, NewTopic(topic, n, replication_factor, topic_configs=configs),
                          key, f"the internal topic {topic!r} ({n} partitions, replication {replication_factor})")
            cluster = await _wait_for_partitions(admin, topic)
            _warn_time_limit(topic, str(retention_ms), retention_ms)
        else:
            configs = await _topic_configs(admin, topic)  # one request for the four settings read here
            policy = configs.get("cleanup.policy")
            if "compact" in _policies(policy):
                raise ConfigError(f"{key}: topic {topic!r} is compacted (cleanup.policy={policy}): compaction deletes "
                                  "forwarded lines before they are judged; use a topic with cleanup.policy=delete "
                                  "(the daemon creates one when the name is free)")
            limit = configs.get("max.message.bytes")
            if max_message_bytes is not None and limit is not None and limit.isdigit() \
                    and int(limit) < max_message_bytes:
                raise ConfigError(_too_small(max_message_bytes, topic, key, int(limit)))
            _warn_time_limit(topic, configs.get("retention.ms"), retention_ms)
            _warn_size_limit(topic, configs.get("retention.bytes"))
        return len(cluster.partitions_for_topic(topic) or ())
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a client that never connected
            pass


def _limit(value: str | None) -> int | None:
    """A topic's retention setting as the broker said it, when it is a limit (None: no limit, or not said)."""
    try:
        have = int(value) if value is not None else None
    except ValueError:
        return None
    return None if have is None or have < 0 else have


def _warn_time_limit(topic: str, value: str | None, configured_ms: int) -> None:
    """The internal topic holds a forwarded line's only copy until its verdict (the daemon purges what it committed):
    a time limit on it (``repartition.retention_ms``; a rationad before 2026-12-07 created it with a day, and its
    shipped config.toml said so) deletes lines still waiting past it, so say so at every start, and how to lift it."""
    have = _limit(value)
    if have is None:
        return
    log.warning("internal_topic_retention_short", topic=topic, retention_ms=have, configured=configured_ms,
                why="lines waiting longer than this for their verdict (model blocked, daemon down) are deleted "
                    "unjudged; the daemon deletes what it has committed there, so no limit is needed",
                action=("set repartition.retention_ms = -1 and " if configured_ms >= 0 else "")
                + f"kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config retention.ms=-1")


def _warn_size_limit(topic: str, value: str | None) -> None:
    """As ``_warn_time_limit``, for a size limit (``retention.bytes``, or the broker's ``log.retention.bytes``): lines
    waiting past it, a model blocked for hours, are deleted unjudged with their input offsets committed."""
    have = _limit(value)
    if have is None:
        return
    log.warning("internal_topic_retention_short", topic=topic, retention_bytes=have,
                why="lines waiting for their verdict past this size a partition (model blocked, daemon down) are "
                    "deleted unjudged; the daemon deletes what it has committed there, so no limit is needed",
                action=f"kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
                       "--add-config retention.bytes=-1")


async def _cluster(admin: Any, kafka_cfg: KafkaConfig, key: str, topic: str, timeout_secs: float) -> Any:
    """The cluster's metadata, the admin client started; ``TopicCheckError`` naming ``key`` when the broker cannot be
    reached. A metadata request for all topics names none, so it creates none (see the module docstring)."""
    try:
        await asyncio.wait_for(admin.start(), timeout_secs)
        cluster = await admin._client.fetch_all_metadata()
    except Exception as exc:
        raise TopicCheckError(f"{key}: cannot reach {kafka_cfg.bootstrap_servers} to check the topic {topic!r}: "
                              f"{exc!r}") from exc
    if topic in getattr(cluster, "unauthorized_topics", ()):  # it reads as missing: a create then fails, or worse
        raise ConfigError(f"{key}: the broker does not authorize this principal (kafka.sasl_username) to describe the "
                          f"topic {topic!r}: grant it Describe, Read and Write on it")
    return cluster


# CreateTopics answers per topic in its response (aiokafka does not raise for these): 36 is TOPIC_ALREADY_EXISTS, a
# replica or the CLI creating it alongside.
_TOPIC_ALREADY_EXISTS = 36


async def _create(admin: Any, new_topic: Any, key: str, what: str) -> None:
    """Create one topic, or find it created by a replica alongside. CreateTopics reports a refusal per topic in its
    response, and aiokafka returns it rather than raising. Raises ``ConfigError`` naming ``key`` for a refusal that
    stays (authorization, a replication factor or config the cluster refuses), ``TopicCheckError`` for one that
    passes (a retriable error code, the broker unreachable)."""
    from aiokafka.errors import KafkaError, KafkaTimeoutError, for_code

    problem, passes = None, False
    try:
        response = await admin.create_topics([new_topic])
        errors = [e for e in getattr(response, "topic_errors", ()) if e[1] not in (0, _TOPIC_ALREADY_EXISTS)]
        if errors:
            problem = f"error {errors[0][1]}: {errors[0][2] if len(errors[0]) > 2 else ''}"
            passes = bool(getattr(for_code(errors[0][1]), "retriable", False))
    except Exception as exc:  # noqa: BLE001 - reported below unless another client created it
        problem = repr(exc)
        passes = not isinstance(exc, KafkaError) or isinstance(exc, KafkaTimeoutError) or exc.retriable
    if problem is None:
        return
    try:
        if new_topic.name in set(await admin.list_topics()):
            return
    except Exception as exc:  # noqa: BLE001 - the broker went away meanwhile
        problem, passes = f"{problem}; then {exc!r}", True
    if passes:
        raise TopicCheckError(f"{key}: cannot create {what} now: {problem}; the start is given up (exit 1) and the "
                              "supervisor starts the daemon again")
    raise ConfigError(f"{key}: cannot create {what}: {problem}; create it, or let the daemon create topics")


async def _wait_for_partitions(admin: Any, topic: str) -> Any:
    """Cluster metadata once a new topic's partitions show (they appear when their leaders are elected)."""
    for _ in range(50):
        cluster = await admin._client.fetch_all_metadata()
        if cluster.partitions_for_topic(topic):
            return cluster
        await asyncio.sleep(0.1)
    return cluster


def _policies(policy: str | None) -> set[str]:
    """The policies a topic's ``cleanup.policy`` names (``compact,delete``, ``delete, compact``); none when unsaid."""
    return set(policy.replace(" ", "").split(",")) if policy is not None else set()


async def _cleanup_policy(admin: Any, topic: str) -> str | None:
    """The topic's ``cleanup.policy``; None when the broker will not say (old broker, ACLs, no answer)."""
    return await _topic_config(admin, topic, "cleanup.policy")


async def _topic_config(admin: Any, topic: str, name: str) -> str | None:
    """The topic's config ``name``; None when the broker will not say (old broker, ACLs, no answer)."""
    return (await _topic_configs(admin, topic)).get(name)


async def _topic_configs(admin: Any, topic: str) -> dict[str, str]:
    """The topic's configs the broker says (none when it will not: old broker, ACLs, no answer)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    found: dict[str, str] = {}
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)])
        for response in responses:
            for res in response.to_object()["resources"]:
                if res["error_code"] != 0:
                    continue
                for entry in res["config_entries"]:
                    if entry["config_value"] is not None:
                        found.setdefault(entry["config_names"], str(entry["config_value"]))
    except Exception:  # noqa: BLE001 - any failure here only means "cannot tell"
        return {}
    return found


def _too_small(max_message_bytes: int, topic: str, key: str, limit: int) -> str:
    return (f"output.max_message_bytes: {max_message_bytes} is more than topic {topic!r} ({key}) takes "
            f"(max.message.bytes={limit}); set it at most {limit}, or raise the topic's")


async def ensure_compacted_topic(kafka_cfg: KafkaConfig, topic: str, *, key: str, partitions: int = 1,
                                 replication_factor: int = 1, timeout_secs: float = 30.0, create: bool = True,
                                 expiring: bool = False) -> int:
    """Create ``topic`` with ``cleanup.policy=compact`` unless it exists, and return its partition count
    (``create=False``, for ``check-config``: only check one that exists; 0 for one that does not).

    For state kept as the last value per key (operator labels, the template catalog): on a topic with the default
    ``delete`` policy those values would vanish after ``retention.ms`` (7 days by default), so an existing topic the
    broker reports as not compacted is refused too, and so is one compacted and deleted (``compact,delete``) unless
    its records may expire (``expiring``: the template catalog, which the docs advise to give a retention; operator
    labels must not expire: review 2026-12-07). Raises ``ConfigError`` naming ``key``, or ``TopicCheckError`` when
    the broker cannot be reached or the creation may pass (``_create``)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout_secs * 1000), **common_kwargs(kafka_cfg))
    try:
        cluster = await _cluster(admin, kafka_cfg, key, topic, timeout_secs)
        if topic not in cluster.topics():
            if not create:
                return 0
            await _create(admin, NewTopic(topic, partitions, replication_factor,
                                          topic_configs={"cleanup.policy": "compact"}),
                          key, f"the compacted topic {topic!r} ({partitions} partitions, replication "
                               f"{replication_factor}, cleanup.policy=compact)")
            cluster = await _wait_for_partitions(admin, topic)
        else:
            policy = await _cleanup_policy(admin, topic)
            policies = _policies(policy)
            if policy is not None and ("compact" not in policies or "delete" in policies and not expiring):
                raise ConfigError(f"{key}: topic {topic!r} has cleanup.policy={policy}: its records (the last value "
                                  "per key is the state) would be deleted after retention.ms; set cleanup.policy="
                                  "compact on it (kafka-configs --alter --add-config cleanup.policy=compact) or name "
                                  "another topic")
        return len(cluster.partitions_for_topic(topic) or ())
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a client that never connected
            pass
