"""The field benchmark's scenarios: one repetition of one system each, on fresh topics.

Every job reports to the run's file (``fieldjobs``); rates are timed from
what the jobs report, so process start-up and the group join are not part of
them. Workers are SIGKILLed (their whole process group) once measured: what
they would do after does not count, and no library's shutdown is timed.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.field.procs import Proc, Procs, wait_until
from bench.field.systems import KQ, RAW, System
from bench.harness import BenchError, unique
from kq import Worker

# kq.Worker's default: the drain and SIGKILL scenarios measure kq at it; the
# commit-interval sweep measures the other values.
DEFAULT_COMMIT_INTERVAL: float = inspect.signature(Worker).parameters["commit_interval"].default


@dataclass(frozen=True)
class FieldSettings:
    """Counts per system (slow peers get fewer jobs, so each run takes seconds) and repetitions."""

    runs: int
    drain: dict[str, int]
    single: dict[str, int]
    batch: dict[str, int]
    io: dict[str, int]
    io_concurrency: int = 64
    latency_rate: float = 200.0
    latency_seconds: float = 5.0
    sigkill_jobs: int = 3000
    sigkill_at: int = 1500
    commit_intervals: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)

    @classmethod
    def default(cls) -> FieldSettings:
        """Medians of 3."""
        return cls(
            runs=3,
            drain={
                "kq": 100_000,
                "raw": 200_000,
                "taskiq": 20_000,
                "faststream": 3_000,
                "celery": 5_000,
                "faust": 20_000,
            },
            single={
                "kq": 2_000,
                "taskiq": 2_000,
                "faststream": 2_000,
                "celery": 2_000,
                "faust": 2_000,
            },
            batch={
                "kq": 200_000,
                "raw": 400_000,
                "taskiq": 20_000,
                "faststream": 200_000,
                "celery": 3_000,
                "faust": 50_000,
            },
            io={"kq": 6_400, "taskiq": 6_400, "faststream": 200, "celery": 6_400, "faust": 6_400},
        )

    @classmethod
    def quick(cls) -> FieldSettings:
        """One run, fewer jobs: to try the benchmark out."""
        return cls(
            runs=1,
            drain={
                "kq": 30_000,
                "raw": 50_000,
                "taskiq": 5_000,
                "faststream": 1_000,
                "celery": 1_000,
                "faust": 5_000,
            },
            single={"kq": 500, "taskiq": 500, "faststream": 500, "celery": 500, "faust": 500},
            batch={
                "kq": 50_000,
                "raw": 100_000,
                "taskiq": 5_000,
                "faststream": 10_000,
                "celery": 1_000,
                "faust": 5_000,
            },
            io={"kq": 1_280, "taskiq": 1_280, "faststream": 100, "celery": 1_280, "faust": 1_280},
            latency_seconds=2.0,
        )


@dataclass
class Field:
    """What every scenario needs: the broker, the processes, a folder, the settings."""

    bootstrap: str
    create_topic: Callable[[str], None]
    procs: Procs
    workdir: Path
    settings: FieldSettings

    def topic(self, prefix: str) -> tuple[str, Path]:
        """A fresh one-partition topic, and the report file of its run."""
        name = unique(prefix)
        self.create_topic(name)
        return name, self.workdir / f"{name}.report"

    def _env(self, topic: str, job: str, path: Path, **more: object) -> dict[str, str]:
        env = {"FIELD_BOOTSTRAP": self.bootstrap, "FIELD_TOPIC": topic, "FIELD_JOB": job}
        env["FIELD_PATH"] = str(path)
        env.update({f"FIELD_{k.upper()}": str(v) for k, v in more.items()})
        return env

    def enqueue(
        self, system: System, topic: str, job: str, path: Path, *args: object, timeout: float
    ) -> dict[str, float]:
        """Run ``system``'s enqueuer to its end; its result."""
        name = f"{system.name}-enqueue-{args[0]}"
        proc = system.start(
            self.procs,
            name,
            system.enqueue_command(*args),
            self._env(topic, job, path),
            self.workdir,
        )
        return proc.result(timeout)  # type: ignore[return-value]

    def fill(self, system: System, topic: str, job: str, count: int, path: Path) -> None:
        """Pre-fill ``count`` jobs with the system's own batched enqueue (untimed)."""
        self.enqueue(system, topic, job, path, "fill", "--count", count, timeout=120 + count / 200)

    def worker(
        self,
        system: System,
        topic: str,
        group: str,
        job: str,
        path: Path,
        concurrency: int = 1,
        **more: object,
    ) -> Proc:
        """Start one worker of ``system`` on ``topic``."""
        env = self._env(topic, job, path, group=group, concurrency=concurrency, **more)
        command = system.worker_command(concurrency)
        return system.start(self.procs, f"{system.name}-worker-{job}", command, env, self.workdir)


def read_lines(path: Path, kind: str) -> list[list[str]]:
    """The report's lines of one kind, split."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [parts for line in text.splitlines() if (parts := line.split()) and parts[0] == kind]


@dataclass
class Rated:
    """A rate and the CPU time per job (NaN where not measured)."""

    rate: float
    cpu_us: float = math.nan


# -- drain, enqueue, IO, latency ------------------------------------------------


def drain(f: Field, system: System, **more: object) -> Rated:
    """No-op jobs per second drained by one worker process, first job to last."""
    count = f.settings.drain[system.name]
    topic, path = f.topic(f"fd-{system.name}")
    f.fill(KQ if system is RAW else system, topic, "tick", count, path)
    worker = f.worker(system, topic, unique("field"), "tick", path, target=count, **more)
    try:
        wait_until(
            "the drain's last job",
            lambda: bool(read_lines(path, "drain")),
            90 + count / 300,
            worker,
        )
    finally:
        worker.kill()
    first, last, cpu = (float(x) for x in read_lines(path, "drain")[0][1:4])
    return Rated((count - 1) / (last - first), cpu / (count - 1) * 1e6)


def enqueue(f: Field, system: System, mode: str) -> Rated:
    """Jobs per second enqueued one way (``single`` or ``batch``), durable at the end."""
    count = (f.settings.single if mode == "single" else f.settings.batch)[system.name]
    topic, path = f.topic(f"fe-{system.name}")
    result = f.enqueue(
        system, topic, "tick", path, mode, "--count", count, timeout=120 + count / 100
    )
    return Rated(count / result["seconds"], result["cpu"] / count * 1e6)


def io_bound(f: Field, system: System) -> Rated:
    """20 ms jobs per second at the library's concurrency knob, first start to last end."""
    count = f.settings.io[system.name]
    topic, path = f.topic(f"fi-{system.name}")
    f.fill(system, topic, "io", count, path)
    worker = f.worker(system, topic, unique("field"), "io", path, f.settings.io_concurrency)
    try:
        wait_until(
            "every IO-bound job",
            lambda: len(read_lines(path, "io")) >= count,
            90 + count * 0.03,
            worker,
        )
    finally:
        worker.kill()
    runs = read_lines(path, "io")
    if len({r[1] for r in runs}) != count:
        raise BenchError(f"{len({r[1] for r in runs})} distinct IO jobs ran of {count}")
    start = min(float(r[2]) for r in runs)
    end = max(float(r[3]) for r in runs)
    return Rated(count / (end - start))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency(f: Field, system: System) -> tuple[float, float]:
    """(p50, p99) in ms, enqueue to job start, at a steady rate to an idle worker."""
    s = f.settings
    total = int(s.latency_rate * s.latency_seconds)
    topic, path = f.topic(f"fl-{system.name}")
    worker = f.worker(system, topic, unique("field"), "lat", path)
    try:
        f.enqueue(
            system,
            topic,
            "lat",
            path,
            "paced",
            "--count",
            total,
            "--rate",
            s.latency_rate,
            timeout=150 + s.latency_seconds * 3,
        )

        def done() -> bool:
            return sum(1 for r in read_lines(path, "lat") if int(r[1]) >= 0) >= total

        wait_until("every latency job", done, 30, worker)
    finally:
        worker.kill()
    seconds = [float(r[2]) for r in read_lines(path, "lat") if int(r[1]) >= 0]
    return percentile(seconds, 0.50) * 1000, percentile(seconds, 0.99) * 1000


# -- SIGKILL --------------------------------------------------------------------


@dataclass
class Killed:
    """What a SIGKILLed worker and its replacement did with the jobs."""

    jobs: int
    ran_at_kill: int
    lost: int
    twice: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _marks(path: Path) -> list[tuple[int, int]]:
    return [(int(r[1]), int(r[2])) for r in read_lines(path, "mark")]


def sigkill(f: Field, system: System, **more: object) -> Killed:
    """A worker SIGKILLed in the middle of the jobs, a replacement started: lost, run twice."""
    s = f.settings
    jobs = s.sigkill_jobs
    started = time.monotonic()
    topic, path = f.topic(f"fk-{system.name}")
    f.fill(system, topic, "mark", jobs, path)
    group = unique("field")
    first = f.worker(system, topic, group, "mark", path, **more)
    try:
        wait_until(
            f"{s.sigkill_at} jobs run", lambda: len(_marks(path)) >= s.sigkill_at, 120, first
        )
    finally:
        first.kill()
    before = _marks(path)
    old_pids = {pid for _, pid in before}
    replacement = f.worker(system, topic, group, "mark", path, **more)
    notes: list[str] = []
    try:
        _wait_replacement(path, jobs, old_pids, replacement, notes)
    finally:
        replacement.kill()
    marks = _marks(path)
    ran = Counter(i for i, _ in marks)
    return Killed(
        jobs,
        len(before),
        jobs - len(ran.keys() & set(range(jobs))),
        sum(n - 1 for n in ran.values()),
        time.monotonic() - started,
        notes,
    )


def _wait_replacement(
    path: Path, jobs: int, old_pids: set[int], replacement: Proc, notes: list[str]
) -> None:
    """Until every job ran; or the replacement was idle for 10 s after running some (60 s
    without any); 150 s at most. Jobs that never ran by then count as lost."""
    started = time.monotonic()
    seen = 0
    last_new = started
    while time.monotonic() - started < 150:
        marks = _marks(path)
        if len({i for i, _ in marks}) >= jobs:
            time.sleep(1.0)  # a run of the last job still under way
            return
        if len(marks) != seen:
            seen, last_new = len(marks), time.monotonic()
        ran_new = any(pid not in old_pids for _, pid in marks)
        idle = time.monotonic() - last_new
        if (ran_new and idle > 10) or (not ran_new and time.monotonic() - started > 60):
            notes.append(f"replacement idle for {idle:.0f} s with jobs missing")
            return
        if not replacement.alive():
            notes.append(f"replacement exited: {replacement.tail(3)}")
            return
        time.sleep(0.1)
    notes.append("150 s passed with jobs missing")
