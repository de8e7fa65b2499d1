"""kq: a job queue for Python on Apache Kafka, drop-in for KQ."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kq._admin import create_topic
from kq.clients import make_consumer, make_producer
from kq.dead_letters import DeadLetter, DeadLetters
from kq.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    BatchEnqueueError,
    ClusterError,
    EnqueueError,
    KQError,
)
from kq.events import WorkerObserver
from kq.job import Job
from kq.json_jobs import JsonJobLoader
from kq.message import Message
from kq.queue import Batch, EnqueueSpec, Queue
from kq.refs import FunctionRef
from kq.retry import Attempt, RetryPolicy, current_attempt
from kq.version import __version__
from kq.worker import Worker

if TYPE_CHECKING:
    from kq.local import LocalKafka, LocalKafkaError

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "Attempt",
    "Batch",
    "BatchEnqueueError",
    "ClusterError",
    "DeadLetter",
    "DeadLetters",
    "EnqueueError",
    "EnqueueSpec",
    "FunctionRef",
    "Job",
    "JsonJobLoader",
    "KQError",
    "LocalKafka",
    "LocalKafkaError",
    "Message",
    "Queue",
    "RetryPolicy",
    "Worker",
    "WorkerObserver",
    "__version__",
    "create_topic",
    "current_attempt",
    "make_consumer",
    "make_producer",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m kq.local` does not find kq.local
    # already in sys.modules (runpy warns about that) and `import kq` stays light.
    if name in ("LocalKafka", "LocalKafkaError"):
        from kq import local

        return getattr(local, name)
    raise AttributeError(f"module 'kq' has no attribute {name!r}")
