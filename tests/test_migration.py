"""Mixed deployments: KQ 2.2.1 (from PyPI, in its own venv) and kq on one real broker.

Jobs are dill pickles of ``kq.job.Job`` on both sides, so a job enqueued by
either library is run by the other's worker. The old KQ only ever runs in
subprocesses (``legacy_kq.run_legacy``); this process imports the new kq.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import dill
import jobs_for_legacy as jobs
import legacy_kq
import pytest
from kafka import KafkaConsumer, KafkaProducer

import kq
from kq import Job, Message, Queue, Worker
from kq.clients import ClientName

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]
TESTS_DIR = Path(__file__).resolve().parent
LEGACY_TIMEOUT = 90.0  # seconds any legacy subprocess may run
WORKER_TIMEOUT = 60.0  # seconds a kq worker here may take for its messages

# first use creates the legacy venv (pip install) inside the first test's time
pytestmark = pytest.mark.timeout(600)


# -- scripts run by KQ 2.2.1 in its venv -----------------------------------------

LEGACY_ENQUEUE = """
import json, sys

from kafka import KafkaProducer

import kq
import jobs_for_legacy as jobs
from kq import Job, Queue

bootstrap, topic = sys.argv[1:3]
producer = KafkaProducer(bootstrap_servers=bootstrap)
queue = Queue(topic, producer)
enqueued = [
    queue.enqueue(jobs.add, 1, 2),
    queue.using(key=b"legacy-key", timeout=30).enqueue(jobs.describe, "x", 2, flag=True),
    queue.enqueue(
        Job(id="legacy-job-object", func=jobs.describe, args=[3, 4], kwargs={"name": "job"})
    ),
    queue.enqueue(lambda n: n * 2, 21),
    queue.enqueue(jobs.raise_value_error, "legacy boom"),
    queue.using(timeout=1).enqueue(jobs.spin_for, 30),
]
producer.close()
print(json.dumps({
    "version": kq.__version__,
    "file": kq.__file__,
    "jobs": [
        {
            "id": job.id,
            "timestamp": job.timestamp,
            "topic": job.topic,
            "args": list(job.args),
            "kwargs": job.kwargs,
            "timeout": job.timeout,
            "key": None if job.key is None else job.key.hex(),
            "partition": job.partition,
        }
        for job in enqueued
    ],
}))
"""

LEGACY_WORKER = """
import json, sys

from kafka import KafkaConsumer

import kq
from kq import Worker

bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def hex_or_none(value):
    return None if value is None else value.hex()


def callback(status, message, job, result, exception, stacktrace):
    record = {
        "event": "callback",
        "status": status,
        "partition": message.partition,
        "offset": message.offset,
        "message_key": hex_or_none(message.key),
    }
    if job is not None:
        record.update(
            job_class=f"{type(job).__module__}.{type(job).__qualname__}",
            job_is_legacy_class=type(job) is kq.Job,
            id=job.id,
            timestamp=job.timestamp,
            topic=job.topic,
            func=getattr(job.func, "__qualname__", repr(job.func)),
            args=list(job.args),
            kwargs=job.kwargs,
            timeout=job.timeout,
            key=hex_or_none(job.key),
            partition=job.partition,
            result=result,
            exception=None if exception is None else repr(exception),
            stacktrace=stacktrace,
        )
    print(json.dumps(record), flush=True)


consumer = KafkaConsumer(
    bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
)
worker = Worker(topic, consumer, callback=callback)
processed = worker.start(max_messages=count)
print(json.dumps({"event": "done", "processed": processed, "version": kq.__version__}))
consumer.close()
"""


# -- helpers --------------------------------------------------------------------


def group_name() -> str:
    """A consumer group no other test uses."""
    return f"migration-{uuid.uuid4().hex[:12]}"


def run_legacy_script(script: str, *args: str) -> list[dict[str, Any]]:
    """Run a script in the KQ 2.2.1 venv (bounded); return the JSON lines it printed."""
    try:
        proc = legacy_kq.run_legacy(script, *args, timeout=LEGACY_TIMEOUT, pythonpath=[TESTS_DIR])
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"legacy KQ script ran past {LEGACY_TIMEOUT} s\n{exc.stdout!r}\n{exc.stderr!r}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


class Recorder:
    """A kq worker callback that keeps its arguments."""

    def __init__(self) -> None:
        # job is Any: the tests assert it is a Job
        self.calls: list[tuple[str, Message, Any, Any, Any, Any]] = []

    def __call__(
        self,
        status: str,
        message: Message,
        job: Job | None,
        result: Any,
        exception: Any,
        stacktrace: Any,
    ) -> None:
        self.calls.append((status, message, job, result, exception, stacktrace))


def run_worker(worker: Worker, count: int) -> int:
    """``worker.start(max_messages=count)`` on a thread, bounded by WORKER_TIMEOUT."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(worker.start(max_messages=count))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, name="migration-worker", daemon=True)
    thread.start()
    thread.join(WORKER_TIMEOUT)
    if thread.is_alive():
        worker.stop(immediately=True)
        thread.join(30)
        pytest.fail(f"kq worker did not process {count} messages in {WORKER_TIMEOUT} s")
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return int(result)


def close_consumer(consumer: Any) -> None:
    if isinstance(consumer, KafkaConsumer):
        consumer.close(autocommit=False)
    else:
        consumer.close()


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The KQ 2.2.1 venv's python (created on first use, then cached on disk)."""
    return legacy_kq.legacy_python()


# -- the legacy environment -------------------------------------------------------


def test_legacy_venv_has_kq_2_2_1_and_matching_dill(legacy_python: Path) -> None:
    script = (
        "import json, dill, kafka, kq\n"
        "print(json.dumps([kq.__version__, kq.__file__, dill.__version__, kafka.__version__]))\n"
    )
    proc = legacy_kq.run_legacy(script, timeout=LEGACY_TIMEOUT, pythonpath=[TESTS_DIR])
    assert proc.returncode == 0, proc.stderr
    version, path, dill_version, kafka_version = json.loads(proc.stdout)
    assert version == legacy_kq.LEGACY_KQ_VERSION
    assert Path(path).is_relative_to(legacy_python.parent.parent)
    assert dill_version == dill.__version__
    assert kafka_version.startswith("3.")
    assert kq.__version__ != legacy_kq.LEGACY_KQ_VERSION  # this process has the new kq


# -- KQ 2.2.1 enqueues, kq runs ------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_jobs_enqueued_by_kq_2_2_1_run_on_kq_worker(
    legacy_python: Path, bootstrap: str, topic: str, client: ClientName
) -> None:
    """Every KQ 2.2.1 way to enqueue (plain call, ``using(key, timeout)``, a Job object,
    a lambda, a failing and a timing-out job) is run by a kq worker of either client family.

    KQ pickled the message key (``dill.dumps(key)``): the raw Kafka key a kq worker sees
    is that pickle, while ``job.key`` is the original bytes.
    """
    [output] = run_legacy_script(LEGACY_ENQUEUE, bootstrap, topic)
    assert output["version"] == legacy_kq.LEGACY_KQ_VERSION
    sent = output["jobs"]
    assert len(sent) == 6

    recorder = Recorder()
    worker = Worker.connect(bootstrap, topic, group_name(), client=client, callback=recorder)
    try:
        assert run_worker(worker, len(sent)) == len(sent)
    finally:
        close_consumer(worker.consumer)

    calls = sorted(recorder.calls, key=lambda call: call[1].offset)
    assert [call[1].offset for call in calls] == list(range(len(sent)))
    for (_, message, job, *_), want in zip(calls, sent):
        assert job is not None
        assert type(job) is Job
        assert job.id == want["id"]
        assert job.timestamp == want["timestamp"]
        assert job.topic == topic == message.topic
        assert list(job.args or ()) == want["args"]
        assert job.kwargs == want["kwargs"]
        assert job.timeout == want["timeout"]
        assert job.partition is None
        if want["key"] is None:
            assert job.key is None
            assert message.key is None
        else:
            assert job.key == bytes.fromhex(want["key"]) == b"legacy-key"
            assert message.key == dill.dumps(b"legacy-key")  # KQ pickled the key

    plain, keyed, job_object, lam, failing, slow = calls
    assert plain[0] == "success"
    assert plain[2].func is jobs.add
    assert plain[2].args == (1, 2)
    assert plain[3:] == (3, None, None)

    assert keyed[0] == "success"
    assert keyed[2].func is jobs.describe
    assert keyed[2].args == ("x", 2)
    assert keyed[2].kwargs == {"flag": True}
    assert keyed[2].timeout == 30
    assert keyed[3:] == ({"args": ["x", 2], "kwargs": {"flag": True}}, None, None)

    assert job_object[0] == "success"
    assert job_object[2].id == "legacy-job-object"
    assert job_object[2].args == (3, 4)
    assert job_object[2].kwargs == {"name": "job"}
    assert job_object[3:] == ({"args": [3, 4], "kwargs": {"name": "job"}}, None, None)

    assert lam[0] == "success"
    assert lam[2].func.__name__ == "<lambda>"  # pickled by value, defined only over there
    assert lam[3:] == (42, None, None)

    status, _, _, result, exception, stacktrace = failing
    assert (status, result) == ("failure", None)
    assert isinstance(exception, ValueError)
    assert str(exception) == "legacy boom"
    assert "raise_value_error" in stacktrace

    assert slow[0] == "timeout"
    assert slow[2].timeout == 1
    assert slow[3:] == (None, None, None)


# -- kq enqueues, KQ 2.2.1 runs -------------------------------------------------------


def make_queue(kind: str, bootstrap: str, topic: str) -> tuple[Queue, Any]:
    """A kq Queue with default settings: over a plain KafkaProducer, or made by connect."""
    if kind == "KafkaProducer":
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        return Queue(topic, producer), producer
    queue = Queue.connect(bootstrap, topic, client="confluent")
    return queue, queue.producer


def close_producer(producer: Any) -> None:
    if isinstance(producer, KafkaProducer):
        producer.close(timeout=10)
    else:
        producer.flush(10)


@pytest.mark.parametrize("kind", ["KafkaProducer", "connect-confluent"])
def test_jobs_enqueued_by_kq_run_on_kq_2_2_1_worker(
    legacy_python: Path, bootstrap: str, topic: str, kind: str
) -> None:
    """Jobs from a kq Queue (default settings) are run by a KQ 2.2.1 worker, which
    unpickles them as its own ``kq.job.Job``: results, failures and timeouts as KQ reports them.
    """
    queue, producer = make_queue(kind, bootstrap, topic)
    try:
        sent = [
            queue.enqueue(jobs.add, 1, 2),
            queue.using(timeout=30).enqueue(jobs.describe, "x", 2, flag=True),
            queue.enqueue(
                Job(id="kq-job-object", func=jobs.describe, args=[3, 4], kwargs={"name": "job"})
            ),
            queue.enqueue(jobs.make_multiplier(3), 14),
            queue.enqueue(jobs.raise_value_error, "kq boom"),
            queue.using(timeout=1).enqueue(jobs.spin_for, 30),
        ]
    finally:
        close_producer(producer)

    *records, done = run_legacy_script(
        LEGACY_WORKER, bootstrap, topic, group_name(), str(len(sent))
    )
    assert done == {
        "event": "done",
        "processed": len(sent),
        "version": legacy_kq.LEGACY_KQ_VERSION,
    }
    assert [r["offset"] for r in records] == list(range(len(sent)))
    for record, job in zip(records, sent):
        assert record["job_class"] == "kq.job.Job"
        assert record["job_is_legacy_class"] is True
        assert record["id"] == job.id
        assert record["timestamp"] == job.timestamp
        assert record["topic"] == topic
        assert record["args"] == list(job.args or ())
        assert record["kwargs"] == job.kwargs
        assert record["timeout"] == job.timeout
        assert record["key"] is None
        assert record["message_key"] is None
        assert record["partition"] is None

    plain, keyed, job_object, lam, failing, slow = records
    assert (plain["status"], plain["func"], plain["result"]) == ("success", "add", 3)
    assert plain["args"] == [1, 2]
    assert keyed["status"] == "success"
    assert keyed["timeout"] == 30
    assert keyed["result"] == {"args": ["x", 2], "kwargs": {"flag": True}}
    assert job_object["status"] == "success"
    assert job_object["id"] == "kq-job-object"
    assert job_object["result"] == {"args": [3, 4], "kwargs": {"name": "job"}}
    assert (lam["status"], lam["result"]) == ("success", 42)
    assert lam["func"] == "make_multiplier.<locals>.<lambda>"
    assert failing["status"] == "failure"
    assert failing["result"] is None
    assert failing["exception"] == "ValueError('kq boom')"
    assert "raise_value_error" in failing["stacktrace"]
    assert (slow["status"], slow["result"], slow["exception"]) == ("timeout", None, None)


@pytest.mark.parametrize("kind", ["KafkaProducer", "connect-confluent"])
def test_kq_key_is_raw_bytes_and_kq_2_2_1_worker_runs_the_job(
    legacy_python: Path, bootstrap: str, topic: str, kind: str
) -> None:
    """The one deliberate wire difference: kq sends the message key as the bytes given.

    KQ 2.2.1 sent ``dill.dumps(key)`` as the Kafka key; kq sends ``key`` itself, so
    ``using(key=b"k")`` puts ``b"k"`` on the wire (and keys route like any Kafka
    client's). A KQ 2.2.1 worker never looks at the message key (only at the
    pickled Job, whose ``key`` field is ``b"k"`` in both), so it runs the job
    unchanged. Only code that read ``Message.key`` and unpickled it notices.
    """
    queue, producer = make_queue(kind, bootstrap, topic)
    try:
        job = queue.using(key=b"k").enqueue(jobs.add, 20, 22)
        job_with_key = queue.enqueue(Job(func=jobs.add, args=(1, 1), key=b"job-key"))
    finally:
        close_producer(producer)

    *records, done = run_legacy_script(LEGACY_WORKER, bootstrap, topic, group_name(), "2")
    assert done["processed"] == 2
    first, second = records
    assert (first["status"], first["id"], first["result"]) == ("success", job.id, 42)
    assert bytes.fromhex(first["message_key"]) == b"k"  # raw, not dill.dumps(b"k")
    assert bytes.fromhex(first["key"]) == b"k"
    assert (second["status"], second["id"], second["result"]) == ("success", job_with_key.id, 2)
    assert bytes.fromhex(second["message_key"]) == b"job-key"
    assert bytes.fromhex(second["key"]) == b"job-key"


@pytest.mark.parametrize("kind", ["KafkaProducer", "connect-confluent"])
def test_jobs_enqueued_in_a_kq_batch_run_on_kq_2_2_1_worker(
    legacy_python: Path, bootstrap: str, topic: str, kind: str
) -> None:
    """The batched path (``Queue.batch``, ``Queue.enqueue_many``) with default settings
    writes what a KQ 2.2.1 worker runs: importable functions (plain pickle bytes), a
    closure (dill by value), a keyed Job object."""
    queue, producer = make_queue(kind, bootstrap, topic)
    try:
        with queue.batch() as batch:
            batched = [
                batch.enqueue(jobs.add, 1, 2),
                batch.enqueue(Job(func=jobs.describe, args=[3], kwargs={"k": "v"}, key=b"kb")),
                batch.enqueue(jobs.make_multiplier(3), 14),
            ]
        many = queue.enqueue_many([Job(func=jobs.add, args=[20, 22])])
    finally:
        close_producer(producer)
    sent = [*batched, *many]
    assert len(sent) == 4

    *records, done = run_legacy_script(
        LEGACY_WORKER, bootstrap, topic, group_name(), str(len(sent))
    )
    assert done["processed"] == len(sent)
    assert [r["id"] for r in records] == [job.id for job in sent]
    assert [(r["status"], r["result"]) for r in records] == [
        ("success", 3),
        ("success", {"args": [3], "kwargs": {"k": "v"}}),
        ("success", 42),
        ("success", 42),
    ]
    assert bytes.fromhex(records[1]["message_key"]) == b"kb"
    assert records[2]["func"] == "make_multiplier.<locals>.<lambda>"
