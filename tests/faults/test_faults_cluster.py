"""Fault scenarios on the session's 3-node cluster (topics with RF 3, min.insync.replicas 2).

2. one broker SIGKILLed while jobs are enqueued and processed (confluent-kafka);
4. a rolling restart of all three brokers during the run (kafka-python).

The suite's autouse fixture restarts any node a test leaves down.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fault_harness import (
    Feeder,
    WorkerPool,
    final_offsets,
    group_coordinator,
    isr_complete,
    ledger_counts,
    outcome,
    problems,
    topic_index,
    wait_executed,
    wait_for,
)
from kafka_checks import group_name

from kq import Queue
from kq.local import LocalKafka

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.kills_nodes, pytest.mark.slow]

DURABLE = {"min.insync.replicas": "2"}


def _topic(cluster: LocalKafka, label: str) -> str:
    name = f"t-{label}-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(name, 6, 3, DURABLE)
    return name


def _live(cluster: LocalKafka) -> str:
    """Bootstrap servers of the running nodes only (reads after a kill need no dead node)."""
    return ",".join(cluster.node_address(n) for n in cluster.node_ids if cluster.is_running(n))


def test_2_one_of_three_brokers_sigkilled_during_enqueue_and_processing(
    cluster: LocalKafka, pool: WorkerPool, ledger: str, fault_report: Any
) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = _topic(cluster, "broker-kill")
    group = group_name()
    queue = Queue.connect(bootstrap, topic)  # acks=all, idempotent
    workers = [pool.spawn(bootstrap, topic, group, concurrency=2) for _ in range(2)]
    feeder = Feeder(queue, ledger, 4000, batch=100, pause=0.15, sleep=0.002)
    feeder.start()
    assert wait_for(
        lambda: feeder.acked_count() >= 1200 and len(ledger_counts(ledger)) >= 600, 90
    ), pool.evidence()
    # The group's coordinator: the broker the workers commit to (and a partition leader).
    coordinator = group_coordinator(bootstrap, group)
    victim = coordinator or cluster.node_ids[0]
    cluster.kill_node(victim)
    killed_after = feeder.acked_count()
    feeder.join(180)
    complete = wait_executed(ledger, feeder.acked, 180, pool)
    processed = [pool.stop(w) for w in workers if w.alive()]
    committed, ends = final_offsets(_live(cluster), group, topic)
    in_topic = topic_index(_live(cluster), topic)
    result = outcome("2-broker-sigkill", feeder.acked, ledger)
    fault_report.add(result)
    print(
        f"killed node {victim} (coordinator: {coordinator}) after {killed_after} acknowledged "
        "enqueues; "
        f"failed enqueues {len(feeder.failed)}; processed per worker {processed}"
    )
    found = problems(
        result, ledger, pool, complete=complete, feeder=feeder, committed=committed, ends=ends
    )
    missing = sorted(set(feeder.acked) - set(in_topic))
    if missing:
        found.insert(0, f"{len(missing)} acknowledged jobs are not in the topic: {missing[:5]}")
    assert not found, "\n".join(found)


def test_4_rolling_restart_of_all_three_brokers_during_processing(
    cluster: LocalKafka, pool: WorkerPool, ledger: str, fault_report: Any
) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = _topic(cluster, "rolling")
    group = group_name()
    client = "kafka-python"
    queue = Queue.connect(bootstrap, topic, client=client, delivery_timeout=60)
    workers = [pool.spawn(bootstrap, topic, group, client, concurrency=2) for _ in range(2)]
    # ~25 s of enqueueing, across the whole restart.
    feeder = Feeder(queue, ledger, 4000, batch=100, pause=0.5, sleep=0.002)
    feeder.start()
    assert wait_for(lambda: len(ledger_counts(ledger)) >= 500, 90), pool.evidence()
    restarted: list[str] = []
    for node in cluster.node_ids:
        # As an operator would: one node at a time, each back in sync before the next.
        cluster.stop_node(node)
        cluster.start_node(node)
        in_sync = wait_for(
            lambda: isr_complete(bootstrap, [topic, "__consumer_offsets"], 3), 90, interval=0.5
        )
        restarted.append(f"node {node} at {feeder.acked_count()} acked (in sync: {in_sync})")
    feeder.join(180)
    complete = wait_executed(ledger, feeder.acked, 180, pool)
    processed = [pool.stop(w) for w in workers if w.alive()]
    committed, ends = final_offsets(_live(cluster), group, topic)
    in_topic = topic_index(_live(cluster), topic)
    result = outcome("4-rolling-restart", feeder.acked, ledger)
    fault_report.add(result)
    print(f"restarted {restarted}; failed enqueues {len(feeder.failed)}; processed {processed}")
    found = problems(
        result, ledger, pool, complete=complete, feeder=feeder, committed=committed, ends=ends
    )
    missing = sorted(set(feeder.acked) - set(in_topic))
    if missing:
        found.insert(0, f"{len(missing)} acknowledged jobs are not in the topic: {missing[:5]}")
    assert not found, "\n".join(found)
