"""What a worker tells an observer (metrics, tracing) as it works.

Pass an object with any of these methods as ``Worker(..., observer=...)``;
missing methods are skipped, and an observer that raises is logged, never
fatal. Methods are called on the worker's threads: keep them fast.
"""

from __future__ import annotations

from typing import Protocol

TopicPartition = tuple[str, int]


class WorkerObserver(Protocol):
    """The events a worker reports."""

    def job_finished(self, status: str, seconds: float) -> None:
        """A message was processed: ``status`` as given to the callback; run time of the job."""

    def job_unimportable(self, module: str) -> None:
        """A message was invalid because its job names ``module``, which cannot be imported."""

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets were committed (asynchronously: handed to the client)."""

    def rebalanced(self, event: str, partitions: list[TopicPartition]) -> None:
        """``event`` is ``assigned``, ``revoked`` or ``lost``."""

    def partitions_held(self, partitions: list[TopicPartition]) -> None:
        """The partitions that now take no new jobs (all of them, each time the set changes).

        A partition is held while the retry or dead letter of one of its
        failed jobs cannot be written (the delay topics are unreachable): the
        worker writes it again with backoff and fetches nothing more from the
        partition until it is written. An empty list: none is held any more.
        """

    def partitions_blocked(self, partitions: list[TopicPartition]) -> None:
        """The partitions now paused at the head-of-line limit (all, each time the set changes).

        A partition is blocked once ``head_of_line_limit`` of its jobs finished
        behind one that still runs: the worker takes no more of its jobs until
        that backlog is down to half. An empty list: none is blocked any more.
        """
