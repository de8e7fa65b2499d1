"""Jobs for the ``kq`` command's tests; each run is written to a ledger file (see ledger_jobs)."""

from __future__ import annotations

import os
from typing import Any

from ledger_jobs import _append


def fail_until(ledger: str, name: str, flag: str) -> str:
    """Fail until the file ``flag`` exists, then succeed."""
    _append(ledger, f"start {name} {os.getpid()}")
    if not os.path.exists(flag):
        raise RuntimeError(f"{name}: not yet")
    _append(ledger, f"end {name} {os.getpid()}")
    return name


def greet(ledger: str, name: str, greeting: str = "hello") -> str:
    """Record ``greeting-name`` as the job's name (shows that keyword arguments arrived)."""
    _append(ledger, f"start {greeting}-{name} {os.getpid()}")
    _append(ledger, f"end {greeting}-{name} {os.getpid()}")
    return f"{greeting} {name}"


def on_outcome(
    status: str, message: Any, job: Any, result: Any, exception: Any, stacktrace: Any
) -> None:
    """A worker callback: appends ``<status> <job id>`` to the file named by CLI_TEST_OUTCOMES."""
    _append(os.environ["CLI_TEST_OUTCOMES"], f"{status} {job.id if job else '-'}")


def outcomes(path: str) -> list[str]:
    """The statuses the callback saw, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


# Worker options for `kq worker --app cli_jobs:WORKER_OPTIONS`.
WORKER_OPTIONS = {"callback": on_outcome, "max_in_flight": 5}


def note_and_sleep(path: str, seconds: float) -> int:
    """Append ``<pid> <parent pid>`` to ``path``; sleep ``seconds`` on the first run only."""
    first = not os.path.exists(path)
    _append(path, f"{os.getpid()} {os.getppid()}")
    if first:
        import time

        time.sleep(seconds)
    return os.getpid()


def noted(path: str) -> list[tuple[int, int]]:
    """The (pid, parent pid) lines ``note_and_sleep`` wrote."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(a), int(b)) for a, b in (line.split() for line in f if line.strip())]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def spawn_and_wait(path: str, seconds: float) -> int:
    """Start ``sleep seconds`` and wait for it (first run only); note ``<its pid> <our pid>``."""
    import subprocess

    if os.path.exists(path):
        return 0
    child = subprocess.Popen(["sleep", str(seconds)])
    _append(path, f"{child.pid} {os.getpid()}")
    return child.wait()
