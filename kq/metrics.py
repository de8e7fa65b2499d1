"""Prometheus metrics of a worker: ``PrometheusObserver`` and an HTTP endpoint.

::

    from kq import Worker
    from kq.metrics import PrometheusObserver, serve

    observer = PrometheusObserver("jobs", "workers")
    worker = Worker.connect("127.0.0.1:9092", "jobs", "workers", observer=observer)
    observer.watch(worker)                            # in-flight gauge
    observer.start_lag_monitor("127.0.0.1:9092")      # lag of this worker's partitions
    serve(9100)                                       # http://host:9100/metrics
    worker.start()

Metrics (labels ``topic`` and ``group`` on each):

- ``kq_jobs_total{status}``: messages processed, by outcome (``success``,
  ``failure``, ``timeout``, ``invalid``);
- ``kq_job_duration_seconds{status}``: histogram of job run times;
- ``kq_jobs_in_flight``: jobs fetched and not finished (``worker.in_flight``);
- ``kq_partition_lag{partition}``: jobs not yet finished and committed in each
  partition this worker owns, from the broker's end offsets and the group's
  committed offsets, refreshed every few seconds by a background thread;
- ``kq_assigned_partitions``: partitions this worker owns;
- ``kq_commits_total`` / ``kq_committed_offset{partition}``: offset commits;
- ``kq_rebalances_total{event}``: ``assigned``, ``revoked``, ``lost``;
- ``kq_unimportable_jobs_total{module}``: messages reported invalid because
  their job names a module the worker cannot import (deploy skew);
- ``kq_partitions_held``: partitions taking no new jobs because the retry or
  dead letter of one of their jobs cannot be written (delay topics
  unreachable); alert when it stays above 0;
- ``kq_partitions_blocked``: partitions paused at the head-of-line limit
  (``head_of_line_limit`` finished jobs wait behind one still running);
- ``kq_delay_forwarder_up``: delay forwarders of the topic running in this
  process (0 while one is down and waiting to be restarted);
- ``kq_delay_forwarder_restarts``: how often they died and were restarted;
- ``kq_delay_forwarded``: records they moved out of the delay tiers.

Lag is reported per owned partition, so summing ``kq_partition_lag`` over
every worker of a group gives the group's lag without double counting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LagMonitor", "PrometheusObserver", "serve"]

_LOG = logging.getLogger("kq.metrics")

DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    float("inf"),
)


@dataclass(frozen=True)
class _Families:
    jobs: Counter
    duration: Histogram
    in_flight: Gauge
    lag: Gauge
    assigned: Gauge
    commits: Counter
    committed: Gauge
    rebalances: Counter
    unimportable: Counter
    held: Gauge
    blocked: Gauge
    forwarder_up: Gauge
    forwarder_restarts: Gauge
    forwarded: Gauge


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    # One set of metric families per registry, shared by every observer in it.
    with _FAMILIES_LOCK:
        found = _FAMILIES.get(registry)
        if found is not None:
            return found
        base = ("topic", "group")
        families = _Families(
            jobs=Counter(
                "kq_jobs",
                "Messages processed, by outcome",
                (*base, "status"),
                registry=registry,
            ),
            duration=Histogram(
                "kq_job_duration_seconds",
                "Run time of jobs, by outcome",
                (*base, "status"),
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "kq_jobs_in_flight", "Jobs fetched and not yet finished", base, registry=registry
            ),
            lag=Gauge(
                "kq_partition_lag",
                "Jobs not yet finished and committed, per partition owned by this worker",
                (*base, "partition"),
                registry=registry,
            ),
            assigned=Gauge(
                "kq_assigned_partitions", "Partitions owned by this worker", base, registry=registry
            ),
            commits=Counter("kq_commits", "Offset commits", base, registry=registry),
            committed=Gauge(
                "kq_committed_offset",
                "Last offset committed, per partition",
                (*base, "partition"),
                registry=registry,
            ),
            rebalances=Counter(
                "kq_rebalances",
                "Rebalance events: assigned, revoked, lost",
                (*base, "event"),
                registry=registry,
            ),
            unimportable=Counter(
                "kq_unimportable_jobs",
                "Messages reported invalid because their job's module could not be imported",
                (*base, "module"),
                registry=registry,
            ),
            held=Gauge(
                "kq_partitions_held",
                "Partitions taking no new jobs while a retry or dead-letter write fails",
                base,
                registry=registry,
            ),
            blocked=Gauge(
                "kq_partitions_blocked",
                "Partitions paused because head_of_line_limit finished jobs wait behind an"
                " unfinished one",
                base,
                registry=registry,
            ),
            forwarder_up=Gauge(
                "kq_delay_forwarder_up",
                "Delay forwarders of the topic running in this process",
                base,
                registry=registry,
            ),
            forwarder_restarts=Gauge(
                "kq_delay_forwarder_restarts",
                "Times the delay forwarders of the topic in this process died and were restarted",
                base,
                registry=registry,
            ),
            forwarded=Gauge(
                "kq_delay_forwarded",
                "Records moved out of the delay tiers by this process's forwarders",
                base,
                registry=registry,
            ),
        )
        _FAMILIES[registry] = families
        return families


class PrometheusObserver:
    """A ``kq.events.WorkerObserver`` that records what a worker does as Prometheus metrics.

    Pass it as ``Worker(..., observer=...)``; then ``watch(worker)`` for the
    in-flight gauge and ``start_lag_monitor(bootstrap)`` for partition lag.
    """

    def __init__(
        self, topic: str, group: str = "", registry: CollectorRegistry | None = None
    ) -> None:
        self.topic = topic
        self.group = group
        self._m = _families(registry if registry is not None else REGISTRY)
        self._labels = (topic, group)
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._monitor: LagMonitor | None = None
        self._m.in_flight.labels(*self._labels).set(0)
        self._m.assigned.labels(*self._labels).set(0)
        self._m.held.labels(*self._labels).set(0)
        self._m.blocked.labels(*self._labels).set(0)
        self._m.commits.labels(*self._labels)
        for event in ("assigned", "revoked", "lost"):
            self._m.rebalances.labels(*self._labels, event)
        self._watch_forwarders()

    # -- WorkerObserver ------------------------------------------------------

    def job_finished(self, status: str, seconds: float) -> None:
        """Count the outcome; time it (invalid messages ran no job and are only counted)."""
        self._m.jobs.labels(*self._labels, status).inc()
        if status != "invalid":
            self._m.duration.labels(*self._labels, status).observe(seconds)

    def job_unimportable(self, module: str) -> None:
        """Count a message whose job names a module the worker cannot import."""
        self._m.unimportable.labels(*self._labels, module).inc()

    def committed(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Count a commit and remember the offsets."""
        self._m.commits.labels(*self._labels).inc()
        for (topic, partition), offset in offsets.items():
            if topic == self.topic:
                self._m.committed.labels(*self._labels, str(partition)).set(offset)

    def rebalanced(self, event: str, partitions: list[tuple[str, int]]) -> None:
        """Count the event and track which partitions this worker owns."""
        self._m.rebalances.labels(*self._labels, event).inc()
        mine = {p for t, p in partitions if t == self.topic}
        with self._lock:
            if event == "assigned":
                self._owned |= mine
            else:
                self._owned -= mine
                for partition in mine:
                    self._forget(partition)
            self._m.assigned.labels(*self._labels).set(len(self._owned))

    def partitions_held(self, partitions: list[tuple[str, int]]) -> None:
        """How many partitions take no new jobs while a retry write fails."""
        self._m.held.labels(*self._labels).set(len(partitions))

    def partitions_blocked(self, partitions: list[tuple[str, int]]) -> None:
        """How many partitions are paused at the head-of-line limit."""
        self._m.blocked.labels(*self._labels).set(len(partitions))

    # -- the rest ------------------------------------------------------------

    def owned(self) -> set[int]:
        """Partitions of the topic this worker owns now."""
        with self._lock:
            return set(self._owned)

    def watch(self, worker: Any) -> None:
        """Report ``worker.in_flight`` as ``kq_jobs_in_flight`` (read at each scrape).

        Holds the worker weakly: a watched worker can still be garbage collected.
        """
        ref = weakref.ref(worker)

        def in_flight() -> float:
            watched = ref()
            return 0.0 if watched is None else float(watched.in_flight)

        self._m.in_flight.labels(*self._labels).set_function(in_flight)

    def _watch_forwarders(self) -> None:
        from kq._forwarder import forwarders

        topic = self.topic

        def up() -> float:
            return float(sum(1 for f in forwarders(topic) if f.state == "running"))

        def restarts() -> float:
            return float(sum(f.restarts for f in forwarders(topic)))

        def forwarded() -> float:
            return float(sum(f.forwarded for f in forwarders(topic)))

        self._m.forwarder_up.labels(*self._labels).set_function(up)
        self._m.forwarder_restarts.labels(*self._labels).set_function(restarts)
        self._m.forwarded.labels(*self._labels).set_function(forwarded)

    def set_lag(self, lags: Mapping[int, int]) -> None:
        """Publish lag per partition (only partitions still owned)."""
        with self._lock:
            for partition, lag in lags.items():
                if partition in self._owned:
                    self._m.lag.labels(*self._labels, str(partition)).set(lag)

    def _forget(self, partition: int) -> None:
        for family in (self._m.lag, self._m.committed):
            with contextlib.suppress(KeyError):
                family.remove(*self._labels, str(partition))

    def start_lag_monitor(
        self,
        bootstrap: str,
        config: Mapping[str, Any] | None = None,
        interval: float = 5.0,
    ) -> LagMonitor:
        """Start the background thread that refreshes ``kq_partition_lag``; returns it."""
        if self._monitor is None:
            self._monitor = LagMonitor(self, bootstrap, config, interval)
            self._monitor.start()
        return self._monitor

    def close(self) -> None:
        """Stop the lag thread, if any."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None


class LagMonitor:
    """Every ``interval`` seconds: end offsets minus committed offsets of the owned partitions."""

    def __init__(
        self,
        observer: PrometheusObserver,
        bootstrap: str,
        config: Mapping[str, Any] | None = None,
        interval: float = 5.0,
    ) -> None:
        self._observer = observer
        self._bootstrap = bootstrap
        self._config = dict(config or {})
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed = 0
        """How many times lag was computed (for tests and health checks)."""

    def start(self) -> None:
        """Start the daemon thread."""
        self._thread = threading.Thread(target=self._run, name="kq-lag", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from kq._admin import Cluster, ClusterError

        cluster: Cluster | None = None
        try:
            while not self._stop.is_set():
                try:
                    if cluster is None:
                        cluster = Cluster(self._bootstrap, self._config, timeout=10.0)
                    self._refresh(cluster)
                except ClusterError as exc:
                    _LOG.warning("Could not compute partition lag: %s", exc)
                self._stop.wait(self._interval)
        finally:
            if cluster is not None:
                cluster.close()

    def _refresh(self, cluster: Any) -> None:
        observer = self._observer
        owned = sorted(observer.owned())
        if owned:
            ends = {p: cluster.watermarks(observer.topic, p) for p in owned}
            committed = cluster.committed(observer.group, observer.topic, owned)
            lags: dict[int, int] = {}
            for p, (low, high) in ends.items():
                position = committed.get(p)
                position = low if position is None else max(position, low)
                lags[p] = max(high - position, 0)
            observer.set_lag(lags)
        self.refreshed += 1


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the HTTP server.

    ``OSError`` if the port cannot be bound.
    """
    from prometheus_client import start_http_server

    server, _thread = start_http_server(
        port, addr=host, registry=registry if registry is not None else REGISTRY
    )
    return server
