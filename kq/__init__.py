"""kq: a job queue for Python on Apache Kafka, drop-in for KQ."""

from kq.errors import ArgumentTypeError, ArgumentValueError, EnqueueError, KQError
from kq.job import Job
from kq.message import Message
from kq.queue import EnqueueSpec, Queue
from kq.version import __version__
from kq.worker import Worker

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "EnqueueError",
    "EnqueueSpec",
    "Job",
    "KQError",
    "Message",
    "Queue",
    "Worker",
    "__version__",
]
