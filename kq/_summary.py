"""What ``kq worker`` says instead of a line per job: a summary every so often.

KQ's per-job lines on ``kq.worker`` (five per job at INFO) are the Python
API's contract, but a command run in production would write them at the job
rate: at 5,000 jobs/s, ~145 GB a day. ``kq worker`` therefore sets
``kq.worker`` to WARNING (failures, timeouts and invalid messages are still
logged, one line or traceback each) unless ``--log-jobs`` or ``--log-level
DEBUG`` asks for every line, and logs this summary on ``kq.runtime`` instead::

    Last 60 s: 300,000 jobs (5,000/s): 299,990 success, 10 failure; 12 in flight;
    4 partitions, lag 1,234

``Summary`` is a worker observer (it counts ``job_finished``); ``Observers``
lets it sit beside the metrics observer and the user's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kq._logs import RUNTIME
from kq._runner import notify

__all__ = ["GroupLag", "Observers", "Summary"]

_STATUSES = ("success", "failure", "timeout", "invalid")

TopicPartition = tuple[str, int]
Lag = Callable[[list[int]], "int | None"]
"""Lag of the owned partitions of the topic (None when it cannot be known now)."""


class Observers:
    """Several worker observers as one: each event goes to each (errors logged, never fatal)."""

    def __init__(self, *observers: Any) -> None:
        self._observers = [o for o in observers if o is not None]

    def _each(self, method: str, *args: Any) -> None:
        for observer in self._observers:
            notify(observer, method, *args)

    def job_finished(self, status: str, seconds: float) -> None:
        """Forwarded."""
        self._each("job_finished", status, seconds)

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Forwarded."""
        self._each("committed", offsets)

    def rebalanced(self, event: str, partitions: list[TopicPartition]) -> None:
        """Forwarded."""
        self._each("rebalanced", event, partitions)

    def partitions_held(self, partitions: list[TopicPartition]) -> None:
        """Forwarded."""
        self._each("partitions_held", partitions)

    def partitions_blocked(self, partitions: list[TopicPartition]) -> None:
        """Forwarded."""
        self._each("partitions_blocked", partitions)


class Summary:
    """Counts a worker's outcomes and logs one line every ``interval`` seconds (and at stop)."""

    def __init__(self, topic: str, interval: float, lag: Lag | None = None) -> None:
        self._topic = topic
        self._interval = interval
        self._lag = lag
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_STATUSES, 0)
        self._since = time.monotonic()
        self._owned: set[int] = set()
        self._held = 0
        self._blocked = 0
        self._in_flight: Callable[[], int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the observer ---------------------------------------------------------

    def job_finished(self, status: str, seconds: float) -> None:
        """Count one outcome."""
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1

    def rebalanced(self, event: str, partitions: list[TopicPartition]) -> None:
        """Track the owned partitions of the topic."""
        mine = {p for t, p in partitions if t == self._topic}
        with self._lock:
            if event == "assigned":
                self._owned |= mine
            else:
                self._owned -= mine

    def partitions_held(self, partitions: list[TopicPartition]) -> None:
        """Remember how many partitions a failing retry write holds."""
        self._held = len(partitions)

    def partitions_blocked(self, partitions: list[TopicPartition]) -> None:
        """Remember how many partitions wait at the head-of-line limit."""
        self._blocked = len(partitions)

    # -- the line ---------------------------------------------------------------

    def watch(self, in_flight: Callable[[], int]) -> None:
        """Where to read the jobs in flight from (the worker's ``in_flight``)."""
        self._in_flight = in_flight

    def line(self) -> str:
        """The summary since the last one (and start counting again)."""
        now = time.monotonic()
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(_STATUSES, 0)
            seconds, self._since = now - self._since, now
            owned = sorted(self._owned)
        total = sum(counts.values())
        outcomes = ", ".join(f"{n:,} {status}" for status, n in counts.items() if n)
        text = f"Last {seconds:.0f} s: {total:,} jobs ({total / max(seconds, 1e-9):,.0f}/s)"
        if outcomes:
            text += f": {outcomes}"
        if self._in_flight is not None:
            text += f"; {self._in_flight():,} in flight"
        text += f"; {len(owned)} partition{'' if len(owned) == 1 else 's'}"
        if owned and self._lag is not None:
            lag = self._lag(owned)
            text += ", lag unknown" if lag is None else f", lag {lag:,}"
        if self._blocked:
            text += f"; {self._blocked} paused at the head-of-line limit"
        if self._held:
            text += f"; {self._held} held by a retry write that fails"
        return text

    def start(self) -> None:
        """Log a summary every ``interval`` seconds, from a daemon thread."""
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="kq-summary", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._log()

    def _log(self) -> None:
        try:
            RUNTIME.info("%s", self.line())
        except Exception as exc:  # a summary never ends the worker
            RUNTIME.warning("Could not summarize the last interval: %r", exc)

    def stop(self) -> None:
        """Stop the thread and log what happened since the last line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
            self._log()


class GroupLag:
    """The group's lag on owned partitions, read with an admin client (once per summary)."""

    def __init__(self, bootstrap: str, config: Mapping[str, Any], topic: str, group: str) -> None:
        self._bootstrap = bootstrap
        self._config = dict(config)
        self._topic = topic
        self._group = group
        self._cluster: Any = None

    def __call__(self, partitions: list[int]) -> int | None:
        """End offset minus committed offset, summed (None if the cluster did not answer)."""
        from kq._admin import Cluster, ClusterError

        try:
            if self._cluster is None:
                self._cluster = Cluster(self._bootstrap, self._config, timeout=5.0)
            committed = self._cluster.committed(self._group, self._topic, partitions)
            total = 0
            for partition in partitions:
                low, high = self._cluster.watermarks(self._topic, partition)
                position = committed.get(partition)
                total += max(high - (low if position is None else max(position, low)), 0)
        except ClusterError:
            return None
        return total

    def close(self) -> None:
        """Close the admin client, if one was made."""
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
