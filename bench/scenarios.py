"""The benchmark's scenarios: each run measures kq and its reference in the same broker.

Every function runs one repetition on a fresh topic (and group) and returns
its figures; ``cli`` repeats them and takes medians. Drain rates are timed
inside the worker, from the first job's start to the last job's start
(``jobs.stamp`` at both ends), so process start-up and the group join are
not part of them.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH_DIR,
    BenchError,
    Child,
    Children,
    MemorySampler,
    Record,
    has_stamps,
    job_bytes,
    jobs,
    prefill,
    python_script,
    read_report,
    unique,
    wait_until,
)

sys.path.append(str(BENCH_DIR.parent / "tests"))
import legacy_kq  # tests/legacy_kq.py: builds and runs the KQ 2.2.1 venv

IO_SECONDS = 0.02  # the IO-bound job's sleep
LEGACY_VERSION = legacy_kq.LEGACY_KQ_VERSION


def prepare_legacy() -> None:
    """Create the KQ 2.2.1 venv unless it exists (pip, once)."""
    legacy_kq.legacy_python()


@dataclass(frozen=True)
class Settings:
    """Counts and repetitions: the default run, or ``--quick``."""

    runs: int
    drain: int
    drain_legacy: int
    enqueue_single: int
    enqueue_batch: int
    enqueue_legacy: int
    io_per_lane: int
    io_keys: int
    latency_rate: float
    latency_seconds: float
    scaling: int
    rss: int
    concurrency_jobs: int
    partition_jobs: int
    head_of_line_limit: int
    mid_drain_jobs: int
    behind_jobs: int
    slow_seconds: float
    delay_jobs: int
    max_in_flight: int = 1000

    @classmethod
    def default(cls) -> Settings:
        """Six to eight minutes on two cores."""
        return cls(
            runs=3,
            drain=200_000,
            drain_legacy=2_000,
            enqueue_single=1_000,
            enqueue_batch=200_000,
            enqueue_legacy=1_000,
            io_per_lane=100,
            io_keys=1024,
            latency_rate=200.0,
            latency_seconds=5.0,
            scaling=300_000,
            rss=1_000_000,
            concurrency_jobs=200_000,
            partition_jobs=200_000,
            head_of_line_limit=10_000,
            mid_drain_jobs=100_000,
            behind_jobs=200_000,
            slow_seconds=10.0,
            delay_jobs=20_000,
        )

    @classmethod
    def quick(cls) -> Settings:
        """One run of each, smaller counts: under two minutes."""
        return cls(
            runs=1,
            drain=50_000,
            drain_legacy=500,
            enqueue_single=300,
            enqueue_batch=50_000,
            enqueue_legacy=300,
            io_per_lane=50,
            io_keys=1024,
            latency_rate=200.0,
            latency_seconds=3.0,
            scaling=100_000,
            rss=100_000,
            concurrency_jobs=50_000,
            partition_jobs=50_000,
            head_of_line_limit=2_000,
            mid_drain_jobs=20_000,
            behind_jobs=50_000,
            slow_seconds=5.0,
            delay_jobs=5_000,
        )


@dataclass
class Context:
    """What every scenario needs: the broker, the children, a folder, the settings."""

    bootstrap: str
    create_topic: Callable[[str, int], None]
    children: Children
    workdir: Path
    settings: Settings
    # a prefix for every child argv (py-spy when profiling), by worker name
    wrap: dict[str, list[str]] = field(default_factory=dict)

    def topic(self, prefix: str, partitions: int = 1) -> str:
        """A fresh topic."""
        name = unique(prefix)
        self.create_topic(name, partitions)
        return name

    def report_path(self, topic: str) -> Path:
        """Where the jobs of a topic's run write."""
        return self.workdir / f"{topic}.report"

    def script(self, name: str, script: str, *args: object, gate: bool = False) -> Child:
        """Start one of ``bench/``'s child scripts (under ``wrap[name]``, if any)."""
        argv = [*self.wrap.get(name, []), *python_script(script, *args)]
        return self.children.start(name, argv, gate=gate)

    def worker(
        self, name: str, topic: str, group: str, *options: object, gate: bool = False
    ) -> Child:
        """Start ``run_worker.py`` (``options`` start with its mode)."""
        connection = ("--bootstrap", self.bootstrap, "--topic", topic, "--group", group)
        extra = ("--gate",) if gate else ()
        return self.script(name, "run_worker.py", *options, *connection, *extra, gate=gate)

    def enqueuer(self, name: str, topic: str, mode: str, *options: object) -> Child:
        """Start ``run_enqueue.py`` in ``mode``."""
        connection = ("--bootstrap", self.bootstrap, "--topic", topic)
        return self.script(name, "run_enqueue.py", mode, *connection, *options)


def _run_legacy(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run a script of ``bench/`` in the KQ 2.2.1 venv, with only ``bench/`` on its path."""
    proc = legacy_kq.run_legacy(BENCH_DIR / script, *args, timeout=timeout, pythonpath=[BENCH_DIR])
    if proc.returncode != 0:
        raise BenchError(f"KQ 2.2.1 {script} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            if result.get("version") != legacy_kq.LEGACY_KQ_VERSION:
                raise BenchError(f"the legacy venv ran kq {result.get('version')}, not KQ 2.2.1")
            return result
    raise BenchError(f"KQ 2.2.1 {script} printed no result:\n{proc.stderr[-3000:]}")


def _stamped(
    topic: str, path: Path, count: int, labels: dict[int, str], partition: int = 0
) -> list[Record]:
    """``count`` no-op jobs with ``jobs.stamp`` jobs at the given positions.

    The no-op jobs share one serialized value: the worker's cost per job is the
    same, and a million distinct ones would take the pre-fill longer than the drain.
    """
    noop = job_bytes(topic, jobs.noop)
    records = [Record(noop, None, partition)] * count
    for index, label in labels.items():
        records[index] = Record(job_bytes(topic, jobs.stamp, str(path), label), None, partition)
    return records


def _rate(path: Path, count: int, first: list[str], last: list[str]) -> float:
    """Jobs per second between the earliest ``first`` stamp and the latest ``last`` stamp."""
    stamps = read_report(path).stamps
    missing = [label for label in first + last if label not in stamps]
    if missing:
        raise BenchError(f"stamps {missing} missing in {path}")
    start = min(stamps[label].at for label in first)
    end = max(stamps[label].at for label in last)
    if end <= start:
        raise BenchError(f"stamps out of order in {path}")
    return (count - 1) / (end - start)


@dataclass
class Rated:
    """Wall-clock rate, and CPU per job (all threads of the measured process)."""

    rate: float
    cpu_us: float


def _drained(path: Path, count: int) -> Rated:
    stamps = read_report(path).stamps
    rate = _rate(path, count, ["first"], ["last"])
    cpu = stamps["last"].cpu - stamps["first"].cpu
    return Rated(rate, cpu / (count - 1) * 1e6)


# -- 1. drain ------------------------------------------------------------------

DRAIN_SYSTEMS = ("raw", "kq-confluent", "kq-kafka-python", "legacy")


def drain(ctx: Context, system: str) -> Rated:
    """No-op jobs per second drained by one process of ``system``, and its CPU per job."""
    count = ctx.settings.drain_legacy if system == "legacy" else ctx.settings.drain
    topic = ctx.topic(f"drain-{system}")
    path = ctx.report_path(topic)
    prefill(ctx.bootstrap, topic, _stamped(topic, path, count, {0: "first", count - 1: "last"}))
    group = unique("bench")
    timeout = 120 + count / 500
    if system == "legacy":
        args = (ctx.bootstrap, topic, group, str(count))
        _run_legacy("run_legacy_worker.py", *args, timeout=timeout)
    else:
        if system == "raw":
            options: list[object] = ["raw"]
        else:
            client = system.removeprefix("kq-")
            options = ["kq", "--client", client, "--max-in-flight", ctx.settings.max_in_flight]
        result = ctx.worker(f"drain-{system}", topic, group, *options, "--max", count).wait(timeout)
        if result["processed"] != count:
            raise BenchError(f"{system} processed {result['processed']} of {count}")
    return _drained(path, count)


# -- 2. enqueue ----------------------------------------------------------------

ENQUEUE_SYSTEMS = ("raw", "batch", "many", "single", "single-kafka-python", "legacy")


def enqueue(ctx: Context, system: str) -> Rated:
    """Jobs per second enqueued (acknowledged by the broker) one way, and CPU per job."""
    s = ctx.settings
    topic = ctx.topic(f"enqueue-{system}")
    if system == "legacy":
        count = s.enqueue_legacy
        result = _run_legacy("run_legacy_enqueue.py", ctx.bootstrap, topic, str(count), timeout=300)
    else:
        count = s.enqueue_single if system.startswith("single") else s.enqueue_batch
        mode, _, client = system.partition("-")
        options = ("--count", count, "--client", client or "confluent")
        result = ctx.enqueuer(f"enqueue-{system}", topic, mode, *options).wait(300)
    cpu = result.get("cpu_seconds")
    return Rated(count / result["seconds"], float("nan") if cpu is None else cpu / count * 1e6)


# -- 3. IO-bound jobs, key order -----------------------------------------------

IO_CONCURRENCY = (1, 8, 64)


@dataclass
class IoResult:
    """Throughput of one IO-bound run and what its order check found."""

    rate: float
    order_ok: bool
    problems: list[str]


def io_bound(ctx: Context, concurrency: int) -> IoResult:
    """20 ms sleeping jobs with many keys on one partition, at ``concurrency``."""
    s = ctx.settings
    count = s.io_per_lane * concurrency
    topic = ctx.topic(f"io-c{concurrency}")
    path = ctx.report_path(topic)
    keys = [f"k{n:04d}" for n in range(s.io_keys)]
    records = []
    for i in range(count):
        key, seq = keys[i % len(keys)], i // len(keys)
        value = job_bytes(topic, jobs.io_sleep, str(path), key, seq, IO_SECONDS)
        records.append(Record(value, key.encode(), 0))
    prefill(ctx.bootstrap, topic, records)
    options = ["kq", "--concurrency", concurrency, "--max", count]
    child = ctx.worker(f"io-c{concurrency}", topic, unique("bench"), *options)
    child.wait(120 + count * IO_SECONDS)
    runs = read_report(path).io
    problems = check_key_order(runs, keys, count)
    starts = [r[2] for r in runs]
    ends = [r[3] for r in runs]
    return IoResult(len(runs) / (max(ends) - min(starts)), not problems, problems)


def check_key_order(
    runs: list[tuple[str, int, float, float]], keys: list[str], count: int
) -> list[str]:
    """Per key: every seq ran exactly once, in ascending order, never overlapping the previous."""
    problems: list[str] = []
    if len(runs) != count:
        problems.append(f"{len(runs)} jobs ran, {count} enqueued")
    by_key: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for key, seq, start, end in runs:
        by_key[key].append((start, end, seq))
    for index, key in enumerate(keys):
        expected = count // len(keys) + (1 if index < count % len(keys) else 0)
        ran = sorted(by_key.get(key, []))
        seqs = [seq for _, _, seq in ran]
        if seqs != list(range(expected)):
            problems.append(f"key {key}: seqs in start order {seqs[:8]}..., want 0..{expected - 1}")
        for (_, prev_end, prev_seq), (start, _, seq) in itertools.pairwise(ran):
            if start < prev_end:
                problems.append(f"key {key}: seq {seq} started before seq {prev_seq} ended")
    return problems[:5]


# -- 4. latency ----------------------------------------------------------------

LATENCY_SYSTEMS = ("raw", "kq")


def latency(ctx: Context, system: str) -> tuple[float, float]:
    """(p50, p99) in ms from just before enqueue to the job's start, at a light steady load."""
    s = ctx.settings
    topic = ctx.topic(f"latency-{system}")
    path = ctx.report_path(topic)
    total = int(s.latency_rate * s.latency_seconds)
    worker_mode = "kq" if system == "kq" else "raw-poll"
    worker = ctx.worker(
        f"latency-{system}", topic, unique("bench"), worker_mode, "--max", total + 1
    )
    # one job first: the worker has joined its group and fetched once before timing starts
    prefill(ctx.bootstrap, topic, [Record(job_bytes(topic, jobs.stamp, str(path), "ready"))])
    wait_until("latency worker ready", has_stamps(path, ["ready"]), 60, worker)
    mode = "paced-kq" if system == "kq" else "paced-raw"
    options = ("--rate", s.latency_rate, "--seconds", s.latency_seconds, "--path", path)
    ctx.enqueuer(f"latency-enqueue-{system}", topic, mode, *options).wait(
        60 + s.latency_seconds * 3
    )
    worker.wait(60)
    seconds = read_report(path).latencies
    if len(seconds) != total:
        raise BenchError(f"{len(seconds)} latencies recorded, {total} jobs enqueued")
    return percentile(seconds, 0.50) * 1000, percentile(seconds, 0.99) * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- 5. scaling ----------------------------------------------------------------


@dataclass
class ScalingResult:
    """Throughput of one scaling run and how the partitions were shared."""

    rate: float
    pids_per_partition: dict[int, int]


def _gated(child: Child) -> bool:
    return "GATE" in child.output()


def scaling(ctx: Context, workers: int) -> ScalingResult:
    """No-op jobs per second drained by ``workers`` processes of one group, 2 partitions."""
    count = ctx.settings.scaling
    per = count // 2
    topic = ctx.topic("scaling", partitions=2)
    path = ctx.report_path(topic)
    records: list[Record] = []
    for p in (0, 1):
        records += _stamped(topic, path, per, {0: f"first-{p}", per - 1: f"last-{p}"}, partition=p)
    prefill(ctx.bootstrap, topic, records)
    group = unique("bench")
    children = [
        ctx.worker(f"scaling-w{workers}", topic, group, "kq", gate=True) for _ in range(workers)
    ]
    for child in children:
        wait_until("worker built", functools.partial(_gated, child), 60, child)
    for child in children:
        child.go()
    wait_until(
        "both partitions drained",
        has_stamps(path, ["last-0", "last-1"]),
        120 + count / 1000,
        None,
    )
    for child in children:
        child.terminate(60)
    stamps = read_report(path).stamps
    pids = {p: stamps[f"last-{p}"].pid for p in (0, 1)}
    return ScalingResult(_rate(path, 2 * per, ["first-0", "first-1"], ["last-0", "last-1"]), pids)


# -- 6. memory -----------------------------------------------------------------

RSS_POINTS = (0, 10, 25, 50, 75, 100)  # percent of the backlog at which the job reports RSS
RSS_REFERENCE = 25  # the client's prefetch buffers are full by then: the plateau starts


@dataclass
class RssResult:
    """Memory of one worker over a large backlog."""

    count: int
    max_in_flight: int
    rss_mb: dict[int, float]  # at each point of RSS_POINTS
    peak_mb: float
    sampled_max_mb: float
    samples: int
    rate: float


def rss(ctx: Context) -> RssResult:
    """Drain ``settings.rss`` no-op jobs with one kq worker; RSS at points, and its peak."""
    count = ctx.settings.rss
    topic = ctx.topic("rss")
    path = ctx.report_path(topic)
    labels = {min(count - 1, count * pct // 100): f"p{pct}" for pct in RSS_POINTS}
    prefill(ctx.bootstrap, topic, _stamped(topic, path, count, labels))
    options = ["kq", "--max-in-flight", ctx.settings.max_in_flight, "--max", count]
    child = ctx.worker("rss", topic, unique("bench"), *options)
    with MemorySampler(child.proc.pid) as sampler:
        child.wait(180 + count / 500)
    stamps = read_report(path).stamps
    points = {pct: stamps[f"p{pct}"].rss_kb / 1024 for pct in RSS_POINTS}
    peak = max([stamps["p100"].hwm_kb] + [hwm for _, _, hwm in sampler.samples]) / 1024
    sampled = max((rss for _, rss, _ in sampler.samples), default=0) / 1024
    return RssResult(
        count,
        ctx.settings.max_in_flight,
        points,
        peak,
        sampled,
        len(sampler.samples),
        _rate(path, count, ["p0"], ["p100"]),
    )


def median(values: list[float]) -> float:
    """The median (of the runs that succeeded)."""
    return statistics.median(values)
