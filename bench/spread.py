"""How evenly unkeyed jobs spread over partitions, and what that does to a group of workers.

- ``burst``: 400 single ``queue.enqueue`` calls of unkeyed jobs into a
  4-partition topic; how many landed on the fullest partition over the
  emptiest (1.0: exactly even);
- ``two_process_drain``: 2,000 jobs of 10 ms through ``queue.batch()`` into
  4 partitions, drained by two kq worker processes of one group started
  together; when the later one finished over when the earlier one did (1.0:
  both finished together, neither sat idle while the other worked).

Both clients, one repetition each per call; ``cli`` takes medians.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from bench.harness import BenchError, job_bytes, jobs, read_report, unique, wait_until
from bench.scenarios import Context, _gated
from kq import Queue
from kq._admin import Cluster
from kq.clients import ClientName, make_producer

SPREAD_PARTITIONS = 4
BURST_JOBS = 400
DRAIN_JOBS = 2000
DRAIN_JOB_SECONDS = 0.01


@dataclass
class Burst:
    """Jobs per partition after a burst of single enqueues."""

    counts: list[int]

    @property
    def ratio(self) -> float:
        """Fullest partition over emptiest (inf when one got none)."""
        low = min(self.counts)
        return float("inf") if low == 0 else max(self.counts) / low


def burst(ctx: Context, client: ClientName, raw: bool) -> Burst:
    """400 unkeyed single enqueues into 4 partitions: jobs per partition.

    ``raw``: the same records through a producer with kq's settings, each sent
    and acknowledged alone, placed by the client's own partitioner (the reference).
    """
    topic = ctx.topic(f"burst-{client}{'-raw' if raw else ''}", SPREAD_PARTITIONS)
    if raw:
        producer = make_producer(ctx.bootstrap, client=client)
        value = job_bytes(topic, jobs.noop)
        for _ in range(BURST_JOBS):
            if client == "kafka-python":
                producer.send(topic, value).get(30)
            else:
                producer.produce(topic, value)
                producer.flush(30)
        if client == "kafka-python":
            producer.close(10)
    else:
        queue = Queue.connect(ctx.bootstrap, topic, client=client)
        for _ in range(BURST_JOBS):
            queue.enqueue(jobs.noop)
    with Cluster(ctx.bootstrap, timeout=10.0) as cluster:
        counts = [cluster.watermarks(topic, p)[1] for p in range(SPREAD_PARTITIONS)]
    if sum(counts) != BURST_JOBS:
        raise BenchError(f"{sum(counts)} of {BURST_JOBS} jobs in the topic")
    return Burst(counts)


def two_process_drain(ctx: Context, client: ClientName) -> float:
    """Two worker processes drain a batch of 10 ms jobs: later finish over earlier finish."""
    topic = ctx.topic(f"drain2-{client}", SPREAD_PARTITIONS)
    path = ctx.report_path(topic)
    queue = Queue.connect(ctx.bootstrap, topic, client=client)
    with queue.batch() as batch:
        for _ in range(DRAIN_JOBS):
            batch.enqueue(jobs.sleep_done, str(path), DRAIN_JOB_SECONDS)
    group = unique("bench")
    children = [ctx.worker(f"drain2-{client}", topic, group, "kq", gate=True) for _ in range(2)]
    for child in children:
        wait_until("worker built", functools.partial(_gated, child), 60, child)
    started = time.monotonic()
    for child in children:
        child.go()
    wait_until(
        "every job of the two-process drain",
        lambda: len(read_report(path).done) >= DRAIN_JOBS,
        120 + DRAIN_JOBS * DRAIN_JOB_SECONDS,
        None,
    )
    for child in children:
        child.terminate(60)
    last: dict[int, float] = {}
    for pid, end in read_report(path).done:
        last[pid] = max(last.get(pid, end), end)
    if len(last) != 2:
        raise BenchError(f"{len(last)} process(es) ran the jobs, not 2")
    finishes = sorted(end - started for end in last.values())
    return finishes[1] / finishes[0]
