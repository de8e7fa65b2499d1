"""The core's delivery semantics, each against a real broker and for both clients.

Each test here fails without the behaviour it names: re-run after a SIGKILL,
timeouts of C-blocked jobs off the main thread, long jobs that keep their
partition, graceful SIGTERM, bad input, and rebalances mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dill
import pytest
import worker_proc
from kafka import KafkaConsumer
from kafka_checks import committed, group_name, produce_raw, session_config
from ledger_jobs import ends, record, record_async, starts, wait_for

from kq import Job, Queue, Worker
from kq.clients import make_consumer

CLIENTS = ["confluent", "kafka-python"]
# The core's at-least-once tests run with one job at a time and with four lanes.
CONCURRENCY = [1, 4]
TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent


class Outcomes:
    """A thread-safe callback that records (status, job id, result) and the offset."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, Any]] = []
        self.offsets: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, status: str, message: Any, job: Any, result: Any, exc: Any, tb: Any) -> None:
        with self._lock:
            self.items.append((status, job.id if job else None, result))
            self.offsets.append(message.offset)

    def statuses(self) -> list[str]:
        return [s for s, _, _ in self.items]

    def by_offset(self) -> list[tuple[str, str | None, Any]]:
        """The items in offset order (callbacks of concurrent jobs come in any order)."""
        with self._lock:
            return [item for _, item in sorted(zip(self.offsets, self.items), key=lambda p: p[0])]


def _spawn_worker(
    bootstrap: str, topic: str, group: str, client: str, *extra: str
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO)]))
    return subprocess.Popen(
        worker_proc.command(bootstrap, topic, group, client, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _close_consumer(consumer: Any) -> None:
    # Closed here, not by the garbage collector in some later test (where destroying
    # a confluent consumer that is still in its group can hang).
    if isinstance(consumer, KafkaConsumer):
        consumer.close(autocommit=False)
    else:
        consumer.close()


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker did not exit in time; stderr tail:\n{err[-3000:]}") from None
    return proc.returncode, out, err


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_sigkilled_worker_job_runs_again_on_next_worker(
    bootstrap: str, topic: str, tmp_path: Path, client: str, concurrency: int
) -> None:
    # B follows A; with concurrency > 1 it finishes while A runs, and still nothing
    # is committed past the unfinished A.
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.enqueue(record, ledger, "A", sleep=60, first_time_only=True)
    queue.enqueue(record, ledger, "B")
    lanes = ("--concurrency", str(concurrency))
    group = group_name()
    first = _spawn_worker(bootstrap, topic, group, client, *lanes)
    try:
        assert wait_for(lambda: starts(ledger)["A"] == 1, timeout=90), "job never started"
        if concurrency > 1:
            assert wait_for(lambda: ends(ledger)["B"] == 1, timeout=60), "B did not run beside A"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert committed(bootstrap, group, topic) is None  # nothing committed past the running job
    second = _spawn_worker(bootstrap, topic, group, client, "--max", "2", *lanes)
    code, out, err = _finish(second, timeout=120)
    assert code == 0, err[-3000:]
    assert "processed 2" in out
    assert starts(ledger)["A"] == 2
    assert ends(ledger)["A"] == 1
    assert ends(ledger)["B"] >= 1
    assert committed(bootstrap, group, topic) == 2


@pytest.mark.parametrize("client", CLIENTS)
def test_timeout_stops_c_blocked_job_in_non_main_thread(
    bootstrap: str, topic: str, client: str
) -> None:
    queue = Queue.connect(bootstrap, topic, client=client)
    slow = queue.using(timeout=1).enqueue(__import__("time").sleep, 60)
    fast = queue.enqueue(divmod, 7, 2)
    outcomes = Outcomes()
    worker = Worker.connect(bootstrap, topic, group_name(), client=client, callback=outcomes)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.start(max_messages=2)))
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "worker did not return"
    _close_consumer(worker.consumer)
    assert result == [2]
    assert outcomes.items == [("timeout", slow.id, None), ("success", fast.id, (3, 1))]


@pytest.mark.parametrize("client", CLIENTS)
def test_timed_coroutine_and_failure_come_back_from_child(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client, timeout=30)
    coro = queue.enqueue(record_async, ledger, "co")
    bad = queue.enqueue(int, "not a number")
    plain_coro = queue.using(timeout=0).enqueue(record_async, ledger, "co2")
    errors: list[Any] = []

    def callback(status: str, message: Any, job: Any, result: Any, exc: Any, tb: Any) -> None:
        errors.append((status, job.id, result, type(exc).__name__ if exc else None, tb))

    worker = Worker.connect(bootstrap, topic, group_name(), client=client, callback=callback)
    assert worker.start(max_messages=3) == 3
    _close_consumer(worker.consumer)
    assert errors[0][:4] == ("success", coro.id, "CO", None)
    assert errors[1][:4] == ("failure", bad.id, None, "ValueError")
    assert "invalid literal" in errors[1][4]
    assert errors[2][:4] == ("success", plain_coro.id, "CO2", None)
    assert starts(ledger) == {"co": 1, "co2": 1}


@pytest.mark.parametrize("client", CLIENTS)
def test_job_longer_than_max_poll_interval_runs_once(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.enqueue(record, ledger, "long", sleep=9)
    queue.enqueue(record, ledger, "next")
    group = group_name()
    config = session_config(client, max_poll_ms=6000)
    one = Worker(topic, make_consumer(bootstrap, group, client=client, **config))
    two = Worker(topic, make_consumer(bootstrap, group, client=client, **config))
    counts: list[int] = []
    t1 = threading.Thread(target=lambda: counts.append(one.start(max_messages=2)))
    t2 = threading.Thread(target=lambda: counts.append(two.start()))
    t1.start()
    assert wait_for(lambda: starts(ledger)["long"] == 1, timeout=90)
    t2.start()  # a second member that would take the partition if the first were kicked out
    t1.join(timeout=120)
    two.stop()
    t2.join(timeout=60)
    assert not t1.is_alive() and not t2.is_alive()
    for worker in (one, two):
        _close_consumer(worker.consumer)
    assert starts(ledger) == {"long": 1, "next": 1}
    assert committed(bootstrap, group, topic) == 2


def _committed_after_sigterm(
    bootstrap: str, topic: str, tmp_path: Path, client: str, signals: int, concurrency: int
) -> tuple[int | None, str, int]:
    # offset 0 "running" (key k), 1 "other" (unkeyed, quick), 2 "queued" (key k: waits
    # behind "running"). With one lane "other" waits too; with more it runs beside.
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    keyed = queue.using(key=b"k")
    keyed.enqueue(record, ledger, "running", sleep=3 if signals == 1 else 60)
    queue.enqueue(record, ledger, "other")
    keyed.enqueue(record, ledger, "queued")
    group = group_name()
    proc = _spawn_worker(bootstrap, topic, group, client, "--concurrency", str(concurrency))
    assert wait_for(lambda: starts(ledger)["running"] == 1, timeout=90), "job never started"
    if concurrency > 1:
        assert wait_for(lambda: ends(ledger)["other"] == 1, timeout=60), "other did not run"
    for n in range(signals):
        if n:
            time.sleep(1.0)  # signals sent together reach Python as one
        proc.send_signal(signal.SIGTERM)
    code, out, _err = _finish(proc, timeout=60)
    return committed(bootstrap, group, topic), ledger, code if "processed" in out else -1


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_sigterm_finishes_running_job_commits_and_returns(
    bootstrap: str, topic: str, tmp_path: Path, client: str, concurrency: int
) -> None:
    offset, ledger, code = _committed_after_sigterm(
        bootstrap, topic, tmp_path, client, signals=1, concurrency=concurrency
    )
    assert code == 0
    assert ends(ledger)["running"] == 1  # finished, not cut short
    assert starts(ledger)["queued"] == 0  # no new message taken after the signal
    if concurrency == 1:
        assert starts(ledger)["other"] == 0
        assert offset == 1
    else:
        assert offset == 2  # "running" and "other" finished


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_second_sigterm_stops_at_once_without_commit(
    bootstrap: str, topic: str, tmp_path: Path, client: str, concurrency: int
) -> None:
    offset, ledger, code = _committed_after_sigterm(
        bootstrap, topic, tmp_path, client, signals=2, concurrency=concurrency
    )
    assert code == 0
    assert ends(ledger)["running"] == 0
    # The unfinished job will run again. With concurrency, the finished "other" above
    # it was committed as offset 0 plus a record of it in the metadata (exact resume):
    # never past the unfinished job.
    assert offset == (0 if concurrency > 1 else None)


BAD_PAYLOADS = {
    "random bytes": os.urandom(64),
    "empty": b"",
    "truncated pickle": dill.dumps(Job(id="x", func=print, args=(1,)))[:-7],
    "not a Job": dill.dumps({"func": print}),
    "func missing": dill.dumps(Job(id="x", args=(1,))),
    "func not callable": dill.dumps(Job(id="x", func=42)),
    "args not a sequence": dill.dumps(Job(id="x", func=print, args=5)),
    "kwargs not a dict": dill.dumps(Job(id="x", func=print, kwargs=[1])),
    "bad timeout": dill.dumps(Job(id="x", func=print, timeout="soon")),
}


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_each_bad_message_is_one_invalid_and_committed(
    bootstrap: str, topic: str, client: str, concurrency: int
) -> None:
    produce_raw(bootstrap, topic, list(BAD_PAYLOADS.values()))
    good = Queue.connect(bootstrap, topic, client=client).enqueue(pow, 2, 10)
    outcomes = Outcomes()
    group = group_name()
    worker = Worker.connect(
        bootstrap, topic, group, client=client, callback=outcomes, concurrency=concurrency
    )
    total = len(BAD_PAYLOADS) + 1
    assert worker.start(max_messages=total) == total
    _close_consumer(worker.consumer)
    assert outcomes.by_offset() == [("invalid", None, None)] * len(BAD_PAYLOADS) + [
        ("success", good.id, 1024)
    ]
    assert committed(bootstrap, group, topic) == total


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_raising_deserializer_and_callback_do_not_stop_worker(
    bootstrap: str, topic: str, client: str, concurrency: int
) -> None:
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.enqueue(abs, -1)
    queue.enqueue(abs, -2)
    calls: list[tuple[int, str]] = []

    def deserializer(value: bytes) -> Any:
        job = dill.loads(value)
        if job.args == (-1,):
            raise RuntimeError("cannot read this one")
        return job

    def callback(status: str, message: Any, *_: Any) -> None:
        calls.append((message.offset, status))
        raise RuntimeError("callback broke")

    worker = Worker.connect(
        bootstrap,
        topic,
        group_name(),
        client=client,
        callback=callback,
        deserializer=deserializer,
        concurrency=concurrency,
    )
    assert worker.start(max_messages=2) == 2
    _close_consumer(worker.consumer)
    assert sorted(calls) == [(0, "invalid"), (1, "success")]


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("client", CLIENTS)
def test_rebalance_mid_run_every_job_runs(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str, concurrency: int
) -> None:
    topic = make_topic(partitions=4)
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    names = [f"j{i}" for i in range(200)]
    for index, name in enumerate(names):
        # as long a run with 4 lanes as with 1: the second worker joins mid-run either way
        queue.using(key=str(index).encode()).enqueue(record, ledger, name, sleep=0.02 * concurrency)
    group = group_name()
    config = session_config(client)
    workers = [
        Worker(
            topic,
            make_consumer(bootstrap, group, client=client, **config),
            concurrency=concurrency,
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=w.start) for w in workers]
    threads[0].start()
    assert wait_for(lambda: sum(starts(ledger).values()) >= 30, timeout=90)
    threads[1].start()  # joins the group mid-run: partitions move
    assert len(ends(ledger)) < len(names), "the second worker joined after the run"
    done = wait_for(lambda: set(names) <= set(ends(ledger)), timeout=180, interval=0.2)
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join(timeout=60)
    for worker in workers:
        _close_consumer(worker.consumer)
    finished = ends(ledger)
    missing = [n for n in names if finished[n] == 0]
    assert done and not missing, f"never ran: {missing[:10]}"
    duplicates = sum(c - 1 for c in finished.values())
    print(f"rebalance run ({client}, concurrency {concurrency}): {duplicates} duplicates")
