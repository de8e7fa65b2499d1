"""The delay forwarder: moves ready records from a topic's delay tiers to their next hop.

One per worker, in a thread of its own, in the consumer group shared by every
forwarder of the topic (``kq.schedule.forwarder_group``); see ``kq.schedule``
for the tiers and the clock model. Each tier partition is read on as records
arrive, and each record has its own outcome:

- not ready yet: it waits in memory (``kq._forwarder_state``) until it is,
  without holding back the records behind it (they are due at other times);
- sent (home, or to the next tier): done; records done behind one still
  waiting, or whose send failed, are remembered as delivered (in this process
  and in the partition's commit metadata), so they are not sent again when
  the partition is read again from an earlier offset, by this forwarder or by
  one that takes the partition over;
- refused for good (too large for the home topic, a home partition that does
  not exist, headers naming no home or a home other than the forwarder's own
  job topic): dead-lettered with the reason;
- failed otherwise: the partition is sought back to it and paused for a
  backoff that grows while it keeps failing; other partitions go on.

It reads only its own topic's tiers and writes only to its own job topic, its
tiers and its dead-letter topic: a record cannot use the worker's credentials
to reach any other topic, whatever its ``kq-topic`` says.

The partition's offset is committed up to its first record not done (a
record waiting, or one whose send failed), with the records delivered above
it in the commit's metadata (``kq._resume``'s format). If the
thread dies of anything (a refused setting, a client error), it is restarted
with a growing backoff; its ``state`` and ``restarts`` are visible (``kq.delay``
log, ``kq.metrics``, ``kq info``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kq._forwarder_state import Partitions, Waiting, one_line, permanent, too_large
from kq._logs import DELAY
from kq._producer import ProducerAdapter, Record
from kq._resume import decode, encode, intervals
from kq.retry import (
    H_DUE,
    H_ERROR,
    H_PARTITION,
    H_SOURCE,
    H_STATUS,
    H_TOPIC,
    H_TRACEBACK,
    H_WRITTEN,
    TIER_HEADERS,
    UNDELIVERABLE,
)
from kq.schedule import (
    DUE_SLACK_MS,
    connection_settings,
    dead_letter_topic,
    delay_topic_pattern,
    delayed_record,
    ensure_topics,
    forwarder_group,
    now_ms,
    record_size,
    tier_of,
    timing,
)

__all__ = ["Forwarder", "forwarders"]

_FORWARDERS: weakref.WeakSet[Forwarder] = weakref.WeakSet()
_RESTART_MAX = 30.0  # seconds between restarts of a forwarder that keeps dying
_RETRY_MAX_MS = 5000  # longest pause of a partition whose sends keep failing
# Records that become ready are taken in groups at most this often (ms): each
# group costs a produce round trip and a commit, not each record.
_GATHER_MS = 50

TP = tuple[str, int]


def forwarders(topic: str | None = None) -> list[Forwarder]:
    """The forwarders of this process (of ``topic``), for metrics and health checks."""
    return [f for f in list(_FORWARDERS) if topic is None or f.topic == topic]


@dataclass
class _Item:
    """One tier record of a batch and what became of it."""

    tp: TP
    offset: int
    record: Record | None = None  # to send (home or next tier)
    dead: str | None = None  # why it is dead-lettered instead
    home: str = ""
    message: Any = None
    error: BaseException | None = None
    done: bool = False


class Forwarder:
    """Moves ready records from a topic's delay tiers to their next hop (a thread)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        producer: ProducerAdapter,
        config: Mapping[str, Any] | None = None,
        delivery_timeout: float = 30.0,
        dead_topic: str | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self.topic = topic
        self.group = forwarder_group(topic)
        self._producer = producer
        self._config = connection_settings(config)
        self._delivery_timeout = delivery_timeout
        self._dead_topic = dead_topic or dead_letter_topic(topic)
        self._dead_ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "stopped"
        """``running``, ``restarting`` (after it died, until its backoff ends) or ``stopped``."""
        self.restarts = 0
        self.last_error: str | None = None
        self.forwarded = 0
        self.dead_lettered = 0
        self._parts = Partitions()
        _FORWARDERS.add(self)

    def start(self) -> None:
        """Start forwarding in a daemon thread (again after ``stop``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.state = "running"
        self._thread = threading.Thread(
            target=self._supervise, name=f"kq-delay-{self.topic}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop forwarding; what was forwarded is committed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self.state = "running"
            started = time.monotonic()
            try:
                self._run()
            except Exception as exc:
                if self._stop.is_set():
                    break
                # A run that lasted a while was healthy: start the backoff over.
                failures = 1 if time.monotonic() - started > 60 else failures + 1
                backoff = min(0.5 * 2 ** (failures - 1), _RESTART_MAX)
                self.restarts += 1
                self.last_error = one_line(exc)
                self.state = "restarting"
                DELAY.error(
                    "Delay forwarder for %s stopped: %s; restarting in %.1f s (restart %d)",
                    self.topic,
                    self.last_error,
                    backoff,
                    self.restarts,
                    exc_info=True,
                )
                self._stop.wait(backoff)
        self.state = "stopped"

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                **self._config,
                "bootstrap.servers": self._bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range,roundrobin",
                # tiers created after this forwarder started are found this fast
                "topic.metadata.refresh.interval.ms": 2000,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
            }
        )
        parts = self._parts
        parts.forget(list({*parts.held, *parts.anchors, *parts.failures, *parts.waiting}))

        def forget(_consumer: Any, partitions: list[Any]) -> None:
            parts.forget([(tp.topic, tp.partition) for tp in partitions])

        def assigned(assigned_to: Any, partitions: list[Any]) -> None:
            forget(assigned_to, partitions)
            parts.unread.update((tp.topic, tp.partition) for tp in partitions)
            assigned_to.assign(partitions)
            # librdkafka keeps a partition's pause flag across a rebalance: one
            # held before it would otherwise never be fetched again.
            if partitions:
                assigned_to.resume(partitions)

        try:
            consumer.subscribe(
                [delay_topic_pattern(self.topic)],
                on_revoke=forget,
                on_assign=assigned,
                on_lost=forget,
            )
            while not self._stop.is_set():
                self._resume_ready(consumer, parts)
                timeout = 0.2
                ready = parts.next_ready()
                if ready is not None:
                    timeout = min(max(ready - now_ms(), _GATHER_MS), 200) / 1000
                messages = consumer.consume(num_messages=500, timeout=timeout)
                ready = parts.next_ready()
                if messages or (ready is not None and ready <= now_ms()):
                    self._handle(consumer, messages, parts)
        finally:
            try:
                consumer.close()
            except Exception as exc:
                DELAY.warning("Closing the delay forwarder failed: %s", exc)

    @staticmethod
    def _resume_ready(consumer: Any, parts: Partitions) -> None:
        from confluent_kafka import TopicPartition

        now = now_ms()
        ready = [tp for tp, at in parts.held.items() if at <= now]
        if ready:
            for tp in ready:
                del parts.held[tp]
            consumer.resume([TopicPartition(t, p) for t, p in ready])

    # -- one batch -----------------------------------------------------------

    def _handle(self, consumer: Any, messages: list[Any], parts: Partitions) -> None:
        now = now_ms()
        if parts.unread:
            self._read_delivered(consumer, parts, {(m.topic(), m.partition()) for m in messages})
        items: list[_Item] = []
        for m in messages:
            if m.error() is not None:
                continue
            tp = (m.topic(), m.partition())
            if tp in parts.held:
                continue  # behind a record whose send failed: fetched again on resume
            offset = m.offset()
            parts.read(tp, offset)
            if parts.is_waiting(tp, offset):
                continue  # read again after a seek; it waits here already
            item = _Item(tp, offset, message=m)
            if offset in parts.delivered.get(tp, ()):
                item.done = True  # sent before (behind a record that waited or failed)
            else:
                read_at = self._read_at(tp, offset, m, now, parts)
                ready_at = self._plan(item, now, read_at)
                if ready_at is not None:
                    size = len(m.value() or b"") + len(m.key() or b"") + 256
                    parts.wait(tp, offset, Waiting(ready_at, m, read_at, size))
                    continue
            items.append(item)
        for tp, offset, entry in parts.ready(now):
            item = _Item(tp, offset, message=entry.message)
            self._plan(item, now, entry.read_at, early=True)
            items.append(item)
        for tp, offset, entry in parts.overflow():
            # over the bounds: written again to the tier for the time it has left
            item = _Item(tp, offset, message=entry.message)
            self._plan(item, now, entry.read_at, early=True)
            items.append(item)
        if not items:
            return
        self._send([i for i in items if i.record is not None])
        self._dead_letter([i for i in items if i.dead is not None and i.error is None], now)
        self._settle(consumer, items, parts, now)

    @staticmethod
    def _read_at(tp: TP, offset: int, m: Any, now: int, parts: Partitions) -> int:
        """When the record was first read (its anchor if its writer's clock was ahead)."""
        seen = parts.anchors.get(tp)
        if seen is not None and seen[0] == offset:
            return seen[1]
        headers = dict(m.headers() or [])
        try:
            stamp = int(headers[H_WRITTEN]) if H_WRITTEN in headers else int(m.timestamp()[1])
        except (TypeError, ValueError):
            return now
        if stamp > now:
            # From a clock ahead of ours: it counts from now, and must go on
            # counting from this now when the partition is read again.
            parts.anchors[tp] = (offset, now)
        return now

    def _plan(self, item: _Item, now: int, read_at: int, early: bool = False) -> int | None:
        """Fill ``item.record`` or ``item.dead``; or return when the record will be ready.

        ``early``: it goes now whether ready or not (to its tier again if not due).
        """
        m = item.message
        headers = {k: v for k, v in (m.headers() or []) if v is not None}
        try:
            due = int(headers[H_DUE])
            item.home = headers[H_TOPIC].decode()
            stamp = int(headers[H_WRITTEN]) if H_WRITTEN in headers else int(m.timestamp()[1])
            partition = int(headers[H_PARTITION]) if H_PARTITION in headers else None
            if not item.home or (partition is not None and partition < 0):
                raise ValueError("empty home topic or negative partition")
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            item.dead = f"its kq-due/kq-written/kq-topic/kq-partition headers are invalid ({exc!r})"
            return None
        if item.home != self.topic:
            item.dead = (
                f"names the home topic {item.home[:100]!r} (kq-topic): this forwarder delivers"
                f" only to {self.topic!r}"
            )
            return None
        when = timing(tier_of(item.tp[0]) or 0, stamp, due, read_at)
        if when.ready > now and not early:
            return when.ready
        value, key = m.value() or b"", m.key()
        if when.due <= now + DUE_SLACK_MS:
            kept = tuple((k, v) for k, v in headers.items() if k not in TIER_HEADERS)
            item.record = Record(item.home, value, key, partition, now, kept)
        else:
            item.record = delayed_record(item.home, value, key, headers, when.due, now, partition)
        return None

    @staticmethod
    def _read_delivered(consumer: Any, parts: Partitions, fetched: set[TP]) -> None:
        """Newly assigned partitions: what their last commit says was delivered above it."""
        from confluent_kafka import TopicPartition

        tps = fetched & parts.unread
        if not tps:
            return
        parts.unread -= tps
        try:
            found = consumer.committed([TopicPartition(t, p) for t, p in sorted(tps)], timeout=10)
        except Exception as exc:
            DELAY.warning(
                "Could not read the delay forwarder's last commit of %s (records it delivered"
                " after its offset may be delivered again): %s",
                sorted(tps),
                exc,
            )
            return
        for tp in found:
            known = decode(tp.metadata, tp.offset) if tp.offset >= 0 else None
            if known is not None:
                delivered = parts.delivered.setdefault((tp.topic, tp.partition), set())
                for start, end in known.after(tp.offset - 1):
                    delivered.update(range(start, end))

    @staticmethod
    def _hold(consumer: Any, parts: Partitions, tp: TP, offset: int, until: int) -> None:
        from confluent_kafka import TopicPartition

        parts.held[tp] = until
        consumer.seek(TopicPartition(tp[0], tp[1], offset))
        consumer.pause([TopicPartition(tp[0], tp[1])])

    def _send(self, items: list[_Item]) -> None:
        if not items:
            return
        records = [i.record for i in items if i.record is not None]
        try:
            errors = self._producer.send_all(records, self._delivery_timeout)
        except Exception as exc:  # the adapter's contract is a list, but never lose a batch
            errors = [exc] * len(records)
        for item, error in zip(items, errors, strict=True):
            item.error = error
        if len(items) > 1:
            # The broker refuses a whole produce batch for one record over the
            # topic's max.message.bytes: each such record is tried alone, so
            # that only the big ones are found too large.
            for item in items:
                if item.error is not None and too_large(item.error) and item.record is not None:
                    try:
                        item.error = self._producer.send_all([item.record], self._delivery_timeout)[
                            0
                        ]
                    except Exception as exc:
                        item.error = exc
        for item in items:
            if item.error is None:
                item.done = True
                self.forwarded += 1
            elif permanent(item.error) and item.record is not None:
                size = record_size(item.record.key, item.record.value, item.record.headers)
                item.dead = (
                    f"cannot be delivered to {item.record.topic}"
                    f"{'' if item.record.partition is None else f'[{item.record.partition}]'}"
                    f" ({size} bytes; a topic takes at most its max.message.bytes):"
                    f" {one_line(item.error)}"
                )
                item.error = None

    def _dead_letter(self, items: list[_Item], now: int) -> None:
        if not items:
            return
        records = [self._letter(item, now) for item in items]
        try:
            if not self._dead_ready:
                ensure_topics(self._bootstrap, [self._dead_topic], self.topic, self._config)
                self._dead_ready = True
            errors = self._producer.send_all(records, self._delivery_timeout)
        except Exception as exc:
            errors = [exc] * len(records)
        for item, error in zip(items, errors, strict=True):
            m = item.message
            if error is None:
                item.done = True
                self.dead_lettered += 1
                DELAY.error(
                    "Delayed job at %s/%s/%s %s; sent to %s",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    item.dead,
                    self._dead_topic,
                )
            else:
                item.error = error

    def _letter(self, item: _Item, now: int) -> Record:
        m = item.message
        headers = {k: v for k, v in (m.headers() or []) if v is not None and k not in TIER_HEADERS}
        # the job topic whose tier held it; the tier record is named in the error
        headers.setdefault(H_SOURCE, f"{self.topic}/-/-".encode())
        headers[H_STATUS] = UNDELIVERABLE.encode()
        headers[H_ERROR] = (
            f"delayed job at {m.topic()}/{m.partition()}/{m.offset()} {item.dead}".encode()
        )
        headers[H_TRACEBACK] = b""
        return Record(
            self._dead_topic, m.value() or b"", m.key(), None, now, tuple(headers.items())
        )

    def _settle(self, consumer: Any, items: list[_Item], parts: Partitions, now: int) -> None:
        """Commit each partition up to its first record not done; hold the rest for a retry."""
        from confluent_kafka import TopicPartition

        by_tp: dict[TP, list[_Item]] = {}
        for item in items:
            by_tp.setdefault(item.tp, []).append(item)
        commits = []
        for tp, mine in by_tp.items():
            mine.sort(key=lambda i: i.offset)
            failed = next((i for i in mine if not i.done), None)
            delivered = parts.delivered.setdefault(tp, set())
            delivered.update(i.offset for i in mine if i.done)
            if failed is None:
                parts.failures.pop(tp, None)
            else:
                parts.position[tp] = min(parts.position.get(tp, failed.offset), failed.offset)
                count = parts.failures.get(tp, 0) + 1
                parts.failures[tp] = count
                backoff = min(500 * 2 ** min(count - 1, 8), _RETRY_MAX_MS)
                DELAY.warning(
                    "Forwarding %s/%s/%s failed (%s); retrying that partition in %.1f s",
                    tp[0],
                    tp[1],
                    failed.offset,
                    one_line(failed.error) if failed.error is not None else "unknown",
                    backoff / 1000,
                )
                # read again from the lowest record not done: an earlier failure of
                # this partition may still wait for its retry below this one
                self._hold(consumer, parts, tp, parts.position[tp], now + backoff)
            upto = parts.commit_point(tp)
            if upto is None:
                continue
            delivered.difference_update([o for o in delivered if o < upto])
            anchor = parts.anchors.get(tp)
            if anchor is not None and anchor[0] < upto:
                del parts.anchors[tp]
            # records delivered that do not fit in the metadata would go again after a takeover
            text, _left_out = encode(upto, intervals(delivered))
            if parts.committed.get(tp) != (upto, text):
                parts.committed[tp] = (upto, text)
                commits.append(TopicPartition(tp[0], tp[1], upto, metadata=text))
        if commits:
            try:
                consumer.commit(offsets=commits, asynchronous=False)
            except Exception as exc:
                for refused in commits:  # made again next time
                    parts.committed.pop((refused.topic, refused.partition), None)
                DELAY.warning("Committing forwarded delayed jobs failed: %s", exc)
