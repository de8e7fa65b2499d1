"""Spreading unkeyed jobs evenly over a topic's partitions, whichever client sends them.

Left to the clients, unkeyed records are not spread evenly: librdkafka's sticky
partitioner sends a burst to one partition (388 of 400 jobs on one of 4 in a
measured burst), kafka-python picks at random. A job queue's partitions are its
unit of parallelism, so kq places each unkeyed record without an explicit
partition itself: round-robin over the partitions that have a leader, in runs
(a call sending n such records to P partitions gives each partition a run of
about n/P consecutive records, so a batch still makes large per-partition
produce batches while a one-at-a-time enqueue rotates record by record).
Keyed records keep the client's murmur2 hashing; explicit partitions win.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from kq.errors import EnqueueError

#: One message to produce: (topic, value, key, partition, timestamp_ms, headers).
Headers = tuple[tuple[str, bytes], ...]
Outgoing = tuple[str, bytes, bytes | None, int | None, int, Headers]

# How long a topic's partition list is trusted: partitions added to a topic
# get jobs this soon.
_TTL = 30.0


class TopicMissing(Exception):
    """The cluster answered, and it has no such topic."""


def missing_topic_error(topic: str) -> EnqueueError:
    """The one-line error for an enqueue to a topic that does not exist."""
    return EnqueueError(
        topic,
        f"the topic does not exist; create it first: kq topic create {topic} --partitions N",
    )


Lookup = Callable[[str, float], "list[int] | None"]
"""(topic, timeout) -> the partitions that have a leader; None when the cluster
did not answer in time; raises ``TopicMissing``."""


class Spreader:
    """Assigns partitions to unkeyed records (thread-safe)."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._next: dict[str, int] = {}

    def _partitions_of(self, topic: str, timeout: float) -> list[int] | None:
        now = time.monotonic()
        cached = self._partitions.get(topic)
        if cached is not None and now - cached[0] < _TTL:
            return cached[1]
        found = self._lookup(topic, timeout)
        if found:
            self._partitions[topic] = (now, sorted(found))
            return self._partitions[topic][1]
        return None if cached is None else cached[1]

    def place(
        self, records: Sequence[Outgoing], timeout: float
    ) -> tuple[list[Outgoing], dict[str, BaseException]]:
        """Records with partitions chosen for the unkeyed ones; errors by topic (missing)."""
        counts: dict[str, int] = {}
        for topic, _value, key, partition, _ts, _headers in records:
            if key is None and partition is None:
                counts[topic] = counts.get(topic, 0) + 1
        if not counts:
            return list(records), {}
        errors: dict[str, BaseException] = {}
        plans: dict[str, tuple[list[int], int, int]] = {}  # topic -> partitions, run, index
        with self._lock:
            for topic, count in counts.items():
                try:
                    partitions = self._partitions_of(topic, timeout)
                except TopicMissing:
                    errors[topic] = missing_topic_error(topic)
                    continue
                if not partitions:
                    continue  # cluster unknown now: the client decides, as before
                run = max(1, count // len(partitions))
                start = self._next.get(topic, 0) % len(partitions)
                runs = -(-count // run)
                self._next[topic] = (start + runs) % len(partitions)
                plans[topic] = (partitions, run, start * run)
        if not plans:
            return list(records), errors
        placed: list[Outgoing] = []
        seen: dict[str, int] = {}
        for record in records:
            topic, value, key, partition, timestamp, headers = record
            plan = plans.get(topic) if key is None and partition is None else None
            if plan is None:
                placed.append(record)
                continue
            partitions, run, base = plan
            n = seen.get(topic, 0)
            seen[topic] = n + 1
            chosen = partitions[((base + n) // run) % len(partitions)]
            placed.append((topic, value, key, chosen, timestamp, headers))
        return placed, errors
