"""The soak: ``kq worker`` as an operator runs it, at a steady rate for minutes (on demand).

``python -m bench --only soak [--soak-seconds 300] [--soak-rate 5000]``: a
4-partition topic, the installed ``kq worker`` command with its defaults
(concurrency 4), and an enqueuer sending ``jobs.count`` jobs in a
``queue.batch()`` every tenth of a second. Sampled: the worker's RSS
(/proc, every second) and the group's lag (end - committed, every 5 s).
At the end: jobs lost (enqueued, never run) and duplicated (run more than
once), the rate reached, and how many bytes the worker logged. Not part of
the default run (it takes the minutes it is given) nor of CI.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import BENCH_DIR, BenchError, MemorySampler, read_report, unique, wait_until
from bench.scenarios import Context
from kq._admin import Cluster, ClusterError

SOAK_PARTITIONS = 4


@dataclass
class SoakResult:
    """What the soak measured."""

    seconds: float
    rate: float  # wanted
    sent: int
    ran: int
    lost: int
    duplicated: int
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds in, MB)
    lag: list[tuple[float, int]] = field(default_factory=list)  # (seconds in, jobs)
    log_bytes: int = 0
    drained_after: float = 0.0  # seconds after the last enqueue until every job had run

    def rss_at(self, fraction: float) -> float:
        """RSS (MB) at the sample nearest that fraction of the run."""
        if not self.rss_mb:
            return float("nan")
        at = self.seconds * fraction
        return min(self.rss_mb, key=lambda s: abs(s[0] - at))[1]

    def lag_quantile(self, q: float) -> int:
        """A quantile of the lag samples."""
        values = sorted(v for _, v in self.lag)
        if not values:
            return -1
        return values[min(len(values) - 1, int(q * len(values)))]

    def lines(self) -> list[str]:
        """The soak's report, one fact per line."""
        rss = [mb for _, mb in self.rss_mb]
        return [
            f"{self.sent:,} jobs enqueued at {self.rate:,.0f}/s for {self.seconds:.0f} s into"
            f" {SOAK_PARTITIONS} partitions; `kq worker` (its defaults, --concurrency 4) ran"
            f" {self.ran:,} of them; every job had run {self.drained_after:.1f} s after the"
            " last enqueue.",
            f"Lost: {self.lost}. Duplicated (ran more than once): {self.duplicated}.",
            f"Worker RSS (MB) at 10% / 50% / 100% of the run: {self.rss_at(0.1):.0f} /"
            f" {self.rss_at(0.5):.0f} / {self.rss_at(1.0):.0f}; max {max(rss, default=0):.0f}"
            f" ({len(rss)} samples).",
            f"Lag (end - committed, all partitions; {len(self.lag)} samples every 5 s): median"
            f" {self.lag_quantile(0.5):,}, p99 {self.lag_quantile(0.99):,}, max"
            f" {max((v for _, v in self.lag), default=-1):,} jobs.",
            f"The worker logged {self.log_bytes:,} bytes (stderr) in all: its summary lines,"
            " not a line per job.",
        ]


def _lag(cluster: Cluster, topic: str, group: str) -> int | None:
    try:
        committed = cluster.committed(group, topic, range(SOAK_PARTITIONS))
        total = 0
        for partition in range(SOAK_PARTITIONS):
            low, high = cluster.watermarks(topic, partition)
            position = committed.get(partition)
            total += max(high - (low if position is None else max(position, low)), 0)
        return total
    except ClusterError:
        return None


def soak(ctx: Context, seconds: float, rate: float) -> SoakResult:
    """Run the soak; its figures."""
    topic = ctx.topic("soak", SOAK_PARTITIONS)
    path = ctx.report_path(topic)
    group = unique("soak")
    kq = str(Path(sys.executable).parent / "kq")
    worker = ctx.children.start(
        "soak-worker",
        [kq, "worker", topic, "-b", ctx.bootstrap, "-g", group, "--concurrency", "4"],
        cwd=BENCH_DIR,  # the jobs' module, as a project's folder
    )
    wait_until("the soak worker", lambda: "Partitions assigned" in worker.tail(200), 60, worker)
    result = SoakResult(seconds, rate, 0, 0, 0, 0)
    stop = threading.Event()
    started = time.monotonic()

    def sample_lag() -> None:
        with Cluster(ctx.bootstrap, timeout=5.0) as cluster:
            while not stop.wait(5.0):
                lag = _lag(cluster, topic, group)
                if lag is not None:
                    result.lag.append((time.monotonic() - started, lag))

    lag_thread = threading.Thread(target=sample_lag, name="soak-lag", daemon=True)
    lag_thread.start()
    with MemorySampler(worker.proc.pid, interval=1.0) as sampler:
        options = ("--rate", rate, "--seconds", seconds, "--path", path)
        sent = ctx.enqueuer("soak-enqueue", topic, "paced-batch", *options).wait(seconds * 3 + 120)
        enqueued_at = time.monotonic()
        result.sent = int(sent["count"])
        wait_until(
            "every soak job to run",
            lambda: len(read_report(path).runs) >= result.sent,
            120 + seconds,
            worker,
        )
        result.drained_after = time.monotonic() - enqueued_at
    stop.set()
    lag_thread.join(30)
    worker.proc.send_signal(signal.SIGTERM)  # the command's graceful stop; it prints no RESULT
    if worker.proc.wait(60) != 0:
        raise BenchError(f"kq worker exited with {worker.proc.returncode}:\n{worker.tail()}")
    runs = read_report(path).runs
    result.ran = len(runs)
    result.lost = sum(1 for seq in range(result.sent) if str(seq) not in runs)
    result.duplicated = sum(runs.values()) - len(runs)
    result.rss_mb = [(at - started, rss / 1024) for at, rss, _ in sampler.samples]
    result.log_bytes = worker.stderr.stat().st_size
    if result.ran == 0:
        raise BenchError("the soak worker ran nothing")
    return result
