"""A new user's first day: topics made on purpose, unkeyed jobs spread evenly, clear failures."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import jobfuncs
import pytest
from cli_procs import Processes, kq, wait_until
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kq import ClusterError, EnqueueError, Queue, Worker, create_topic
from kq.clients import ClientName, make_consumer

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]

pytestmark = pytest.mark.timeout(180)


def _per_partition(bootstrap: str, topic: str, partitions: int, total: int) -> Counter[int]:
    """How many records each partition of ``topic`` holds (reads ``total`` records)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    counts: Counter[int] = Counter()
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + 60
        while sum(counts.values()) < total and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error() is None:
                    counts[m.partition()] += 1
    finally:
        consumer.close()
    assert sum(counts.values()) == total
    return counts


def _unique(label: str) -> str:
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


# -- unkeyed jobs spread evenly ------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_burst_of_unkeyed_enqueues_spreads_evenly(
    bootstrap: str, make_topic: Any, client: ClientName
) -> None:
    topic = make_topic(partitions=4)
    queue = Queue.connect(bootstrap, topic, client=client)
    for n in range(400):
        queue.enqueue(jobfuncs.add, n, 1)
    assert _per_partition(bootstrap, topic, 4, 400) == {0: 100, 1: 100, 2: 100, 3: 100}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_batch_spreads_evenly_and_keys_keep_their_partition(
    bootstrap: str, make_topic: Any, client: ClientName
) -> None:
    topic = make_topic(partitions=4)
    queue = Queue.connect(bootstrap, topic, client=client)
    with queue.batch() as batch:
        for n in range(400):
            batch.enqueue(jobfuncs.add, n, 1)
    assert _per_partition(bootstrap, topic, 4, 400) == {0: 100, 1: 100, 2: 100, 3: 100}
    # keyed jobs: one key, one partition (murmur2, as before); explicit partitions win
    keyed = make_topic(partitions=4)
    queue = Queue.connect(bootstrap, keyed, client=client)
    for n in range(20):
        queue.using(key=b"user-7").enqueue(jobfuncs.add, n, 1)
    for n in range(10):
        queue.using(partition=2).enqueue(jobfuncs.add, n, 1)
    counts = _per_partition(bootstrap, keyed, 4, 30)
    assert sorted(counts.values()) in ([10, 20], [30])


def test_kq_enqueue_count_spreads_evenly(bootstrap: str, make_topic: Any) -> None:
    topic = make_topic(partitions=4)
    done = kq("enqueue", topic, "jobfuncs:add", "1", "2", "--count", "400", "-b", bootstrap)
    assert done.returncode == 0, done.stderr
    counts = _per_partition(bootstrap, topic, 4, 400)
    assert max(counts.values()) / min(counts.values()) == 1.0, counts


# -- topics: created on purpose --------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_to_a_missing_topic_fails_fast_naming_the_command(
    bootstrap: str, client: ClientName
) -> None:
    topic = _unique("missing")
    queue = Queue.connect(bootstrap, topic, client=client)
    with pytest.raises(EnqueueError) as caught:
        queue.enqueue(jobfuncs.add, 1, 2)
    assert str(caught.value) == (
        f"could not enqueue to topic {topic!r}: the topic does not exist;"
        f" create it first: kq topic create {topic} --partitions N"
    )


def test_kq_topic_create_then_enqueue_and_list(bootstrap: str) -> None:
    topic = _unique("cli-create")
    missing = kq("enqueue", topic, "jobfuncs:add", "1", "2", "-b", bootstrap)
    assert missing.returncode == 1
    assert f"kq topic create {topic}" in missing.stderr
    created = kq(
        "topic", "create", topic, "--partitions", "3", "--config", "retention.ms=3600000",
        "-b", bootstrap,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"created topic {topic} (3 partitions)"
    listed = kq("topic", "list", "-b", bootstrap)
    assert f"{topic}\t3" in listed.stdout.splitlines()
    again = kq("topic", "create", topic, "--partitions", "3", "-b", bootstrap)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1, again.stderr
    assert "already exists" in again.stderr
    assert kq("enqueue", topic, "jobfuncs:add", "1", "2", "-b", bootstrap).returncode == 0


def test_create_topic_from_python(bootstrap: str) -> None:
    topic = _unique("py-create")
    assert create_topic(bootstrap, topic, partitions=2) == [0, 1]
    with pytest.raises(ClusterError, match="already exists"):
        create_topic(bootstrap, topic, partitions=2)
    with pytest.raises(ValueError, match="partitions must be"):
        create_topic(bootstrap, _unique("bad"), partitions=0)


@pytest.mark.parametrize("client", CLIENTS)
def test_worker_started_before_its_topic_takes_jobs_once_it_exists(
    bootstrap: str, client: ClientName
) -> None:
    topic = _unique("late")
    done: list[str] = []
    consumer = make_consumer(bootstrap, f"g-{uuid.uuid4().hex[:8]}", client=client)
    worker = Worker(topic, consumer, callback=lambda status, *_: done.append(status))
    thread = threading.Thread(target=worker.start, kwargs={"max_messages": 1}, daemon=True)
    thread.start()
    try:
        time.sleep(3)  # the worker subscribes to a topic that does not exist yet
        create_topic(bootstrap, topic, partitions=2)
        Queue.connect(bootstrap, topic, client=client).enqueue(jobfuncs.add, 1, 2)
        thread.join(60)  # librdkafka alone would look again only after 5 minutes
        assert done == ["success"]
    finally:
        worker.stop()
        thread.join(30)
        consumer.close()


# -- a wrong address: fast, quiet, clear -----------------------------------------------

_WRONG_ADDRESS = """
import sys, time
from kq import Queue, Worker, ClusterError, EnqueueError
kind, client = sys.argv[1], sys.argv[2]
started = time.monotonic()
try:
    if kind == "worker":
        Worker.connect("127.0.0.1:1", "jobs", group="g", client=client, connect_timeout=2)
    else:
        Queue.connect("127.0.0.1:1", "jobs", client=client, connect_timeout=2)
except (ClusterError, EnqueueError) as exc:
    print(type(exc).__name__, exc)
    print(f"seconds {time.monotonic() - started:.1f}")
else:
    print("connected")
"""


@pytest.mark.parametrize("kind", ["worker", "queue"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_wrong_address_fails_in_connect_timeout_with_one_clear_error(
    kind: str, client: ClientName
) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WRONG_ADDRESS, kind, client],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"{'ClusterError' if kind == 'worker' else 'EnqueueError'} "
        + ("" if kind == "worker" else "could not enqueue to topic 'jobs': ")
        + "no Kafka broker answered at 127.0.0.1:1 within 2 s"
        + lines[0].split(" within 2 s", 1)[1]
    ), done.stdout
    # the client's own retry chatter never reaches stderr raw (librdkafka's
    # lines go through Python logging, a repeated one once a minute)
    raw = [line for line in done.stderr.splitlines() if line.startswith("%")]
    assert raw == [], done.stderr[-2000:]
    assert len(done.stderr.splitlines()) <= 5, done.stderr[-2000:]


# -- enqueue by name -------------------------------------------------------------------

_TASKS = """
from pathlib import Path

def add(a, b, out):
    Path(out).write_text(str(a + b))
    return a + b
"""


def test_a_function_ref_writes_the_bytes_the_function_itself_would() -> None:
    import json

    from kq import FunctionRef, Job, json_jobs
    from kq.serialization import dumps, loads

    by_name = Job(id="j", timestamp=1, func=FunctionRef("json:dumps"), args=(1,), kwargs={})
    imported = Job(id="j", timestamp=1, func=json.dumps, args=(1,), kwargs={})
    assert dumps(by_name) == dumps(imported)
    assert loads(dumps(by_name)).func is json.dumps
    assert json_jobs.dumps(by_name) == json_jobs.dumps(imported)
    assert FunctionRef("json:dumps")([1]) == "[1]"  # called directly: imported then
    with pytest.raises(ValueError, match="expected 'module:qualname'"):
        FunctionRef("json.dumps")


@pytest.mark.parametrize("json_jobs", [False, True])
@pytest.mark.parametrize("client", CLIENTS)
def test_enqueue_by_name_without_the_module_and_a_worker_runs_it(
    bootstrap: str, make_topic: Any, tmp_path: Any, client: ClientName, json_jobs: bool
) -> None:
    import subprocess
    import sys

    from kq import FunctionRef
    from kq import json_jobs as json_module

    module = f"late_tasks_{uuid.uuid4().hex[:8]}"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(_TASKS)
    topic = make_topic(partitions=1)
    out = tmp_path / "out"
    serializer = {"serializer": json_module.dumps} if json_jobs else {}
    queue = Queue.connect(bootstrap, topic, client=client, **serializer)
    queue.enqueue(FunctionRef(f"{module}:add"), 2, 3, out=str(out))
    assert module not in sys.modules  # enqueued without importing it
    loader = f"JsonJobLoader(allow=[{module!r}])" if json_jobs else "None"
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from kq import Worker, JsonJobLoader\n"
            f"w = Worker.connect(sys.argv[2], sys.argv[3], group='g', client={client!r},"
            f" deserializer={loader})\n"
            "print(w.start(max_messages=1))",
            str(code),
            bootstrap,
            topic,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.stdout.strip() == "1", worker.stderr[-2000:]
    assert out.read_text() == "5"


def test_kq_enqueue_by_name_from_a_folder_without_the_module(
    bootstrap: str, make_topic: Any, tmp_path: Any
) -> None:
    module = f"late_tasks_{uuid.uuid4().hex[:8]}"
    code, elsewhere = tmp_path / "code", tmp_path / "elsewhere"
    code.mkdir()
    elsewhere.mkdir()
    (code / f"{module}.py").write_text(_TASKS)
    topic = make_topic(partitions=1)
    out = tmp_path / "out"
    enqueued = kq(
        "enqueue", topic, f"{module}:add", "2", "3", "--kwargs", f'{{"out": "{out}"}}',
        "--json-jobs", "-b", bootstrap, cwd=elsewhere,
    )  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    # a module that is here but lacks the name is a typo, said at once
    typo = kq("enqueue", topic, "jobfuncs:no_such_function", "-b", bootstrap)
    assert typo.returncode != 0 and "has no attribute" in typo.stderr
    procs = Processes(tmp_path)
    try:
        worker = procs.start(
            "worker", topic, "-g", f"g-{uuid.uuid4().hex[:6]}", "--json-jobs", module,
            "-b", bootstrap, cwd=code,
        )  # fmt: skip
        wait_until(lambda: out.exists(), "the job to run", timeout=60)
        assert out.read_text() == "5", worker.err()[-2000:]
    finally:
        procs.close()
