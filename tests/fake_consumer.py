"""An in-memory stand-in for kq's consumer adapter, for fast unit tests of the worker engine.

It serves scripted records from in-memory partitions, keeps positions, pauses
and commits, and lets a test run rebalance steps inside ``poll`` exactly
where it wants them (``fake.during_next_poll(...)``). It never replaces the
real-broker tests: it only pins down the engine's own rules quickly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from kq.message import Message

TopicPartition = tuple[str, int]


class FakeConsumer:
    """A ``ConsumerAdapter`` over in-memory partitions ``{tp: [(key, value, headers), ...]}``."""

    def __init__(self, topic: str, partitions: int = 1, group: str = "g") -> None:
        self.topic = topic
        self.records: dict[TopicPartition, list[tuple[bytes | None, bytes, dict[str, bytes]]]] = {
            (topic, p): [] for p in range(partitions)
        }
        self.client = object()
        self.fail_seeks = False
        self.headers: dict[tuple[str, int, int], dict[str, bytes]] = {}
        self.hosts = "fake:9092"
        self.group = group
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.pause_calls: list[set[TopicPartition]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed: dict[TopicPartition, int] = {}
        self.metadata: dict[TopicPartition, str] = {}  # committed with the offsets
        self.reads: list[set[TopicPartition]] = []  # read_committed() calls
        self.handler: Any = None
        self._steps: list[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self.polls = 0
        self.ignore_max_records = (
            False  # the next poll returns more than asked (as after a rebalance)
        )
        self.revoke_on_unsubscribe = True
        self.lose_async_commits = 0  # the next N asynchronous commits fail
        self.refuse_sync_commits = 0  # the next N synchronous commits raise
        self.commits_failed: list[dict[TopicPartition, int]] = []

    # -- test controls ---------------------------------------------------------

    def add(
        self,
        partition: int,
        value: bytes,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> int:
        """Append a record; its offset."""
        tp = (self.topic, partition)
        with self._lock:
            self.records[tp].append((key, value, dict(headers or {})))
            return len(self.records[tp]) - 1

    def during_next_poll(self, step: Callable[[Any], None]) -> None:
        """Run ``step(handler)`` inside the next ``poll``, before it returns records."""
        with self._lock:
            self._steps.append(step)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """As the client does on an assignment: positions at the committed offsets."""
        parts = list(partitions)
        for tp in parts:
            self.positions[tp] = self.committed.get(tp, 0)
            self.assigned.add(tp)
            self.paused.discard(tp)
        self.handler.on_assigned(parts)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """As the client does on a revoke: the listener runs, then the partitions go."""
        parts = list(partitions)
        self.handler.on_revoked(parts)
        for tp in parts:
            self.assigned.discard(tp)
            self.paused.discard(tp)

    # -- the adapter -------------------------------------------------------------

    def resolve_hosts(self, timeout: float = 2.0) -> None:
        """Nothing to resolve."""

    def max_poll_interval(self) -> float | None:
        return None

    def subscribe(self, topic: str, handler: Any) -> None:
        self.handler = handler
        self.assign(self.records)

    def subscribed_to(self, topic: str) -> bool:
        return self.handler is not None and topic == self.topic

    def poll(self, timeout: float, max_records: int) -> list[Message]:
        self.polls += 1
        with self._lock:
            steps, self._steps = self._steps, []
        # records fetched before the steps: a batch can hold them (as confluent-kafka's can)
        out = self._fetch(1 << 30 if self.ignore_max_records else max_records)
        self.ignore_max_records = False
        for step in steps:
            step(self)
        if not out and not steps:
            threading.Event().wait(min(timeout, 0.01))
        return out

    def _fetch(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        with self._lock:
            for tp in sorted(self.assigned - self.paused):
                records = self.records[tp]
                while len(out) < max_records and self.positions[tp] < len(records):
                    offset = self.positions[tp]
                    key, value, headers = records[offset]
                    out.append(Message(tp[0], tp[1], offset, key, value))
                    if headers:
                        self.headers[(tp[0], tp[1], offset)] = dict(headers)
                    self.positions[tp] = offset + 1
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        parts = set(partitions)
        self.pause_calls.append(parts)
        self.paused |= parts

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.paused -= set(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self.fail_seeks:
            raise RuntimeError("seek refused (test)")
        self.positions[tp] = offset

    def commit(
        self,
        offsets: dict[TopicPartition, int],
        asynchronous: bool,
        timeout: float = 10.0,
        metadata: dict[TopicPartition, str] | None = None,
    ) -> None:
        if asynchronous and self.lose_async_commits:
            # handed over, then reported as failed (kafka-python's callback)
            self.lose_async_commits -= 1
            self.commits_failed.append(dict(offsets))
            return
        if not asynchronous and self.refuse_sync_commits:
            self.refuse_sync_commits -= 1
            raise RuntimeError("commit refused: the group is rebalancing (test)")
        self.commits.append(dict(offsets))
        self.committed.update(offsets)
        for tp in offsets:
            self.metadata[tp] = (metadata or {}).get(tp, "")

    def read_committed(
        self, partitions: Iterable[TopicPartition], timeout: float
    ) -> dict[TopicPartition, tuple[int, str]]:
        parts = set(partitions)
        self.reads.append(parts)
        return {
            tp: (offset, self.metadata.get(tp, ""))
            for tp, offset in self.committed.items()
            if tp in parts
        }

    def failed_commits(self) -> list[dict[TopicPartition, int]]:
        failed, self.commits_failed = self.commits_failed, []
        return failed

    def unsubscribe(self) -> None:
        if self.handler is not None and self.assigned and self.revoke_on_unsubscribe:
            self.revoke(sorted(self.assigned))
        self.assigned.clear()
        self.paused.clear()
        self.handler = None
