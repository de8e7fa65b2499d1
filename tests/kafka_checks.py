"""Small read-only views of broker state for assertions (committed offsets, raw writes)."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    """The group's committed offset for one partition, or None if it has none."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
    finally:
        consumer.close()
    return None if tp.offset < 0 else int(tp.offset)


def session_config(client: str, max_poll_ms: int | None = None) -> dict[str, Any]:
    """Consumer settings (either client's names) that notice a dead member in 6 s."""
    if client == "confluent":
        config: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        if max_poll_ms is not None:
            config["max.poll.interval.ms"] = max_poll_ms
    else:
        config = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
        if max_poll_ms is not None:
            config["max_poll_interval_ms"] = max_poll_ms
    return config


def produce_raw(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    """Write raw bytes to a topic, bypassing kq (for malformed input)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value=value, key=key)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} raw messages not delivered")


def group_name() -> str:
    """A consumer group nobody else uses."""
    return f"g-{uuid.uuid4().hex[:12]}"
