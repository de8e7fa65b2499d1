"""Job threads that keep messages with the same key in order, and nothing else waiting.

A fixed pool of threads takes messages in arrival order. A keyed message waits
only while an earlier message with the same key is queued or running, so jobs
of one key never overlap and run in offset order, while jobs of different keys
(and unkeyed jobs) run in parallel up to the pool's size: no two keys share a
queue, unlike hashing keys onto lanes (the model of Confluent's Parallel
Consumer "key" ordering).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from kq.message import Message

TopicPartition = tuple[str, int]


class Lanes:
    """A pool of job threads fed by the worker's Kafka loop, ordered per key."""

    def __init__(
        self,
        count: int,
        handle: Callable[[Message], bool],
        finished: Callable[[Message, bool], None],
        name: str = "kq-job",
    ) -> None:
        self._count = count
        self._handle = handle
        self._finished = finished
        self._cond = threading.Condition()
        self._closed = False
        self._name = name
        self._threads: list[threading.Thread] = []
        self._ready: deque[Message] = deque()  # may start now, in arrival order
        self._waiting: dict[bytes, deque[Message]] = {}  # behind their key's active job
        self._active: set[bytes] = set()  # keys with a message ready or running
        self._running: dict[int, Message] = {}  # thread ident -> its message
        self._pending: dict[TopicPartition, int] = {}  # queued or running, per partition

    def _ensure_started(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        for index in range(len(self._threads), self._count):
            # daemon: a job that ignores shutdown must not keep the process alive
            thread = threading.Thread(target=self._run, name=f"{self._name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _enqueue(self, message: Message) -> None:
        key = message.key
        if key is None or self._count == 1:  # one thread: arrival order is offset order
            self._ready.append(message)
        elif key in self._active:
            self._waiting.setdefault(key, deque()).append(message)
        else:
            self._active.add(key)
            self._ready.append(message)

    def submit(self, messages: Iterable[Message]) -> None:
        """Queue messages (in offset order per partition)."""
        with self._cond:
            self._closed = False
            self._ensure_started()
            pending = self._pending
            for message in messages:
                tp = (message.topic, message.partition)
                pending[tp] = pending.get(tp, 0) + 1
                self._enqueue(message)
            self._cond.notify_all()

    def discard(self, partitions: Iterable[TopicPartition] | None = None) -> list[Message]:
        """Remove queued, not yet started messages (of these partitions, or all)."""
        wanted = None if partitions is None else set(partitions)
        removed: list[Message] = []
        with self._cond:
            queued = list(self._ready)
            for messages in self._waiting.values():
                queued.extend(messages)
            self._ready.clear()
            self._waiting.clear()
            self._active = {m.key for m in self._running.values() if m.key is not None}
            # Ready messages are older than waiting ones of their key: re-adding
            # in this order keeps each key's order.
            for m in queued:
                if wanted is None or (m.topic, m.partition) in wanted:
                    removed.append(m)
                    self._release(m)
                else:
                    self._enqueue(m)
            self._cond.notify_all()
        return removed

    def busy(self, partitions: Iterable[TopicPartition] | None = None) -> bool:
        """Whether a job of these partitions (or any) is running or queued."""
        with self._cond:
            if partitions is None:
                return bool(self._pending)
            return any(tp in self._pending for tp in partitions)

    def _release(self, message: Message) -> None:
        # with self._cond held: one job of the partition left the pool
        tp = (message.topic, message.partition)
        left = self._pending[tp] - 1
        if left:
            self._pending[tp] = left
        else:
            del self._pending[tp]

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
        """Let the threads end once nothing is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        me = threading.get_ident()
        while True:
            with self._cond:
                while not self._ready:
                    if self._closed:
                        return
                    self._cond.wait()
                message = self._ready.popleft()
                self._running[me] = message
            completed = False
            try:
                completed = self._handle(message)
            finally:
                with self._cond:
                    del self._running[me]
                    self._release(message)
                    key = message.key
                    if key is not None and self._count > 1:
                        waiting = self._waiting.get(key)
                        if waiting:
                            self._ready.append(waiting.popleft())  # the key stays active
                            if not waiting:
                                del self._waiting[key]
                        else:
                            self._active.discard(key)
                    self._cond.notify_all()
                self._finished(message, completed)
