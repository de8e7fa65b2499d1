"""The field benchmark's child processes: each in a process group of its own.

A worker of taskiq or Celery is several processes (a manager and its worker
processes); the SIGKILL scenario kills the whole group at once, by the group
id of the process the benchmark started, and so does the clean-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BenchError


@dataclass
class Proc:
    """One started command (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        """The end of its stderr and stdout, for error messages."""
        text = []
        for path in (self.stderr, self.stdout):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace").rstrip().splitlines()[-lines:]
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group, and reap the leader."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for a clean exit and return its ``RESULT {json}`` line."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(
                f"{self.name} did not finish in {timeout:.0f} s:\n{self.tail()}"
            ) from None
        if code != 0:
            raise BenchError(f"{self.name} exited with {code}:\n{self.tail()}")
        for line in reversed(self.stdout.read_text(errors="replace").splitlines()):
            if line.startswith("RESULT "):
                parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
                return parsed
        raise BenchError(f"{self.name} printed no result:\n{self.tail()}")


class Procs:
    """Starts commands; ``close`` kills the groups of all that were started."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: list[Proc] = []
        self._lock = threading.Lock()
        self._count = 0

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> Proc:
        """Start ``argv`` in a new session (its own process group)."""
        with self._lock:
            self._count += 1
            index = self._count
        stdout = self._workdir / f"{index:04d}-{name}.out"
        stderr = self._workdir / f"{index:04d}-{name}.err"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        proc = Proc(name, popen, stdout, stderr)
        with self._lock:
            self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill every group started here that may still run."""
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            proc.kill()


def wait_until(
    what: str, ready: Callable[[], bool], timeout: float, proc: Proc | None = None
) -> None:
    """Poll ``ready`` until true; raise after ``timeout`` or when ``proc`` exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited before {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            detail = f":\n{proc.tail()}" if proc is not None else ""
            raise BenchError(f"no {what} within {timeout:.0f} s{detail}")
        time.sleep(0.05)
