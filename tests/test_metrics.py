"""Prometheus metrics: scraped over HTTP from running ``kq worker`` processes, and from Python."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Processes, free_port, kq, sample, scrape, wait_until
from kafka_checks import group_name
from ledger_jobs import ends, record
from prometheus_client import CollectorRegistry

from kq import Queue, Worker
from kq.metrics import PrometheusObserver


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    yield processes
    processes.close()


def _enqueue(bootstrap: str, topic: str, *args: str) -> None:
    done = kq("enqueue", topic, *args, "-b", bootstrap)
    assert done.returncode == 0, done.stderr


def test_worker_metrics_endpoint_counts_jobs_commits_rebalances_and_lag(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    topic = make_topic(partitions=2)
    group = group_name()
    ledger = str(tmp_path / "ledger")
    flag = str(tmp_path / "never")
    port = free_port()
    worker = procs.start(
        "worker", topic, "-b", bootstrap, "-g", group, "--metrics-port", str(port),
        "--metrics-host", "127.0.0.1", name="worker",
    )  # fmt: skip
    worker.wait_for(rf"Serving metrics on http://127.0.0.1:{port}/metrics")
    _enqueue(bootstrap, topic, "ledger_jobs:record", f'"{ledger}"', '"ok"', "--count", "3")
    _enqueue(bootstrap, topic, "cli_jobs:fail_until", f'"{ledger}"', '"bad"', f'"{flag}"')
    wait_until(lambda: ends(ledger)["ok"] == 3, "the jobs to run")

    labels = {"topic": topic, "group": group}

    def settled() -> Any:
        s = scrape(port)
        done = (
            sample(s, "kq_jobs_total", status="success", **labels) == 3
            and sample(s, "kq_jobs_total", status="failure", **labels) == 1
            and sample(s, "kq_partition_lag", partition="0", **labels) == 0
            and sample(s, "kq_partition_lag", partition="1", **labels) == 0
        )
        return done and s

    s = wait_until(settled, "counters and lag to settle on the endpoint")
    assert sample(s, "kq_job_duration_seconds_count", status="success", **labels) == 3
    assert sample(s, "kq_job_duration_seconds_count", status="failure", **labels) == 1
    assert sample(s, "kq_job_duration_seconds_bucket", status="success", le="+Inf", **labels) == 3
    assert sample(s, "kq_jobs_in_flight", **labels) == 0
    assert sample(s, "kq_assigned_partitions", **labels) == 2
    assert (sample(s, "kq_commits_total", **labels) or 0) >= 1
    assert (sample(s, "kq_rebalances_total", event="assigned", **labels) or 0) >= 1
    committed = [sample(s, "kq_committed_offset", partition=p, **labels) for p in ("0", "1")]
    assert sum(c or 0 for c in committed) == 4

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.err()[-3000:]


def test_each_supervised_process_serves_metrics_on_its_own_port(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    topic = make_topic(partitions=2)
    group = group_name()
    ledger = str(tmp_path / "ledger")
    port = free_port(consecutive=2)
    supervisor = procs.start(
        "worker", topic, "-b", bootstrap, "-g", group, "--processes", "2",
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1", name="supervisor",
    )  # fmt: skip
    for p in (port, port + 1):
        supervisor.wait_for(rf"Serving metrics on http://127.0.0.1:{p}/metrics")
    for partition in ("0", "1"):
        _enqueue(
            bootstrap, topic, "ledger_jobs:record", f'"{ledger}"', f'"p{partition}"',
            "--partition", partition, "--count", "2",
        )  # fmt: skip
    wait_until(lambda: ends(ledger) == {"p0": 2, "p1": 2}, "the jobs to run")

    def counted() -> Any:
        per_port = [
            sample(scrape(p), "kq_jobs_total", status="success", topic=topic)
            for p in (port, port + 1)
        ]
        return sum(c or 0 for c in per_port) == 4 and per_port

    wait_until(counted, "both endpoints together to count the four jobs")

    def owned() -> bool:
        found = [sample(scrape(p), "kq_assigned_partitions", topic=topic) for p in (port, port + 1)]
        return found == [1, 1]  # once the group has settled, one partition each

    wait_until(owned, "each process to own one partition")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.err()[-3000:]


def test_prometheus_observer_from_python(bootstrap: str, topic: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    group = group_name()
    registry = CollectorRegistry()
    observer = PrometheusObserver(topic, group, registry=registry)
    queue = Queue.connect(bootstrap, topic)
    for name in ("a", "b"):
        queue.enqueue(record, ledger, name)
    worker = Worker.connect(bootstrap, topic, group, observer=observer)
    observer.watch(worker)
    monitor = observer.start_lag_monitor(bootstrap, interval=0.5)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    labels = {"topic": topic, "group": group}
    try:

        def value(name: str, **extra: str) -> float | None:
            return registry.get_sample_value(name, {**labels, **extra})

        wait_until(lambda: value("kq_jobs_total", status="success") == 2, "two successes")
        wait_until(lambda: value("kq_partition_lag", partition="0") == 0, "lag 0")
        assert monitor.refreshed >= 1
        assert value("kq_assigned_partitions") == 1
        assert value("kq_jobs_in_flight") == 0
        # a second observer of the same registry shares its metric families
        PrometheusObserver(topic, "other-group", registry=registry)
    finally:
        worker.stop()
        thread.join(60)
        observer.close()
        worker.consumer.close()
    assert not thread.is_alive()
    assert registry.get_sample_value("kq_rebalances_total", {**labels, "event": "revoked"}) == 1
    assert registry.get_sample_value("kq_partition_lag", {**labels, "partition": "0"}) is None
