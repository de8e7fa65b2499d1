"""Delayed jobs and retry backoff on Kafka topics, which have no delay of their own.

A job that must wait (``using(delay=...)``, or a failed attempt waiting for its
retry) is written to one of a few *delay tiers* of its topic,
``<topic>.kq-delay-1s`` … ``<topic>.kq-delay-1h``, with its due time and home
topic in headers. In a tier every record waits the tier's fixed time after it
was written, so records become ready in the order they sit in the partition
and a forwarder never has to hold back a ready record behind one that is not:
it pauses a partition exactly until its head is ready. A ready record that is
due goes back to its home topic; one that is not yet due moves to the tier
that fits the time left. A job therefore never runs before it is due, and at
most about a second after (the smallest tier).

Every worker runs a forwarder (its own consumer group ``<group>.kq-delay``),
so what waits in the tiers survives worker restarts and runs once a worker is
back. A record is committed in a tier only after the broker acknowledged its
next hop: at least once, as everywhere in kq.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from kq._logs import DELAY
from kq._producer import ProducerAdapter, Record
from kq.retry import H_DUE, H_TOPIC

__all__ = ["TIERS", "dead_letter_topic", "delay_topic", "delay_topics", "route"]

# (suffix, seconds), smallest first.
TIERS: tuple[tuple[str, int], ...] = (
    ("1s", 1),
    ("10s", 10),
    ("1m", 60),
    ("10m", 600),
    ("1h", 3600),
)
_TIER_MS = {suffix: seconds * 1000 for suffix, seconds in TIERS}
_DUE_SLACK_MS = 5  # a record this close to due is forwarded home rather than held again


def delay_topic_prefix(topic: str) -> str:
    """What the names of ``topic``'s delay tiers start with (producers' ACL prefix)."""
    return f"{topic}.kq-delay-"


def delay_topic(topic: str, suffix: str) -> str:
    """The delay tier ``suffix`` (e.g. ``"10s"``) of ``topic``."""
    return f"{delay_topic_prefix(topic)}{suffix}"


def forwarder_group(group: str) -> str:
    """The consumer group of the delay forwarder of the workers of ``group``."""
    return f"{group}.kq-delay"


def delay_topics(topic: str) -> list[str]:
    """All delay tiers of ``topic``, smallest first."""
    return [delay_topic(topic, suffix) for suffix, _ in TIERS]


def dead_letter_topic(topic: str) -> str:
    """Where jobs of ``topic`` go after their last failed attempt (default name)."""
    return f"{topic}.kq-dead"


def route(home: str, due_ms: int, now_ms: int) -> str:
    """The tier a job due at ``due_ms`` waits in now: the largest that is not too long."""
    remaining = due_ms - now_ms
    chosen = TIERS[0][0]
    for suffix, seconds in TIERS:
        if seconds * 1000 <= remaining:
            chosen = suffix
    return delay_topic(home, chosen)


def delayed_record(
    home: str,
    value: bytes,
    key: bytes | None,
    headers: Mapping[str, bytes],
    due_ms: int,
    now_ms: int,
) -> Record:
    """The record that parks a job until ``due_ms`` (``headers`` are the job's own)."""
    kept = tuple((k, v) for k, v in headers.items() if k not in (H_DUE, H_TOPIC))
    extra = ((H_DUE, str(due_ms).encode()), (H_TOPIC, home.encode()))
    return Record(route(home, due_ms, now_ms), value, key, None, now_ms, kept + extra)


def ensure_topics(bootstrap: str, topics: list[str], like: str, config: Mapping[str, Any]) -> None:
    """Create the missing ``topics`` with the partitions and replication of topic ``like``."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **config})
    metadata = admin.list_topics(timeout=10)
    missing = [t for t in topics if t not in metadata.topics]
    if not missing:
        return
    source = metadata.topics.get(like)
    if source is not None and source.partitions:
        partitions = len(source.partitions)
        replicas = len(next(iter(source.partitions.values())).replicas)
    else:
        partitions, replicas = 1, min(3, len(metadata.brokers))
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replicas) for t in missing],
        operation_timeout=10,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name!r}: {exc}") from exc


class Forwarder:
    """Moves ready records from a topic's delay tiers to their next hop (a thread)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        producer: ProducerAdapter,
        config: Mapping[str, Any] | None = None,
        delivery_timeout: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._group = forwarder_group(group)
        self._producer = producer
        self._logger = DELAY
        self._config = dict(config or {})
        self._delivery_timeout = delivery_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.forwarded = 0

    def start(self) -> None:
        """Start forwarding in a daemon thread (again after ``stop``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"kq-delay-{self._topic}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop forwarding; what was forwarded is committed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": self._group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # tiers created after this forwarder started are found this fast
                "topic.metadata.refresh.interval.ms": 2000,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                **self._config,
            }
        )
        held: dict[tuple[str, int], int] = {}  # paused partition -> ms when its head is ready

        def forget(_consumer: Any, partitions: list[Any]) -> None:
            for tp in partitions:
                held.pop((tp.topic, tp.partition), None)

        def assigned(assigned_to: Any, partitions: list[Any]) -> None:
            forget(assigned_to, partitions)
            assigned_to.assign(partitions)
            # librdkafka keeps a partition's pause flag across a rebalance: one
            # held before it would otherwise never be fetched again.
            if partitions:
                assigned_to.resume(partitions)

        consumer.subscribe(
            [f"^{re.escape(self._topic)}\\.kq-delay-.*"],
            on_revoke=forget,
            on_assign=assigned,
            on_lost=forget,
        )
        try:
            while not self._stop.is_set():
                self._resume_ready(consumer, held)
                messages = consumer.consume(num_messages=500, timeout=0.2)
                if messages:
                    self._handle(consumer, messages, held)
        except Exception:
            self._logger.exception("Delay forwarder for %s stopped", self._topic)
        finally:
            try:
                consumer.close()
            except Exception as exc:
                self._logger.warning("Closing the delay forwarder failed: %s", exc)

    def _resume_ready(self, consumer: Any, held: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        now = int(time.time() * 1000)
        ready = [tp for tp, at in held.items() if at <= now]
        if ready:
            for tp in ready:
                del held[tp]
            consumer.resume([TopicPartition(t, p) for t, p in ready])

    def _handle(self, consumer: Any, messages: list[Any], held: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        now = int(time.time() * 1000)
        records: list[Record] = []
        sources: list[tuple[str, int, int]] = []
        for m in messages:
            if m.error() is not None:
                continue
            tp = (m.topic(), m.partition())
            if tp in held:
                continue  # behind a record that is not ready: fetched again on resume
            headers = {k: v for k, v in (m.headers() or []) if v is not None}
            suffix = m.topic().rsplit(".kq-delay-", 1)[-1]
            try:
                due = int(headers[H_DUE])
                home = headers[H_TOPIC].decode()
            except (KeyError, ValueError, UnicodeDecodeError):
                self._logger.error(
                    "Record %s[%s]@%s has no valid kq-due/kq-topic headers; skipped",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                )
                sources.append((m.topic(), m.partition(), m.offset()))
                continue
            ready = min(m.timestamp()[1] + _TIER_MS.get(suffix, 0), due)
            if ready > now:
                held[tp] = ready
                consumer.seek(TopicPartition(tp[0], tp[1], m.offset()))
                consumer.pause([TopicPartition(tp[0], tp[1])])
                continue
            if due <= now + _DUE_SLACK_MS:
                kept = tuple((k, v) for k, v in headers.items() if k not in (H_DUE, H_TOPIC))
                records.append(Record(home, m.value() or b"", m.key(), None, now, kept))
            else:
                records.append(delayed_record(home, m.value() or b"", m.key(), headers, due, now))
            sources.append((m.topic(), m.partition(), m.offset()))
        if not sources:
            return
        errors = self._producer.send_all(records, self._delivery_timeout) if records else []
        if any(e is not None for e in errors):
            # Nothing of this batch is committed: it is forwarded again (at least once).
            self._logger.warning(
                "Forwarding delayed jobs failed (%s); retrying",
                next(e for e in errors if e is not None),
            )
            firsts: dict[tuple[str, int], int] = {}
            for t, p, o in sources:
                firsts[(t, p)] = min(firsts.get((t, p), o), o)
            for (t, p), o in firsts.items():
                if (t, p) not in held:
                    consumer.seek(TopicPartition(t, p, o))
            time.sleep(0.5)
            return
        self.forwarded += len(records)
        last: dict[tuple[str, int], int] = {}
        for t, p, o in sources:
            last[(t, p)] = max(last.get((t, p), -1), o)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:
            self._logger.warning("Committing forwarded delayed jobs failed: %s", exc)
