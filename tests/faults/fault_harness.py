"""The fault-injection suite's tools: worker processes, a paced producer, the ledger, checks.

A scenario enqueues a bounded workload with a ``Feeder`` (batched, paced, so
that enqueueing and processing both span the fault), runs workers as
subprocesses (``tests/worker_proc.py``) through a ``WorkerPool``, injects its
fault, then compares the jobs the broker acknowledged with the ledger that the
jobs themselves wrote (``fault_jobs.mark``): an ``Outcome``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import worker_proc
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from fault_jobs import mark

from kq import BatchEnqueueError, Job, Queue
from kq.serialization import loads

FAULTS_DIR = Path(__file__).resolve().parent
TESTS_DIR = FAULTS_DIR.parent
REPO = TESTS_DIR.parent
SUMMARY_FILE = REPO / ".cache" / "faults-summary.txt"
CLIENTS = ["confluent", "kafka-python"]


# -- waiting -------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- the ledger ----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One execution of a job, as the job wrote it."""

    name: str
    pid: int
    ppid: int
    at: float

    def worker(self, workers: set[int]) -> int:
        """The worker process that ran it: ours, or the parent of a forked timed job."""
        return self.pid if self.pid in workers or self.ppid not in workers else self.ppid


def read_ledger(ledger: str | Path) -> list[Run]:
    """Every execution recorded so far, in the order written."""
    try:
        text = Path(ledger).read_text()
    except FileNotFoundError:
        return []
    runs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:  # a line being written has no newline yet
            runs.append(Run(parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
    return runs


def ledger_counts(ledger: str | Path) -> Counter[str]:
    """Executions per job name."""
    return Counter(run.name for run in read_ledger(ledger))


@dataclass
class Outcome:
    """Acknowledged jobs against executed jobs, for one scenario."""

    scenario: str
    acked: set[str]
    counts: Counter[str]

    @property
    def enqueued(self) -> int:
        return len(self.acked)

    @property
    def executed(self) -> int:
        """Distinct acknowledged jobs that ran at least once."""
        return sum(1 for name in self.acked if self.counts[name] > 0)

    @property
    def lost(self) -> list[str]:
        return sorted(name for name in self.acked if self.counts[name] == 0)

    @property
    def duplicated(self) -> int:
        """Executions beyond the first, over all jobs."""
        return sum(count - 1 for count in self.counts.values() if count > 1)

    @property
    def unacknowledged_runs(self) -> list[str]:
        """Jobs that ran although their enqueue was not acknowledged."""
        return sorted(name for name in self.counts if name not in self.acked)

    def line(self) -> str:
        return (
            f"FAULT {self.scenario}: enqueued={self.enqueued} executed={self.executed} "
            f"lost={len(self.lost)} duplicated={self.duplicated}"
        )


def outcome(scenario: str, acked: Iterable[str], ledger: str | Path) -> Outcome:
    return Outcome(scenario, set(acked), ledger_counts(ledger))


# -- worker processes ----------------------------------------------------------


class WorkerProc:
    """One ``tests/worker_proc.py`` process; its stdout and stderr go to files."""

    def __init__(
        self,
        workdir: Path,
        index: int,
        bootstrap: str,
        topic: str,
        group: str,
        client: str,
        extra: list[str],
    ) -> None:
        self.index = index
        self.client = client
        self.killed = False
        self.out_path = workdir / f"worker-{index}.out"
        self.log_path = workdir / f"worker-{index}.log"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(FAULTS_DIR), str(TESTS_DIR), str(REPO)]),
        )
        # stdin is a pipe only we write to: the worker dies with this process
        command = worker_proc.command(bootstrap, topic, group, client, "--exit-with-stdin", *extra)
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env
            )
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        return f"worker-{self.index}(pid={self.pid}, {self.client})"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def crash_report(self) -> str:
        """Exit code and the last traceback's own frames (kq, tests) and exception line."""
        log = self.log()
        start = log.rfind("Traceback (most recent call last):")
        if start < 0:
            return f"{self} exit={self.proc.poll()}:\n{self.log_tail(10)}"
        lines = log[start:].splitlines()
        keep = [
            line
            for index, line in enumerate(lines)
            if "/kq/" in line
            or "worker_proc" in line
            or (line and not line[0].isspace() and index)
            or (index and "/kq/" in lines[index - 1])
        ]
        return f"{self} exit={self.proc.poll()}, last traceback:\n" + "\n".join(keep[:40])

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not wait_for(lambda: "ready" in self.stdout() or not self.alive(), timeout):
            raise AssertionError(f"{self} not ready in {timeout}s:\n{self.log_tail()}")
        if not self.alive():
            raise AssertionError(f"{self} exited at start:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.killed = True
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def processed(self) -> int | None:
        """N of the ``processed N`` line that a returning worker prints."""
        for line in self.stdout().splitlines():
            if line.startswith("processed "):
                return int(line.split()[1])
        return None

    def stop_gracefully(self, timeout: float = 30.0, exit_grace: float = 10.0) -> int:
        """SIGTERM; return the processed count once the process exited with 0.

        Fails if ``start`` has not returned (``processed N``) within ``timeout``,
        or the process is still there ``exit_grace`` seconds after it returned.
        """
        self.signal(signal.SIGTERM)
        wait_for(lambda: self.processed() is not None or not self.alive(), timeout, 0.05)
        code = self.wait(exit_grace)
        processed = self.processed()
        if code != 0 or processed is None:
            stacks = self.stacks() if code is None else ""
            raise AssertionError(
                f"{self} after SIGTERM: exit {code}, stdout {self.stdout()!r}:\n"
                f"{self.log_tail()}\n{stacks}"
            )
        return processed

    def stacks(self) -> str:
        """The Python stacks of a running worker (with py-spy, when installed)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not self.alive() or not os.access(spy, os.X_OK):
            return ""
        try:
            dump = subprocess.run(
                [spy, "dump", "--native", "--pid", str(self.pid)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"(py-spy failed: {exc})"
        return f"py-spy dump of {self}:\n{dump.stdout}{dump.stderr}"

    def close(self) -> None:
        """SIGKILL if still running (not counted as a kill of the scenario's)."""
        if self.alive():
            self.signal(signal.SIGKILL)  # also ends a SIGSTOPped process
            self.proc.wait(timeout=30)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


class WorkerPool:
    """Every worker process of a test; ``close`` kills (by pid) those still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[WorkerProc] = []
        self.problems: list[str] = []

    def spawn(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        client: str = "confluent",
        *,
        concurrency: int = 2,
        max_in_flight: int | None = None,
        session_ms: int = 6000,
        outcomes: Path | None = None,
        ready: bool = True,
        options: Iterable[str] = (),
    ) -> WorkerProc:
        extra = ["--concurrency", str(concurrency), "--session-ms", str(session_ms), *options]
        if max_in_flight is not None:
            extra += ["--max-in-flight", str(max_in_flight)]
        if outcomes is not None:
            extra += ["--outcomes", str(outcomes)]
        proc = WorkerProc(self.workdir, len(self.procs) + 1, bootstrap, topic, group, client, extra)
        self.procs.append(proc)
        if ready:
            proc.wait_ready()
        return proc

    def stop(self, proc: WorkerProc) -> int | None:
        """Stop a worker gracefully; on failure note it in ``problems`` and SIGKILL it.

        A worker whose ``start`` returned but whose process then hangs has
        committed what it will commit; the scenario goes on, and fails at its end.
        """
        try:
            return proc.stop_gracefully()
        except AssertionError as exc:
            self.problems.append(str(exc))
            proc.close()
            return proc.processed()

    def running(self) -> list[WorkerProc]:
        return [proc for proc in self.procs if proc.alive()]

    def pids(self) -> set[int]:
        return {proc.pid for proc in self.procs}

    def evidence(self, lines: int = 25) -> str:
        """The tail of every worker's log, for assertion messages."""
        return "\n".join(
            f"--- {proc} exit={proc.proc.poll()}\n{proc.log_tail(lines)}" for proc in self.procs
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.close()


# -- enqueueing ----------------------------------------------------------------


@dataclass
class Feeder:
    """Enqueues ``total`` jobs in batches from a thread, pausing between batches.

    Job ``i`` is named ``<prefix><i>`` (its Job id too) and runs
    ``mark(ledger, name, sleep)``; every ``timed_every``-th job has a timeout,
    so it runs in a forked child. Jobs are keyed by name, or go round-robin to
    partitions ``0 .. partitions-1`` if ``partitions`` is set. ``acked`` holds
    the names the broker acknowledged, ``failed`` those it did not (reported by
    ``kq.BatchEnqueueError``, or by any other exception: then ``errors`` says so).
    """

    queue: Queue
    ledger: str
    total: int
    prefix: str = "j"
    batch: int = 100
    pause: float = 0.05
    sleep: float = 0.0
    timed_every: int = 0
    partitions: int | None = None
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    batches: list[tuple[float, int, int]] = field(default_factory=list)
    """(unix time when confirmed, acknowledged, failed) per batch."""
    crash: BaseException | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def _job(self, index: int) -> Job:
        name = f"{self.prefix}{index:05d}"
        timed = bool(self.timed_every) and index % self.timed_every == 0
        return Job(
            id=name,
            func=mark,
            args=(self.ledger, name, self.sleep),
            timeout=30 if timed else 0,
            key=name.encode(),  # spreads the jobs evenly over the partitions
            partition=None if self.partitions is None else index % self.partitions,
        )

    def _run(self) -> None:
        try:
            for first in range(0, self.total, self.batch):
                jobs = [self._job(i) for i in range(first, min(first + self.batch, self.total))]
                failed: list[Any] = []
                sent: list[Any] = []
                try:
                    with self.queue.batch() as batch:
                        for job in jobs:
                            sent.append(batch.enqueue(job))
                    acknowledged = sent
                except BatchEnqueueError as exc:
                    failed = [job for job, _ in exc.failed]
                    failed_ids = {job.id for job in failed}
                    acknowledged = [job for job in sent if job.id not in failed_ids]
                    self.errors.append(str(exc))
                except Exception as exc:  # not kq's error: the batch's fate is unknown
                    acknowledged, failed = [], jobs
                    self.errors.append(f"{exc!r} (not a kq.BatchEnqueueError)")
                with self._lock:
                    self.acked.extend(str(job.id) for job in acknowledged)
                    self.failed.extend(str(job.id) for job in failed)
                    self.batches.append((time.time(), len(acknowledged), len(failed)))
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:
            self.crash = exc

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"feeder still enqueueing after {timeout}s")
        if self.crash is not None:
            raise AssertionError(f"feeder crashed: {self.crash!r}") from self.crash


def wait_executed(
    ledger: str, names: Iterable[str], timeout: float, pool: WorkerPool | None = None
) -> bool:
    """Wait until every job in ``names`` ran at least once (False after ``timeout``).

    Gives up early when the pool has no worker running any more.
    """
    wanted = set(names)

    def done() -> bool:
        if pool is not None and pool.procs and not pool.running():
            return True
        counts = ledger_counts(ledger)
        return all(counts[name] for name in wanted)

    finished = wait_for(done, timeout, interval=0.25)
    counts = ledger_counts(ledger)
    return finished and all(counts[name] for name in wanted)


# -- broker-side views ---------------------------------------------------------


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def topic_index(bootstrap: str, topic: str) -> dict[str, list[tuple[int, int]]]:
    """Every job in the topic: Job id -> [(partition, offset), ...] (read to the end)."""
    metadata = _admin(bootstrap).list_topics(topic=topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fault-index",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    found: dict[str, list[tuple[int, int]]] = {}
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, -2) for p in ends])  # -2: beginning
        position = {p: -1 for p in ends}
        deadline = time.monotonic() + 60
        while any(position[p] < ends[p] - 1 for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {position} < {ends}")
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is not None:
                    continue
                p, offset = int(message.partition() or 0), int(message.offset() or 0)
                position[p] = max(position[p], offset)
                try:
                    job = loads(message.value() or b"")
                except Exception:
                    continue
                name = getattr(job, "id", None)
                if isinstance(name, str):
                    found.setdefault(name, []).append((p, offset))
    finally:
        consumer.close()
    return found


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    metadata = _admin(bootstrap).list_topics(topic=topic, timeout=30)
    return sorted(metadata.topics[topic].partitions)


class OffsetReader:
    """Reads a group's committed offsets (one consumer that never joins the group)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.topic = topic
        self.partitions = partitions_of(bootstrap, topic)
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
        self._consumer = Consumer(self._config)

    def committed(self, timeout: float = 10.0) -> dict[int, int]:
        """partition -> committed offset, for partitions that have one."""
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        return {
            tp.partition: tp.offset
            for tp in self._consumer.committed(tps, timeout=timeout)
            if tp.offset >= 0
        }

    def end_offsets(self, patience: float = 60.0) -> dict[int, int]:
        """partition -> end offset; retried while a killed leader is being replaced."""
        deadline = time.monotonic() + patience
        ends: dict[int, int] = {}
        for p in self.partitions:
            while True:
                try:
                    tp = TopicPartition(self.topic, p)
                    ends[p] = int(self._consumer.get_watermark_offsets(tp, timeout=5)[1])
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    # A new client: this one may keep asking a killed leader.
                    self._consumer.close()
                    time.sleep(1.0)
                    self._consumer = Consumer(self._config)
        return ends

    def close(self) -> None:
        self._consumer.close()


class CommitMonitor:
    """Samples a group's committed offsets in a thread and notes any that go backwards."""

    def __init__(self, bootstrap: str, group: str, topic: str, every: float = 0.5) -> None:
        self._reader = OffsetReader(bootstrap, group, topic)
        self._every = every
        self._stop = threading.Event()
        self.latest: dict[int, int] = {}
        self.regressions: list[tuple[int, int, int]] = []  # (partition, before, after)
        self.samples = 0
        self.history: list[tuple[float, dict[int, int]]] = []  # (unix time, offsets)
        self._thread = threading.Thread(target=self._run, name="commit-monitor", daemon=True)

    def __enter__(self) -> CommitMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._reader.close()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                offsets = self._reader.committed(timeout=5.0)
            except Exception:
                continue  # broker down or busy: try again
            self.samples += 1
            self.history.append((time.time(), offsets))
            for p, offset in offsets.items():
                before = self.latest.get(p)
                if before is not None and offset < before:
                    self.regressions.append((p, before, offset))
                self.latest[p] = offset


def unexecuted_below_committed(
    committed: dict[int, int], index: dict[str, list[tuple[int, int]]], counts: Counter[str]
) -> list[str]:
    """Jobs at offsets below their partition's committed offset that never ran.

    At least once means there are none: an offset is committed only after its job ran.
    """
    return sorted(
        name
        for name, places in index.items()
        for p, offset in places
        if offset < committed.get(p, 0) and counts[name] == 0
    )


def duplicated_below(
    committed: dict[int, int], index: dict[str, list[tuple[int, int]]], counts: Counter[str]
) -> list[str]:
    """Jobs that ran more than once although their offset was already committed.

    Duplicates are expected only past the last commit (the at-least-once window).
    """
    return sorted(
        name
        for name, places in index.items()
        if counts[name] > 1 and all(offset < committed.get(p, 0) for p, offset in places)
    )


_PARTITION = re.compile(r"\('[^']*', (\d+)\)")


def owned_partitions(log: str) -> set[int]:
    """The partitions a worker owns, from its log's assigned/revoked/lost lines."""
    owned: set[int] = set()
    for line in log.splitlines():
        for kind in ("Partitions assigned: ", "Partitions revoked: ", "Partitions lost: "):
            if kind in line:
                found = {int(p) for p in _PARTITION.findall(line.split(kind, 1)[1])}
                if kind == "Partitions assigned: ":
                    owned |= found
                else:
                    owned -= found
    return owned


def silent_duplicates(ledger: str, pool: WorkerPool, excused: Iterable[int] = ()) -> list[str]:
    """Jobs that ran again although no fault excuses it.

    A job may run twice only if one of the workers that ran it died (SIGKILL or
    a crash), lost its partitions (logged, or ``excused``), or logged that an
    offset commit failed: a worker that dies cannot commit what it ran, and one
    that lost its partitions may still run jobs it had fetched.
    A worker that stopped gracefully, or gave partitions up in a rebalance,
    committed what it finished, so nothing it ran may run again.
    """
    pids = pool.pids()
    allowed = set(excused) | {
        proc.pid
        for proc in pool.procs
        if proc.killed
        or "Offset commit failed" in (log := proc.log())
        or "Partitions lost" in log
        or proc.proc.poll() not in (None, 0)
    }
    workers: dict[str, set[int]] = {}
    for run in read_ledger(ledger):
        workers.setdefault(run.name, set()).add(run.worker(pids))
    counts = ledger_counts(ledger)
    return sorted(
        name for name, ran_in in workers.items() if counts[name] > 1 and not ran_in & allowed
    )


def group_coordinator(bootstrap: str, group: str) -> int | None:
    """The broker id coordinating ``group``, or None if it cannot be learned."""
    admin = _admin(bootstrap)  # must outlive its futures
    try:
        futures = admin.describe_consumer_groups([group], request_timeout=10)
        description = futures[group].result(timeout=15)
    except Exception:
        return None
    return int(description.coordinator.id)


def isr_complete(bootstrap: str, topics: Iterable[str], replicas: int) -> bool:
    """Whether every partition of these topics has ``replicas`` in-sync replicas."""
    try:
        metadata = _admin(bootstrap).list_topics(timeout=10)
    except Exception:
        return False
    for name in topics:
        found = metadata.topics.get(name)
        if found is None or found.error is not None:
            return False
        for partition in found.partitions.values():
            if partition.error is not None or len(partition.isrs) < replicas:
                return False
    return True


def final_offsets(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offsets of the group, end offsets of the topic), by partition."""
    reader = OffsetReader(bootstrap, group, topic)
    try:
        return reader.committed(), reader.end_offsets()
    finally:
        reader.close()


def history(monitor: CommitMonitor) -> str:
    """The committed offsets each time they changed, in seconds from the first sample."""
    if not monitor.history:
        return "(no samples)"
    start, changes, previous = monitor.history[0][0], [], None
    for at, offsets in monitor.history:
        if offsets != previous:
            changes.append(f"{at - start:.1f}s {dict(sorted(offsets.items()))}")
            previous = offsets
    return "; ".join(changes)


def problems(
    result: Outcome,
    ledger: str,
    pool: WorkerPool,
    *,
    complete: bool,
    feeder: Feeder | None = None,
    committed: dict[int, int] | None = None,
    ends: dict[int, int] | None = None,
    excused: Iterable[int] = (),
    monitor: CommitMonitor | None = None,
) -> list[str]:
    """Every promise of the scenario that did not hold, as readable lines.

    Checked: nothing acknowledged was lost; nothing ran that was not
    acknowledged; no enqueue failed (``feeder``); no worker crashed or hung on
    its way out; after the last graceful stop the group's committed offsets
    reach the end of the topic (``committed``/``ends``); no duplicate without a
    fault to explain it; committed offsets never went back (``monitor``).
    """
    found: list[str] = []
    if not complete or result.lost:
        found.append(
            f"LOST: {len(result.lost)} acknowledged jobs never ran (e.g. {result.lost[:5]})"
            f"\n{pool.evidence()}"
        )
    if result.unacknowledged_runs:
        found.append(
            f"{len(result.unacknowledged_runs)} jobs ran although their enqueue was not "
            f"acknowledged (e.g. {result.unacknowledged_runs[:5]})"
        )
    if feeder is not None:
        if feeder.crash is not None:
            found.append(f"enqueueing crashed: {feeder.crash!r}")
        if feeder.failed:
            found.append(f"{len(feeder.failed)} enqueues failed: {feeder.errors[:2]}")
    for proc in pool.procs:
        code = proc.proc.poll()
        if code is not None and code > 0:
            found.append(f"a worker crashed: {proc.crash_report()}")
    found += pool.problems
    if committed is not None and ends is not None and committed != ends:
        behind = {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p) != end}
        found.append(
            "after every worker stopped gracefully, the group's committed offsets are behind "
            f"the end of the topic (partition: (committed, end)) {behind}: jobs that "
            "finished will run again"
        )
    silent = silent_duplicates(ledger, pool, excused)
    if silent:
        found.append(
            f"{len(silent)} jobs ran more than once with no fault to explain it (none of the "
            f"workers that ran them was killed, crashed, lost partitions or logged a failed "
            f"commit), e.g. {silent[:5]}"
            + (f"; committed offsets over time: {history(monitor)}" if monitor else "")
        )
    if monitor is not None and monitor.regressions:
        found.append(
            f"committed offsets went back (partition, before, after): {monitor.regressions}"
        )
    return found
