"""The callback example of KQ's documentation (shared/spec/seed-callback.rst), run as written.

Only the broker address, the topic and the group name of the example are
replaced; every statement of it runs unchanged, with ``kq`` as a global as in
the documentation's doctest context.
"""

from __future__ import annotations

import ast
import logging
import textwrap
import uuid
from pathlib import Path
from typing import Any

import jobfuncs
import pytest
from confluent_kafka import Consumer, TopicPartition

import kq
from kq import Queue
from kq.clients import make_producer

SPEC = Path(__file__).resolve().parent / "spec" / "seed-callback.rst"
# The workplace's original, when this checkout sits beside it.
SHARED_SPEC = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "seed-callback.rst"
)

# Verbatim copy of the ``.. testcode::`` block, for checkouts without shared/.
EXAMPLE = """\
from kafka import KafkaConsumer
from kq import Worker


def callback(status, message, job, result, exception, stacktrace):
    \"\"\"This is an example callback showing what arguments to expect.\"\"\"

    assert status in ['invalid', 'success', 'timeout', 'failure']
    assert isinstance(message, kq.Message)

    if status == 'invalid':
        assert job is None
        assert result is None
        assert exception is None
        assert stacktrace is None

    if status == 'success':
        assert isinstance(job, kq.Job)
        assert exception is None
        assert stacktrace is None

    elif status == 'timeout':
        assert isinstance(job, kq.Job)
        assert result is None
        assert exception is None
        assert stacktrace is None

    elif status == 'failure':
        assert isinstance(job, kq.Job)
        assert result is None
        assert exception is not None
        assert stacktrace is not None

consumer = KafkaConsumer(
    bootstrap_servers='127.0.0.1:9092',
    group_id='group'
)

# Inject your callback function during worker initialization.
worker = Worker('topic', consumer, callback=callback)
"""


def extract_testcode(rst: str) -> str:
    """The first ``.. testcode::`` block of an reStructuredText page, dedented."""
    lines = rst.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == ".. testcode::") + 1
    block: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def example_source() -> str:
    return extract_testcode(SPEC.read_text(encoding="utf-8"))


def replace_once(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"the example no longer contains {old!r} once"
    return source.replace(old, new)


def test_vendored_spec_matches_the_example_and_the_original() -> None:
    assert example_source() == EXAMPLE
    if SHARED_SPEC.exists():  # beside the workplace's shared/ (not in a bare clone)
        assert SHARED_SPEC.read_text(encoding="utf-8") == SPEC.read_text(encoding="utf-8")


@pytest.mark.timeout(120)
def test_seed_callback_example_runs_for_every_status(
    bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    group = f"seed-{uuid.uuid4().hex[:12]}"
    source = example_source()
    source = replace_once(source, "'127.0.0.1:9092'", repr(bootstrap))
    source = replace_once(source, "group_id='group'", f"group_id={group!r}")
    source = replace_once(source, "Worker('topic',", f"Worker({topic!r},")

    # One message per status, at offsets 0..3.
    producer = make_producer(bootstrap, client="kafka-python")
    try:
        queue = Queue(topic, producer)
        queue.enqueue(jobfuncs.add, 1, 2)
        queue.enqueue(jobfuncs.raise_value_error, "boom")
        queue.using(timeout=1).enqueue(jobfuncs.sleep_for, 5)
        producer.send(topic, value=b"\x00 not a job").get(timeout=30)
    finally:
        producer.close(timeout=10)

    # The example's consumer starts at the latest offset for a new group; give
    # the group a committed offset 0 so it reads the messages already there.
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        committer.close()

    # Run the example statement by statement; right after ``def callback`` is
    # executed, wrap it to count calls and keep what it raised.
    statuses: list[str] = []
    errors: list[BaseException] = []
    namespace: dict[str, Any] = {"__name__": "kq_seed_example", "kq": kq}
    tree = ast.parse(source, filename="seed-callback.rst")
    wrapped = None
    for node in tree.body:
        code = compile(ast.Module(body=[node], type_ignores=[]), "seed-callback.rst", "exec")
        exec(code, namespace)
        if isinstance(node, ast.FunctionDef) and node.name == "callback":
            original = namespace["callback"]

            def counted(*args: Any, _original: Any = original) -> Any:
                statuses.append(args[0])
                try:
                    return _original(*args)
                except BaseException as exc:
                    errors.append(exc)
                    raise

            namespace["callback"] = wrapped = counted
    assert wrapped is not None

    worker = namespace["worker"]
    consumer = namespace["consumer"]
    caplog.set_level(logging.INFO, logger="kq.worker")
    try:
        assert isinstance(worker, kq.Worker)
        assert worker.callback is wrapped
        assert worker.topic == topic and worker.group == group
        assert worker.start(max_messages=4) == 4
    finally:
        consumer.close(autocommit=False)

    assert errors == []
    assert statuses == ["success", "failure", "timeout", "invalid"]
    assert not [r for r in caplog.records if "Callback raised" in r.getMessage()]
