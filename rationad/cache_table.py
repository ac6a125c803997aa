"""A durable, shared backing for the verdict cache: a faust-streaming GlobalTable over a compacted changelog topic.

Why faust here: the verdict cache is state that must survive restarts and rebalances, and that every instance of a
consumer group benefits from sharing. A faust ``GlobalTable`` is exactly that: every instance reads the whole
changelog topic at start-up (recovery) and keeps following it, and writes go to the changelog. Per-line work stays on
aiokafka's batched path (see README: faust's per-event path is far slower for millions of lines).

The table mirrors the in-memory LRU: an eviction writes a tombstone (past ``cache.max_entries`` or
``cache.max_bytes``, and for a recovered entry too large for the byte bound), so after compaction the topic stays
bounded by the same two bounds. Each model identity (name, version, prompt version: the namespace) has a changelog
topic of its own (``changelog_topic``), so an upgraded model never reuses the old model's verdicts and a replica holds
only its model's entries in memory: with one topic for all, the ``memory://`` store kept every earlier model's
entries too (up to ``cache.max_bytes`` more per upgrade, for ever). An earlier model's topic is no longer read; it can
be deleted once no replica serves that model (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from typing import Any

import orjson
import structlog

from rationad.config import ConfigError, KafkaConfig

log = structlog.get_logger("rationad.cache")


def _credentials(cfg: KafkaConfig) -> Any:
    import faust

    ssl_context = None
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None,
            certfile=str(cfg.ssl_certfile) if cfg.ssl_certfile else None,
            keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
        )
    if cfg.security_protocol.startswith("SASL"):
        password = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        if cfg.sasl_mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            return faust.SASLCredentials(username=cfg.sasl_username, password=password, ssl_context=ssl_context,
                                         mechanism=cfg.sasl_mechanism)
        return faust.SASLCredentials(username=cfg.sasl_username, password=password, ssl_context=ssl_context)
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def table_name(namespace: str) -> str:
    """The faust table of one model identity: ``cache-`` and 12 hex digits of its sha256 (a topic name takes no
    ``@`` or ``/``, and a version string can be long)."""
    return "cache-" + hashlib.sha256(namespace.encode()).hexdigest()[:12]


def changelog_topic(group_id: str, namespace: str) -> str:
    """The compacted topic holding the verdicts of the model identity ``namespace`` (faust names a table's changelog
    ``<app id>-<table>-changelog``; the app id is ``<group_id>-verdicts``)."""
    return f"{group_id}-verdicts-{table_name(namespace)}-changelog"


def _json_str(raw: Any) -> str | None:
    """The string a changelog key or value holds as JSON; None for anything else."""
    try:
        v = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return v if isinstance(v, str) else None


def app_settings(kafka: KafkaConfig, datadir: str, replication_factor: int = 1) -> dict[str, Any]:
    """The faust App's settings for the verdict table, from the daemon's Kafka settings; the changelog topic faust
    creates gets ``replication_factor`` (``repartition.replication_factor``, as every internal topic)."""
    session = kafka.session_timeout_ms / 1000
    return {
        "datadir": datadir,
        "broker": [f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",") if h.strip()],
        "broker_credentials": _credentials(kafka),
        "store": "memory://",
        "web_enabled": False,
        "autodiscover": False,
        "topic_partitions": 1,
        # Not 1 on a production cluster: with min.insync.replicas >= 2 the broker refuses every write to a topic of
        # one replica, and a lost broker takes the recovered verdicts with it.
        "topic_replication_factor": replication_factor,
        "broker_session_timeout": session,
        "broker_heartbeat_interval": kafka.heartbeat_interval_ms / 1000,
        # faust refuses a session timeout above its request timeout (90 s by default): a session timeout set past
        # the in-process engine's model load for static membership (docs/operations.md) turned the durable cache
        # off at every start, with one warning
        "broker_request_timeout": max(90.0, session + 5.0),
        # Static membership for the table's group too, so a restarted daemon's recovery does not wait for its dead
        # member to expire (instance ids are scoped by group: the daemon's own id can be reused).
        "consumer_group_instance_id": kafka.group_instance_id,
    }


class ChangelogStore:
    """``get``-free store: ``items()`` after ``start()`` (recovered state), then ``put``/``delete`` as the LRU
    changes. Writes are asynchronous (faust's ``send_soon``); a lost write only costs a future model call."""

    def __init__(self, kafka: KafkaConfig, namespace: str, replication_factor: int = 1) -> None:
        self.kafka = kafka
        self.replication_factor = replication_factor
        self.namespace = namespace
        self.app_id = f"{kafka.group_id}-verdicts"
        self._app: Any = None
        self._table: Any = None
        self._datadir: tempfile.TemporaryDirectory | None = None

    @property
    def changelog_topic(self) -> str:
        return changelog_topic(self.kafka.group_id, self.namespace)

    async def start(self) -> None:
        try:
            import faust
        except ImportError as exc:
            raise ConfigError(
                "cache.durable: needs faust-streaming (pip install 'rationad[faust]'), or set cache.durable = false"
            ) from exc
        from rationad.kafka import mend_group_membership

        mend_group_membership()  # faust's consumer group, like the daemon's
        # faust makes a data folder even for a memory:// store (in the working directory by default, which a service
        # may not be able to write): a temporary one holds nothing worth keeping and is removed at close.
        self._datadir = tempfile.TemporaryDirectory(prefix="rationad-faust-")
        app = faust.App(self.app_id, **app_settings(self.kafka, self._datadir.name, self.replication_factor))
        # Raw bytes in and out of faust, JSON strings encoded and decoded here: a record faust could not decode (an
        # empty value written by hand, a key that is not JSON) stalled its recovery at every start, for ever (the
        # compacted topic keeps it); here it is skipped. The bytes are those faust's JSON serializer wrote.
        self._table = app.GlobalTable(table_name(self.namespace), default=None, partitions=1, key_type=bytes,
                                      value_type=bytes, help="rationad verdict cache")
        self._app = app  # before it starts: a start that fails or times out is stopped by ``aclose``
        await app.start()
        # Writes come from the judge, outside any faust agent: let the producer pick the partition.
        self._table.use_partitioner = True
        log.info("verdict_cache_recovered", topic=self.changelog_topic, entries=len(self._table))

    def items(self) -> Iterator[tuple[str, str]]:
        """Recovered entries of this model (namespace prefix stripped); records that are not JSON strings are
        skipped."""
        prefix = self.namespace + "/"
        for raw_key, raw_value in list(self._table.items()):
            key, value = _json_str(raw_key), _json_str(raw_value)
            if key is not None and key.startswith(prefix) and value is not None:
                yield key[len(prefix):], value

    def put(self, key: str, completion: str) -> None:
        self._table[orjson.dumps(f"{self.namespace}/{key}")] = orjson.dumps(completion)

    def delete(self, key: str) -> None:
        self._table.pop(orjson.dumps(f"{self.namespace}/{key}"), None)

    async def aclose(self) -> None:
        app, self._app = self._app, None
        try:
            if app is not None:
                await app.stop()
        finally:
            if self._datadir is not None:
                self._datadir.cleanup()
