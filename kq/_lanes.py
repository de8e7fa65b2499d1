"""Threads that run jobs, keeping messages with the same key in order.

Each lane is one thread with its own queue. A keyed message always goes to the
lane its key hashes to, so jobs of one key never overlap and run in offset
order; unkeyed messages go to the shortest lane.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable

from kq.message import Message

TopicPartition = tuple[str, int]


class _Lane:
    __slots__ = ("current", "queue", "thread")

    def __init__(self) -> None:
        self.queue: deque[Message] = deque()
        self.current: Message | None = None
        self.thread: threading.Thread | None = None


class Lanes:
    """A fixed set of job threads fed by the worker's Kafka loop."""

    def __init__(
        self,
        count: int,
        handle: Callable[[Message], bool],
        finished: Callable[[Message, bool], None],
        name: str = "kq-job",
    ) -> None:
        self._lanes = [_Lane() for _ in range(count)]
        self._handle = handle
        self._finished = finished
        self._cond = threading.Condition()
        self._closed = False
        self._name = name

    def _ensure_started(self) -> None:
        for index, lane in enumerate(self._lanes):
            if lane.thread is None or not lane.thread.is_alive():
                # daemon: a job that ignores shutdown must not keep the process alive
                lane.thread = threading.Thread(
                    target=self._run, args=(lane,), name=f"{self._name}-{index}", daemon=True
                )
                lane.thread.start()

    def submit(self, messages: Iterable[Message]) -> None:
        """Queue messages for their lanes."""
        count = len(self._lanes)
        with self._cond:
            self._closed = False
            self._ensure_started()
            for message in messages:
                if count == 1:
                    lane = self._lanes[0]
                elif message.key is not None:
                    lane = self._lanes[zlib.crc32(message.key) % count]
                else:
                    lane = min(self._lanes, key=lambda ln: len(ln.queue) + (ln.current is not None))
                lane.queue.append(message)
            self._cond.notify_all()

    def discard(self, partitions: Iterable[TopicPartition] | None = None) -> list[Message]:
        """Remove queued, not yet started messages (of these partitions, or all)."""
        wanted = None if partitions is None else set(partitions)
        removed: list[Message] = []
        with self._cond:
            for lane in self._lanes:
                keep: deque[Message] = deque()
                for m in lane.queue:
                    if wanted is None or (m.topic, m.partition) in wanted:
                        removed.append(m)
                    else:
                        keep.append(m)
                lane.queue = keep
        return removed

    def busy(self, partitions: Iterable[TopicPartition] | None = None) -> bool:
        """Whether a job of these partitions (or any) is running or queued."""
        wanted = None if partitions is None else set(partitions)
        with self._cond:
            for lane in self._lanes:
                pending = list(lane.queue)
                if lane.current is not None:
                    pending.append(lane.current)
                if any(wanted is None or (m.topic, m.partition) in wanted for m in pending):
                    return True
        return False

    def wait_idle(
        self,
        partitions: Iterable[TopicPartition] | None = None,
        timeout: float | None = None,
        interrupt: threading.Event | None = None,
    ) -> bool:
        """Wait until no job of these partitions runs or waits.

        False on timeout, or as soon as ``interrupt`` is set.
        """
        parts = None if partitions is None else list(partitions)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.busy(parts):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if interrupt is not None and interrupt.is_set():
                    return False
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def close(self) -> None:
        """Let the threads end once their queues are empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while not lane.queue:
                    if self._closed:
                        return
                    self._cond.wait()
                message = lane.queue.popleft()
                lane.current = message
            completed = False
            try:
                completed = self._handle(message)
            finally:
                with self._cond:
                    lane.current = None
                    self._cond.notify_all()
                self._finished(message, completed)
