"""Fault scenarios where the whole (single-node) cluster goes away, on a broker of their own.

3. the broker stopped and restarted during processing: the same worker
   processes and the same Queue carry on by themselves;
8. enqueue while the cluster is down: a clear ``kq.EnqueueError`` within the
   queue's ``delivery_timeout``, and afterwards the topic holds exactly the
   jobs that were acknowledged.

Both run for each client. They get their own ``LocalKafka(1)`` (module-scoped)
rather than the session's broker, which other tests use at the same time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_harness import (
    CLIENTS,
    Feeder,
    WorkerPool,
    final_offsets,
    ledger_counts,
    outcome,
    problems,
    read_ledger,
    topic_index,
    wait_executed,
    wait_for,
)
from fault_jobs import mark
from kafka_checks import group_name

from kq import BatchEnqueueError, EnqueueError, Job, Queue
from kq.local import LocalKafka

pytestmark = [pytest.mark.faults, pytest.mark.kills_nodes, pytest.mark.slow]

# Scenario 8's bound, and what a loaded 2-core machine may add to it.
DELIVERY_TIMEOUT = 4.0
SLACK = 5.0


@pytest.fixture(scope="module")
def solo() -> Iterator[LocalKafka]:
    """A single-node Kafka that these tests alone stop and restart."""
    if os.environ.get("KQ_TEST_BOOTSTRAP", "").strip():
        pytest.skip("needs its own local broker")
    with LocalKafka(1) as local:
        yield local


@pytest.fixture
def broker(solo: LocalKafka) -> LocalKafka:
    """The module's broker, running (a failed test may have left it stopped)."""
    if not solo.is_running(1):
        solo.start_node(1)
    return solo


def _topic(broker: LocalKafka, label: str, partitions: int) -> str:
    name = f"t-{label}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions)
    return name


@pytest.mark.parametrize("client", CLIENTS)
def test_3_single_broker_stopped_and_restarted_workers_and_queue_recover(
    broker: LocalKafka,
    pool: WorkerPool,
    ledger: str,
    tmp_path: Path,
    fault_report: Any,
    client: str,
) -> None:
    bootstrap = broker.bootstrap_servers
    topic = _topic(broker, f"restart-{client}", 4)
    group = group_name()
    # Long enough a bound for enqueues made while the broker is away to wait for it.
    queue = Queue.connect(bootstrap, topic, client=client, delivery_timeout=90)
    workers = [pool.spawn(bootstrap, topic, group, client, concurrency=2) for _ in range(2)]
    # 3,000 jobs on partitions 0-2 over ~8 s, around the outage.
    feeder = Feeder(queue, ledger, 3000, batch=100, pause=0.25, sleep=0.002, partitions=3)
    feeder.start()
    assert wait_for(lambda: len(ledger_counts(ledger)) >= 800, 60), pool.evidence()
    # One job on partition 3 that is running when the broker stops and ends while
    # it is down; nothing else goes to partition 3.
    started = tmp_path / "started"
    straddler = Job(id="straddler", func=mark, args=(ledger, "straddler", 4.0, str(started)))
    queue.using(partition=3).enqueue(straddler)
    assert wait_for(lambda: started.exists(), 60), pool.evidence()
    broker.stop_node(1)
    time.sleep(5.0)  # down: the straddler finishes, enqueues wait, commits fail
    broker.start_node(1)
    back_at = time.time()
    feeder.join(180)
    acked = [*feeder.acked, "straddler"]
    complete = wait_executed(ledger, acked, 180, pool)
    processed = [pool.stop(w) for w in workers if w.alive()]
    committed, ends = final_offsets(bootstrap, group, topic)
    result = outcome(f"3-broker-restart-{client}", acked, ledger)
    fault_report.add(result)
    pids = pool.pids()
    after = {run.worker(pids) for run in read_ledger(ledger) if run.at > back_at}
    print(f"processed per worker {processed}; committed {committed}; end offsets {ends}")
    found = problems(
        result, ledger, pool, complete=complete, feeder=feeder, committed=committed, ends=ends
    )
    if not any(at > back_at and ok for at, ok, _ in feeder.batches):
        found.append("no enqueue was acknowledged after the restart")
    if after != {w.pid for w in workers}:
        found.append(f"not every worker ran jobs after the restart: {after}")
    if result.counts["straddler"] and committed.get(3) != ends.get(3):
        found.append(
            "the job that finished while the broker was down (partition 3) was never "
            "committed, although the worker ran on for seconds with the broker back"
        )
    assert not found, "\n".join(found)


def _within(limit: float, call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread; (its exception or None, seconds taken). Fails if it hangs."""
    outcome_: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome_.append(exc)
        else:
            outcome_.append(None)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - start
    if thread.is_alive():
        raise AssertionError(
            f"enqueue still blocked after {limit:.0f}s (bound {DELIVERY_TIMEOUT}s)"
        )
    return outcome_[0], elapsed


@pytest.mark.parametrize("client", CLIENTS)
def test_8_enqueue_while_cluster_down_fails_in_bound_and_truthfully(
    broker: LocalKafka,
    pool: WorkerPool,
    ledger: str,
    fault_report: Any,
    client: str,
) -> None:
    bootstrap = broker.bootstrap_servers
    topic = _topic(broker, f"down-{client}", 3)
    queue = Queue.connect(bootstrap, topic, client=client, delivery_timeout=DELIVERY_TIMEOUT)

    def jobs(prefix: str, count: int) -> list[Job]:
        return [
            Job(id=f"{prefix}{i:05d}", func=mark, args=(ledger, f"{prefix}{i:05d}"))
            for i in range(count)
        ]

    acked: list[str] = [job.id or "" for job in queue.enqueue_many(jobs("up", 1000))]
    broker.kill_node(1)  # the whole cluster, at once
    # One enqueue, then a batch, while nothing answers.
    single = Job(id="down-single", func=mark, args=(ledger, "down-single"))
    error, single_took = _within(DELIVERY_TIMEOUT + 60, lambda: queue.enqueue(single))
    batch_jobs = jobs("down", 200)
    batch_error, batch_took = _within(DELIVERY_TIMEOUT + 60, lambda: queue.enqueue_many(batch_jobs))
    broker.start_node(1)
    # The same queue works again once its client has reconnected (each attempt
    # is bounded by delivery_timeout, so the first ones may fail).
    later_errors: list[BaseException] = []
    deadline = time.monotonic() + 60
    attempt, recovered = 0, False
    while not recovered and time.monotonic() < deadline:
        attempt += 1
        try:
            acked += [job.id or "" for job in queue.enqueue_many(jobs(f"back{attempt}-", 1000))]
            recovered = True
        except BatchEnqueueError as exc:
            acked += [job.id or "" for job in exc.acknowledged or []]
            later_errors.append(exc)
        except Exception as exc:
            later_errors.append(exc)
    in_topic = topic_index(bootstrap, topic)
    worker = pool.spawn(bootstrap, topic, group_name(), client, concurrency=2)
    complete = wait_executed(ledger, acked, 120, pool)
    pool.stop(worker)
    result = outcome(f"8-cluster-down-{client}", acked, ledger)
    fault_report.add(result)
    print(f"single enqueue failed after {single_took:.1f}s: {error!r}")
    print(f"batch of 200 failed after {batch_took:.1f}s: {batch_error!r}")
    print(f"after the restart: {attempt} attempt(s), errors {later_errors!r}")
    # Every broken promise at once, so that one does not hide the next.
    found: list[str] = []
    if not recovered:
        found.append(f"the queue did not recover within 60 s: {later_errors[-3:]}")
    for label, raised, took, wanted in (
        ("enqueue", error, single_took, EnqueueError),
        ("enqueue_many", batch_error, batch_took, BatchEnqueueError),
    ):
        if not isinstance(raised, wanted):
            found.append(f"{label} while down raised {raised!r}, not kq.{wanted.__name__}")
        elif topic not in str(raised) or raised.cause is None:
            found.append(f"{label} error names neither topic nor cause: {raised!r}")
        if took > DELIVERY_TIMEOUT + SLACK:
            found.append(f"{label} took {took:.1f}s, bound {DELIVERY_TIMEOUT}s")
    if isinstance(batch_error, BatchEnqueueError) and (
        batch_error.acknowledged_count or len(batch_error.failed) != len(batch_jobs)
    ):
        found.append("the failed batch reports acknowledged jobs")
    found += [
        f"enqueue after the restart raised {exc!r}, not kq.EnqueueError"
        for exc in later_errors
        if not isinstance(exc, EnqueueError)
    ]
    phantoms = sorted(set(in_topic) - set(acked))
    if phantoms:
        found.append(
            f"{len(phantoms)} jobs whose enqueue raised are in the topic anyway "
            f"(e.g. {phantoms[:3]}) and ran {sum(result.counts[p] for p in phantoms)} times"
        )
    missing = sorted(set(acked) - set(in_topic))
    if missing:
        found.append(f"{len(missing)} acknowledged jobs are not in the topic: {missing[:5]}")
    if any(len(places) > 1 for places in in_topic.values()):
        found.append("jobs written more than once")
    found += problems(result, ledger, pool, complete=complete)
    assert not found, "\n".join(found)
