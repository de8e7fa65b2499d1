"""The worker engine under stress, against the real broker with both clients (issue 13).

What one message does never stops a job thread; a timed job's child never
waits on a lock another thread held at the fork; a job that finished while the
worker stops is committed; how a job is logged never decides whether it runs.
Rebalances and retry writes are in test_engine_rebalance.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any, cast

import concurrency_jobs as jobs
import engine_jobs
import pytest
import worker_proc
from kafka_checks import committed, group_name
from ledger_jobs import wait_for
from throughput_support import REPO, TESTS_DIR, WorkerThread, close_queue

from kq import Message, Queue, Worker
from kq.clients import ClientName
from kq.errors import RemoteJobError

CLIENTS = ["confluent", "kafka-python"]


class Outcomes:
    """A callback keeping (offset, status, result, exception) per call."""

    def __init__(self, raise_first: BaseException | None = None) -> None:
        self.items: list[tuple[int, str, Any, BaseException | None]] = []
        self._raise_first = raise_first
        self._lock = threading.Lock()

    def __call__(
        self, status: str, message: Message, job: Any, result: Any, exc: Any, tb: Any
    ) -> None:
        with self._lock:
            self.items.append((message.offset, status, result, exc))
            first = len(self.items) == 1
        if first and self._raise_first is not None:
            raise self._raise_first


def _worker(bootstrap: str, topic: str, client: str, group: str, **options: Any) -> Worker:
    return Worker.connect(bootstrap, topic, group, client=cast(ClientName, client), **options)


# -- 13.1: nothing one message does stops a job thread ------------------------------------


@pytest.mark.parametrize("cause", ["undecodable-exception", "callback-raises-system-exit"])
@pytest.mark.parametrize("client", CLIENTS)
def test_nothing_one_message_does_stops_the_worker(
    bootstrap: str, topic: str, client: str, cause: str
) -> None:
    """A timed job raises an exception whose pickle cannot be loaded by the worker, or
    the callback raises SystemExit: that message is reported and committed, and the
    three jobs queued behind it run (the job thread lives on)."""
    queue = Queue.connect(bootstrap, topic, client=client)
    if cause == "undecodable-exception":
        queue.using(timeout=30).enqueue(engine_jobs.raise_needs_two, 500, "x")
    else:
        queue.enqueue(engine_jobs.took, "first")
    for i in range(3):
        queue.enqueue(engine_jobs.took, i)
    close_queue(queue)
    group = group_name()
    outcomes = Outcomes(SystemExit("from the callback") if cause.startswith("callback") else None)
    worker = _worker(bootstrap, topic, client, group, callback=outcomes)
    assert WorkerThread(worker, max_messages=4).start().join(45) == 4
    assert [(o, s) for o, s, *_ in outcomes.items] == [
        (0, "failure" if cause == "undecodable-exception" else "success"),
        (1, "success"),
        (2, "success"),
        (3, "success"),
    ]
    if cause == "undecodable-exception":
        error = outcomes.items[0][3]
        assert isinstance(error, RemoteJobError)
        assert (error.type_name, error.text) == ("engine_jobs.NeedsTwo", "500 x")
    assert committed(bootstrap, group, topic) == 4
    assert worker.in_flight == 0


# -- 13.3: fork safety -----------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_timed_jobs_of_a_worker_logging_to_a_slow_pipe_never_hang(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """A worker process logs to stderr, a pipe the test drains slowly, while a thread of
    it logs without end (so that thread holds sys.stderr's lock, blocked in a write,
    whenever a job forks). Its timed jobs, which return, print and log in their child,
    all succeed: none hangs on the inherited lock until its timeout."""
    count = 10
    queue = Queue.connect(bootstrap, topic, client=client)
    for seq in range(count):
        func = engine_jobs.log_and_print if seq % 2 else engine_jobs.took
        queue.using(timeout=5).enqueue(func, seq)
    close_queue(queue)
    outcomes = tmp_path / "outcomes"
    command = worker_proc.command(
        bootstrap,
        topic,
        group_name(),
        client,
        "--exit-with-stdin",
        "--noise",
        "--log-level",
        "WARNING",
        "--max",
        str(count),
        "--outcomes",
        str(outcomes),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO)])
    with open(tmp_path / "stdout", "wb") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, env=env
        )
    assert proc.stdin is not None
    drain = engine_jobs.SlowDrain(proc.stderr)
    try:
        code = proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        drain.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdin.close()
    statuses = Counter(line.split()[0] for line in outcomes.read_text().splitlines())
    assert code == 0, f"worker exit {code}; outcomes so far {statuses}"
    assert statuses == {"success": count}, f"timed jobs hung in their child: {statuses}"


# -- 13.4: a job finishing while the worker stops is committed --------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_job_finishing_during_the_shutdown_wait_is_committed(
    bootstrap: str, topic: str, tmp_path: Path, client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job still runs when the worker is asked to stop; it finishes during the
    shutdown wait. The hand-over of its completion is delayed (an injected pause) until
    the final commit ran or 3 s passed: the commit must still include it."""
    final_commit = threading.Event()
    commit = Worker._commit
    hand_over = Worker._on_finished

    def noting_commit(self: Worker, asynchronous: bool, *args: Any, **kwargs: Any) -> None:
        commit(self, asynchronous, *args, **kwargs)
        if not asynchronous:
            final_commit.set()

    def late_hand_over(self: Worker, *args: Any) -> None:
        final_commit.wait(3)
        hand_over(self, *args)

    monkeypatch.setattr(Worker, "_commit", noting_commit)
    monkeypatch.setattr(Worker, "_on_finished", late_hand_over)
    ledger, release = str(tmp_path / "ledger"), tmp_path / "release"
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.enqueue(jobs.wait_for_file, ledger, "running", str(release), 60)
    close_queue(queue)
    group = group_name()
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, group, callback=outcomes)
    runner = WorkerThread(worker).start()
    assert wait_for(lambda: ("running", 0) in jobs.started(ledger), timeout=60)
    worker.stop()
    release.touch()
    runner.join(60)
    assert [(o, s) for o, s, *_ in outcomes.items] == [(0, "success")]
    assert committed(bootstrap, group, topic) == 1, "the finished job was not committed"


# -- 13.7: how a job is logged never decides whether it runs -------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_an_argument_whose_repr_raises_runs_with_info_logging(
    bootstrap: str, topic: str, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With INFO on kq.worker, a job whose argument's repr() raises runs and succeeds;
    KQ's line names it as unrepresentable."""
    caplog.set_level(logging.INFO, logger="kq.worker")
    queue = Queue.connect(bootstrap, topic, client=client)
    job = queue.enqueue(engine_jobs.took, engine_jobs.BadRepr())
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, group_name(), callback=outcomes)
    assert WorkerThread(worker, max_messages=1).start().join(45) == 1
    assert [(s, r) for _, s, r, _ in outcomes.items] == [("success", "BadRepr")]
    executing = [
        r.getMessage()
        for r in caplog.records
        if r.name == "kq.worker" and r.getMessage().startswith("Executing job ")
    ]
    assert executing == [
        f"Executing job {job.id}: engine_jobs.took(<unrepresentable: repr() of "
        "engine_jobs.BadRepr raised ValueError: no repr for you>)"
    ]
