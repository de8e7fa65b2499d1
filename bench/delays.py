"""Delayed jobs (issue 17 item 4): how late they run, and what forwarding them costs.

``delays`` enqueues jobs with delays spread evenly over a range, runs them
with a kq worker that does not forward (``scheduling=False``) and a delay
forwarder alone in its own process (``run_forwarder.py``), and measures:

- lateness: wall time at the job's start minus its due time (negative: early);
- forwarded records per delayed job: every record written to the tiers after
  the enqueue (a hop to the next tier) and every record written home, i.e.
  the tiers' end offsets (the first write of each job included) over the jobs;
- the forwarder's CPU time (its process: consumer, producer, librdkafka threads)
  per delayed job.

``hops`` counts the forwarded records of one job on an ideal clock (no
processing time): the routing alone, for delays too long to wait for here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import (
    BenchError,
    count_lines,
    has_stamps,
    jobs,
    read_report,
    unique,
    wait_until,
)
from bench.scenarios import Context
from kq import Queue
from kq._admin import Cluster, ClusterError
from kq.schedule import DUE_SLACK_MS, TIERS, delay_topic, delay_topics, route, tier_of, timing

Router = Callable[[str, int, int], str]

# distinct delays per range (one batch each); the jobs are spread evenly over them
_STEPS = 50


@dataclass
class Delayed:
    """What one delays run measured."""

    count: int
    low: float
    high: float
    lateness: list[float]  # seconds, per job
    forwarded: int  # records the forwarder wrote (hops and home)
    cpu: float  # forwarder process CPU seconds

    def quantile(self, q: float) -> float:
        """A quantile of the lateness, in seconds."""
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def per_job(self) -> float:
        """Forwarded records per delayed job."""
        return self.forwarded / self.count

    @property
    def cpu_us(self) -> float:
        """Forwarder CPU per delayed job, in µs."""
        return self.cpu / self.count * 1e6


def _tier_records(ctx: Context, topic: str) -> int:
    total = 0
    with Cluster(ctx.bootstrap, timeout=10.0) as cluster:
        for tier in delay_topics(topic):
            try:
                total += cluster.watermarks(tier, 0)[1]
            except ClusterError:
                continue  # a tier never written to does not exist
    return total


def delays(ctx: Context, low: float, high: float) -> Delayed:
    """``settings.delay_jobs`` jobs delayed ``low``..``high`` seconds: lateness and cost."""
    count = ctx.settings.delay_jobs
    topic = ctx.topic(f"delays-{low:g}-{high:g}")
    path = ctx.report_path(topic)
    forwarder = ctx.script("forwarder", "run_forwarder.py", "--bootstrap", ctx.bootstrap,
                           "--topic", topic)  # fmt: skip
    wait_until("the forwarder", lambda: "FORWARDING" in forwarder.output(), 60, forwarder)
    worker = ctx.worker(f"delays-{low:g}-{high:g}", topic, unique("bench"), "kq",
                        "--no-scheduling", "--max", count + 1)  # fmt: skip
    queue = Queue.connect(ctx.bootstrap, topic)
    # As on a topic in use: the tiers exist and the forwarder has joined its group
    # (a forwarder finds tiers created after it started within seconds, which
    # would make the first jobs of the run late).
    queue.using(delay=0.2).enqueue(jobs.stamp, str(path), "warm")
    wait_until("the warm-up delayed job", has_stamps(path, ["warm"]), 90, forwarder)
    per = count // _STEPS
    for step in range(_STEPS):
        delay = low + (high - low) * step / max(_STEPS - 1, 1)
        with queue.using(delay=delay).batch() as batch:
            for _ in range(per if step < _STEPS - 1 else count - per * (_STEPS - 1)):
                # the job records its start minus this due time (kq's own is µs later)
                batch.enqueue(jobs.latency, str(path), time.time() + delay)
    wait_until("every delayed job", lambda: count_lines(path) >= count + 1, high + 120, worker)
    worker.wait(60)
    forwarded = _tier_records(ctx, topic)
    result = forwarder.terminate(60)
    lateness = read_report(path).latencies
    if len(lateness) != count:
        raise BenchError(f"{len(lateness)} of {count} delayed jobs ran")
    return Delayed(count, low, high, lateness, forwarded, float(result["cpu"]))


def route_before(home: str, due_ms: int, now_ms: int) -> str:
    """The routing before issue 17: the largest tier not longer than the wait."""
    chosen = TIERS[0][0]
    for suffix, seconds in TIERS:
        if seconds * 1000 <= due_ms - now_ms:
            chosen = suffix
    return delay_topic(home, chosen)


def hops(delay_ms: int, router: Router = route) -> int:
    """Records the forwarder writes for one job delayed ``delay_ms``, on an ideal clock."""
    now, due = 0, delay_ms
    tier = router("t", due, now)
    written = 0
    while True:
        when = timing(tier_of(tier) or 0, now, due, now)
        now = when.ready
        written += 1
        if due <= now + DUE_SLACK_MS:
            return written
        tier = router("t", due, now)


def mean_hops(low: float, high: float, router: Router = route, steps: int = 3600) -> float:
    """Mean of ``hops`` over delays spread evenly from ``low`` to ``high`` seconds."""
    delays_ms = [int(1000 * (low + (high - low) * i / (steps - 1))) for i in range(steps)]
    return statistics.fmean(hops(d, router) for d in delays_ms)


DELAY_RANGES = ((1.0, 10.0), (5.0, 60.0))
MODEL_RANGES = ((1.0, 60.0), (60.0, 600.0), (600.0, 3600.0), (1.0, 3600.0))
