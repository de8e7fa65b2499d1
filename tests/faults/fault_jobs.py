"""The job of the fault-injection suite: it writes its own run to a ledger file.

Every run appends one line ``<name> <pid> <parent pid> <unix time>`` to the
ledger after the job's (optional) sleep. The ledger is shared by all processes
of a scenario (workers, and the children they fork for timed jobs, hence the
parent pid), so the test can count how often each job really ran, and where.
"""

from __future__ import annotations

import os
import time


def _append(path: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic across processes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def mark(ledger: str, name: str, sleep: float = 0.0, started: str | None = None) -> str:
    """Record one execution of ``name`` after sleeping ``sleep`` seconds.

    With ``started``, ``name`` is first appended to that file, so a test can see
    that a long job is running.
    """
    if started:
        _append(started, f"{name}\n")
    if sleep:
        time.sleep(sleep)
    _append(ledger, f"{name} {os.getpid()} {os.getppid()} {time.time():.6f}\n")
    return name


def fail_first(ledger: str, attempts: str, name: str, marked: str | None = None) -> str:
    """Fail the first attempt of ``name``; from the second on, ``mark`` it as run.

    Every attempt appends ``<name> <pid>`` to ``attempts``; only a successful run
    goes to the ledger (as ``marked``, default ``name``), so the ledger counts the
    runs a retry policy had to deliver.
    """
    _append(attempts, f"{name} {os.getpid()}\n")
    with open(attempts) as seen:
        tries = sum(1 for line in seen if line.split()[0] == name)
    if tries < 2:
        raise RuntimeError(f"first attempt of {name} fails")
    return mark(ledger, marked or name)


def fail_first_in_group(ledger: str, attempts: str, name: str) -> str:
    """``fail_first`` per consumer group: the first attempt in each group fails.

    The group is the worker's ``KQ_FAULT_GROUP`` (set by tests/worker_proc.py);
    ``attempts`` gets ``<name>@<group> <pid>`` per attempt.
    """
    return fail_first(ledger, attempts, f"{name}@{os.environ.get('KQ_FAULT_GROUP', '-')}", name)
