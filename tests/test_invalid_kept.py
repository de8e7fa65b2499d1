"""A job the worker cannot read is kept, with its bytes and the reason, and can be requeued.

Deploy skew (producers run code the workers do not have yet) made such jobs
`invalid`, committed and kept nowhere. Now a worker with retries or a
dead-letter topic (or ``keep_invalid=True``) writes them to the dead-letter
topic first; the operator requeues them once, and again only on purpose.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Processes, kq, wait_until
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from kafka_checks import committed, group_name
from prometheus_client import CollectorRegistry
from tier_checks import running

from kq import DeadLetters, FunctionRef, Queue, RetryPolicy, Worker
from kq._runner import Unimportable
from kq.metrics import PrometheusObserver
from kq.schedule import dead_letter_topic

CLIENTS = ["confluent", "kafka-python"]
FAST = RetryPolicy(max_attempts=3, backoff=0.2, jitter=0)
KEY = b"secret-signing-key-for-tests-0001"

pytestmark = pytest.mark.timeout(240)

_TASKS = """
from pathlib import Path

def add(a, b, out):
    with open(out, "a") as f:
        f.write(f"{a + b}\\n")
    return a + b
"""


class Calls:
    """A callback recording each status."""

    def __init__(self) -> None:
        self.statuses: list[str] = []

    def __call__(self, status: str, *_: Any) -> None:
        self.statuses.append(status)


def _until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    wait_until(predicate, what, timeout=timeout)


def _raw(bootstrap: str, topic: str) -> tuple[bytes, bytes | None, dict[str, bytes]]:
    """The first record of ``topic``: value, key, headers."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex}"})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(60):
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                return m.value(), m.key(), dict(m.headers() or [])
        raise AssertionError(f"no record in {topic}")
    finally:
        consumer.close()


def _topics(bootstrap: str) -> set[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


@pytest.fixture
def late_module(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A module name nobody can import yet, and a function that "deploys" it."""
    name = f"late_{uuid.uuid4().hex[:8]}"
    code = tmp_path / "deployed"
    code.mkdir()

    def deploy() -> None:
        (code / f"{name}.py").write_text(_TASKS)
        importlib.invalidate_caches()

    sys.path.insert(0, str(code))
    try:
        yield name, deploy
    finally:
        sys.path.remove(str(code))
        sys.modules.pop(name, None)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_job_the_worker_cannot_import_is_kept_and_runs_once_requeued(
    bootstrap: str,
    topic: str,
    tmp_path: Path,
    client: str,
    late_module: tuple[str, Callable[[], None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    module, deploy = late_module
    out = tmp_path / "out"
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.using(key=b"k1", retry=FAST).enqueue(FunctionRef(f"{module}:add"), 2, 3, out=str(out))
    value, key, headers = _raw(bootstrap, topic)
    calls = Calls()
    group = group_name()
    caplog.set_level(logging.ERROR, logger="kq.retries")
    worker = Worker.connect(bootstrap, topic, group, client=client, callback=calls, retry=FAST)
    with running(worker):
        _until(lambda: calls.statuses == ["invalid"], "the invalid outcome")
        _until(lambda: committed(bootstrap, group, topic) == 1, "the commit")
        dead = DeadLetters(bootstrap, topic)
        [letter] = dead.list()
        # kept exactly: bytes, key, the producer's headers, and why
        assert (letter.value, letter.key) == (value, key)
        assert all(letter.headers[k] == v for k, v in headers.items() if k != "kq-attempt")
        assert letter.status == "invalid" and letter.attempts == 1 and not letter.problems
        assert letter.error == f"ModuleNotFoundError: No module named '{module}'"
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == (topic, 0, 0)
        assert letter.describe().call.startswith(f"{module}.add(")
        # the log line names the letter and the command that shows it
        [line] = [r.getMessage() for r in caplog.records if r.name == "kq.retries"]
        assert line == (
            f"Job at {topic}/0/0 was invalid; dead letter {dead.dead_topic}"
            f" {letter.partition}:{letter.offset}"
            f" (kq dead-letters show {topic} {letter.partition}:{letter.offset})"
        )
        assert dead.find(topic, 0, 0) == [letter]
        # deployed, requeued: it runs; the letter is marked and not requeued twice by mistake
        deploy()
        dead.requeue(letter)
        _until(lambda: calls.statuses == ["invalid", "success"], "the requeued run")
        [marked] = dead.list()
        assert marked.requeued_to == topic and marked.requeued_ms is not None
        assert (marked.partition, marked.offset) == (letter.partition, letter.offset)
        with pytest.raises(ValueError, match="already requeued to"):
            dead.requeue(marked)
        dead.requeue(marked, again=True)
        _until(lambda: calls.statuses == ["invalid", "success", "success"], "the second requeue")
    assert out.read_text() == "5\n5\n"


@pytest.mark.parametrize("client", CLIENTS)
def test_plain_kq_settings_commit_invalid_jobs_and_create_no_topic(
    bootstrap: str, make_topic: Any, client: str, late_module: tuple[str, Callable[[], None]]
) -> None:
    module, _ = late_module
    plain, kept = make_topic(), make_topic()
    for topic in (plain, kept):
        Queue.connect(bootstrap, topic, client=client).enqueue(FunctionRef(f"{module}:add"), 1, 2)
    calls = Calls()
    group = group_name()
    worker = Worker.connect(bootstrap, plain, group, client=client, callback=calls)
    assert worker.start(max_messages=1) == 1
    assert calls.statuses == ["invalid"] and committed(bootstrap, group, plain) == 1
    assert dead_letter_topic(plain) not in _topics(bootstrap)  # KQ's plain settings: as KQ
    # asked for, a plain worker keeps them too
    worker = Worker.connect(
        bootstrap, kept, group, client=client, callback=calls, keep_invalid=True
    )
    assert worker.start(max_messages=1) == 1
    [letter] = DeadLetters(bootstrap, kept).list()
    assert letter.status == "invalid" and module in letter.error


def test_many_unimportable_jobs_in_a_row_say_so_once_and_count(
    bootstrap: str, topic: str, late_module: tuple[str, Callable[[], None]], caplog: Any
) -> None:
    module, _ = late_module
    queue = Queue.connect(bootstrap, topic)
    with queue.batch() as batch:
        for n in range(25):
            batch.enqueue(FunctionRef(f"{module}:add"), n, 1)
    registry = CollectorRegistry()
    observer = PrometheusObserver(topic, "g", registry=registry)
    caplog.set_level(logging.ERROR, logger="kq.runtime")
    worker = Worker.connect(bootstrap, topic, group_name(), observer=observer, retry=FAST)
    assert worker.start(max_messages=25) == 25
    loud = [r for r in caplog.records if r.name == "kq.runtime" and "in a row" in r.getMessage()]
    assert len(loud) == 1
    assert loud[0].getMessage().startswith(f"10 jobs in a row name module '{module}'")
    assert "kept in the dead-letter topic" in loud[0].getMessage()
    count = registry.get_sample_value(
        "kq_unimportable_jobs_total", {"topic": topic, "group": "g", "module": module}
    )
    assert count == 25
    assert len(DeadLetters(bootstrap, topic).list()) == 25


def test_the_streak_line_needs_a_streak_of_one_module() -> None:
    said: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = said.append  # type: ignore[method-assign]
    runtime = logging.getLogger("kq.runtime")
    runtime.addHandler(handler)
    try:
        streak = Unimportable()
        for _ in range(9):
            streak.seen("a", None, kept=False)
        streak.seen(None, None, kept=False)  # a good job ends the streak
        for _ in range(9):
            streak.seen("a", None, kept=False)
        streak.seen("b", None, kept=False)  # another module starts a new one
        assert said == []
        for _ in range(9):
            streak.seen("b", None, kept=False)
        assert len(said) == 1 and "committed (Worker(keep_invalid=True)" in said[0].getMessage()
        for _ in range(50):
            streak.seen("b", None, kept=False)
        assert len(said) == 1  # once per EVERY seconds, not once per job
    finally:
        runtime.removeHandler(handler)


def test_a_refused_forgery_is_kept_unsigned_and_cannot_be_requeued(
    bootstrap: str, topic: str, late_module: tuple[str, Callable[[], None]]
) -> None:
    module, _ = late_module
    signed = Queue.connect(bootstrap, topic, signing_key=KEY)
    signed.enqueue(FunctionRef(f"{module}:add"), 1, 2)  # signed, module missing: deploy skew
    forger = Queue.connect(bootstrap, topic, signing_key=b"not-the-workers-key-000000000000")
    forger.enqueue(FunctionRef(f"{module}:add"), 6, 6)  # refused before it is read
    worker = Worker.connect(
        bootstrap, topic, group_name(), retry=FAST, signing_keys=[KEY], callback=Calls()
    )
    assert worker.start(max_messages=2) == 2
    dead = DeadLetters(bootstrap, topic, signing_keys=[KEY])
    skew, forged = sorted(dead.list(), key=lambda x: x.source_offset)
    # the worker signs the letter of a job it verified, never one it refused:
    # signing that would make the operator's requeue send the forgery to every worker
    assert skew.signature == "valid" and dead.refusal(skew) == ""
    assert "kq-signature" not in forged.headers and forged.signature != "valid"
    assert "signature" in forged.error
    with pytest.raises(ValueError, match="not requeued"):
        dead.requeue(forged)


def test_kq_commands_keep_show_and_requeue_an_unimportable_job_once(
    bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    module = f"tasks_{uuid.uuid4().hex[:8]}"
    code, elsewhere = tmp_path / "code", tmp_path / "elsewhere"
    code.mkdir()
    elsewhere.mkdir()
    (code / f"{module}.py").write_text(_TASKS)
    topic = make_topic(partitions=1)
    out = tmp_path / "out"
    enqueued = kq(
        "enqueue", topic, f"{module}:add", "2", "3", "--kwargs", json.dumps({"out": str(out)}),
        "--max-attempts", "3", "-b", bootstrap, cwd=elsewhere,
    )  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    procs = Processes(tmp_path)
    try:
        group = f"g-{uuid.uuid4().hex[:6]}"
        worker = procs.start("worker", topic, "-g", group, "-b", bootstrap, cwd=elsewhere)
        worker.wait_for(rf"Job at {topic}/0/0 was invalid; dead letter {topic}\.kq-dead 0:0")
        worker.signal(15)
        assert worker.wait() == 0
        listed = kq("dead-letters", "list", topic, "--json", "-b", bootstrap)
        [letter] = json.loads(listed.stdout)
        assert letter["status"] == "invalid" and module in letter["error"]
        shown = kq("dead-letters", "show", topic, f"{topic}/0/0", "-b", bootstrap)
        assert shown.returncode == 0 and "position        0:0" in shown.stdout, shown.stderr
        requeued = kq("dead-letters", "requeue", topic, f"{topic}/0/0", "-b", bootstrap)
        assert requeued.returncode == 0, requeued.stderr
        twice = kq("dead-letters", "requeue", topic, "0:0", "-b", bootstrap)
        assert twice.returncode != 0 and "already requeued to" in twice.stderr
        skipped = kq("dead-letters", "requeue", topic, "--all", "-y", "-b", bootstrap)
        assert "1 letters already requeued skipped" in skipped.stdout, skipped.stderr
        # the code deployed: a worker that can import it runs the requeued job once
        deployed = procs.start("worker", topic, "-g", group, "-b", bootstrap, cwd=code)
        try:
            wait_until(lambda: out.exists(), "the requeued job to run", timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployed.err()[-3000:]}") from None
        listed = kq("dead-letters", "list", topic, "--json", "-b", bootstrap)
        [letter] = json.loads(listed.stdout)
        assert letter["requeued_to"] == topic and letter["requeued"] is not None
    finally:
        procs.close()
    assert out.read_text() == "5\n"
