"""Which partitions a worker has its consumer pause, and why.

All of them while the worker is at its in-flight cap; otherwise only those
*held* because the retry or dead letter of one of their jobs cannot be written
(job threads hold and release them; the Kafka loop applies the result, since
only it may call the consumer), and those *blocked* at the head-of-line limit:
so many finished jobs wait behind one still running that the worker takes no
more of the partition until that one finishes (``HeadOfLine``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from kq._consumer import ConsumerAdapter, TopicPartition
from kq._logs import CONSUMER
from kq._offsets import Generation


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
        self.blocked: set[TopicPartition] = set()  # by the loop thread only
        self._reported_blocked: set[TopicPartition] = set()
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

    def block(self, tp: TopicPartition, blocked: bool) -> None:
        """Block ``tp`` at the head-of-line limit (or stop); applied by ``apply``."""
        if blocked:
            self.blocked.add(tp)
        else:
            self.blocked.discard(tp)
        self.dirty = True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions assigned or taken away: whether they are paused is the client's again."""
        parts = set(partitions)
        self._paused -= parts
        if self.blocked & parts:
            self.blocked -= parts
            self.dirty = True

    def apply(self) -> None:
        """Pause and resume partitions to match; tell the observer when the held set changes."""
        self.dirty = False
        with self._lock:
            held = set(self._held)
        assigned = self._consumer.assignment()
        want = set(assigned) if self.at_cap else (held | self.blocked) & assigned
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
        if self.blocked != self._reported_blocked:
            self._reported_blocked = set(self.blocked)
            self._observe("partitions_blocked", sorted(self.blocked))

    def reset(self) -> None:
        """After leaving the group: nothing is paused any more."""
        self._paused.clear()
        self.blocked.clear()
        if self._reported_blocked:
            self._reported_blocked = set()
            self._observe("partitions_blocked", [])


class HeadOfLine:
    """Blocks a partition once ``limit`` finished jobs wait behind its oldest unfinished one.

    Those finished offsets are what the offset tracker holds (and what a
    crash would run again without exact resume): a slow job at the head of a
    fast partition would otherwise let them grow with throughput times its
    run time. The partition takes new jobs again once they are down to half.
    """

    def __init__(self, limit: int, pauses: Pauses) -> None:
        self.limit = limit
        self._resume_at = limit // 2
        self._pauses = pauses
        self._blocked: dict[TopicPartition, Generation] = {}

    def reached(self, part: Generation) -> None:
        """``part`` holds ``limit`` finished offsets or more: block it (once)."""
        if part.tp in self._blocked or not part.current:
            return
        self._blocked[part.tp] = part
        self._pauses.block(part.tp, True)
        CONSUMER.warning(
            "Partition %s/%s paused: %s finished jobs wait behind offset %s, which has not"
            " finished (head_of_line_limit %s); it takes new jobs again when they are down"
            " to %s",
            part.tp[0],
            part.tp[1],
            len(part.done),
            part.pending[0] if part.pending else "?",
            self.limit,
            self._resume_at,
        )

    def check(self) -> None:
        """Unblock partitions whose backlog shrank (or whose assignment ended)."""
        for tp, part in list(self._blocked.items()):
            if part.current and len(part.done) > self._resume_at:
                continue
            del self._blocked[tp]
            self._pauses.block(tp, False)
            if part.current:
                CONSUMER.info(
                    "Partition %s/%s resumed: %s finished jobs wait behind its oldest"
                    " unfinished one",
                    tp[0],
                    tp[1],
                    len(part.done),
                )

    @property
    def active(self) -> bool:
        """Whether any partition is blocked."""
        return bool(self._blocked)

    def reset(self) -> None:
        """Nothing blocked any more (the worker left the group)."""
        self._blocked.clear()
