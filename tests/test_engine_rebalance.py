"""Rebalances and retry writes under stress, against the real broker with both clients.

A retry that cannot be written holds its partition (visibly) until it is
written; a partition revoked and quickly assigned back never runs one message
twice at once nor counts an old run in its new generation; long jobs do not get
a member thrown out of the group when one of its partitions is revoked.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any, cast

import concurrency_jobs as jobs
import pytest
from kafka_checks import committed, group_name, session_config
from ledger_jobs import starts, wait_for
from retry_jobs import flaky, stamp
from throughput_support import WorkerThread, close_consumer, close_queue

from kq import Queue, RetryPolicy, Worker
from kq._lanes import Lanes
from kq._retrying import RetryRouter
from kq.clients import ClientName, make_consumer

CLIENTS = ["confluent", "kafka-python"]
MakeTopic = Any


class Observer:
    """Records rebalances and held partitions."""

    def __init__(self) -> None:
        self.rebalances: list[tuple[str, list[tuple[str, int]]]] = []
        self.held: list[list[tuple[str, int]]] = []
        self._lock = threading.Lock()

    def rebalanced(self, event: str, partitions: list[tuple[str, int]]) -> None:
        with self._lock:
            self.rebalances.append((event, list(partitions)))

    def partitions_held(self, partitions: list[tuple[str, int]]) -> None:
        with self._lock:
            self.held.append(list(partitions))

    def events(self, kind: str) -> list[list[tuple[str, int]]]:
        with self._lock:
            return [parts for event, parts in self.rebalances if event == kind and parts]


def _worker(bootstrap: str, topic: str, client: str, group: str, **options: Any) -> Worker:
    return Worker.connect(bootstrap, topic, group, client=cast(ClientName, client), **options)


class InFlightSampler:
    """Reads ``worker.in_flight`` on a thread until stopped."""

    def __init__(self, worker: Worker) -> None:
        self.values: list[int] = []
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(0.002):
                self.values.append(worker.in_flight)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.values


class RawMember:
    """A plain consumer of the group (kq's consumer settings): it joins, takes the
    partitions it is given, reads without processing or committing, and leaves."""

    def __init__(self, bootstrap: str, topic: str, group: str, client: str) -> None:
        self.client = client
        self.consumer = make_consumer(
            bootstrap, group, client=cast(ClientName, client), **session_config(client)
        )
        self.consumer.subscribe([topic])
        self.assigned: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.client == "confluent":
                self.consumer.poll(0.1)
            else:
                self.consumer.poll(timeout_ms=100)
            self.assigned = {tp.partition for tp in self.consumer.assignment()}

    def leave(self) -> None:
        self._stop.set()
        self._thread.join(30)
        close_consumer(self.consumer)


# -- 13.2: a retry that cannot be written holds its partition ---------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_retry_that_cannot_be_written_holds_its_partition_until_it_is(
    bootstrap: str, topic: str, tmp_path: Path, client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delay topics are unwritable (route() fails, as after its own tries) when a job
    fails: the partition is reported held, jobs enqueued meanwhile are not taken, the
    failed attempt's offset is not committed. Once writes work again, the worker writes
    the retry itself: every job runs, the retry once, all is committed."""
    outage = threading.Event()
    outage.set()
    rounds: list[bool] = []
    route = RetryRouter.route

    def failing_route(self: RetryRouter, *args: Any, **kwargs: Any) -> bool:
        rounds.append(outage.is_set())
        if outage.is_set():
            return False
        return route(self, *args, **kwargs)

    monkeypatch.setattr(RetryRouter, "route", failing_route)
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.using(retry=RetryPolicy(max_attempts=2, backoff=0.2, jitter=0)).enqueue(
        flaky, ledger, "J", 1
    )
    for i in range(3):
        queue.enqueue(stamp, ledger, f"K{i}")
    group = group_name()
    observer = Observer()
    worker = _worker(bootstrap, topic, client, group, concurrency=2, observer=observer)
    runner = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: len(rounds) >= 2, timeout=60), (
            f"the worker never tried to write the failed retry again: {rounds}"
        )
        assert wait_for(lambda: observer.held == [[(topic, 0)]], timeout=30), observer.held
        for i in range(3):
            queue.enqueue(stamp, ledger, f"L{i}")
        assert wait_for(lambda: len(rounds) >= 3, timeout=60), rounds  # one more round
        taken = [name for name in starts(ledger) if name.startswith("L")]
        assert not taken, f"jobs {taken} were taken from a held partition"
        # offset 0 waits for its retry: the commit stays there (exact resume commits it,
        # with K0-K2 finished above it in its metadata), never past it
        assert wait_for(lambda: committed(bootstrap, group, topic) == 0, 30, 0.5)
        outage.clear()
        everything = {"J": 2, "K0": 1, "K1": 1, "K2": 1, "L0": 1, "L1": 1, "L2": 1}
        assert wait_for(lambda: dict(starts(ledger)) == everything, timeout=60), starts(ledger)
        # 7 jobs and the retry of J, its second attempt
        assert wait_for(lambda: committed(bootstrap, group, topic) == 8, 30, 0.5)
    finally:
        outage.clear()
        runner.stop_and_join()
        close_queue(queue)
    assert observer.held == [[(topic, 0)], []]
    assert dict(starts(ledger)) == everything


# -- 13.5: revoked, then quickly assigned back, while a job still runs --------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_partition_back_while_its_old_run_goes_on_never_runs_a_job_twice_at_once(
    bootstrap: str,
    make_topic: MakeTopic,
    tmp_path: Path,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both partitions start with a blocked job. A second member joins: one partition is
    revoked from the worker, its revoke wait (1 s) runs out with the job still running.
    The member leaves at once, the partition comes back and its blocked job is fetched
    again. It must not start a second time while the first run goes on, the old run's
    completion must not count in the new assignment, and in_flight never goes below 0."""
    topic = make_topic(partitions=2)
    ledger, release = str(tmp_path / "ledger"), tmp_path / "release"
    queue = Queue.connect(bootstrap, topic, client=client)
    for p in (0, 1):
        queue.using(partition=p).enqueue(jobs.wait_for_file, ledger, f"block{p}", str(release), 120)
        queue.using(partition=p).enqueue(jobs.step, ledger, f"after{p}", 0)
    close_queue(queue)
    submitted: Counter[tuple[str, int, int]] = Counter()
    submit = Lanes.submit

    def counting_submit(self: Lanes, entries: Any) -> None:
        entries = list(entries)
        for entry in entries:
            m = entry[0] if isinstance(entry, tuple) else entry
            submitted[(m.topic, m.partition, m.offset)] += 1
        submit(self, entries)

    monkeypatch.setattr(Lanes, "submit", counting_submit)
    group = group_name()
    observer = Observer()
    worker = _worker(
        bootstrap,
        topic,
        client,
        group,
        consumer_config=session_config(client),
        concurrency=3,
        shutdown_timeout=1.0,
        observer=observer,
    )
    sampler = InFlightSampler(worker)
    runner = WorkerThread(worker).start()
    member: RawMember | None = None
    try:
        blocks = {("block0", 0), ("block1", 0)}
        assert wait_for(lambda: blocks <= set(jobs.started(ledger)), timeout=90)
        member = RawMember(bootstrap, topic, group, client)
        assert wait_for(lambda: bool(observer.events("revoked")), timeout=60), observer.rebalances
        [[(_, moved)]] = observer.events("revoked")
        assert wait_for(lambda: moved in member.assigned, timeout=60)
        member.leave()
        member = None

        def back() -> bool:
            return any((topic, moved) in parts for parts in observer.events("assigned")[1:])

        assert wait_for(back, timeout=60), observer.rebalances
        assert wait_for(lambda: submitted[(topic, moved, 0)] >= 2, timeout=60), submitted
        assert Counter(jobs.started(ledger))[(f"block{moved}", 0)] == 1, (
            "the fetched-again copy started while the first run still went on"
        )
    finally:
        release.touch()
        if member is not None:
            member.leave()
    for p in (0, 1):
        assert wait_for(lambda p=p: committed(bootstrap, group, topic, p) == 2, 60, 0.5)
    runner.stop_and_join()
    values = sampler.stop()
    assert min(values) >= 0, f"in_flight went down to {min(values)}"
    assert worker.in_flight == 0
    assert Counter(jobs.started(ledger))[(f"block{moved}", 0)] == 1


# -- 13.6: long jobs and an incremental revoke -------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_long_jobs_keep_the_member_in_the_group_through_a_revoke(
    bootstrap: str, make_topic: MakeTopic, tmp_path: Path, client: str
) -> None:
    """Each of two partitions starts with a 12 s job (the session timeout is 6 s). A
    second worker joins and one partition is revoked from the first while both long
    jobs run. The first worker stays in the group (nothing lost), waits for the revoked
    partition's job before handing it over, and every job runs exactly once."""
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    for p in (0, 1):
        queue.using(partition=p).enqueue(jobs.step, ledger, f"long{p}", 0, 12.0)
        for i in range(2):
            queue.using(partition=p).enqueue(jobs.step, ledger, f"quick{p}", i)
    close_queue(queue)
    group = group_name()
    config = session_config(client)
    observers = [Observer(), Observer()]
    first, second = (
        _worker(bootstrap, topic, client, group, consumer_config=config, concurrency=2, observer=o)
        for o in observers
    )
    one = WorkerThread(first).start()
    assert wait_for(lambda: {("long0", 0), ("long1", 0)} <= set(jobs.started(ledger)), 90)
    two = WorkerThread(second).start()
    everything = {(f"long{p}", 0) for p in (0, 1)} | {
        (f"quick{p}", i) for p in (0, 1) for i in range(2)
    }
    done = wait_for(lambda: everything <= jobs.ended(ledger), timeout=120, interval=0.2)
    one.stop_and_join()
    two.stop_and_join()
    assert done, f"never ran: {sorted(everything - jobs.ended(ledger))}"
    revoked = observers[0].events("revoked")
    assert revoked, f"no partition moved: {observers[0].rebalances}"
    lost = [o.events("lost") for o in observers]
    assert lost == [[], []], f"a member was thrown out of the group: {lost}"
    again = {job: n for job, n in Counter(jobs.started(ledger)).items() if n > 1}
    assert not again, f"jobs ran more than once: {again}"
    for p in (0, 1):
        assert committed(bootstrap, group, topic, p) == 3
