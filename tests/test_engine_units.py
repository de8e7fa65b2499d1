"""The worker engine's rules, fast and without a broker: lanes, offsets, isolation, dispatch.

The worker runs here against ``fake_consumer.FakeConsumer``, an in-memory
adapter that lets a test put a rebalance at an exact point inside ``poll``.
Every rule tested here is also proven against the real broker (test_engine*.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import dill
import engine_jobs
import pytest
from fake_consumer import FakeConsumer
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_jobs import wait_for
from throughput_support import WorkerThread

import kq._lanes
import kq._runner
import kq.worker
from kq import Job, RetryPolicy, Worker
from kq._calls import call_repr
from kq._isolate import run_isolated
from kq._lanes import Lanes
from kq._offsets import OffsetTracker
from kq._retrying import RetryRouter
from kq.errors import JobProcessError, RemoteJobError
from kq.message import Message

TESTS = Path(__file__).resolve().parent
TP = ("t", 0)


def _message(offset: int, partition: int = 0, key: bytes | None = None) -> Message:
    return Message("t", partition, offset, key, b"")


# -- 13.1: nothing processing one message ends a job thread --------------------------


def test_undecodable_remote_exception_is_a_failure_with_its_type_and_text() -> None:
    result = run_isolated(
        Job(func=engine_jobs.raise_needs_two, args=(500, "x")), 30, threading.Event()
    )
    assert result.status == "failure"
    assert isinstance(result.exception, RemoteJobError)
    assert result.exception.type_name == "engine_jobs.NeedsTwo"
    assert result.exception.text == "500 x"
    assert result.stacktrace and "NeedsTwo" in result.stacktrace


def test_a_job_process_that_cannot_be_started_is_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    result = run_isolated(Job(func=engine_jobs.took, args=(1,)), 30, threading.Event())
    assert result.status == "failure"
    assert isinstance(result.exception, JobProcessError)
    assert "could not be started" in str(result.exception)


def test_a_handler_that_raises_never_ends_its_lane_thread() -> None:
    finished: list[tuple[int, bool | None]] = []

    def handle(m: Message, tag: Any) -> bool:
        if m.offset == 0:
            raise SystemExit("from a message")
        return True

    lanes = Lanes(1, handle, lambda m, tag, outcome: finished.append((m.offset, outcome)))
    lanes.submit((_message(o), None) for o in range(3))
    assert lanes.wait_idle(timeout=10), "the lane thread died with messages queued behind"
    lanes.close()
    assert finished == [(0, True), (1, True), (2, True)]


# -- issue 17.2: a job's end wakes no other job thread ------------------------------------


class _CountingCondition(threading.Condition):
    """A Condition counting how often a job thread came back from waiting on it."""

    wakeups = 0

    def wait(self, timeout: float | None = None) -> bool:
        woke = super().wait(timeout)
        if threading.current_thread().name.startswith("kq-job"):
            type(self).wakeups += 1
        return woke


def test_a_job_wakes_one_job_thread_not_all_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight idle job threads, jobs handed over one at a time: a job wakes one thread
    (two at worst, when the thread that ran the previous one takes it first).

    Every start and every end woke all of them before: 4-5x the cost per short job.
    """
    # (threading's own Condition, for the duration of the test)
    monkeypatch.setattr(_CountingCondition, "wakeups", 0)
    monkeypatch.setattr(kq._lanes.threading, "Condition", _CountingCondition)
    done = threading.Semaphore(0)
    lanes = Lanes(8, lambda m, tag: True, lambda m, tag, outcome: done.release())
    count = 100
    for offset in range(count):
        lanes.submit([(_message(offset), None)])
        assert done.acquire(timeout=10)
    assert lanes.wait_idle(timeout=10)
    lanes.close()
    assert _CountingCondition.wakeups <= 2 * count, (
        f"{_CountingCondition.wakeups} wake-ups of job threads for {count} jobs"
    )


# -- 13.4: a completion is handed over before the lanes count as idle -------------------


def test_wait_idle_returns_only_after_the_completion_was_handed_over() -> None:
    finished: list[int] = []

    def slow_finish(m: Message, tag: Any, outcome: bool | None) -> None:
        time.sleep(0.3)  # the injected pause, at the hand-over itself
        finished.append(m.offset)

    lanes = Lanes(2, lambda m, tag: True, slow_finish)
    lanes.submit([(_message(0), None)])
    assert lanes.wait_idle(timeout=10)
    assert finished == [0], "the lanes were idle before the completion was handed over"
    lanes.close()


# -- 13.5: one message never runs twice at once; completions belong to generations ----


def test_a_refetched_copy_waits_for_the_running_one_and_is_done_by_it() -> None:
    gate = threading.Event()
    runs: list[Any] = []
    finished: list[tuple[Any, bool | None]] = []

    def handle(m: Message, tag: Any) -> bool:
        runs.append(tag)
        return gate.wait(10)

    lanes = Lanes(3, handle, lambda m, tag, outcome: finished.append((tag, outcome)))
    lanes.submit([(_message(0), "old")])
    assert wait_for(lambda: runs == ["old"], timeout=10)
    lanes.submit([(_message(0), "new"), (_message(1), "next")])
    assert wait_for(lambda: "next" in runs, timeout=10)
    assert runs.count("new") == 0 and lanes.busy([TP])
    gate.set()
    assert lanes.wait_idle(timeout=10)
    lanes.close()
    assert sorted(runs) == ["next", "old"]
    assert ("old", True) in finished and ("new", None) in finished


def test_a_refetched_copy_runs_when_the_running_one_must_run_again() -> None:
    gate = threading.Event()
    runs: list[Any] = []

    def handle(m: Message, tag: Any) -> bool:
        runs.append(tag)
        if tag == "old":
            gate.wait(10)
            return False  # e.g. stopped by a hard shutdown
        return True

    outcomes: dict[Any, bool | None] = {}
    lanes = Lanes(2, handle, lambda m, tag, outcome: outcomes.__setitem__(tag, outcome))
    lanes.submit([(_message(0, key=b"k"), "old")])
    assert wait_for(lambda: runs == ["old"], timeout=10)
    lanes.submit([(_message(0, key=b"k"), "new"), (_message(1, key=b"k"), "later")])
    gate.set()
    assert lanes.wait_idle(timeout=10)
    lanes.close()
    assert runs == ["old", "new", "later"]  # the copy first, then the key's next job
    assert outcomes == {"old": False, "new": True, "later": True}


def test_a_completion_of_an_ended_generation_never_counts_in_the_next() -> None:
    tracker = OffsetTracker()
    old = tracker.started(TP, 0)
    tracker.drop([TP])  # revoked while offset 0 ran; then assigned again
    new = tracker.started(TP, 0)
    assert tracker.in_flight() == 2  # the cap counts the old run until it ends
    tracker.finished(old, 0)
    assert tracker.committable() == {} and tracker.in_flight() == 1
    tracker.finished(new, 0)
    assert tracker.committable() == {TP: 1} and tracker.in_flight() == 0


def test_an_offset_taken_twice_in_a_generation_is_committed_after_both() -> None:
    tracker = OffsetTracker()
    parts = [tracker.started(TP, o) for o in (3, 5, 5)]
    tracker.finished(parts[1], 5)
    tracker.finished(parts[2], 5)
    tracker.finished(parts[0], 3)
    assert tracker.committable() == {TP: 6} and tracker.in_flight() == 0
    again = [tracker.started(TP, o) for o in (6, 6)]
    tracker.finished(again[0], 6)
    assert tracker.committable() == {TP: 6} and tracker.in_flight() == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("sfad"), st.integers(0, 4)), max_size=60))
def test_in_flight_is_never_negative_and_counts_what_runs(ops: list[tuple[str, int]]) -> None:
    """Random starts, finishes, abandons and drops: in_flight is exactly the started
    messages that neither finished nor were abandoned, whatever generation they are of."""
    tracker = OffsetTracker()
    running: list[tuple[Any, int]] = []
    next_offset = 0
    for op, pick in ops:
        if op == "s":
            running.append((tracker.started(TP, next_offset), next_offset))
            next_offset += 1
        elif op in "fa" and running:
            part, offset = running.pop(pick % len(running))
            (tracker.finished if op == "f" else tracker.abandoned)(part, offset)
        elif op == "d":
            tracker.drop([TP])
        assert tracker.in_flight() == len(running) >= 0


# -- 13.7: how a job is logged never decides whether it runs --------------------------


def test_call_repr_never_raises() -> None:
    text = call_repr(engine_jobs.took, (engine_jobs.BadRepr(), 2), {"a": engine_jobs.BadRepr()})
    assert text.startswith("engine_jobs.took(<unrepresentable: repr() of engine_jobs.BadRepr")
    assert "ValueError: no repr for you" in text and ", 2, a=<unrepresentable" in text
    assert call_repr(len, (), {1: "x", "b": 2}) in ("builtins.len(1='x', b=2)",)


def test_held_partitions_are_a_metric() -> None:
    from prometheus_client import CollectorRegistry

    from kq.metrics import PrometheusObserver

    registry = CollectorRegistry()
    observer = PrometheusObserver("t", "g", registry=registry)
    labels = {"topic": "t", "group": "g"}
    assert registry.get_sample_value("kq_partitions_held", labels) == 0
    observer.partitions_held([("t", 0), ("t", 3)])
    assert registry.get_sample_value("kq_partitions_held", labels) == 2
    observer.partitions_held([])
    assert registry.get_sample_value("kq_partitions_held", labels) == 0
    assert registry.get_sample_value("kq_partitions_blocked", labels) == 0
    observer.partitions_blocked([("t", 1)])
    assert registry.get_sample_value("kq_partitions_blocked", labels) == 1


# -- the worker against the fake adapter ------------------------------------------------


def _worker(monkeypatch: pytest.MonkeyPatch, fake: FakeConsumer, **options: Any) -> Worker:
    monkeypatch.setattr(kq.worker, "adapt_consumer", lambda consumer: consumer)
    return Worker(fake.topic, fake, scheduling=False, **options)


def _job(func: Any, *args: Any) -> bytes:
    return bytes(dill.dumps(Job(id=uuid.uuid4().hex, func=func, args=args)))


def test_records_of_a_partition_revoked_inside_the_poll_are_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t", partitions=2)
    for p in (0, 1):
        for i in range(3):
            fake.add(p, _job(engine_jobs.note, token, f"p{p}-{i}"))
    # the first poll returns the records of both partitions, and revokes partition 1
    fake.during_next_poll(lambda f: f.revoke([("t", 1)]))
    worker = _worker(monkeypatch, fake, concurrency=2)
    run = WorkerThread(worker).start()
    assert wait_for(lambda: fake.committed.get(("t", 0)) == 3, timeout=10), fake.commits
    worker.stop()
    run.join()
    assert sorted(engine_jobs.notes(token)) == ["p0-0", "p0-1", "p0-2"]
    assert all(("t", 1) not in c for c in fake.commits), fake.commits


def test_records_that_cannot_be_rewound_run_beyond_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    for i in range(5):
        fake.add(0, _job(engine_jobs.note, token, f"j{i}"))
    fake.ignore_max_records = True  # the first poll returns all 5 though 2 fit
    fake.fail_seeks = True
    run = WorkerThread(_worker(monkeypatch, fake, max_in_flight=2), max_messages=5).start()
    assert run.join() == 5
    assert Counter(engine_jobs.notes(token)) == Counter(f"j{i}" for i in range(5))
    assert fake.committed[("t", 0)] == 5


def test_a_failing_retry_write_holds_its_partition_until_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    outage = threading.Event()
    outage.set()
    routes: list[bool] = []

    def route(self: RetryRouter, *args: Any) -> bool:
        routes.append(not outage.is_set())
        return not outage.is_set()

    monkeypatch.setattr(RetryRouter, "route", route)
    monkeypatch.setattr(kq._runner, "RETRY_WRITE_BACKOFF", 0.05)
    held: list[list[tuple[str, int]]] = []

    class Observer:
        def partitions_held(self, partitions: list[tuple[str, int]]) -> None:
            held.append(list(partitions))

    fake = FakeConsumer("t", partitions=2)
    fake.add(0, _job(engine_jobs.fail, token, "failing"))
    worker = _worker(
        monkeypatch,
        fake,
        concurrency=2,
        observer=Observer(),
        retry=RetryPolicy(max_attempts=2, backoff=0.1, jitter=0),
    )
    run = WorkerThread(worker).start()
    assert wait_for(lambda: held == [[("t", 0)]], timeout=10), held
    fake.add(0, _job(engine_jobs.note, token, "p0-after"))
    fake.add(1, _job(engine_jobs.note, token, "p1-after"))
    assert wait_for(lambda: "p1-after" in engine_jobs.notes(token) and len(routes) >= 3, 10)
    assert "p0-after" not in engine_jobs.notes(token), "a held partition took new work"
    assert ("t", 0) in fake.paused
    outage.clear()
    assert wait_for(lambda: fake.committed.get(("t", 0)) == 2, timeout=10), fake.commits
    worker.stop()
    run.join()
    assert held == [[("t", 0)], []]
    assert engine_jobs.notes(token).count("p0-after") == 1


def test_revoke_and_quick_reassign_never_run_one_message_twice_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    tp = ("t", 0)
    fake = FakeConsumer("t")
    fake.add(0, _job(engine_jobs.wait_at_gate, token, "blocking"))
    fake.add(0, _job(engine_jobs.note, token, "quick"))
    # three threads: one for the old run, one free for the copy, one for "quick"
    worker = _worker(monkeypatch, fake, concurrency=3, shutdown_timeout=0.2)
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            samples.append(worker.in_flight)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = WorkerThread(worker).start()
    assert wait_for(lambda: "blocking" in engine_jobs.notes(token), timeout=10)
    reassigned = threading.Event()

    def revoke_and_reassign(f: FakeConsumer) -> None:
        f.revoke([tp])  # the revoke wait (0.2 s) runs out: the job still runs
        f.assign([tp])  # back at once: offsets 0 and 1 are fetched again
        reassigned.set()

    fake.during_next_poll(revoke_and_reassign)
    assert wait_for(lambda: reassigned.is_set() and fake.positions[tp] == 2, timeout=10)
    # read at each assignment: the second time, the revoke's commit (offset 0,
    # with offset 1 finished in its metadata)
    assert wait_for(lambda: fake.reads == [{tp}, {tp}], timeout=10), fake.reads
    assert engine_jobs.notes(token).count("blocking") == 1, "the re-fetched copy started too"
    engine_jobs.gate(token).set()
    assert wait_for(lambda: fake.committed.get(tp) == 2, timeout=10), fake.commits
    worker.stop()
    run.join()
    sampling.set()
    sampler.join(10)
    assert engine_jobs.notes(token).count("blocking") == 1
    # exact resume: "quick" finished in the first assignment and is not run again
    assert engine_jobs.notes(token).count("quick") == 1
    assert min(samples) >= 0, f"in_flight went negative: {min(samples)}"
    assert worker.in_flight == 0


def test_headers_of_discarded_messages_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    fake.add(0, _job(engine_jobs.wait_at_gate, token, "blocking"), headers={"kq-attempt": b"1"})
    for i in range(4):
        fake.add(0, _job(engine_jobs.note, token, f"j{i}"), headers={"kq-attempt": b"1"})
    fake.revoke_on_unsubscribe = False  # a client that leaves without calling the listener
    discarded = threading.Event()
    discard = Lanes.discard

    def noting_discard(self: Lanes, partitions: Any = None) -> Any:
        removed = discard(self, partitions)
        if partitions is None:
            discarded.set()
        return removed

    monkeypatch.setattr(Lanes, "discard", noting_discard)
    worker = _worker(monkeypatch, fake)
    run = WorkerThread(worker).start()
    assert wait_for(lambda: "blocking" in engine_jobs.notes(token), timeout=10)
    assert wait_for(lambda: fake.positions[("t", 0)] == 5, timeout=10)
    worker.stop()
    assert discarded.wait(10)  # the shutdown discarded the four queued messages
    engine_jobs.gate(token).set()
    run.join()
    assert "j0" not in engine_jobs.notes(token)
    assert fake.headers == {}


# -- 13.3: the timed job's child never waits on a lock inherited from another thread ----


def test_timed_jobs_never_hang_on_stderr_held_by_a_logging_thread() -> None:
    """A thread logs without end to stderr, a pipe drained slowly, so it sits in a
    blocked write holding sys.stderr's lock whenever a job is forked. Timed jobs that
    return, print and log must all succeed (none may be reported ``timeout``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *sys.path])
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "engine_jobs.py"), "12", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=TESTS,
    )
    assert proc.stdout is not None
    drain = engine_jobs.SlowDrain(proc.stderr)
    try:
        out = proc.stdout.read().decode()
        code = proc.wait(timeout=120)
    finally:
        drain.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    statuses = [s for s in out.split() if s in ("success", "failure", "timeout")]
    assert code == 0 and len(statuses) == 12, out
    assert statuses == ["success"] * 12, f"timed jobs hung in their child: {statuses}"
