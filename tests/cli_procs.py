"""Running the real ``kq`` console script in tests: one-shot commands and background processes.

Background processes write stdout and stderr to files (no pipe can fill up),
and ``Processes.close()`` ends every one a test started: SIGTERM, a bounded
wait, then SIGKILL by pid, and the same for worker children a supervisor named
in its log (only while they still run ``kq._worker_run``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent
KQ = str(Path(sys.executable).parent / "kq")


def kq_env(**extra: str) -> dict[str, str]:
    """The environment for kq: no KQ_* settings from outside, tests importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO)])
    env.update(extra)
    return env


def kq(
    *args: str,
    stdin: str | None = None,
    timeout: float = 90,
    env: dict[str, str] | None = None,
    cwd: Path = TESTS_DIR,
) -> subprocess.CompletedProcess[str]:
    """Run ``kq ARGS`` to completion (stdin closed unless given; ``env`` added to kq_env)."""
    return subprocess.run(
        [KQ, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kq_env(**(env or {})),
        cwd=str(cwd),
    )


def kq_json(*args: str) -> Any:
    """Run ``kq ARGS --json`` and parse its output."""
    done = kq(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(predicate: Any, what: str, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Running:
    """A ``kq`` process in the background."""

    def __init__(
        self,
        args: list[str],
        folder: Path,
        name: str,
        env: dict[str, str] | None = None,
        cwd: Path = TESTS_DIR,
    ) -> None:
        self.out_path = folder / f"{name}.out"
        self.err_path = folder / f"{name}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [KQ, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=kq_env(**(env or {})),
                cwd=str(cwd),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 60.0, stream: str = "err") -> re.Match[str]:
        """Wait until the output matches ``pattern``; the process must not exit meanwhile."""

        def found() -> re.Match[str] | None:
            text = self.err() if stream == "err" else self.out()
            match = re.search(pattern, text, re.MULTILINE)
            if match is None and self.proc.poll() is not None:
                raise AssertionError(
                    f"kq exited ({self.proc.returncode}) before {pattern!r}:\n{self.err()[-3000:]}"
                )
            return match

        try:
            return wait_until(found, repr(pattern), timeout)  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstderr tail:\n{self.err()[-3000:]}") from None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"kq did not exit within {timeout} s; stderr tail:\n{self.err()[-3000:]}"
            ) from None

    def child_pids(self) -> list[int]:
        """Pids of worker children this (supervisor) process reported starting."""
        return [int(p) for p in re.findall(r"Worker \d+ started \(pid (\d+)\)", self.err())]


def _is_worker_child(pid: int) -> bool:
    try:
        return b"kq._worker_run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Processes:
    """The background ``kq`` processes of one test; ``close`` ends them all."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._started: list[Running] = []

    def start(
        self, *args: str, name: str = "kq", env: dict[str, str] | None = None, cwd: Path = TESTS_DIR
    ) -> Running:
        running = Running(list(args), self._folder, f"{name}-{len(self._started)}", env, cwd)
        self._started.append(running)
        return running

    def close(self) -> None:
        for running in self._started:
            if running.proc.poll() is None:
                running.proc.send_signal(signal.SIGTERM)
        for running in self._started:
            try:
                running.proc.wait(45)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()
            for pid in running.child_pids():
                if _is_worker_child(pid):
                    os.kill(pid, signal.SIGKILL)


def free_port(consecutive: int = 1) -> int:
    """A port on 127.0.0.1 (and the ``consecutive - 1`` after it) nobody listens on now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + consecutive > 65535:
            continue
        try:
            for extra in range(1, consecutive):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + extra))
        except OSError:
            continue
        return port
    raise AssertionError("no free port")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of ``http://127.0.0.1:PORT/metrics``: (name, labels) -> value; {} if not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels``, summed if several."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return sum(found) if found else None
