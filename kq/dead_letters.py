"""Reading and re-enqueueing dead-lettered jobs.

After its last failed attempt a job with a retry policy is written, unchanged,
to ``<topic>.kq-dead`` with what went wrong in headers. Kafka cannot delete
single records, so the dead-letter topic is a log: ``list`` reads it (from a
given offset on), ``requeue`` sends a job back to its topic for a fresh set of
attempts; note the offsets you have handled, or use ``since``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kq._producer import Record, adapt_producer, raise_for
from kq.retry import H_ATTEMPT, H_ERROR, H_FIRST, H_SOURCE, H_STATUS, H_TRACEBACK
from kq.schedule import dead_letter_topic
from kq.serialization import loads

__all__ = ["DeadLetter", "DeadLetters"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered job, as found in the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    """The job's record value exactly as first enqueued."""
    source_topic: str
    source_partition: int
    source_offset: int
    status: str
    """The outcome of the last attempt: ``failure`` or ``timeout``."""
    error: str
    traceback: str
    attempts: int
    first_enqueued_ms: int | None
    headers: Mapping[str, bytes] = field(repr=False, default_factory=dict)

    def job(self, deserializer: Callable[[bytes], Any] = loads) -> Any:
        """The job object (deserialized with dill-compatible ``loads`` by default)."""
        return deserializer(self.value)


def _letter(
    partition: int, offset: int, key: bytes | None, value: bytes, headers: Any
) -> DeadLetter:
    h = {k: v for k, v in (headers or []) if v is not None}
    source = h.get(H_SOURCE, b"//").decode(errors="replace")
    src_topic, _, rest = source.rpartition("/")
    src_topic, _, src_partition = src_topic.rpartition("/")
    first = h.get(H_FIRST)
    return DeadLetter(
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        source_topic=src_topic,
        source_partition=int(src_partition) if src_partition.isdigit() else -1,
        source_offset=int(rest) if rest.isdigit() else -1,
        status=h.get(H_STATUS, b"failure").decode(errors="replace"),
        error=h.get(H_ERROR, b"").decode(errors="replace"),
        traceback=h.get(H_TRACEBACK, b"").decode(errors="replace"),
        attempts=int(h.get(H_ATTEMPT, b"1")),
        first_enqueued_ms=int(first) if first else None,
        headers=h,
    )


def _watermarks(consumer: Any, partition: Any, timeout: float) -> tuple[int, int]:
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException:
            # a topic just created may not have its leaders yet
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class DeadLetters:
    """The dead letters of one job topic: list, inspect and re-enqueue them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        dead_letter_topic_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        delivery_timeout: float = 30.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.dead_topic = dead_letter_topic_name or dead_letter_topic(topic)
        self._config = dict(config or {})
        self._delivery_timeout = delivery_timeout
        self._producer: Any = None

    def list(
        self, limit: int = 100, since: Mapping[int, int] | None = None, timeout: float = 10.0
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first per partition.

        ``since`` maps partitions to the first offset wanted (default: the
        beginning). Reads what the topic held when called, then returns.
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"kq-dead-letters-{uuid.uuid4().hex}",  # never committed
                "enable.auto.commit": False,
                **self._config,
            }
        )
        try:
            metadata = consumer.list_topics(self.dead_topic, timeout=timeout)
            info = metadata.topics.get(self.dead_topic)
            if info is None or info.error is not None or not info.partitions:
                return []
            ends: dict[int, int] = {}
            starts: list[Any] = []
            for p in sorted(info.partitions):
                low, high = _watermarks(consumer, TopicPartition(self.dead_topic, p), timeout)
                first = max((since or {}).get(p, low), low)
                if first < high:
                    ends[p] = high
                    starts.append(
                        TopicPartition(self.dead_topic, p, first if first > 0 else OFFSET_BEGINNING)
                    )
            if not starts:
                return []
            consumer.assign(starts)
            out: list[DeadLetter] = []
            deadline = time.monotonic() + timeout
            while ends and len(out) < limit and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=min(500, limit - len(out)), timeout=0.5):
                    partition, offset = m.partition(), m.offset()
                    if m.error() is not None or partition not in ends or offset is None:
                        continue
                    out.append(_letter(partition, offset, m.key(), m.value() or b"", m.headers()))
                    if offset + 1 >= ends[partition]:
                        del ends[partition]
            return out[:limit]
        finally:
            consumer.close()

    def get(self, partition: int, offset: int, timeout: float = 10.0) -> DeadLetter:
        """The dead letter at ``partition``/``offset``; ``LookupError`` if there is none."""
        for letter in self.list(limit=1, since={partition: offset}, timeout=timeout):
            if letter.partition == partition and letter.offset == offset:
                return letter
        raise LookupError(f"no dead letter at {self.dead_topic}/{partition}/{offset}")

    def requeue(self, letter: DeadLetter, topic: str | None = None) -> None:
        """Send the job back (to its source topic, or ``topic``) for a fresh set of attempts.

        Durable on return; raises ``kq.EnqueueError`` otherwise.
        """
        target = topic or letter.source_topic or self.topic
        headers = tuple(
            (k, v)
            for k, v in letter.headers.items()
            if k not in (H_ERROR, H_TRACEBACK, H_SOURCE, H_STATUS, H_ATTEMPT)
        )
        record = Record(
            target,
            letter.value,
            letter.key,
            None,
            int(time.time() * 1000),
            (*headers, (H_ATTEMPT, b"1")),
        )
        if self._producer is None:
            from kq.clients import make_producer

            self._producer = adapt_producer(make_producer(self.bootstrap_servers, **self._config))
        error = self._producer.send_all([record], self._delivery_timeout)[0]
        if error is not None:
            raise_for(target, error)
