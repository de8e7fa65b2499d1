"""Plumbing of the benchmark: child processes, topic pre-fill, the jobs' report files."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from confluent_kafka import Producer

from kq import Job
from kq.serialization import dumps

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def load_jobs() -> ModuleType:
    """The jobs' module under its top-level name ``jobs``, as the workers import it.

    Pickles refer to functions by module name, so the benchmark must pickle
    ``jobs.noop``, not ``bench.jobs.noop`` (which KQ 2.2.1's venv cannot import).
    """
    if str(BENCH_DIR) not in sys.path:
        sys.path.append(str(BENCH_DIR))
    return importlib.import_module("jobs")


jobs = load_jobs()


class BenchError(RuntimeError):
    """A benchmark run failed (a child exited badly, timed out, or reported nonsense)."""


def unique(prefix: str) -> str:
    """A topic or group name no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- child processes ------------------------------------------------------------


@dataclass
class Child:
    """A child process of the benchmark, its output in files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        """What the child printed so far."""
        return self.stdout.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        """The end of its stderr, for error messages."""
        text = self.stderr.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:])

    def result(self) -> dict[str, Any]:
        """The ``RESULT {json}`` line the child printed."""
        for line in reversed(self.output().splitlines()):
            if line.startswith("RESULT "):
                parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
                return parsed
        raise BenchError(f"{self.name} printed no result; stderr:\n{self.tail()}")

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for a clean exit and return the result; kill it and raise otherwise."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(
                f"{self.name} did not finish within {timeout:.0f} s; stderr:\n{self.tail()}"
            ) from None
        if code != 0:
            raise BenchError(f"{self.name} exited with {code}; stderr:\n{self.tail()}")
        return self.result()

    def go(self) -> None:
        """Release a child started with ``--gate``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def terminate(self, timeout: float) -> dict[str, Any]:
        """SIGTERM (a kq worker's graceful stop), then wait as ``wait`` does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)


class Children:
    """Starts child processes and kills every one still running on ``close``.

    Only the processes started here are ever signalled, by their own pid.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._children: list[Child] = []
        self._lock = threading.Lock()

    def start(
        self, name: str, argv: Sequence[str], *, gate: bool = False, cwd: Path | None = None
    ) -> Child:
        """Start ``argv`` (in ``cwd``, default the work folder); stdin is a pipe when ``gate``."""
        index = len(self._children)
        stdout = self._workdir / f"{index:03d}-{name}.out"
        stderr = self._workdir / f"{index:03d}-{name}.err"
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the child scripts find jobs.py beside them
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if gate else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd or self._workdir,
                env=env,
            )
        child = Child(name, proc, stdout, stderr)
        with self._lock:
            self._children.append(child)
        return child

    def close(self) -> None:
        """Kill (SIGKILL, by pid) every child that is still running, and reap it."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
            with contextlib.suppress(Exception):
                child.proc.wait(10)
            if child.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    child.proc.stdin.close()


def python_script(script: str, *args: object) -> list[str]:
    """argv running one of the benchmark's child scripts with this Python (the project venv)."""
    return [sys.executable, str(BENCH_DIR / script), *(str(a) for a in args)]


def wait_until(what: str, ready: Callable[[], bool], timeout: float, child: Child | None) -> None:
    """Poll ``ready`` until it is true; raise after ``timeout`` or when ``child`` died."""
    deadline = time.monotonic() + timeout
    while not ready():
        if child is not None and child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited ({child.proc.returncode}) before {what}:\n{child.tail()}"
            )
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.05)


# -- jobs and pre-filled topics -------------------------------------------------


def job_bytes(topic: str, func: Callable[..., Any], *args: Any) -> bytes:
    """A job as ``Queue.enqueue(func, *args)`` writes it with kq's default serializer."""
    job = Job(
        id=uuid.uuid4().hex,
        timestamp=int(time.time() * 1000),
        topic=topic,
        func=func,
        args=args,
        kwargs={},
        timeout=0,
        key=None,
        partition=None,
    )
    return dumps(job)


@dataclass
class Record:
    """One message to pre-fill."""

    value: bytes
    key: bytes | None = None
    partition: int = 0


def prefill(bootstrap: str, topic: str, records: Iterable[Record]) -> int:
    """Write records fast (a raw producer, large batches); return how many."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "acks": 1,
        }
    )
    produce = producer.produce
    count = 0
    for record in records:
        while True:
            try:
                produce(topic, record.value, record.key, record.partition)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    left = producer.flush(120)
    if left:
        raise BenchError(f"pre-fill of {topic}: {left} messages not delivered")
    return count


# -- what the jobs wrote --------------------------------------------------------


@dataclass
class Stamp:
    """One ``jobs.stamp`` line."""

    label: str
    at: float
    pid: int
    rss_kb: int
    hwm_kb: int
    cpu: float


@dataclass
class Report:
    """Everything the jobs of one run appended to its file."""

    stamps: dict[str, Stamp] = field(default_factory=dict)
    io: list[tuple[str, int, float, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)  # ``run`` lines: job -> times it ran
    done: list[tuple[int, float]] = field(default_factory=list)  # ``done`` lines: (pid, end)


def read_report(path: Path) -> Report:
    """Parse a run's report file (missing file: empty report)."""
    report = Report()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return report
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "stamp":
            label = parts[1]
            report.stamps.setdefault(
                label,
                Stamp(
                    label,
                    float(parts[2]),
                    int(parts[3]),
                    int(parts[4]),
                    int(parts[5]),
                    float(parts[6]),
                ),
            )
        elif parts[0] == "io":
            report.io.append((parts[1], int(parts[2]), float(parts[3]), float(parts[4])))
        elif parts[0] == "lat":
            report.latencies.append(float(parts[1]))
        elif parts[0] == "run":
            report.runs[parts[1]] = report.runs.get(parts[1], 0) + 1
        elif parts[0] == "done":
            report.done.append((int(parts[1]), float(parts[2])))
    return report


def count_lines(path: Path) -> int:
    """Lines in a report file so far (cheap enough to poll)."""
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def has_stamps(path: Path, labels: Iterable[str]) -> Callable[[], bool]:
    """A readiness check: every label was stamped."""
    wanted = set(labels)
    return lambda: wanted <= read_report(path).stamps.keys()


class MemorySampler:
    """Samples VmRSS/VmHWM of a process from /proc every ``interval`` seconds, on a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, rss kB, hwm kB)
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self._interval)

    def _read(self) -> tuple[float, int, int] | None:
        rss = hwm = 0
        try:
            with open(f"/proc/{self._pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
        except (OSError, ValueError):
            return None
        return (time.monotonic(), rss, hwm) if rss else None


def new_workdir() -> Path:
    """A temporary folder for the run's output and report files."""
    return Path(tempfile.mkdtemp(prefix="kq-bench-"))
