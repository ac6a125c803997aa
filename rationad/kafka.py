"""aiokafka clients built from the ``[kafka]`` section (security settings included, secrets never logged).

Static membership (KIP-345, ``kafka.group_instance_id``): aiokafka sends the instance id only in JoinGroup v5+ and
SyncGroup v3+, and when the broker negotiates an older version it drops the id without a word, so the daemon would
silently run as a dynamic member. The consumer built here checks the brokers' JoinGroup versions before it joins, and
turns a join the broker refuses into a ``ConfigError`` naming the key (the CLI exits 2, which systemd does not retry);
a join that fails because the broker went away stays the broker's error (exit 1, retried).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import TYPE_CHECKING, Any

import structlog

from rationad.config import ConfigError, KafkaConfig

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

JOIN_GROUP_API_KEY = 11
STATIC_MEMBERSHIP_MIN_JOIN_GROUP_VERSION = 5  # Kafka 2.3 (KIP-345)


def common_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers,
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
    }
    if cfg.security_protocol.startswith("SASL"):
        kw["sasl_mechanism"] = cfg.sasl_mechanism
        kw["sasl_plain_username"] = cfg.sasl_username
        kw["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(
            cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None,
            certfile=str(cfg.ssl_certfile) if cfg.ssl_certfile else None,
            keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
        )
    return kw


def consumer_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """The group consumer's settings (without ``extra``): what ``make_consumer`` passes to aiokafka."""
    return {
        "group_id": cfg.group_id,
        "group_instance_id": cfg.group_instance_id,
        "enable_auto_commit": False,
        # a transactional writer's aborted records are not the log (its retry writes them again at new offsets)
        "isolation_level": "read_committed",
        "auto_offset_reset": cfg.auto_offset_reset,
        "session_timeout_ms": cfg.session_timeout_ms,
        "heartbeat_interval_ms": cfg.heartbeat_interval_ms,
        "max_poll_interval_ms": cfg.max_poll_interval_ms,
        **common_kwargs(cfg),
    }


def static_membership_problem(instance_id: str, brokers: dict[int, tuple[int, int] | None]) -> str | None:
    """Why the brokers cannot give ``instance_id`` static membership, or None when all of them can.

    ``brokers`` maps a broker id to its (min, max) JoinGroup version from ApiVersions (None: JoinGroup missing)."""
    old = {b: v for b, v in brokers.items() if v is None or v[1] < STATIC_MEMBERSHIP_MIN_JOIN_GROUP_VERSION}
    if not old:
        return None
    seen = ", ".join(f"broker {b}: {'none' if v is None else f'v{v[1]}'}" for b, v in sorted(old.items()))
    return (f"kafka.group_instance_id = {instance_id!r}: static membership needs JoinGroup v"
            f"{STATIC_MEMBERSHIP_MIN_JOIN_GROUP_VERSION}+ (Kafka 2.3 or later) on every broker, and the cluster "
            f"offers less ({seen}); the instance id would be dropped silently. Unset kafka.group_instance_id "
            "(dynamic membership) or upgrade the brokers")


async def join_group_versions(client: Any) -> dict[int, tuple[int, int] | None]:
    """JoinGroup (min, max) versions of every broker in a bootstrapped ``AIOKafkaClient``'s metadata that answers. A
    broker that cannot be asked (down, partitioned, an advertised listener out of reach) is left out, with a warning:
    its error ended start-up, and a static member restarted in a loop while any one listed broker was unreachable
    (review 2026-12-07); the join itself goes to the group's coordinator."""
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.admin import ApiVersionRequest

    out: dict[int, tuple[int, int] | None] = {}
    for broker in client.cluster.brokers():
        try:
            resp = await client.send(broker.nodeId, ApiVersionRequest())
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            log.warning("broker_versions_unknown", broker=broker.nodeId, error=repr(exc),
                        note="static membership is checked on the brokers that answer")
            continue
        versions = {key: (lo, hi) for key, lo, hi in resp.api_versions}
        out[broker.nodeId] = versions.get(JOIN_GROUP_API_KEY)
    return out


log = structlog.get_logger("rationad.kafka")

KEPT_MEMBER_ID = "_rationad_kept_member_id"  # the coordinator attribute holding a forgotten id until the next join


@functools.cache
def keep_group_member_ids() -> None:
    """Make aiokafka rejoin its group as the same member after a refused request (as KAFKA-13419 does).

    aiokafka 0.14 forgets its member id on every ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID and rejoins as a new member.
    The group coordinator still counts the old member and waits for it to rejoin: for up to the rebalance timeout
    (``kafka.max_poll_interval_ms``, 5 minutes by default) on Kafka, for ever on a broker that never expires members
    (noida-db 0.2.3, which also refuses a commit made during a rebalance with ILLEGAL_GENERATION and elected the
    forgotten member leader, so that no member was ever assigned again). A daemon whose commit lost that race owned
    no partition again, and the partitions of a member that had left were read by nobody (a failure test found it).

    aiokafka still forgets the id (its heartbeat loop ends on that), but a dynamic member's id that the coordinator
    confirmed (the member was in a generation) is set aside and offered at its next JoinGroup; a LeaveGroup sent
    meanwhile names it. An id that was only offered (no generation since) is not kept when refused: a coordinator
    that no longer knows it answers the JoinGroup with UNKNOWN_MEMBER_ID and aiokafka joins afresh, so an expired
    member costs one refused JoinGroup, never a loop. Process-wide and idempotent: the verdict cache's faust consumer
    gets it too."""
    from aiokafka.consumer import group_coordinator as gc
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.group import LeaveGroupRequest

    reset = gc.GroupCoordinator.reset_generation
    join = gc.CoordinatorGroupRebalance.perform_group_join
    leave = gc.GroupCoordinator._maybe_leave_group

    def reset_generation(self) -> None:
        member_id, confirmed = self.member_id, self.generation > 0
        reset(self)
        # a static member is known by its instance id; an id already forgotten (several partitions' commit errors
        # reset in a row) leaves the one set aside as it is
        if self._group_instance_id is None and member_id and confirmed:
            setattr(self, KEPT_MEMBER_ID, member_id)

    async def perform_group_join(self):
        coordinator = self._coordinator
        kept = coordinator.__dict__.pop(KEPT_MEMBER_ID, None)
        if kept and not coordinator.member_id:
            coordinator.member_id = kept
        return await join(self)

    async def maybe_leave_group(self):
        kept = self.__dict__.pop(KEPT_MEMBER_ID, None)
        # Outside a generation aiokafka sends no LeaveGroup: name the member set aside, or the one a JoinGroup that
        # failed was offering (a coordinator that does not know it answers UNKNOWN_MEMBER_ID, ignored).
        ghost = (kept or self.member_id) if self._group_instance_id is None and self.generation <= 0 else None
        if ghost:
            try:
                await self._send_req(LeaveGroupRequest(self.group_id, ghost))
            except KafkaError:
                pass  # best effort, as aiokafka's own
        try:
            return await leave(self)
        finally:
            self.__dict__.pop(KEPT_MEMBER_ID, None)

    gc.GroupCoordinator.reset_generation = reset_generation
    gc.CoordinatorGroupRebalance.perform_group_join = perform_group_join
    gc.GroupCoordinator._maybe_leave_group = maybe_leave_group


@functools.cache
def read_empty_assignments() -> None:
    """Read a SyncGroup answer without assignment bytes as an empty assignment, as Kafka's own clients do.

    A coordinator answers a member the leader's assignment left out (it joined as the leader was assigning, or the
    group has more members than partitions) with no bytes; aiokafka 0.14 fails to decode them (ValueError, not a
    KafkaError), which ends its coordination task: the verdict cache's faust consumer waited its 120 s recovery
    timeout on it in a CI failure test, and the member took no further part in the group. Read as empty, the member
    owns nothing in that generation and rebalances as any other. Process-wide; applied once."""
    from aiokafka.consumer import group_coordinator as gc
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    done = gc.GroupCoordinator._on_join_complete
    empty = ConsumerProtocolMemberAssignment(0, [], b"").encode()

    async def on_join_complete(self, generation, member_id, protocol, member_assignment_bytes):
        return await done(self, generation, member_id, protocol, member_assignment_bytes or empty)

    gc.GroupCoordinator._on_join_complete = on_join_complete


# While an offset commit's answer is read: [coordinator, generation and member id it was sent with, logged yet].
_COMMIT_SENT_AS: contextvars.ContextVar[list | None] = contextvars.ContextVar("rationad_commit_sent_as", default=None)


@functools.cache
def ignore_stale_commit_refusals() -> None:
    """Leave the member's generation alone when a commit sent in an earlier generation is refused (KAFKA-9823).

    A commit sent in generation N and answered ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID after the member joined
    generation N+1 is stale: the refusal is about a generation the member has left. aiokafka 0.14 forgets the
    current generation on it and rejoins, a needless rebalance of the whole group (every member pauses its
    partitions). The refusal still fails that commit (the daemon commits again in the new generation); only the reset
    is skipped, when the member's generation or id changed while the commit was in flight (a refusal read first
    resets it as before). Process-wide; applied once, over :func:`keep_group_member_ids`."""
    from aiokafka.consumer import group_coordinator as gc

    keep_group_member_ids()  # first: its reset, which sets the forgotten id aside, is the one skipped
    commit = gc.GroupCoordinator._do_commit_offsets
    reset = gc.GroupCoordinator.reset_generation

    async def do_commit_offsets(self, assignment, offsets):
        token = _COMMIT_SENT_AS.set([self, self.generation, self.member_id, False])
        try:
            return await commit(self, assignment, offsets)
        finally:
            _COMMIT_SENT_AS.reset(token)

    def reset_generation(self) -> None:
        sent = _COMMIT_SENT_AS.get()
        # this coordinator's commit (a task started during it, a connection's reader, inherits the variable), one
        # refusal per partition: logged once
        if sent is not None and sent[0] is self and self.generation > 0 \
                and (sent[1], sent[2]) != (self.generation, self.member_id):
            if not sent[3]:
                sent[3] = True
                log.info("stale_commit_refusal_ignored", group=self.group_id, member_id=self.member_id,
                         generation=self.generation, sent_member_id=sent[2], sent_generation=sent[1])
            return
        reset(self)

    gc.GroupCoordinator._do_commit_offsets = do_commit_offsets
    gc.GroupCoordinator.reset_generation = reset_generation


def mend_group_membership() -> None:
    """Every aiokafka group-membership mend (:func:`keep_group_member_ids`, :func:`read_empty_assignments`,
    :func:`ignore_stale_commit_refusals`), for each group consumer the daemon runs: its own and the verdict cache's
    faust consumer."""
    keep_group_member_ids()
    read_empty_assignments()
    ignore_stale_commit_refusals()


def _refused_session_timeout(consumer: Any, exc: BaseException) -> ConfigError | None:
    """A ``ConfigError`` naming kafka.session_timeout_ms when the coordinator refused it (outside the brokers'
    group.min/max.session.timeout.ms, 6 s to 30 min by default): it came as a traceback (exit 1, retried by the
    supervisor with a model load each time), or blamed kafka.group_instance_id."""
    from aiokafka.errors import InvalidSessionTimeoutError

    if not (isinstance(exc, InvalidSessionTimeoutError) or "InvalidSessionTimeout" in repr(exc)):
        return None
    return ConfigError(
        f"kafka.session_timeout_ms = {consumer._session_timeout_ms}: the group coordinator refused it ({exc!r}); "
        "the brokers accept group.min.session.timeout.ms to group.max.session.timeout.ms (6000 to 1800000 by "
        "default)")


def _refused_topics(exc: BaseException) -> ConfigError | None:
    """A ``ConfigError`` naming input.topics when the broker does not let the principal read a subscribed topic
    (aiokafka's start raises TopicAuthorizationFailed while it waits for the first assignment), for static and dynamic
    members alike: it is the ACL's fault, not the instance id's, and no restart mends it."""
    from aiokafka.errors import TopicAuthorizationFailedError

    if not isinstance(exc, TopicAuthorizationFailedError):
        return None
    return ConfigError(
        f"input.topics: the broker does not authorize this principal (kafka.sasl_username) to read {exc!r}: grant "
        "it Describe and Read on the input topics (and the repartition topic)")


@functools.cache
def _consumer_class() -> type[AIOKafkaConsumer]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import GroupAuthorizationFailedError, KafkaError

    mend_group_membership()

    class Consumer(AIOKafkaConsumer):
        """``AIOKafkaConsumer`` whose ``start`` refuses static membership the brokers would not honour."""

        async def start(self) -> None:
            instance_id = self._group_instance_id
            if instance_id is None or self._group_id is None:
                try:
                    return await super().start()
                except KafkaError as exc:
                    if (refused := _refused_session_timeout(self, exc) or _refused_topics(exc)) is not None:
                        await self.stop()
                        raise refused from exc
                    raise
            # Bootstrapping twice is harmless (aiokafka's start repeats it); the check must precede the first join.
            await self._client.bootstrap()
            problem = static_membership_problem(instance_id, await join_group_versions(self._client))
            if problem:
                await self._client.close()
                raise ConfigError(problem)
            try:
                await super().start()
            except KafkaError as exc:
                # A subscribed consumer's start waits for its first assignment; a join or sync the coordinator
                # refuses (FENCED_INSTANCE_ID, error 82, is unmapped in aiokafka 0.14 and arrives as UnknownError)
                # aborts that wait with the error.
                await self.stop()
                if (refused := _refused_session_timeout(self, exc) or _refused_topics(exc)) is not None:
                    raise refused from exc
                if isinstance(exc, GroupAuthorizationFailedError) or "GroupAuthorizationFailed" in repr(exc):
                    raise ConfigError(  # not the instance id's fault: the principal may not use the group
                        f"kafka.group_id = {self._group_id!r}: the broker does not authorize this principal "
                        f"(kafka.sasl_username) to join the group: {exc!r}. Grant it Read on the group") from exc
                if getattr(exc, "retriable", False) or "Connection" in type(exc).__name__:
                    raise  # the broker unreachable or a coordinator moving: exit 1, and the supervisor retries
                raise ConfigError(
                    f"kafka.group_instance_id = {instance_id!r}: the group coordinator refused the group join: "
                    f"{exc!r}. The id must be unique per running instance (another live daemon with this id fences "
                    "this one); unset it for dynamic membership"
                ) from exc

    return Consumer


def make_consumer(cfg: KafkaConfig, **extra: Any) -> AIOKafkaConsumer:
    """The daemon's group consumer: manual commits, ``kafka.auto_offset_reset``, static membership when
    ``kafka.group_instance_id`` is set (checked against the brokers at ``start``)."""
    return _consumer_class()(**consumer_kwargs(cfg), **extra)


def make_producer(cfg: KafkaConfig, **extra: Any) -> AIOKafkaProducer:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **common_kwargs(cfg), **extra)


async def record_times(cfg: KafkaConfig, offsets: dict[Any, int], timeout_secs: float) -> dict[Any, float]:
    """The broker timestamp (seconds) of the first committed record at or after each partition's offset (the oldest
    retained one when the offset has left retention), read by one consumer of its own (no group, nothing committed),
    all within ``timeout_secs`` in all; a partition with no such record, none readable in time, or no time, is left
    out. For a partition the daemon does not fetch (paused while the model is blocked) the committed offset's age must
    still count from when that record was written, not from the daemon's start."""
    from aiokafka import AIOKafkaConsumer

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    out: dict[Any, float] = {}
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed", **common_kwargs(cfg))
    try:
        await asyncio.wait_for(consumer.start(), max(0.1, deadline - loop.time()))
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        while len(out) < len(offsets) and (left := deadline - loop.time()) > 0:
            waiting = [tp for tp in offsets if tp not in out]
            got = await asyncio.wait_for(consumer.getmany(*waiting, timeout_ms=int(left * 1000), max_records=1),
                                         left + 1)
            if not got:
                break
            for tp, records in got.items():
                stamp = getattr(records[0], "timestamp", None) if records else None
                if isinstance(stamp, int) and stamp > 0:
                    out[tp] = stamp / 1000
                consumer.pause(tp)  # its first record read (with a time or without): no more of it
    except Exception:  # noqa: BLE001 - unreadable, unreachable, timed out: those partitions count from now
        pass
    finally:
        try:
            await asyncio.wait_for(consumer.stop(), 2.0)
        except Exception:  # noqa: BLE001 - a consumer that never connected
            pass
    return out
