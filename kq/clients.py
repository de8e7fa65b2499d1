"""Kafka clients with the settings kq relies on, from just a bootstrap address."""

from __future__ import annotations

import functools
import time
import weakref
from typing import Any, Literal

from kq._checks import fail_value
from kq._logs import CLIENT

ClientName = Literal["confluent", "confluent-kafka", "kafka-python"]
"""Which Kafka client kq builds: ``"confluent"`` (or its package name
``"confluent-kafka"``) or ``"kafka-python"``."""


def client_family(client: str) -> Literal["confluent", "kafka-python"]:
    """``"confluent"`` or ``"kafka-python"`` for a ``ClientName``; ``ValueError`` otherwise."""
    if client in ("confluent", "confluent-kafka"):
        return "confluent"
    if client == "kafka-python":
        return "kafka-python"
    fail_value(
        f"client must be 'confluent' (or 'confluent-kafka') or 'kafka-python', not {client!r}"
    )


def make_producer(
    bootstrap_servers: str,
    *,
    client: ClientName = "confluent",
    delivery_timeout: float = 30.0,
    **config: Any,
) -> Any:
    """Return a durable producer: acks from all in-sync replicas, idempotent.

    With confluent-kafka the partitioner is murmur2 (as in Java and kafka-python),
    so a key maps to the same partition whichever client enqueued it.
    ``config`` is passed to the client as is and wins over kq's choices.
    """
    timeout_ms = int(delivery_timeout * 1000)
    if client_family(client) == "confluent":
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "partitioner": "murmur2_random",
            "message.timeout.ms": timeout_ms,
            # kq counts a record that left the client unreported as
            # acknowledged; a report per success would cost a Python call each.
            "delivery.report.only.error": True,
            "logger": CLIENT,
        }
        settings.update(config)
        return _remembering(settings)
    from kafka import KafkaProducer

    kp_settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "linger_ms": 2,
        "max_block_ms": timeout_ms,
        "request_timeout_ms": max(min(timeout_ms - 10, 30000), 1),
        # Records still unsent at the queue's deadline expire in the client
        # instead of being delivered later, after enqueue already failed.
        "delivery_timeout_ms": timeout_ms,
        # Without it the constructor waits 30 s for an unreachable broker.
        "bootstrap_timeout_ms": timeout_ms,
    }
    kp_settings.update(config)
    return KafkaProducer(**kp_settings)


@functools.cache
def _remembering_class() -> type:
    from confluent_kafka import Producer

    class RememberingProducer(Producer):
        """confluent-kafka's Producer, keeping the client's last error and when it came."""

        last_error: tuple[float, str] | None = None
        fatal_error: str | None = None  # the producer is unusable from then on

    return RememberingProducer


def _remembering(settings: dict[str, Any]) -> Any:
    # librdkafka retries a refused login or a lost broker until the record
    # times out, and says why only in its log and to error_cb: kq keeps the
    # last such error so a failed enqueue can name it.
    theirs = settings.get("error_cb")
    ref: list[weakref.ref[Any]] = []  # weak: the client holds this callback

    def remember(error: Any) -> None:
        producer = ref[0]() if ref else None
        if producer is not None:
            text = error.str() if hasattr(error, "str") else str(error)  # a KafkaError
            producer.last_error = (time.monotonic(), text)
            if getattr(error, "fatal", lambda: False)():
                producer.fatal_error = text
        if theirs is not None:
            theirs(error)

    producer = _remembering_class()({**settings, "error_cb": remember})
    ref.append(weakref.ref(producer))
    return producer


def make_consumer(
    bootstrap_servers: str,
    group: str,
    *,
    client: ClientName = "confluent",
    **config: Any,
) -> Any:
    """Return a consumer for a worker: no auto-commit, earliest offset for a new group.

    Starting from the earliest offset means jobs enqueued before the group's
    first worker are not skipped. Partitions are assigned cooperative-sticky,
    so a worker joining or leaving does not take partitions (and their running
    jobs) from the others unless they must move. ``config`` wins over kq's choices.
    """
    if client_family(client) == "confluent":
        from confluent_kafka import Consumer

        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "cooperative-sticky",
            # Bounded prefetch (librdkafka's default holds up to 64 MB per
            # partition); the short backoff keeps the drain rate with it.
            "queued.max.messages.kbytes": 8192,
            "fetch.queue.backoff.ms": 10,
            "logger": CLIENT,
        }
        settings.update(config)
        return Consumer(settings)
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.cooperative_sticky import (
        CooperativeStickyAssignor,
    )

    kp_settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 1000,
        "partition_assignment_strategy": (CooperativeStickyAssignor,),
    }
    kp_settings.update(config)
    return KafkaConsumer(**kp_settings)


# kafka-python's names for the login and TLS settings, in librdkafka's words.
_LOGIN_KEYS = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "ssl_crlfile": "ssl.crl.location",
}


def login_settings(config: dict[str, Any] | None, client: ClientName) -> dict[str, Any]:
    """The login and TLS settings of a client configuration, as confluent-kafka keys.

    kq's helper clients (delay tiers, retries, dead letters, topic creation)
    are confluent-kafka ones whatever client the queue or worker uses; they
    log in as the queue's producer or the worker's consumer does.
    """
    if not config:
        return {}
    if client_family(client) == "kafka-python":
        login = {_LOGIN_KEYS[k]: v for k, v in config.items() if k in _LOGIN_KEYS and v is not None}
        if config.get("ssl_check_hostname") is False:
            login["ssl.endpoint.identification.algorithm"] = "none"
        return login
    return {k: v for k, v in config.items() if k.split(".", 1)[0] in ("security", "sasl", "ssl")}
