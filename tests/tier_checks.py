"""Tools for delay-tier tests: park raw records in a tier, fail chosen sends, wait until settled.

``park`` writes a record straight into a delay tier (as a producer with any
clock, or an older kq, would), ``FailingSends`` wraps the ProducerAdapter of
a worker's retry router so that chosen sends fail without being sent, and
``settled`` says whether the forwarder group and the worker groups have
committed everything there is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from kq import Job, Worker
from kq._admin import Cluster
from kq.schedule import delay_topics
from kq.serialization import dumps


def now_ms() -> int:
    return int(time.time() * 1000)


def park(
    bootstrap: str,
    tier: str,
    job: Job,
    *,
    home: str,
    due_ms: int,
    written_ms: int,
    timestamp_ms: int | None = None,
    partition: int = 0,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """Write ``job`` into ``tier``/``partition`` as a delayed record due at ``due_ms``.

    ``written_ms`` is the writer's clock when it wrote (header ``kq-written``),
    ``timestamp_ms`` the record's CreateTime (default: ``written_ms``).
    """
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(
        tier,
        value=dumps(job),
        key=job.key,
        partition=partition,
        timestamp=written_ms if timestamp_ms is None else timestamp_ms,
        headers=[
            ("kq-due", str(due_ms).encode()),
            ("kq-topic", home.encode()),
            ("kq-written", str(written_ms).encode()),
            *headers,
        ],
    )
    if producer.flush(30):
        raise RuntimeError(f"could not park a record in {tier}")


class FailingSends:
    """A ProducerAdapter that fails the records ``fail(call, record)`` picks, unsent.

    ``call`` counts ``send_all`` calls from 1. Every other record goes to the
    real adapter. ``failed`` counts the injected failures.
    """

    def __init__(self, inner: Any, fail: Callable[[int, Any], bool]) -> None:
        self._inner = inner
        self._fail = fail
        self._lock = threading.Lock()
        self.client = inner.client
        self.calls = 0
        self.failed = 0
        self.sent: list[Any] = []

    @property
    def hosts(self) -> str:
        return str(self._inner.hosts)

    def send_all(self, records: Sequence[Any], timeout: float) -> list[BaseException | None]:
        with self._lock:
            self.calls += 1
            call = self.calls
        errors: list[BaseException | None] = [None] * len(records)
        passing = []
        for index, record in enumerate(records):
            if self._fail(call, record):
                errors[index] = KafkaException(
                    KafkaError(KafkaError._TRANSPORT, "injected send failure")
                )
            else:
                passing.append(index)
        with self._lock:
            self.failed += len(records) - len(passing)
        if passing:
            results = self._inner.send_all([records[i] for i in passing], timeout)
            for index, error in zip(passing, results, strict=True):
                errors[index] = error
                if error is None:
                    with self._lock:
                        self.sent.append(records[index])
        return errors


def inject_failing_sends(monkeypatch: Any, fail: Callable[[int, Any], bool]) -> list[FailingSends]:
    """Make every retry router's producer a ``FailingSends``; returns the ones made."""
    import kq._retrying

    made: list[FailingSends] = []
    real = kq._retrying.adapt_producer

    def adapt(producer: Any) -> Any:
        wrapper = FailingSends(real(producer), fail)
        made.append(wrapper)
        return wrapper

    monkeypatch.setattr(kq._retrying, "adapt_producer", adapt)
    return made


def _done(cluster: Cluster, group: str, topic: str) -> bool:
    partitions = cluster.partitions(topic)
    committed = cluster.committed(group, topic, partitions)
    for p in partitions:
        low, high = cluster.watermarks(topic, p)
        if high > low and (committed.get(p) or 0) < high:
            return False
    return True


def settled(bootstrap: str, topic: str, groups: Sequence[str]) -> bool:
    """Whether the shared forwarder group committed every tier, and each group the topic."""
    with Cluster(bootstrap) as cluster:
        existing = cluster.topics(refresh=True)
        tiers = [t for t in delay_topics(topic) if t in existing]
        forwarder = f"{topic}.kq-delay"
        return all(_done(cluster, forwarder, t) for t in tiers) and all(
            _done(cluster, g, topic) for g in groups
        )


def tier_records(bootstrap: str, topic: str) -> int:
    """How many records were ever written to the delay tiers of ``topic``."""
    with Cluster(bootstrap) as cluster:
        existing = cluster.topics(refresh=True)
        return sum(
            cluster.watermarks(t, p)[1]
            for t in delay_topics(topic)
            if t in existing
            for p in existing[t]
        )


class Calls:
    """A callback that records (status, job's second argument, attempt number, partition)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, int | None, int]] = []
        self._lock = threading.Lock()

    def __call__(self, status: str, message: Any, job: Any, *_: Any) -> None:
        import kq

        attempt = kq.current_attempt()
        with self._lock:
            self.items.append(
                (
                    status,
                    job.args[1] if job else None,
                    attempt.number if attempt else None,
                    message.partition,
                )
            )

    def of(self, name: str) -> list[tuple[str, int | None]]:
        """(status, attempt) of every call for job ``name``, sorted."""
        with self._lock:
            return sorted((s, a) for s, n, a, _ in self.items if n == name)


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker.start()`` in a thread for the duration of the block."""
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
        if thread.is_alive():
            raise AssertionError("worker did not stop")
