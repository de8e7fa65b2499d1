"""The public contract of kq (shared/spec/kq-contract.md), point by point.

Tests touching Kafka run against the real local broker of ``conftest.py`` and,
wherever a client is involved, for both client families.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dill
import jobfuncs
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

import kq
from kq import EnqueueError, Job, Message, Queue, Worker
from kq.clients import ClientName, make_consumer, make_producer

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]
REPO = Path(__file__).resolve().parent.parent
MOD = jobfuncs.__name__  # how call descriptions name the job functions' module

pytestmark = pytest.mark.timeout(120)


# -- helpers ------------------------------------------------------------------


def group_name() -> str:
    """A consumer group no other test uses."""
    return f"contract-{uuid.uuid4().hex[:12]}"


def consume_raw(bootstrap: str, topic: str, count: int, partitions: int = 1) -> list[Any]:
    """Read ``count`` records from the start of the topic with a plain client."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_name(), "enable.auto.commit": False}
    )
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=count - len(out), timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(err))
    finally:
        consumer.close()
    assert len(out) == count, f"expected {count} records in {topic}, found {len(out)}"
    return out


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    """The group's committed offset for one partition, or None when it has none."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
    finally:
        consumer.close()
    return None if tp.offset < 0 else int(tp.offset)


def produce_raw(bootstrap: str, topic: str, value: bytes, key: bytes | None = None) -> None:
    """Write bytes to the topic bypassing kq (for messages that are not jobs)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def close_client(client: Any) -> None:
    if isinstance(client, Producer):
        client.flush(10)
    elif isinstance(client, KafkaConsumer):
        client.close(autocommit=False)
    else:
        client.close()


class Recorder:
    """A callback that keeps its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Message, Job | None, Any, Any, Any]] = []

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


def assert_kq_error(exc: BaseException, natural: type[BaseException], text: str) -> None:
    """An argument error is both the natural type and KQ's AssertionError, with KQ's text."""
    assert isinstance(exc, natural), type(exc).__mro__
    assert isinstance(exc, AssertionError), type(exc).__mro__
    assert str(exc) == text


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def producers(bootstrap: str) -> Iterator[dict[ClientName, Any]]:
    """One producer of each family made by kq, shared by the module's tests."""
    made = {client: make_producer(bootstrap, client=client) for client in CLIENTS}
    yield made
    for producer in made.values():
        if isinstance(producer, Producer):
            producer.flush(10)
        else:
            producer.close(timeout=10)


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """Clients a test makes; closed after it."""
    made: list[Any] = []
    yield made
    for client in made:
        close_client(client)


@pytest.fixture
def new_consumer(bootstrap: str, clients: list[Any]) -> Callable[..., Any]:
    """Make a worker consumer of a family in a given group (closed after the test)."""

    def make(client: ClientName, group: str, **config: Any) -> Any:
        consumer = make_consumer(bootstrap, group, client=client, **config)
        clients.append(consumer)
        return consumer

    return make


def worker_records(caplog: pytest.LogCaptureFixture, name: str = "kq.worker") -> list[Any]:
    return [r for r in caplog.records if r.name == name]


# -- import surface, Job, Message (no broker) -----------------------------------


def test_import_surface() -> None:
    from kq import Job as J
    from kq import Message as M
    from kq import Queue as Q
    from kq import Worker as W

    assert (kq.Job, kq.Message, kq.Queue, kq.Worker) == (J, M, Q, W)
    assert isinstance(kq.__version__, str) and kq.__version__
    # jobs pickled by KQ name the class at kq.job.Job
    assert Job.__module__ == "kq.job" and Message.__module__ == "kq.message"


def test_job_is_frozen_dataclass_with_kq_fields() -> None:
    assert dataclasses.is_dataclass(Job)
    fields = dataclasses.fields(Job)
    assert [f.name for f in fields] == [
        "id",
        "timestamp",
        "topic",
        "func",
        "args",
        "kwargs",
        "timeout",
        "key",
        "partition",
    ]
    assert all(f.default is None for f in fields)
    job = Job()
    assert all(getattr(job, f.name) is None for f in fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.id = "x"  # type: ignore[misc]
    # positional order is KQ's
    assert Job("i", 1, "t", len, (1,), {}, 2, b"k", 0).partition == 0


def test_message_is_frozen_dataclass_with_kq_fields() -> None:
    assert dataclasses.is_dataclass(Message)
    assert [f.name for f in dataclasses.fields(Message)] == [
        "topic",
        "partition",
        "offset",
        "key",
        "value",
    ]
    message = Message("t", 0, 5, None, b"v")
    assert (message.topic, message.partition, message.offset, message.key, message.value) == (
        "t",
        0,
        5,
        None,
        b"v",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.offset = 6  # type: ignore[misc]


def test_queue_rejects_bad_topic_and_non_producer() -> None:
    with pytest.raises(TypeError) as info:
        Queue(1, object())  # type: ignore[arg-type]
    assert_kq_error(info.value, TypeError, "topic must be a str")
    with pytest.raises(AssertionError) as info2:
        Queue("t", object())
    assert_kq_error(info2.value, TypeError, "bad producer instance")


def test_worker_rejects_bad_topic_and_non_consumer() -> None:
    with pytest.raises(TypeError) as info:
        Worker(1, object())  # type: ignore[arg-type]
    assert_kq_error(info.value, TypeError, "topic must be a str")
    with pytest.raises(AssertionError) as info2:
        Worker("t", object())
    assert_kq_error(info2.value, TypeError, "bad consumer instance")


def test_argument_errors_do_not_depend_on_assert_statements() -> None:
    code = """
import json, sys
from kq import Queue, Worker
out = []
for make in (lambda: Queue(1, None), lambda: Queue("t", None), lambda: Worker("t", None)):
    try:
        make()
    except AssertionError as exc:
        out.append([isinstance(exc, TypeError), str(exc)])
    else:
        out.append(None)
print(json.dumps([sys.flags.optimize, out]))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    optimize, out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert optimize == 1
    assert out == [
        [True, "topic must be a str"],
        [True, "bad producer instance"],
        [True, "bad consumer instance"],
    ]


def test_library_adds_no_handlers() -> None:
    for name in ("kq", "kq.queue", "kq.worker"):
        assert logging.getLogger(name).handlers == []


# -- Queue: constructor, properties ---------------------------------------------

QUEUE_ERRORS: list[tuple[str, Callable[[Any, str], Any], type[BaseException], str]] = [
    ("topic", lambda p, t: Queue(1, p), TypeError, "topic must be a str"),  # type: ignore[arg-type]
    ("producer", lambda p, t: Queue(t, "p"), TypeError, "bad producer instance"),
    (
        "serializer",
        lambda p, t: Queue(t, p, serializer="s"),  # type: ignore[arg-type]
        TypeError,
        "serializer must be a callable",
    ),
    (
        "timeout-type",
        lambda p, t: Queue(t, p, timeout="1"),  # type: ignore[arg-type]
        TypeError,
        "timeout must be an int or float",
    ),
    (
        "timeout-negative",
        lambda p, t: Queue(t, p, timeout=-1),
        ValueError,
        "timeout must be 0 or greater",
    ),
    (
        "logger",
        lambda p, t: Queue(t, p, logger="kq"),  # type: ignore[arg-type]
        TypeError,
        "bad logger instance",
    ),
    (
        "using-timeout",
        lambda p, t: Queue(t, p).using(timeout="1"),  # type: ignore[arg-type]
        TypeError,
        "timeout must be an int or float",
    ),
    (
        "using-key",
        lambda p, t: Queue(t, p).using(key="k"),  # type: ignore[arg-type]
        TypeError,
        "key must be a bytes",
    ),
    (
        "using-partition",
        lambda p, t: Queue(t, p).using(partition="0"),  # type: ignore[arg-type]
        TypeError,
        "partition must be an int",
    ),
    (
        "enqueue-func",
        lambda p, t: Queue(t, p).enqueue(1),  # type: ignore[arg-type]
        TypeError,
        "first argument must be a callable",
    ),
    (
        "using-enqueue-func",
        lambda p, t: Queue(t, p).using(timeout=1).enqueue("f"),  # type: ignore[arg-type]
        TypeError,
        "first argument must be a callable",
    ),
    (
        "Job.id",
        lambda p, t: Queue(t, p).enqueue(Job(id=1, func=jobfuncs.add)),  # type: ignore[arg-type]
        TypeError,
        "Job.id must be a str",
    ),
    (
        "Job.func",
        lambda p, t: Queue(t, p).enqueue(Job(func=1)),  # type: ignore[arg-type]
        TypeError,
        "Job.func must be a callable",
    ),
    (
        "Job.func-missing",
        lambda p, t: Queue(t, p).enqueue(Job(id="x")),
        TypeError,
        "Job.func must be a callable",
    ),
    (
        "Job.args",
        lambda p, t: Queue(t, p).enqueue(Job(func=jobfuncs.add, args=1)),  # type: ignore[arg-type]
        TypeError,
        "Job.args must be a list or tuple",
    ),
    (
        "Job.kwargs",
        lambda p, t: Queue(t, p).enqueue(Job(func=jobfuncs.add, kwargs=[1])),  # type: ignore[arg-type]
        TypeError,
        "Job.kwargs must be a dict",
    ),
    (
        "Job.timeout",
        lambda p, t: Queue(t, p).enqueue(Job(func=jobfuncs.add, timeout="1")),  # type: ignore[arg-type]
        TypeError,
        "Job.timeout must be an int or float",
    ),
    (
        "Job.key",
        lambda p, t: Queue(t, p).enqueue(Job(func=jobfuncs.add, key="k")),  # type: ignore[arg-type]
        TypeError,
        "Job.key must be a bytes",
    ),
    (
        "Job.partition",
        lambda p, t: Queue(t, p).enqueue(Job(func=jobfuncs.add, partition="0")),  # type: ignore[arg-type]
        TypeError,
        "Job.partition must be an int",
    ),
    (
        "Job.key-via-using",
        lambda p, t: Queue(t, p).using(key=b"k").enqueue(Job(func=jobfuncs.add, key="k")),  # type: ignore[arg-type]
        TypeError,
        "Job.key must be a bytes",
    ),
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("make", "natural", "text"),
    [case[1:] for case in QUEUE_ERRORS],
    ids=[case[0] for case in QUEUE_ERRORS],
)
def test_queue_argument_errors(
    producers: dict[ClientName, Any],
    topic: str,
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
    make: Callable[[Any, str], Any],
    natural: type[BaseException],
    text: str,
) -> None:
    caplog.set_level(logging.INFO, logger="kq.queue")
    with pytest.raises(AssertionError) as info:
        make(producers[client], topic)
    assert_kq_error(info.value, natural, text)
    # nothing is logged (or sent) for a call refused at once
    assert not [r for r in caplog.records if r.name == "kq.queue"]


@pytest.mark.parametrize("client", CLIENTS)
def test_queue_properties_repr_and_defaults(
    producers: dict[ClientName, Any], bootstrap: str, topic: str, client: ClientName
) -> None:
    producer = producers[client]
    queue = Queue(topic, producer)
    assert queue.hosts == bootstrap
    assert queue.topic == topic
    assert queue.producer is producer
    assert queue.serializer is dill.dumps
    assert queue.timeout == 0
    assert repr(queue) == f"Queue(hosts={bootstrap}, topic={topic})"

    def serialize(job: Job) -> bytes:
        return bytes(dill.dumps(job))

    custom = Queue(topic, producer, serializer=serialize, timeout=2.5)
    assert custom.serializer is serialize
    assert custom.timeout == 2.5
    for name in ("hosts", "topic", "producer", "serializer", "timeout"):
        with pytest.raises(AttributeError):
            setattr(queue, name, getattr(queue, name))


# -- Queue.enqueue ----------------------------------------------------------------


def _is_uuid4_hex(value: Any) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[0-9a-f]{32}", value) is not None
        and uuid.UUID(hex=value).version == 4
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_returns_job_logs_and_writes_it(
    producers: dict[ClientName, Any],
    bootstrap: str,
    topic: str,
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
) -> None:
    caplog.set_level(logging.INFO, logger="kq.queue")
    queue = Queue(topic, producers[client], timeout=7)
    before = int(time.time() * 1000)
    job = queue.enqueue(jobfuncs.add, 1, b=2)
    after = int(time.time() * 1000)

    assert isinstance(job, Job)
    assert _is_uuid4_hex(job.id)
    assert isinstance(job.timestamp, int) and before <= job.timestamp <= after
    assert job.topic == topic
    assert job.func is jobfuncs.add
    assert job.args == (1,) and isinstance(job.args, tuple)
    assert job.kwargs == {"b": 2}
    assert job.timeout == 7
    assert job.key is None and job.partition is None
    assert queue.enqueue(jobfuncs.add, 1, 2).id != job.id

    records = [r for r in caplog.records if r.name == "kq.queue"]
    assert records[0].levelno == logging.INFO
    assert records[0].getMessage() == f"Enqueueing {job} ..."

    # in Kafka as soon as enqueue returned; the value is the dill-pickled Job
    first, _second = consume_raw(bootstrap, topic, 2)
    assert first.key() is None
    assert dill.loads(first.value()) == job


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_key_is_sent_as_raw_bytes(
    producers: dict[ClientName, Any], bootstrap: str, topic: str, client: ClientName
) -> None:
    queue = Queue(topic, producers[client])
    job = queue.using(key=b"raw-key\x00\xff").enqueue(jobfuncs.echo, "k")
    assert job.key == b"raw-key\x00\xff"
    [record] = consume_raw(bootstrap, topic, 1)
    assert record.key() == b"raw-key\x00\xff"
    assert dill.loads(record.value()) == job


@pytest.mark.parametrize("client", CLIENTS)
def test_using_sets_defaults_and_job_fields_win(
    producers: dict[ClientName, Any],
    bootstrap: str,
    make_topic: Callable[..., str],
    client: ClientName,
) -> None:
    topic = make_topic(partitions=3)
    queue = Queue(topic, producers[client], timeout=9)
    spec = queue.using(timeout=5, key=b"spec-key", partition=1)
    assert callable(spec.enqueue)

    plain = spec.enqueue(jobfuncs.add, 1, 2)
    assert (plain.timeout, plain.key, plain.partition) == (5, b"spec-key", 1)
    assert plain.args == (1, 2) and plain.kwargs == {}

    before = int(time.time() * 1000)
    own = spec.enqueue(
        Job(
            id="my-own-id",
            timestamp=1,
            topic="elsewhere",
            func=jobfuncs.add,
            args=[3, 4],
            kwargs=None,
            timeout=2,
            key=b"job-key",
            partition=2,
        )
    )
    after = int(time.time() * 1000)
    assert own.id == "my-own-id"
    assert own.timestamp is not None and before <= own.timestamp <= after  # always replaced
    assert own.topic == topic  # always replaced
    assert own.args == (3, 4) and isinstance(own.args, tuple)
    assert own.kwargs == {}
    assert (own.timeout, own.key, own.partition) == (2, b"job-key", 2)  # the Job's fields win

    fallback = spec.enqueue(Job(func=jobfuncs.add, args=(5, 6), kwargs={"x": 1}))
    assert _is_uuid4_hex(fallback.id)
    assert fallback.kwargs == {"x": 1}
    assert (fallback.timeout, fallback.key, fallback.partition) == (5, b"spec-key", 1)

    bare = queue.enqueue(Job(func=jobfuncs.add))
    assert _is_uuid4_hex(bare.id)
    assert bare.args == () and bare.kwargs == {}
    assert (bare.timeout, bare.key, bare.partition) == (9, None, None)  # the queue's defaults

    # each landed where its own fields say (partition wins over key)
    records = consume_raw(bootstrap, topic, 4, partitions=3)
    by_id = {dill.loads(r.value()).id: r for r in records}
    assert by_id[plain.id].partition() == 1 and by_id[plain.id].key() == b"spec-key"
    assert by_id[own.id].partition() == 2 and by_id[own.id].key() == b"job-key"
    assert by_id[fallback.id].partition() == 1
    assert dill.loads(by_id[own.id].value()) == own


@pytest.mark.parametrize("client", CLIENTS)
def test_partition_argument_places_message(
    producers: dict[ClientName, Any],
    bootstrap: str,
    make_topic: Callable[..., str],
    client: ClientName,
) -> None:
    topic = make_topic(partitions=3)
    queue = Queue(topic, producers[client])
    jobs = {p: queue.using(partition=p).enqueue(jobfuncs.echo, p) for p in (0, 1, 2)}
    # an explicit partition wins over the key's partition
    key = b"placed"
    keyed_partition = (murmur2(key) & 0x7FFFFFFF) % 3
    other = (keyed_partition + 1) % 3
    keyed = queue.using(key=key, partition=other).enqueue(jobfuncs.echo, "keyed")
    records = consume_raw(bootstrap, topic, 4, partitions=3)
    where = {dill.loads(r.value()).id: r.partition() for r in records}
    assert {where[job.id] for job in jobs.values()} == {0, 1, 2}
    assert all(where[job.id] == p for p, job in jobs.items())
    assert where[keyed.id] == other


def test_same_key_same_partition_for_both_producer_families(
    producers: dict[ClientName, Any], bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    keys = [f"key-{n}".encode() for n in range(12)]
    for client in CLIENTS:
        queue = Queue(topic, producers[client])
        for key in keys:
            queue.using(key=key).enqueue(jobfuncs.echo, client)
    records = consume_raw(bootstrap, topic, 2 * len(keys), partitions=3)
    partitions: dict[bytes, set[int]] = {}
    for r in records:
        partitions.setdefault(r.key(), set()).add(r.partition())
    assert set(partitions) == set(keys)
    for key, seen in partitions.items():
        # one partition per key, whoever enqueued, and the Java clients' (murmur2) choice
        assert seen == {(murmur2(key) & 0x7FFFFFFF) % 3}, key
    assert len(set().union(*partitions.values())) > 1


# -- Queue.enqueue failures -------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_too_large_for_producer_raises_enqueue_error(
    producers: dict[ClientName, Any], bootstrap: str, topic: str, client: ClientName
) -> None:
    queue = Queue(topic, producers[client], delivery_timeout=20)
    with pytest.raises(EnqueueError) as info:
        queue.enqueue(jobfuncs.echo, os.urandom(2_000_000))
    assert topic in str(info.value)
    # nothing was written; the queue still works
    small = queue.enqueue(jobfuncs.echo, "small")
    [record] = consume_raw(bootstrap, topic, 1)
    assert record.offset() == 0
    assert dill.loads(record.value()) == small


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_too_large_for_broker_raises_enqueue_error(
    bootstrap: str, topic: str, clients: list[Any], client: ClientName
) -> None:
    # the producer would send it; the broker (message.max.bytes ~1 MB) refuses it
    config = (
        {"max_request_size": 10_000_000}
        if client == "kafka-python"
        else {"message.max.bytes": 10_000_000}
    )
    producer = make_producer(bootstrap, client=client, delivery_timeout=20, **config)
    clients.append(producer)
    queue = Queue(topic, producer, delivery_timeout=20)
    with pytest.raises(EnqueueError) as info:
        queue.enqueue(jobfuncs.echo, os.urandom(2_000_000))
    assert topic in str(info.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_to_unreachable_broker_raises_enqueue_error(
    clients: list[Any], client: ClientName
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    # kafka-python would otherwise probe the broker's version in its constructor
    config = {"api_version": (2, 8)} if client == "kafka-python" else {}
    producer = make_producer(bootstrap, client=client, delivery_timeout=2, **config)
    if client == "kafka-python":
        clients.append(producer)
    queue = Queue("unreachable-topic", producer, delivery_timeout=2)
    with pytest.raises(EnqueueError) as info:
        queue.enqueue(jobfuncs.add, 1, 2)
    assert "unreachable-topic" in str(info.value)
    if client == "kafka-python":
        producer.close(timeout=1)
        clients.remove(producer)
    else:
        producer.purge()
        producer.flush(0)


# -- Worker: constructor, properties -----------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_worker_argument_errors(
    new_consumer: Callable[..., Any], topic: str, client: ClientName
) -> None:
    consumer = new_consumer(client, group_name())
    cases: list[tuple[Callable[[], Any], type[BaseException], str]] = [
        (lambda: Worker(b"t", consumer), TypeError, "topic must be a str"),  # type: ignore[arg-type]
        (lambda: Worker(topic, consumer, callback=1), TypeError, "callback must be a callable"),  # type: ignore[arg-type]
        (
            lambda: Worker(topic, consumer, deserializer="d"),  # type: ignore[arg-type]
            TypeError,
            "deserializer must be a callable",
        ),
        (lambda: Worker(topic, consumer, logger="kq"), TypeError, "bad logger instance"),  # type: ignore[arg-type]
    ]
    for make, natural, text in cases:
        with pytest.raises(AssertionError) as info:
            make()
        assert_kq_error(info.value, natural, text)


def test_kafka_python_consumer_without_group_is_refused(
    bootstrap: str, topic: str, clients: list[Any]
) -> None:
    # (confluent-kafka itself refuses to make a group-less Consumer for subscribe)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    clients.append(consumer)
    with pytest.raises(AssertionError) as info:
        Worker(topic, consumer)
    assert_kq_error(info.value, ValueError, "consumer must have group_id")


def test_confluent_consumer_storing_offsets_itself_is_refused(
    bootstrap: str, topic: str, clients: list[Any]
) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_name()})
    clients.append(consumer)
    with pytest.raises(ValueError, match=re.escape("enable.auto.offset.store")):
        Worker(topic, consumer)


@pytest.mark.parametrize("client", CLIENTS)
def test_worker_properties_repr_and_defaults(
    new_consumer: Callable[..., Any], bootstrap: str, topic: str, client: ClientName
) -> None:
    group = group_name()
    consumer = new_consumer(client, group)
    worker = Worker(topic, consumer)
    assert worker.hosts == bootstrap
    assert worker.topic == topic
    assert worker.group == group
    assert worker.consumer is consumer
    assert worker.deserializer is dill.loads
    assert worker.callback is None
    assert repr(worker) == f"Worker(hosts={bootstrap}, topic={topic}, group={group})"

    callback = Recorder()
    custom = Worker(topic, consumer, callback=callback, deserializer=dill.loads)
    assert custom.callback is callback
    for name in ("hosts", "topic", "group", "consumer", "deserializer", "callback"):
        with pytest.raises(AttributeError):
            setattr(worker, name, getattr(worker, name))


# -- Worker.start: logs and callback per outcome --------------------------------------


def _enqueue_four_outcomes(
    producer: Any, bootstrap: str, topic: str
) -> tuple[Job, Job, Job, bytes]:
    """Offsets 0..3: a success, a failure, a timeout and raw garbage."""
    queue = Queue(topic, producer)
    success = queue.using(key=b"k-success").enqueue(jobfuncs.add, 1, 2)
    failure = queue.enqueue(jobfuncs.raise_value_error, "boom")
    timeout = queue.using(timeout=1).enqueue(jobfuncs.sleep_for, 5)
    garbage = b"\x80\x04garbage, not a pickle"
    produce_raw(bootstrap, topic, garbage, key=b"raw-key")
    return success, failure, timeout, garbage


@pytest.mark.parametrize("client", CLIENTS)
def test_start_logs_each_outcome_in_order(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    bootstrap: str,
    topic: str,
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
) -> None:
    success, failure, timeout, _ = _enqueue_four_outcomes(producers[client], bootstrap, topic)
    worker = Worker(topic, new_consumer(client, group_name()), callback=Recorder())
    caplog.set_level(logging.INFO, logger="kq.worker")
    assert worker.start(max_messages=4) == 4

    records = worker_records(caplog)
    assert records[0].getMessage() == f"Starting {worker!r} ..."
    assert records[0].levelno == logging.INFO
    contract = ("Processing ", "Executing ", "Job ", "Callback ")
    seen = [
        (r.levelname, r.getMessage()) for r in records[1:] if r.getMessage().startswith(contract)
    ]

    def processing(offset: int) -> tuple[str, str]:
        return (
            "INFO",
            re.escape(f"Processing Message(topic={topic}, partition=0, offset={offset}) ..."),
        )

    callback = ("INFO", re.escape("Executing callback ..."))
    expected = [
        processing(0),
        ("INFO", re.escape(f"Executing job {success.id}: {MOD}.add(1, 2)")),
        ("INFO", re.escape(f"Job {success.id} returned: 3")),
        callback,
        processing(1),
        ("INFO", re.escape(f"Executing job {failure.id}: {MOD}.raise_value_error('boom')")),
        ("ERROR", re.escape(f"Job {failure.id} raised") + ".*"),
        callback,
        processing(2),
        ("INFO", re.escape(f"Executing job {timeout.id}: {MOD}.sleep_for(5)")),
        ("ERROR", re.escape(f"Job {timeout.id} timed out") + ".*"),
        callback,
        processing(3),
        ("ERROR", re.escape("Job was invalid: ") + ".*"),
        callback,
    ]
    assert len(seen) == len(expected), seen
    for (level, text), (want_level, pattern) in zip(seen, expected):
        assert level == want_level, (level, text)
        assert re.fullmatch(pattern, text, re.DOTALL), (text, pattern)


@pytest.mark.parametrize("client", CLIENTS)
def test_callback_gets_contract_arguments_per_status(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    bootstrap: str,
    topic: str,
    client: ClientName,
) -> None:
    success, failure, timeout, garbage = _enqueue_four_outcomes(producers[client], bootstrap, topic)
    not_a_job = dill.dumps({"not": "a job"})
    produce_raw(bootstrap, topic, not_a_job)
    malformed = dill.dumps(Job(id="m", func=None))
    produce_raw(bootstrap, topic, malformed)
    callback = Recorder()
    worker = Worker(topic, new_consumer(client, group_name()), callback=callback)
    assert worker.start(max_messages=6) == 6

    calls = sorted(callback.calls, key=lambda call: call[1].offset)
    assert [call[1].offset for call in calls] == [0, 1, 2, 3, 4, 5]
    for status, message, *_ in calls:
        assert isinstance(status, str)
        assert isinstance(message, Message)
        assert (message.topic, message.partition) == (topic, 0)

    status, message, job, result, exception, stacktrace = calls[0]
    assert (status, job, result, exception, stacktrace) == ("success", success, 3, None, None)
    assert message.key == b"k-success"
    assert dill.loads(message.value) == success

    status, message, job, result, exception, stacktrace = calls[1]
    assert (status, job, result) == ("failure", failure, None)
    assert message.key is None and dill.loads(message.value) == failure
    assert isinstance(exception, ValueError) and exception.args == ("boom",)
    assert isinstance(stacktrace, str) and "raise_value_error" in stacktrace

    status, message, job, result, exception, stacktrace = calls[2]
    assert (status, job, result, exception, stacktrace) == ("timeout", timeout, None, None, None)
    assert dill.loads(message.value) == timeout

    for call, value, key in zip(
        calls[3:], [garbage, not_a_job, malformed], [b"raw-key", None, None]
    ):
        status, message, job, result, exception, stacktrace = call
        assert (status, job, result, exception, stacktrace) == ("invalid", None, None, None, None)
        assert (message.key, message.value) == (key, value)


@pytest.mark.parametrize("client", CLIENTS)
def test_failing_callback_is_logged_and_worker_goes_on(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    topic: str,
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
) -> None:
    queue = Queue(topic, producers[client])
    queue.enqueue(jobfuncs.add, 1, 2)
    queue.enqueue(jobfuncs.add, 3, 4)
    calls: list[str] = []

    def broken(status: str, *_: Any) -> None:
        calls.append(status)
        raise RuntimeError("callback broke")

    worker = Worker(topic, new_consumer(client, group_name()), callback=broken)
    caplog.set_level(logging.INFO, logger="kq.worker")
    assert worker.start(max_messages=2) == 2
    assert calls == ["success", "success"]
    messages = [(r.levelname, r.getMessage()) for r in worker_records(caplog)]
    raised = [m for m in messages if m[1].startswith("Callback raised an exception: ")]
    assert raised == [("ERROR", "Callback raised an exception: callback broke")] * 2
    processing = [m for m in messages if m[1].startswith("Processing Message(")]
    assert len(processing) == 2


# -- Worker.start: offsets ---------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_offsets_false_commits_nothing(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    bootstrap: str,
    topic: str,
    client: ClientName,
) -> None:
    queue = Queue(topic, producers[client])
    for n in range(3):
        queue.enqueue(jobfuncs.add, n, n)
    group = group_name()
    worker = Worker(topic, new_consumer(client, group))
    assert worker.start(max_messages=3, commit_offsets=False) == 3
    assert committed(bootstrap, group, topic) is None


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_offsets_commits_last_processed_plus_one(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    bootstrap: str,
    topic: str,
    client: ClientName,
) -> None:
    queue = Queue(topic, producers[client])
    for n in range(3):
        queue.enqueue(jobfuncs.add, n, n)
    group = group_name()
    worker = Worker(topic, new_consumer(client, group))
    assert worker.start(max_messages=3) == 3
    assert committed(bootstrap, group, topic) == 3


@pytest.mark.parametrize("client", CLIENTS)
def test_auto_committing_consumer_commits_only_after_processing(
    producers: dict[ClientName, Any],
    bootstrap: str,
    topic: str,
    clients: list[Any],
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
) -> None:
    group = group_name()
    consumer: Any
    if client == "kafka-python":
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=True,
            auto_commit_interval_ms=100,
            auto_offset_reset="earliest",
        )
    else:
        # accepted: it auto-commits only the offsets kq stores after processing
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 100,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
    clients.append(consumer)
    queue = Queue(topic, producers[client])
    # the first job outlives several auto-commit intervals while it runs
    queue.enqueue(jobfuncs.sleep_for, 1.5)
    queue.enqueue(jobfuncs.add, 1, 2)
    seen: list[int | None] = []

    def check_committed(*_: Any) -> None:
        seen.append(committed(bootstrap, group, topic))

    caplog.set_level(logging.INFO, logger="kq.consumer")
    worker = Worker(topic, consumer, callback=check_committed)
    assert worker.start(max_messages=2) == 2
    assert seen[0] is None  # message 0 was fetched (and more) but had not finished
    assert seen[1] in (None, 1)
    assert committed(bootstrap, group, topic) == 2
    if client == "kafka-python":
        warnings = [
            r
            for r in worker_records(caplog, "kq.consumer")
            if r.levelno == logging.WARNING and "enable_auto_commit" in r.getMessage()
        ]
        assert len(warnings) == 1


# -- logging -------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_injected_logger_receives_the_logs(
    producers: dict[ClientName, Any],
    new_consumer: Callable[..., Any],
    topic: str,
    caplog: pytest.LogCaptureFixture,
    client: ClientName,
) -> None:
    logger = logging.getLogger(f"contract.injected.{uuid.uuid4().hex[:8]}")
    caplog.set_level(logging.INFO, logger=logger.name)
    caplog.set_level(logging.INFO, logger="kq.queue")
    caplog.set_level(logging.INFO, logger="kq.worker")
    job = Queue(topic, producers[client], logger=logger).enqueue(jobfuncs.add, 1, 2)
    worker = Worker(topic, new_consumer(client, group_name()), logger=logger)
    assert worker.start(max_messages=1) == 1

    mine = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert mine[0] == f"Enqueueing {job} ..."
    assert mine[1] == f"Starting {worker!r} ..."
    assert f"Job {job.id} returned: 3" in mine
    assert not [r for r in caplog.records if r.name in ("kq.queue", "kq.worker")]
    for name in ("kq", "kq.queue", "kq.worker"):
        assert logging.getLogger(name).handlers == []
