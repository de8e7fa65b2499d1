"""The main job end to end: a local Kafka, ``kq worker --processes 2`` and mixed jobs.

``python -m kq.demo`` starts a single-node Apache Kafka on 127.0.0.1, runs
``kq worker`` with two worker processes under its supervisor (retries on),
enqueues a few thousand mixed jobs from the shell with ``kq enqueue --jsonl``
(successes, coroutines, failures that a retry fixes, failures that end as dead
letters, timeouts, and one message that is not a job), shows a live progress
line, then prints the outcome counts and the throughput and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kq._producer import Record, adapt_producer
from kq.clients import make_producer
from kq.dead_letters import DeadLetters
from kq.job import Job
from kq.message import Message
from kq.retry import current_attempt

_TOPIC = "kq-demo"
_OUTCOMES_ENV = "KQ_DEMO_OUTCOMES"


def add(a: int, b: int) -> int:
    """A job that succeeds."""
    return a + b


def divide(a: int, b: int) -> float:
    """A job that fails when ``b`` is 0 (every attempt: it ends as a dead letter)."""
    return a / b


def flaky(n: int) -> int:
    """A job that fails on its first attempt and succeeds on the retry."""
    attempt = current_attempt()
    if attempt is None or attempt.number < 2:
        raise ConnectionError("a transient failure")
    return n


def nap(seconds: float) -> str:
    """A job that may run past its timeout (blocked in C, where KQ cannot stop it)."""
    time.sleep(seconds)
    return f"slept {seconds}s"


async def fetch(n: int) -> int:
    """A coroutine job: kq awaits it and reports its value."""
    await asyncio.sleep(0.001)
    return n * n


def record_outcome(
    status: str,
    message: Message,
    job: Job | None,
    result: Any,
    exception: BaseException | None,
    stacktrace: str | None,
) -> None:
    """The workers' callback: one line per outcome, final or not, in a shared file."""
    attempt = current_attempt()
    final = attempt is None or attempt.is_final(status)
    ident = job.id if job is not None else f"{message.partition}/{message.offset}"
    line = f"{status} {int(final)} {attempt.number if attempt else 1} {ident}\n".encode()
    fd = os.open(os.environ[_OUTCOMES_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one short O_APPEND write: atomic across the processes
    finally:
        os.close(fd)


def _job_lines(count: int) -> list[str]:
    lines = []
    for i in range(count):
        if i % 50 == 7:
            spec: dict[str, Any] = {"function": "kq.demo:divide", "args": [i, 0]}
        elif i % 50 == 13:
            spec = {"function": "kq.demo:flaky", "args": [i]}
        elif i % 300 == 21:
            spec = {"function": "kq.demo:nap", "args": [5], "timeout": 1}
        elif i % 2:
            spec = {"function": "kq.demo:fetch", "args": [i], "key": f"user-{i % 10}"}
        else:
            spec = {"function": "kq.demo:add", "args": [i, 1]}
        lines.append(json.dumps(spec))
    return lines


def _read_outcomes(path: Path) -> tuple[collections.Counter[str], int, int]:
    """Outcome counts, jobs with a final outcome (each once), retries run."""
    counts: collections.Counter[str] = collections.Counter()
    finished: set[str] = set()
    retries = 0
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                counts[parts[0]] += 1
                if parts[1] == "1":
                    finished.add(parts[3])  # at least once: a job may be reported twice
                retries += parts[2] != "1"
    return counts, len(finished), retries


def run(jobs: int, processes: int, concurrency: int, timeout: float) -> int:
    """Run the demo; returns the exit status."""
    from kq.local import LocalKafka

    started = time.monotonic()
    with LocalKafka(1) as kafka, tempfile.TemporaryDirectory(prefix="kq-demo-") as tmp:
        bootstrap = kafka.bootstrap_servers
        kafka.create_topic(_TOPIC, partitions=4)
        print(f"local Kafka up at {bootstrap} in {time.monotonic() - started:.1f}s")
        outcomes = Path(tmp) / "outcomes"
        env = dict(os.environ, **{_OUTCOMES_ENV: str(outcomes)})
        kq_cmd = [sys.executable, "-m", "kq.cli"]
        worker_cmd = [
            *kq_cmd, "worker", _TOPIC, "-b", bootstrap, "-g", "kq-demo",
            "--processes", str(processes), "--concurrency", str(concurrency),
            "--max-attempts", "3", "--backoff", "0.2",
            "--callback", "kq.demo:record_outcome",
        ]  # fmt: skip
        print("$ kq " + " ".join(worker_cmd[3:]))
        with open(Path(tmp) / "workers.log", "wb") as log:  # the child keeps its own copy
            supervisor = subprocess.Popen(worker_cmd, env=env, stderr=log)
        try:
            return _enqueue_and_watch(kq_cmd, bootstrap, jobs, outcomes, timeout, supervisor)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            try:
                code = supervisor.wait(timeout=60)
                print(f"workers stopped (supervisor exit status {code})")
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait()
                print("workers did not stop in time; killed", file=sys.stderr)
            if os.environ.get("KQ_DEMO_LOG"):  # keep the workers' log for a look
                log_copy = Path(os.environ["KQ_DEMO_LOG"])
                log_copy.write_bytes((Path(tmp) / "workers.log").read_bytes())


def _enqueue_and_watch(
    kq_cmd: list[str],
    bootstrap: str,
    jobs: int,
    outcomes: Path,
    timeout: float,
    supervisor: subprocess.Popen[bytes],
) -> int:
    lines = "\n".join(_job_lines(jobs)) + "\n"
    started = time.monotonic()
    print(f"$ kq enqueue {_TOPIC} -b {bootstrap} --jsonl - --max-attempts 3  < {jobs} jobs")
    enqueue = subprocess.run(
        [*kq_cmd, "enqueue", _TOPIC, "-b", bootstrap, "--jsonl", "-", "--max-attempts", "3"],
        input=lines,
        text=True,
        capture_output=True,
        timeout=300,
    )
    if enqueue.returncode != 0:
        print(enqueue.stderr.strip(), file=sys.stderr)
        return 1
    enqueued_in = time.monotonic() - started
    print(f"enqueued {jobs} jobs in {enqueued_in:.2f}s ({jobs / enqueued_in:,.0f}/s)")
    # Not a job at all: a worker reports it as invalid and goes on.
    junk = Record(_TOPIC, b"not a pickle", None, None, int(time.time() * 1000))
    adapt_producer(make_producer(bootstrap)).send_all([junk], timeout=30.0)
    expected = jobs + 1

    deadline = time.monotonic() + timeout
    live = sys.stdout.isatty()
    last_print = 0.0
    while True:
        counts, finals, retries = _read_outcomes(outcomes)
        now = time.monotonic()
        done = finals >= expected
        if done or now - last_print >= (0.2 if live else 2.0):
            last_print = now
            line = (
                f"{finals:>6}/{expected} done  success {counts['success']:>5}"
                f"  failure {counts['failure']:>4}  timeout {counts['timeout']:>3}"
                f"  invalid {counts['invalid']}  retries {retries:>4}"
                f"  {finals / max(now - started, 1e-9):>7,.0f} jobs/s"
            )
            print(f"\r{line}", end="" if live and not done else "\n", flush=True)
        if done:
            break
        if now > deadline or supervisor.poll() is not None:
            print(f"\nstopped waiting: {expected - finals} jobs without a final outcome")
            return 1
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    dead = DeadLetters(bootstrap, _TOPIC).list(limit=jobs)
    print(f"all {expected} messages processed in {elapsed:.1f}s ({expected / elapsed:,.0f} jobs/s)")
    print(
        f"  success {counts['success']}, failed attempts {counts['failure']},"
        f" timeouts {counts['timeout']}, invalid {counts['invalid']},"
        f" retries {retries}, dead letters {len(dead)}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (``python -m kq.demo --help``)."""
    parser = argparse.ArgumentParser(prog="python -m kq.demo", description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000, help="how many jobs (default 3000)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs at once per process")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (seconds)")
    args = parser.parse_args(argv)
    return run(args.jobs, args.processes, args.concurrency, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
