"""Commits that survive a coordinator outage and a rebalance at stop, with both clients.

A finished job's offset must reach the group even when the commit that first
carried it failed: the coordinator was away (a broker restart), or the group
was rebalancing when the worker stopped (another member had just left).
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import dill
import jobfuncs
import pytest
from fake_consumer import FakeConsumer
from kafka_checks import committed, group_name
from ledger_jobs import wait_for
from throughput_support import WorkerThread

import kq.worker
from kq import Job, Queue, Worker
from kq._worker_run import WorkerSettings, worker_options
from kq.clients import ClientName, make_consumer
from kq.local import LocalKafka

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]

pytestmark = pytest.mark.timeout(180)


def _rebalance_error(client: ClientName) -> Exception:
    """What each client raises for a commit made while the group rebalances."""
    if client == "kafka-python":
        from kafka.errors import RebalanceInProgressError

        return RebalanceInProgressError("injected: the group is rebalancing")
    from confluent_kafka import KafkaError, KafkaException

    return KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "injected"))


@pytest.mark.parametrize("client", CLIENTS)
def test_final_commit_refused_by_a_rebalance_is_made_once_the_group_settles(
    bootstrap: str, make_topic: Any, client: ClientName
) -> None:
    """The stop's commit meets a rebalance (another member just left): it is made after it."""
    topic = make_topic(partitions=2)
    group = group_name()
    queue = Queue.connect(bootstrap, topic)
    for partition in (0, 1):
        for n in range(3):
            queue.using(partition=partition).enqueue(jobfuncs.add, n, n)
    # A long commit interval: only the final, synchronous commit commits.
    consumer = make_consumer(bootstrap, group, client=client)
    worker = Worker(topic, consumer, commit_interval=3600)
    adapter = worker._consumer
    real_commit = adapter.commit
    refused: list[dict[tuple[str, int], int]] = []

    def commit(offsets: dict[tuple[str, int], int], asynchronous: bool, **kw: Any) -> None:
        if not asynchronous and not refused:
            refused.append(dict(offsets))
            raise _rebalance_error(client)
        real_commit(offsets, asynchronous, **kw)

    adapter.commit = commit  # type: ignore[method-assign]
    try:
        assert worker.start(max_messages=6) == 6
    finally:
        consumer.close()
    assert refused == [{(topic, 0): 3, (topic, 1): 3}]
    assert committed(bootstrap, group, topic, 0) == 3
    assert committed(bootstrap, group, topic, 1) == 3


# -- the rules, fast, against the in-memory adapter -------------------------------------


def _fake_worker(monkeypatch: pytest.MonkeyPatch, fake: FakeConsumer, **options: Any) -> Worker:
    monkeypatch.setattr(kq.worker, "adapt_consumer", lambda consumer: consumer)
    return Worker(fake.topic, fake, scheduling=False, **options)


def _jobs(fake: FakeConsumer, count: int) -> None:
    for n in range(count):
        fake.add(0, bytes(dill.dumps(Job(id=f"j{n}", func=jobfuncs.add, args=(n, n)))))


def test_a_lost_asynchronous_commit_is_sent_again_at_the_next_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeConsumer("t")
    _jobs(fake, 3)
    fake.lose_async_commits = 1  # the first commit is reported failed by the client
    worker = _fake_worker(monkeypatch, fake, commit_interval=0.05)
    offered: list[tuple[bool, dict[tuple[str, int], int]]] = []
    committable = worker._tracker.committable

    def record(partitions: Any = None, again: bool = False) -> dict[tuple[str, int], int]:
        found = committable(partitions, again)
        if found:
            offered.append((again, found))
        return found

    worker._tracker.committable = record  # type: ignore[method-assign]
    run = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: fake.committed.get(("t", 0)) == 3, timeout=10), fake.commits
    finally:
        worker.stop()
        run.join()
    # offered again by a plain round, not only by the every-tenth-round safety net
    assert offered[:2] == [(False, {("t", 0): 3}), (False, {("t", 0): 3})], offered


class _Clock:
    """``kq.worker``'s view of ``time``: monotonic time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleep = time.sleep

    def monotonic(self) -> float:
        return self.now


def test_a_finished_job_is_committed_a_tenth_of_a_second_later_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default commit interval (bench/field's sweep chose it): 0.1 s after a job
    finished, its offset is committed while the worker runs on; ``kq worker``
    passes no interval of its own, so it gets the same."""
    assert inspect.signature(Worker).parameters["commit_interval"].default == 0.1
    assert "commit_interval" not in worker_options(
        WorkerSettings(bootstrap="b", topic="t", group="g")
    )
    fake = FakeConsumer("t")
    _jobs(fake, 1)
    clock = _Clock()
    monkeypatch.setattr(kq.worker, "time", clock)
    worker = _fake_worker(monkeypatch, fake)
    run = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: worker._processed == 1, timeout=10)
        time.sleep(0.3)  # loop rounds at a standstill clock: no interval has passed
        assert fake.commits == []
        clock.now += 0.15
        assert wait_for(lambda: fake.commits == [{("t", 0): 1}], timeout=10), fake.commits
    finally:
        worker.stop()
        run.join()


def test_a_refused_final_commit_is_tried_again_after_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeConsumer("t")
    _jobs(fake, 2)
    fake.refuse_sync_commits = 2
    worker = _fake_worker(monkeypatch, fake, commit_interval=3600)
    assert WorkerThread(worker, max_messages=2).start().join() == 2
    assert fake.committed == {("t", 0): 2}
    assert fake.refuse_sync_commits == 0


# -- a broker of their own, stopped and restarted ----------------------------------


@pytest.fixture(scope="module")
def solo() -> Iterator[LocalKafka]:
    """A single-node Kafka that these tests alone stop and restart."""
    if os.environ.get("KQ_TEST_BOOTSTRAP", "").strip():
        pytest.skip("needs its own local broker (it is stopped and restarted)")
    with LocalKafka(1) as local:
        yield local


@pytest.mark.kills_nodes
@pytest.mark.parametrize("client", CLIENTS)
def test_commit_failed_while_the_coordinator_was_away_is_sent_once_it_is_back(
    solo: LocalKafka, tmp_path: Any, client: ClientName
) -> None:
    """A job finishes while the broker is down; its offset is committed once it is back.

    The worker is never stopped here, so no final commit can hide a lost one.
    """
    if not solo.is_running(1):
        solo.start_node(1)
    bootstrap = solo.bootstrap_servers
    topic = f"t-outage-{client}-{os.urandom(4).hex()}"
    solo.create_topic(topic, 1)
    group = group_name()
    started, release = tmp_path / "started", tmp_path / "release"
    Queue.connect(bootstrap, topic).enqueue(jobfuncs.wait_for_file, str(started), str(release))
    consumer = make_consumer(bootstrap, group, client=client)
    worker = Worker(topic, consumer)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the job never started"
        solo.stop_node(1)
        release.write_text("go")  # the job finishes while the coordinator is away
        while worker.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.in_flight == 0
        time.sleep(3.0)  # commit rounds pass, and fail, while the broker is down
        solo.start_node(1)
        offset = None
        deadline = time.monotonic() + 60
        while offset != 1 and time.monotonic() < deadline:
            offset = committed(bootstrap, group, topic)
            time.sleep(0.5)
        assert offset == 1, "the finished job's offset never reached the group"
        assert thread.is_alive(), "the worker stopped by itself"
    finally:
        worker.stop()
        thread.join(60)
        consumer.close()
