"""Scenarios of cost as work grows (issue 17): concurrency, partitions, head-of-line.

- ``concurrency``: no-op jobs drained at concurrency 1 and 8 (unkeyed, 1,000
  keys, 1 key): what concurrency costs a short job;
- ``partitions``: ``queue.batch()`` to topics of 1, 16, 64 and 256 partitions,
  fresh and warmed (see ``enqueue_to_partitions``);
- ``resume``: jobs run again after a SIGKILL, with and without exact resume
  (behind a slow job, and mid-drain at full speed), the drain rate with and
  without it, and a worker's memory behind a slow job with and without the
  head-of-line limit.

Each returns one repetition's figures; ``cli`` takes medians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTP

from bench.harness import (
    BenchError,
    Child,
    MemorySampler,
    Record,
    count_lines,
    job_bytes,
    jobs,
    prefill,
    read_report,
    unique,
    wait_until,
)
from bench.scenarios import Context, Rated, _drained, _stamped
from kq._resume import decode

# -- concurrency -------------------------------------------------------------------

CONCURRENCY_KEYS = ("unkeyed", "1000-keys", "1-key")


def concurrency(ctx: Context, keys: str, level: int) -> Rated:
    """No-op jobs per second drained by one kq worker at ``level``, keyed as ``keys`` says."""
    count = ctx.settings.concurrency_jobs
    topic = ctx.topic(f"conc-{keys}-c{level}")
    path = ctx.report_path(topic)
    records = _stamped(topic, path, count, {0: "first", count - 1: "last"})
    if keys != "unkeyed":
        distinct = 1000 if keys == "1000-keys" else 1
        records = [Record(r.value, f"k{i % distinct}".encode(), 0) for i, r in enumerate(records)]
    prefill(ctx.bootstrap, topic, records)
    options = ["kq", "--concurrency", level, "--max", count]
    result = ctx.worker(f"conc-{keys}-c{level}", topic, unique("bench"), *options).wait(
        120 + count / 500
    )
    if result["processed"] != count:
        raise BenchError(f"processed {result['processed']} of {count}")
    return _drained(path, count)


# -- batched enqueue and partitions ---------------------------------------------------

PARTITIONS = (1, 16, 64, 256)


def _warm(bootstrap: str, topic: str, partitions: int) -> None:
    """Give every partition its first index entry: two produce batches, more than 4 KiB first.

    A broker creates a partition segment's offset and time indexes at the
    first index entry (after ``index.interval.bytes``, 4 KiB, of appends),
    which costs ~40 ms per partition on the benchmark's VM: once per segment.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for per_partition in (48, 1):
        for partition in range(partitions):
            for _ in range(per_partition):
                producer.produce(topic, b"w" * 128, None, partition)
        if producer.flush(120):
            raise BenchError(f"warming {topic}: records not delivered")


def enqueue_to_partitions(
    ctx: Context, partitions: int, warmed: bool, client: str = "confluent"
) -> float:
    """Jobs per second through ``with queue.batch()`` to a topic of ``partitions`` partitions.

    ``warmed``: every partition was written to before (a topic in use);
    otherwise the topic is new, and the broker's first index entry of each
    partition falls inside the timing.
    """
    count = ctx.settings.partition_jobs
    topic = ctx.topic(f"parts-{partitions}-{'warm' if warmed else 'new'}", partitions)
    if warmed:
        _warm(ctx.bootstrap, topic, partitions)
    name = f"parts-{partitions}-{'warm' if warmed else 'new'}-{client}"
    result = ctx.enqueuer(name, topic, "batch", "--count", count, "--client", client).wait(300)
    return float(count / result["seconds"])


# -- head-of-line and exact resume ------------------------------------------------------


def _finished_recorded(bootstrap: str, group: str, topic: str) -> int:
    """How many finished offsets the group's commit of partition 0 records in its metadata."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([CTP(topic, 0)], timeout=10)
    finally:
        consumer.close()
    known = decode(tp.metadata, tp.offset) if tp.offset >= 0 else None
    return 0 if known is None else known.count


@dataclass
class Reruns:
    """What a SIGKILL cost: jobs that ran before it, and jobs that then ran a second time."""

    ran_before_kill: int
    ran_again: int


def _counting_records(topic: str, path: str, count: int, first: int = 0) -> list[Record]:
    return [Record(job_bytes(topic, jobs.count, path, first + i)) for i in range(count)]


def _kill_and_replace(
    ctx: Context,
    topic: str,
    group: str,
    options: list[object],
    ready: Any,
    path: Any,
    total: int,
    name: str,
) -> Reruns:
    first: Child = ctx.worker(f"{name}-first", topic, group, "kq", *options)
    wait_until(f"{name}: the moment to kill", ready, 300, first)
    first.proc.kill()
    first.proc.wait(30)
    ran = sum(read_report(path).runs.values())
    second = ctx.worker(f"{name}-second", topic, group, "kq", *options)
    wait_until(
        f"{name}: every job ran",
        lambda: len(read_report(path).runs) >= total,
        300 + total / 500,
        second,
    )
    second.terminate(60)
    runs = read_report(path).runs
    return Reruns(ran, sum(runs.values()) - len(runs))


def reruns_behind_a_slow_job(ctx: Context, exact: bool) -> Reruns:
    """A slow job, then 2x ``head_of_line_limit`` jobs, concurrency 8: SIGKILL once the
    partition is blocked at the limit and two commit intervals passed; a new worker
    takes over. How many jobs ran a second time?"""
    s = ctx.settings
    count = 2 * s.head_of_line_limit
    topic = ctx.topic(f"rerun-slow-{'exact' if exact else 'plain'}")
    path = ctx.report_path(topic)
    marker = ctx.workdir / f"{topic}.slow"
    records = [Record(job_bytes(topic, jobs.slow_once, str(path), str(marker), 600.0))]
    records += _counting_records(topic, str(path), count)
    prefill(ctx.bootstrap, topic, records)
    group = unique("bench")
    options: list[object] = ["--concurrency", 8, "--head-of-line-limit", s.head_of_line_limit]
    if not exact:
        options.append("--no-exact-resume")
    blocked_at: list[float] = []

    def ready() -> bool:
        # blocked at the limit (nothing more runs), then two commit intervals
        if count_lines(path) < s.head_of_line_limit:
            return False
        if not blocked_at:
            blocked_at.append(time.monotonic())
        return time.monotonic() - blocked_at[0] >= 2.5

    result = _kill_and_replace(ctx, topic, group, options, ready, path, count + 1, "rerun-slow")
    if exact and _finished_recorded(ctx.bootstrap, group, topic) != 0:
        raise BenchError("the replacement left finished offsets in the final commit")
    return result


def reruns_mid_drain(ctx: Context, exact: bool) -> Reruns:
    """No-op jobs (each records its run) drained at full speed, concurrency 8; SIGKILL
    halfway, a new worker takes over. How many ran a second time?"""
    count = ctx.settings.mid_drain_jobs
    topic = ctx.topic(f"rerun-mid-{'exact' if exact else 'plain'}")
    path = ctx.report_path(topic)
    prefill(ctx.bootstrap, topic, _counting_records(topic, str(path), count))
    options: list[object] = ["--concurrency", 8]
    if not exact:
        options.append("--no-exact-resume")
    return _kill_and_replace(
        ctx,
        topic,
        unique("bench"),
        options,
        lambda: count_lines(path) >= count // 2,
        path,
        count,
        "rerun-mid",
    )


def drain_at_concurrency_8(ctx: Context, exact: bool) -> Rated:
    """No-op jobs per second at concurrency 8, with or without exact resume's metadata."""
    count = ctx.settings.concurrency_jobs
    topic = ctx.topic(f"resume-rate-{'exact' if exact else 'plain'}")
    path = ctx.report_path(topic)
    prefill(ctx.bootstrap, topic, _stamped(topic, path, count, {0: "first", count - 1: "last"}))
    options: list[object] = ["kq", "--concurrency", 8, "--max", count]
    if not exact:
        options.append("--no-exact-resume")
    name = f"resume-rate-{'exact' if exact else 'plain'}"
    result = ctx.worker(name, topic, unique("bench"), *options).wait(120 + count / 500)
    if result["processed"] != count:
        raise BenchError(f"processed {result['processed']} of {count}")
    return _drained(path, count)


@dataclass
class HeadOfLine:
    """A worker behind a slow job: its peak memory, and how many jobs finished behind it."""

    peak_mb: float
    finished_behind: int


def behind_a_slow_job(ctx: Context, limited: bool) -> HeadOfLine:
    """One slow job, then many short jobs, concurrency 8: the worker's peak RSS while the
    slow job runs, and how many jobs finished behind it by its end (what a crash then
    would have run again without exact resume), with the head-of-line limit (its
    default) or without one (as before it existed)."""
    s = ctx.settings
    count = s.behind_jobs
    mode = "limited" if limited else "unlimited"
    topic = ctx.topic(f"hol-{mode}")
    path = ctx.report_path(topic)
    marker = ctx.workdir / f"{topic}.slow"
    records = [Record(job_bytes(topic, jobs.slow_once, str(path), str(marker), s.slow_seconds))]
    records += _counting_records(topic, str(path), count)
    prefill(ctx.bootstrap, topic, records)
    limit = 10_000 if limited else 1 << 40
    options = ["kq", "--concurrency", 8, "--head-of-line-limit", limit, "--max", count + 1]
    worker = ctx.worker(f"hol-{mode}", topic, unique("bench"), *options)
    with MemorySampler(worker.proc.pid, interval=0.1) as sampler:
        worker.wait(120 + s.slow_seconds + count / 500)
    stamps = read_report(path).stamps
    if "slow-end" not in stamps:
        raise BenchError("the slow job never ended")
    during = [rss for at, rss, _ in sampler.samples if at < stamps["slow-end"].at]
    if not during:
        raise BenchError("no memory sample while the slow job ran")
    behind = 0
    for line in path.read_text().splitlines():
        if line.startswith("stamp slow-end"):
            break
        if line.startswith("run ") and line != "run slow":
            behind += 1
    return HeadOfLine(max(during) / 1024, behind)
