"""Job threads that keep messages with the same key in order, and nothing else waiting.

A fixed pool of threads takes messages in arrival order. A keyed message waits
only while an earlier message with the same key is queued or running, so jobs
of one key never overlap and run in offset order, while jobs of different keys
(and unkeyed jobs) run in parallel up to the pool's size: no two keys share a
queue, unlike hashing keys onto lanes (the model of Confluent's Parallel
Consumer "key" ordering).

A message submitted while another copy of it (same topic, partition and
offset: a re-fetch after its partition was revoked and assigned again) is
queued or running never runs alongside it: it waits for that copy, and is
reported done without running if the copy completed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from kq._logs import RUNTIME
from kq.message import Message

TopicPartition = tuple[str, int]
Entry = tuple[Message, Any]
"""A message and its submitter's tag (handed back with it)."""

Handle = Callable[[Message, Any], bool]
"""Runs one message; False if it must run again. Should not raise."""

Finished = Callable[[Message, Any, "bool | None"], None]
"""Told, before the message stops counting as busy: True (ran and done), False
(must run again) or None (done without running: another copy of it completed)."""


class Lanes:
    """A pool of job threads fed by the worker's Kafka loop, ordered per key."""

    def __init__(
        self, count: int, handle: Handle, finished: Finished, name: str = "kq-job"
    ) -> None:
        self._count = count
        self._handle = handle
        self._finished = finished
        self._lock = threading.Lock()
        # Job threads wait on ``_work``, ``wait_idle`` on ``_idle``: a job's end
        # wakes nobody (its thread takes the next ready message itself), and
        # new messages wake only as many threads as there are messages.
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._name = name
        self._threads: list[threading.Thread] = []
        self._ready: deque[Entry] = deque()  # may start now, in arrival order
        self._waiting: dict[bytes, deque[Entry]] = {}  # behind their key's active job
        self._active: set[bytes] = set()  # keys with a message ready or running
        self._running: dict[int, Entry] = {}  # thread ident -> its entry
        self._pending: dict[TopicPartition, int] = {}  # queued, waiting or running, per partition
        self._live: set[tuple[str, int, int]] = set()  # coordinates queued or running
        self._followers: dict[tuple[str, int, int], list[Entry]] = {}  # copies behind a live one

    def _ensure_started(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        for index in range(len(self._threads), self._count):
            # daemon: a job that ignores shutdown must not keep the process alive
            thread = threading.Thread(target=self._run, name=f"{self._name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _enqueue(self, entry: Entry) -> bool:
        """Queue one message (lock held); True if it is ready to start."""
        key = entry[0].key
        if key is None or self._count == 1:  # one thread: arrival order is offset order
            self._ready.append(entry)
            return True
        if key in self._active:
            self._waiting.setdefault(key, deque()).append(entry)
            return False
        self._active.add(key)
        self._ready.append(entry)
        return True

    def submit(self, entries: Iterable[Entry]) -> None:
        """Queue messages with their tags (in offset order per partition)."""
        with self._lock:
            self._closed = False
            self._ensure_started()
            pending = self._pending
            live = self._live
            ready = 0
            for entry in entries:
                m = entry[0]
                tp = (m.topic, m.partition)
                pending[tp] = pending.get(tp, 0) + 1
                coordinates = (m.topic, m.partition, m.offset)
                if coordinates in live:
                    self._followers.setdefault(coordinates, []).append(entry)
                    continue
                live.add(coordinates)
                ready += self._enqueue(entry)
            if ready:
                # one thread; it wakes the next if more is ready when it takes
                # its message (see _run): threads join only while work waits
                self._work.notify()

    def discard(self, partitions: Iterable[TopicPartition] | None = None) -> list[Entry]:
        """Remove queued, not yet started messages (of these partitions, or all)."""
        wanted = None if partitions is None else set(partitions)
        removed: list[Entry] = []
        with self._lock:
            queued = list(self._ready)
            for entries in self._waiting.values():
                queued.extend(entries)
            self._ready.clear()
            self._waiting.clear()
            self._active = {e[0].key for e in self._running.values() if e[0].key is not None}
            # Ready messages are older than waiting ones of their key: re-adding
            # in this order keeps each key's order.
            for entry in queued:
                m = entry[0]
                if wanted is None or (m.topic, m.partition) in wanted:
                    removed.append(entry)
                    self._release(m)
                    self._live.discard((m.topic, m.partition, m.offset))
                else:
                    self._enqueue(entry)
            for coordinates in list(self._followers):
                if wanted is None or coordinates[:2] in wanted:
                    for entry in self._followers.pop(coordinates):
                        removed.append(entry)
                        self._release(entry[0])
            # rare: re-queued messages may have become ready
            self._work.notify_all()
        return removed

    def busy(self, partitions: Iterable[TopicPartition] | None = None) -> bool:
        """Whether a job of these partitions (or any) is running or queued."""
        with self._lock:
            return self._busy(partitions)

    def _busy(self, partitions: Iterable[TopicPartition] | None) -> bool:
        if partitions is None:
            return bool(self._pending)
        return any(tp in self._pending for tp in partitions)

    def _release(self, message: Message) -> None:
        # with the lock held: one job of the partition left the pool
        tp = (message.topic, message.partition)
        left = self._pending[tp] - 1
        if left:
            self._pending[tp] = left
        else:
            del self._pending[tp]
            self._idle.notify_all()  # no-op without waiters

    def wait_idle(
        self,
        partitions: Iterable[TopicPartition] | None = None,
        timeout: float | None = None,
        interrupt: threading.Event | None = None,
    ) -> bool:
        """Wait until no job of these partitions runs or waits.

        False on timeout, or as soon as ``interrupt`` is set. Every message
        that stopped counting has been handed to ``finished`` by then.
        """
        parts = None if partitions is None else list(partitions)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._busy(parts):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if interrupt is not None and interrupt.is_set():
                    return False
                # bounded: ``interrupt`` is an Event nobody notifies us of
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def close(self) -> None:
        """Let the threads end once nothing is queued."""
        with self._lock:
            self._closed = True
            self._work.notify_all()

    def _run(self) -> None:
        me = threading.get_ident()
        lock, ready, running = self._lock, self._ready, self._running
        wait, notify = self._work.wait, self._work.notify
        lock.acquire()
        try:
            while True:
                # Each message made ready woke one thread, or was made ready
                # by a thread that takes it here before waiting again: no
                # ready message is ever left with every thread asleep.
                while not ready:
                    if self._closed:
                        return
                    wait()
                entry = ready.popleft()
                running[me] = entry
                if ready:
                    notify()  # more waits: wake one more thread (if one sleeps)
                lock.release()
                try:
                    completed = self._run_one(entry)
                finally:
                    lock.acquire()
                del running[me]
                self._done(entry, completed)
        finally:
            lock.release()

    def _run_one(self, entry: Entry) -> bool:
        try:
            return self._handle(*entry)
        except BaseException:  # nothing a message does may end a job thread
            message = entry[0]
            # a broken log handler must not end the thread either
            with contextlib.suppress(BaseException):
                RUNTIME.exception(
                    "Processing Message(topic=%s, partition=%s, offset=%s) escaped the worker; "
                    "it counts as processed",
                    message.topic,
                    message.partition,
                    message.offset,
                )
            return True

    def _done(self, entry: Entry, completed: bool) -> None:
        # with the lock held. The completion is handed over before the
        # message stops counting as busy: whoever waits for idle lanes (a
        # revoke, the shutdown) finds it when it commits.
        message = entry[0]
        self._finished(message, entry[1], completed)
        self._release(message)
        coordinates = (message.topic, message.partition, message.offset)
        followers = self._followers.pop(coordinates, None)
        if followers and not completed:
            # a copy of it waits: it runs next, in this message's place (its
            # key stays active, so later jobs of the key still wait)
            after = followers[1:]
            if after:
                self._followers[coordinates] = after
            self._ready.appendleft(followers[0])
            return
        self._live.discard(coordinates)
        for follower in followers or ():
            self._finished(follower[0], follower[1], None)
            self._release(follower[0])
        key = message.key
        if key is not None and self._count > 1:
            waiting = self._waiting.get(key)
            if waiting:
                self._ready.append(waiting.popleft())  # the key stays active
                if not waiting:
                    del self._waiting[key]
            else:
                self._active.discard(key)
