"""Which offsets are safe to commit when jobs finish out of order."""

from __future__ import annotations

import heapq

TopicPartition = tuple[str, int]


class _PartitionOffsets:
    __slots__ = ("done", "pending", "safe")

    def __init__(self) -> None:
        self.pending: list[int] = []  # min-heap of started, unfinished offsets
        self.done: set[int] = set()  # finished offsets not yet below ``safe``
        self.safe: int | None = None  # next offset to commit (all below it finished)


class OffsetTracker:
    """Tracks started and finished offsets per partition.

    ``committable()`` gives, per partition, the offset below which every
    started job has finished: committing it can never skip an unfinished job.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        """Record that the message at ``offset`` was taken for processing."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _PartitionOffsets()
        heapq.heappush(part.pending, offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        """Record that the job at ``offset`` finished; ignored for dropped partitions."""
        part = self._parts.get(tp)
        if part is None:
            return
        part.done.add(offset)
        while part.pending and part.pending[0] in part.done:
            head = heapq.heappop(part.pending)
            part.done.discard(head)
            part.safe = head + 1

    def in_flight(self, tp: TopicPartition | None = None) -> int:
        """Started but unfinished jobs, for one partition or all."""
        if tp is not None:
            part = self._parts.get(tp)
            return 0 if part is None else len(part.pending) - len(part.done)
        # list(): other threads may read this (Worker.in_flight) while the loop updates it
        return sum(len(p.pending) - len(p.done) for p in list(self._parts.values()))

    def committable(
        self, partitions: set[TopicPartition] | None = None, again: bool = False
    ) -> dict[TopicPartition, int]:
        """Offsets to commit now: advanced since the last ``mark_committed``.

        ``again`` includes the ones already marked: an asynchronous commit
        may have failed after it was handed to the client.
        """
        out: dict[TopicPartition, int] = {}
        for tp, part in self._parts.items():
            if partitions is not None and tp not in partitions:
                continue
            if part.safe is not None and (again or part.safe != self._committed.get(tp)):
                out[tp] = part.safe
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Remember what was committed, so it is not committed again."""
        self._committed.update(offsets)

    def commit_failed(self, offsets: dict[TopicPartition, int]) -> None:
        """An asynchronous commit of ``offsets`` failed: offer them again next time."""
        for tp, offset in offsets.items():
            if self._committed.get(tp) == offset:
                del self._committed[tp]

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions this worker no longer owns: nothing more is committed for them."""
        for tp in partitions:
            self._parts.pop(tp, None)
            self._committed.pop(tp, None)
