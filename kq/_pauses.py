"""Which partitions a worker has its consumer pause, and why.

All of them while the worker is at its in-flight cap; otherwise only those
*held* because the retry or dead letter of one of their jobs cannot be written
(job threads hold and release them; the Kafka loop applies the result, since
only it may call the consumer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from kq._consumer import ConsumerAdapter, TopicPartition
from kq._logs import CONSUMER


class Pauses:
    """The partitions to pause, kept in step with the consumer by ``apply``."""

    def __init__(self, consumer: ConsumerAdapter, observe: Callable[..., Any]) -> None:
        self._consumer = consumer
        self._observe = observe
        self.at_cap = False
        self.dirty = False  # apply() has something to do
        self._held: dict[TopicPartition, int] = {}  # partition -> job threads holding it
        self._lock = threading.Lock()
        self._reported: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()  # what the consumer has paused for us

    def set_at_cap(self, at_cap: bool) -> None:
        """Pause every partition (or stop doing so)."""
        if at_cap != self.at_cap:
            self.at_cap = at_cap
            self.apply()

    def hold(self, tp: TopicPartition, held: bool) -> None:
        """A job thread holds ``tp`` (or lets it go); thread-safe, applied by the loop."""
        with self._lock:
            count = self._held.get(tp, 0) + (1 if held else -1)
            if count > 0:
                self._held[tp] = count
            else:
                self._held.pop(tp, None)
        self.dirty = True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions assigned or taken away: whether they are paused is the client's again."""
        self._paused.difference_update(partitions)

    def apply(self) -> None:
        """Pause and resume partitions to match; tell the observer when the held set changes."""
        self.dirty = False
        with self._lock:
            held = set(self._held)
        assigned = self._consumer.assignment()
        want = set(assigned) if self.at_cap else held & assigned
        pause = want - self._paused
        resume = (self._paused - want) & assigned
        try:
            if pause:
                self._consumer.pause(pause)
            if resume:
                self._consumer.resume(resume)
        except Exception as exc:
            CONSUMER.warning("Could not pause or resume partitions (trying again): %s", exc)
            self.dirty = True
            return
        self._paused = want
        if held != self._reported:
            self._reported = held
            self._observe("partitions_held", sorted(held))

    def reset(self) -> None:
        """After leaving the group: nothing is paused any more."""
        self._paused.clear()
