"""Exceptions raised by kq.

Argument errors are both the natural built-in type (``TypeError`` or
``ValueError``) and ``AssertionError``: KQ validated with ``assert``, so code
written against KQ that catches ``AssertionError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class KQError(Exception):
    """Base class of kq's own runtime errors."""


class EnqueueError(KQError):
    """A job could not be durably written to Kafka.

    ``topic`` names the topic and ``cause`` holds the client's error, if any.
    When this is raised, the broker did not acknowledge the job in time. The
    client may still deliver it later (a record already handed to it cannot be
    recalled), so a job re-enqueued after this error may run twice; a job is
    never reported enqueued without being acknowledged.
    """

    def __init__(self, topic: str, reason: str, cause: BaseException | None = None) -> None:
        self.topic = topic
        self.reason = reason
        self.cause = cause
        super().__init__(f"could not enqueue to topic {topic!r}: {reason}")


class BatchEnqueueError(EnqueueError):
    """Some jobs of a batch could not be durably written; the others were.

    ``failed`` lists ``(job, cause)`` for exactly the jobs not acknowledged, in
    enqueue order (with kq's default serializer each job is rebuilt from the
    bytes it was sent as: same id and fields). Every other job the batch took
    was acknowledged: ``acknowledged_count`` of them. ``acknowledged`` lists
    those Jobs when the raiser kept them (``Queue.enqueue_many``); a ``Batch``
    does not keep them (its caller has each from ``enqueue``) and leaves it None.
    """

    def __init__(
        self,
        topic: str,
        failed: list[tuple[Any, BaseException]],
        acknowledged_count: int,
        acknowledged: list[Any] | None = None,
    ) -> None:
        self.failed = failed
        self.acknowledged_count = acknowledged_count
        self.acknowledged = acknowledged
        first = failed[0][1]
        reason = (
            f"{len(failed)} of {len(failed) + acknowledged_count} jobs failed"
            f" (first: {type(first).__name__}: {first})"
        )
        super().__init__(topic, reason, first)


class ClusterError(KQError):
    """The cluster could not be reached, or refused or failed a request (admin operations)."""


class JobProcessError(KQError):
    """A job run in a child process ended without reporting a result."""


class RemoteJobError(KQError):
    """A job raised an exception that could not be sent back from its child process.

    ``type_name`` is the qualified name of the original exception class.
    """

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name = type_name
        self.text = text
        super().__init__(f"{type_name}: {text}")


class ArgumentTypeError(TypeError, AssertionError):
    """An argument has the wrong type (also an ``AssertionError``, as in KQ)."""


class ArgumentValueError(ValueError, AssertionError):
    """An argument has a wrong value (also an ``AssertionError``, as in KQ)."""
