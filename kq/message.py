"""The raw Kafka record a worker received."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """A Kafka record as the worker saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
