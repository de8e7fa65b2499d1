"""KQ's log lines, exactly: the complete sequence on ``kq.queue`` and ``kq.worker``.

KQ's own tests attach a handler at DEBUG to both loggers (format
``[%(levelname)s] %(message)s``) and read the lines of one job as an exact
sequence. kq's diagnostics (rebalances, commits, settings corrected) go to
other loggers, so these sequences hold line for line: no line is checked
with ``in`` or as a subset here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jobfuncs
import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer, KafkaProducer

from kq import Job, Message, Queue, Worker
from kq.clients import ClientName

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]
MOD = jobfuncs.__name__

pytestmark = pytest.mark.timeout(120)


class Lines(logging.Handler):
    """Keeps every record as KQ's tests format it: ``[LEVEL] message``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[Lines]:
    """A handler on ``kq.queue`` and ``kq.worker`` at DEBUG, as in KQ's test suite."""
    handler = Lines()
    saved = []
    for name in ("kq.queue", "kq.worker"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _kq_producer(client: ClientName, bootstrap: str) -> Any:
    # As KQ's documentation builds them: the client's defaults, only the address.
    if client == "kafka-python":
        return KafkaProducer(bootstrap_servers=bootstrap)
    return Producer({"bootstrap.servers": bootstrap})


def _kq_consumer(client: ClientName, bootstrap: str) -> Any:
    group = f"loglines-{uuid.uuid4().hex[:10]}"
    if client == "kafka-python":
        # KQ's documented consumer leaves auto-commit on: kq turns it off and
        # says so on kq.consumer, never on kq.worker.
        return KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
        )
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
        }
    )


def _close(client: Any) -> None:
    if isinstance(client, KafkaConsumer):
        client.close(autocommit=False)
    elif isinstance(client, KafkaProducer):
        client.close(timeout=10)
    elif isinstance(client, Producer):
        client.flush(10)
    else:
        client.close()


def _callback(status: str, message: Message, job: Job | None, *_: Any) -> None:
    # KQ's test callback writes its own line to the worker's logger.
    logging.getLogger("kq.worker").info("Callback got job status %s", status)


def _raising_callback(status: str, *_: Any) -> None:
    raise RuntimeError("callback broke")


Run = Callable[..., list[str]]


@pytest.fixture
def run_one(bootstrap: str, topic: str, lines: Lines) -> Iterator[Run]:
    """Enqueue one job (or write raw bytes), run a worker for one message, return the lines."""
    made: list[Any] = []

    def run(
        client: ClientName,
        job: Callable[[Queue], Job] | None = None,
        raw: bytes | None = None,
        callback: Callable[..., Any] = _callback,
    ) -> list[str]:
        producer = _kq_producer(client, bootstrap)
        made.append(producer)
        queue = Queue(topic, producer)
        if job is not None:
            run.job = job(queue)  # type: ignore[attr-defined]
        else:
            plain = Producer({"bootstrap.servers": bootstrap})
            plain.produce(topic, raw)
            assert plain.flush(30) == 0
        consumer = _kq_consumer(client, bootstrap)
        made.append(consumer)
        worker = Worker(topic, consumer, callback=callback)
        run.worker = worker  # type: ignore[attr-defined]
        assert worker.start(max_messages=1) == 1
        return list(lines.lines)

    yield run
    for client in made:
        _close(client)


def _head(line: str) -> str:
    return line.split("\n", 1)[0]


@pytest.mark.parametrize("client", CLIENTS)
def test_success_writes_exactly_kqs_lines(run_one: Run, topic: str, client: ClientName) -> None:
    got = run_one(client, job=lambda q: q.enqueue(jobfuncs.add, 1, 2))
    job, worker = run_one.job, run_one.worker  # type: ignore[attr-defined]
    assert got == [
        f"[INFO] Enqueueing {job} ...",
        f"[INFO] Starting {worker} ...",
        f"[INFO] Processing Message(topic={topic}, partition=0, offset=0) ...",
        f"[INFO] Executing job {job.id}: {MOD}.add(1, 2)",
        f"[INFO] Job {job.id} returned: 3",
        "[INFO] Executing callback ...",
        "[INFO] Callback got job status success",
    ]


@pytest.mark.parametrize("client", CLIENTS)
def test_failure_writes_exactly_kqs_lines(run_one: Run, topic: str, client: ClientName) -> None:
    got = run_one(client, job=lambda q: q.enqueue(jobfuncs.raise_value_error, "boom"))
    job, worker = run_one.job, run_one.worker  # type: ignore[attr-defined]
    assert [_head(line) for line in got] == [
        f"[INFO] Enqueueing {job} ...",
        f"[INFO] Starting {worker} ...",
        f"[INFO] Processing Message(topic={topic}, partition=0, offset=0) ...",
        f"[INFO] Executing job {job.id}: {MOD}.raise_value_error('boom')",
        f"[ERROR] Job {job.id} raised an exception: ValueError('boom')",
        "[INFO] Executing callback ...",
        "[INFO] Callback got job status failure",
    ]
    # the failure line carries the job's traceback, as KQ's logger.exception did
    assert "Traceback (most recent call last)" in got[4]
    assert "raise_value_error" in got[4]


@pytest.mark.parametrize("client", CLIENTS)
def test_timeout_writes_exactly_kqs_lines(run_one: Run, topic: str, client: ClientName) -> None:
    got = run_one(client, job=lambda q: q.using(timeout=1).enqueue(jobfuncs.sleep_for, 10))
    job, worker = run_one.job, run_one.worker  # type: ignore[attr-defined]
    assert got == [
        f"[INFO] Enqueueing {job} ...",
        f"[INFO] Starting {worker} ...",
        f"[INFO] Processing Message(topic={topic}, partition=0, offset=0) ...",
        f"[INFO] Executing job {job.id}: {MOD}.sleep_for(10)",
        f"[ERROR] Job {job.id} timed out after 1 seconds",
        "[INFO] Executing callback ...",
        "[INFO] Callback got job status timeout",
    ]


@pytest.mark.parametrize("client", CLIENTS)
def test_raising_callback_writes_exactly_kqs_lines(
    run_one: Run, topic: str, client: ClientName
) -> None:
    got = run_one(client, job=lambda q: q.enqueue(jobfuncs.add, 2, 2), callback=_raising_callback)
    job, worker = run_one.job, run_one.worker  # type: ignore[attr-defined]
    assert [_head(line) for line in got] == [
        f"[INFO] Enqueueing {job} ...",
        f"[INFO] Starting {worker} ...",
        f"[INFO] Processing Message(topic={topic}, partition=0, offset=0) ...",
        f"[INFO] Executing job {job.id}: {MOD}.add(2, 2)",
        f"[INFO] Job {job.id} returned: 4",
        "[INFO] Executing callback ...",
        "[ERROR] Callback raised an exception: callback broke",
    ]
    assert "RuntimeError: callback broke" in got[-1]  # logged with its traceback, as KQ did


@pytest.mark.parametrize("client", CLIENTS)
def test_invalid_message_writes_exactly_kqs_lines(
    run_one: Run, topic: str, client: ClientName
) -> None:
    got = run_one(client, raw=b"\x80\x04 not a pickle")
    worker = run_one.worker  # type: ignore[attr-defined]
    assert len(got) == 5, got
    assert got[:2] == [
        f"[INFO] Starting {worker} ...",
        f"[INFO] Processing Message(topic={topic}, partition=0, offset=0) ...",
    ]
    assert got[2].startswith("[ERROR] Job was invalid: ") and len(got[2]) > 25, got[2]
    assert got[3:] == ["[INFO] Executing callback ...", "[INFO] Callback got job status invalid"]


@pytest.mark.parametrize("client", CLIENTS)
def test_kq_diagnostics_go_to_their_own_loggers(
    bootstrap: str, topic: str, lines: Lines, client: ClientName, caplog: pytest.LogCaptureFixture
) -> None:
    """What kq says beyond KQ's lines reaches kq.consumer, not kq.worker."""
    caplog.set_level(logging.DEBUG, logger="kq.consumer")
    producer = _kq_producer(client, bootstrap)
    consumer = _kq_consumer(client, bootstrap)
    try:
        Queue(topic, producer).enqueue(jobfuncs.add, 1, 1)
        Worker(topic, consumer).start(max_messages=1)
    finally:
        _close(producer)
        _close(consumer)
    diagnostics = [r.getMessage() for r in caplog.records if r.name == "kq.consumer"]
    assert any(m.startswith("Partitions assigned: ") for m in diagnostics), diagnostics
    # empty assignments and revokes are not logged at all
    assert not [m for m in diagnostics if m.endswith(": []")], diagnostics
    if client == "kafka-python":
        assert any("enable_auto_commit=True" in m for m in diagnostics), diagnostics
    assert not [line for line in lines.lines if "Partitions" in line or "auto_commit" in line]
    # none of kq's diagnostic loggers is a child of KQ's two
    for name in ("kq.consumer", "kq.runtime", "kq.retries", "kq.delay", "kq.producer"):
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            assert logger.name not in ("kq.worker", "kq.queue"), name
            logger = logger.parent


class _BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


def test_enqueueing_a_job_whose_repr_raises_still_enqueues_it(
    bootstrap: str, topic: str, lines: Lines
) -> None:
    """How a job is logged never decides whether it is enqueued (KQ's line, told safely)."""
    job = Queue.connect(bootstrap, topic).enqueue(jobfuncs.echo, _BadRepr())
    unrepresentable = (
        "<unrepresentable: repr() of test_kq_log_lines._BadRepr raised ValueError: no repr for you>"
    )
    assert lines.lines == [
        f"[INFO] Enqueueing Job(id={job.id!r}, timestamp={job.timestamp!r}, topic={topic!r},"
        f" func={jobfuncs.echo!r}, args=({unrepresentable},), kwargs={{}}, timeout=0,"
        " key=None, partition=None) ..."
    ]
