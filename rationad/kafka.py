"""aiokafka clients built from the ``[kafka]`` section (security settings included, secrets never logged)."""

from __future__ import annotations

from typing import Any

from rationad.config import KafkaConfig


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


def make_consumer(cfg: KafkaConfig, **extra: Any):
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        **common_kwargs(cfg),
        **extra,
    )


def make_producer(cfg: KafkaConfig, **extra: Any):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **common_kwargs(cfg), **extra)
