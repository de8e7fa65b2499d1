"""Which offsets are safe to commit when jobs finish out of order.

Each partition's offsets are tracked per *generation*: from the moment the
worker takes its first message after an assignment until the partition is
revoked or lost. ``started`` hands out the generation a message belongs to,
and ``finished`` only counts a message against that generation, so a job of a
revoked partition that finishes after the partition came back can never move
the new generation's commit past a message it has not run.

Finished offsets above the committable one (jobs that finished while an
earlier one still runs) are kept until it finishes: ``finished_above`` gives
them for the commit's metadata (exact resume, ``kq._resume``), and their
number is what the worker's head-of-line limit bounds.
"""

from __future__ import annotations

import heapq

TopicPartition = tuple[str, int]


class Generation:
    """One assignment of one partition: its started and finished offsets."""

    __slots__ = ("changes", "current", "done", "pending", "running", "safe", "top", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.pending: list[int] = []  # min-heap of started offsets not yet below ``safe``
        # finished offsets not yet below ``safe``, with how many times: the same
        # offset may be taken twice in one generation (a re-fetch), and each
        # copy must finish before the commit passes it
        self.done: dict[int, int] = {}
        self.safe: int | None = None  # next offset to commit (all below it finished)
        self.running = 0  # started, neither finished nor abandoned
        self.current = True  # False once the partition was revoked or lost
        self.changes = 0  # bumped by every finished job: the commit's metadata changed
        self.top = -1  # the highest offset started

    def position(self) -> int | None:
        """The offset to commit: all below it finished; None while nothing may be said.

        Before any offset finished in order, that is the oldest running one
        (the position the partition was fetched from), as long as later ones
        finished: the commit then only carries them in its metadata.
        """
        if self.safe is None and self.done:
            return self.pending[0]
        return self.safe


class OffsetTracker:
    """Tracks started and finished offsets per partition and generation.

    ``committable()`` gives, per partition, the offset below which every
    started job has finished: committing it can never skip an unfinished job.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, Generation] = {}
        # what was last committed per partition: the offset, and the changes
        # count when finished offsets above it went into its metadata
        self._committed: dict[TopicPartition, tuple[int, int]] = {}
        # jobs still running for generations that ended: they count as in
        # flight (the cap holds) but never towards a commit
        self._orphans = 0

    def started(self, tp: TopicPartition, offset: int) -> Generation:
        """Record that the message at ``offset`` was taken; the generation it belongs to."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = Generation(tp)
        heapq.heappush(part.pending, offset)
        part.running += 1
        if offset > part.top:
            part.top = offset
        return part

    def finished(self, part: Generation, offset: int) -> None:
        """Record that the job at ``offset`` finished (only its own generation counts it)."""
        part.running -= 1
        if not part.current:
            self._orphans -= 1
            return
        part.changes += 1
        done = part.done
        done[offset] = done.get(offset, 0) + 1
        pending = part.pending
        while pending and pending[0] in done:
            head = heapq.heappop(pending)
            left = done[head] - 1
            if left:
                done[head] = left
            else:
                del done[head]
            # not past a second copy of the same offset that still runs
            part.safe = head if pending and pending[0] == head else head + 1

    def abandoned(self, part: Generation, offset: int) -> None:
        """A started message will not finish here (discarded, or it must run again).

        It stays pending: no commit passes it in this generation.
        """
        part.running -= 1
        if not part.current:
            self._orphans -= 1

    def in_flight(self, tp: TopicPartition | None = None) -> int:
        """Started jobs not finished nor abandoned: of one partition, or all (with orphans)."""
        if tp is not None:
            part = self._parts.get(tp)
            return 0 if part is None else part.running
        # list(): other threads may read this (Worker.in_flight) while the loop updates it
        return self._orphans + sum(p.running for p in list(self._parts.values()))

    @staticmethod
    def _state(part: Generation, offset: int) -> tuple[int, int]:
        return (offset, part.changes if part.done else -1)

    def committable(
        self, partitions: set[TopicPartition] | None = None, again: bool = False
    ) -> dict[TopicPartition, int]:
        """Offsets to commit now: advanced, or with other finished offsets above
        them, since the last ``mark_committed``.

        ``again`` includes the ones already marked: an asynchronous commit
        may have failed after it was handed to the client.
        """
        out: dict[TopicPartition, int] = {}
        committed = self._committed
        for tp, part in self._parts.items():
            if partitions is not None and tp not in partitions:
                continue
            offset = part.position()
            if offset is not None and (again or self._state(part, offset) != committed.get(tp)):
                out[tp] = offset
        return out

    def finished_above(self, tp: TopicPartition) -> list[int]:
        """Finished offsets above the committable one (unsorted), or none."""
        part = self._parts.get(tp)
        return [] if part is None else list(part.done)

    def waiting(self, part: Generation) -> int:
        """How many finished offsets of this generation wait behind an unfinished one."""
        return len(part.done)

    def generation(self, tp: TopicPartition) -> Generation | None:
        """The partition's current generation, if it started any message."""
        return self._parts.get(tp)

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Remember what was committed (with the metadata as it is now), so it is not
        committed again."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            self._committed[tp] = (offset, -1) if part is None else self._state(part, offset)

    def commit_failed(self, offsets: dict[TopicPartition, int]) -> None:
        """An asynchronous commit of ``offsets`` failed: offer them again next time."""
        for tp, offset in offsets.items():
            state = self._committed.get(tp)
            if state is not None and state[0] == offset:
                del self._committed[tp]

    def drop(self, partitions: list[TopicPartition] | None = None) -> None:
        """End the generation of these partitions (or all): nothing more is committed for them."""
        for tp in list(self._parts) if partitions is None else partitions:
            part = self._parts.pop(tp, None)
            self._committed.pop(tp, None)
            if part is not None:
                part.current = False
                self._orphans += part.running
