"""What a delay forwarder knows about its tier partitions between batches.

Records that are not ready yet wait here, in memory, so that a record never
waits behind one that is due later: the forwarder reads each tier partition
on, and takes each record when *it* is ready. Per partition, what it holds
is bounded by ``WINDOW`` offsets (the records between the partition's commit
point and what it has read); all partitions together by ``HOLD_BYTES`` of
waiting records. Past either bound the waiting records that hold the commit
point back are written again to their tier (one record more each), so memory
and the offsets a restart could repeat stay bounded, and nothing is late.
Also here: how the forwarder classifies send errors.
"""

from __future__ import annotations

import heapq
import traceback
from dataclasses import dataclass, field
from typing import Any

TP = tuple[str, int]

# Producer errors no retry can cure: the record is dead-lettered with the reason.
_TOO_LARGE = ("MSG_SIZE_TOO_LARGE", "MessageSizeTooLarge", "RecordTooLarge", "RECORD_TOO_LARGE")
_PERMANENT = (*_TOO_LARGE, "INVALID_RECORD", "InvalidRecord", "_UNKNOWN_PARTITION")

WINDOW = 10_000  # offsets per partition between its commit point and its read position
HOLD_BYTES = 32 << 20  # bytes of waiting records, all partitions together


@dataclass
class Waiting:
    """A tier record read before it was ready: when it is, and the message."""

    ready: int  # ms, forwarder's clock
    message: Any
    read_at: int  # when it was first read (its anchor when written by a clock ahead)
    size: int


@dataclass
class Partitions:
    """What one forwarder knows about its tier partitions."""

    held: dict[TP, int] = field(default_factory=dict)  # paused after a failure -> resume at (ms)
    failures: dict[TP, int] = field(default_factory=dict)  # consecutive failed rounds
    anchors: dict[TP, tuple[int, int]] = field(default_factory=dict)  # (offset, first read)
    # Sent and acknowledged, above the partition's commit point (behind a record
    # still waiting or a failed one), so not committed yet. Kept across
    # rebalances and restarts, and written in each commit's metadata: a record
    # delivered once needs no second delivery, whoever owns its partition next.
    delivered: dict[TP, set[int]] = field(default_factory=dict)
    waiting: dict[TP, dict[int, Waiting]] = field(default_factory=dict)
    position: dict[TP, int] = field(default_factory=dict)  # next offset to read
    # last commit (offset, metadata); at first the offset the partition was read from
    committed: dict[TP, tuple[int, str]] = field(default_factory=dict)
    unread: set[TP] = field(default_factory=set)  # assigned; commit metadata not read yet
    _due: list[tuple[int, TP, int]] = field(default_factory=list)  # heap (ready, tp, offset)
    held_bytes: int = 0

    def forget(self, tps: list[TP]) -> None:
        """Partitions revoked or reassigned: their waiting records are read again later."""
        for tp in tps:
            for table in (self.held, self.anchors, self.failures, self.position, self.committed):
                table.pop(tp, None)
            for entry in self.waiting.pop(tp, {}).values():
                self.held_bytes -= entry.size
            self.unread.discard(tp)

    def wait(self, tp: TP, offset: int, entry: Waiting) -> None:
        """Keep a record that is not ready yet."""
        known = self.waiting.setdefault(tp, {})
        if offset in known:
            return
        known[offset] = entry
        self.held_bytes += entry.size
        heapq.heappush(self._due, (entry.ready, tp, offset))

    def is_waiting(self, tp: TP, offset: int) -> bool:
        """Whether the record is held here already (read again after a seek)."""
        return offset in self.waiting.get(tp, ())

    def next_ready(self) -> int | None:
        """When the earliest waiting record is ready (ms), if any waits."""
        due = self._due
        while due:
            ready, tp, offset = due[0]
            entry = self.waiting.get(tp, {}).get(offset)
            if entry is not None and entry.ready == ready:
                return ready
            heapq.heappop(due)  # taken already, or forgotten
        return None

    def take(self, tp: TP, offset: int) -> Waiting | None:
        """Remove a waiting record (it is being forwarded)."""
        entry = self.waiting.get(tp, {}).pop(offset, None)
        if entry is not None:
            self.held_bytes -= entry.size
        return entry

    def ready(self, now: int) -> list[tuple[TP, int, Waiting]]:
        """Take every waiting record ready at ``now``."""
        out = []
        while (at := self.next_ready()) is not None and at <= now:
            _, tp, offset = heapq.heappop(self._due)
            entry = self.take(tp, offset)
            if entry is not None:
                out.append((tp, offset, entry))
        return out

    def read(self, tp: TP, offset: int) -> None:
        """A record of the partition was read: the position moves past it."""
        if offset >= self.position.get(tp, -1):
            self.position[tp] = offset + 1
        self.committed.setdefault(tp, (offset, ""))

    def commit_point(self, tp: TP) -> int | None:
        """The offset below which every record read of the partition is done."""
        position = self.position.get(tp)
        if position is None:
            return None
        waiting = self.waiting.get(tp)
        return min(min(waiting), position) if waiting else position

    def overflow(self) -> list[tuple[TP, int, Waiting]]:
        """Waiting records to write again now, to stay within the bounds (lowest offsets)."""
        out: list[tuple[TP, int, Waiting]] = []
        for tp, known in self.waiting.items():
            position = self.position.get(tp, 0)
            while known and position - min(known) > WINDOW:
                offset = min(known)
                entry = self.take(tp, offset)
                if entry is not None:
                    out.append((tp, offset, entry))
        while self.held_bytes > HOLD_BYTES:
            # the partition with the widest span gives up its oldest record
            tp = max(
                (t for t, k in self.waiting.items() if k),
                key=lambda t: self.position.get(t, 0) - min(self.waiting[t]),
            )
            offset = min(self.waiting[tp])
            entry = self.take(tp, offset)
            if entry is not None:
                out.append((tp, offset, entry))
        return out


def too_large(error: BaseException) -> bool:
    """Whether a producer error says the record is over a size limit."""
    text = f"{type(error).__name__} {error}"
    return any(mark in text for mark in _TOO_LARGE)


def permanent(error: BaseException) -> bool:
    """Whether no retry can cure a producer error (the record is dead-lettered)."""
    text = f"{type(error).__name__} {error}"
    return any(mark in text for mark in _PERMANENT)


def one_line(error: BaseException) -> str:
    """An exception as one line of text."""
    return "".join(traceback.format_exception_only(type(error), error)).strip()
