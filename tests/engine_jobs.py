"""Job functions and helpers for the worker-engine tests (workers unpickle them by reference)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any


class NeedsTwo(Exception):
    """An exception whose pickle cannot be loaded: ``__init__`` takes two
    arguments but hands ``Exception`` one, so unpickling calls it with one."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail


def raise_needs_two(code: int, detail: str) -> None:
    """Raise ``NeedsTwo(code, detail)``."""
    raise NeedsTwo(code, detail)


class BadRepr:
    """An argument whose ``repr()`` raises."""

    def __repr__(self) -> str:
        raise ValueError("no repr for you")


def took(value: object) -> str:
    """Return the name of the argument's type (a job that never shows its argument)."""
    return type(value).__name__


# -- in-process jobs (no timeout: they run on the worker's job threads) --------------

_notes: dict[str, list[str]] = {}
_gates: dict[str, threading.Event] = {}
_notes_lock = threading.Lock()


def note(token: str, name: str) -> str:
    """Record that job ``name`` ran (for the token's test); return ``name``."""
    with _notes_lock:
        _notes.setdefault(token, []).append(name)
    return name


def notes(token: str) -> list[str]:
    """Names noted for ``token``, in order (a name twice: the job ran twice)."""
    with _notes_lock:
        return list(_notes.get(token, []))


def gate(token: str) -> threading.Event:
    """The event ``wait_at_gate`` jobs of ``token`` wait for."""
    with _notes_lock:
        return _gates.setdefault(token, threading.Event())


def wait_at_gate(token: str, name: str, seconds: float = 30.0) -> str:
    """Note ``name``, then wait (bounded) until the token's gate opens; note ``name:end``."""
    note(token, name)
    if not gate(token).wait(seconds):
        raise TimeoutError(f"{name}: the gate of {token} never opened")
    note(token, f"{name}:end")
    return name


def fail(token: str, name: str) -> None:
    """Note ``name`` and raise (a job that fails every time)."""
    note(token, name)
    raise RuntimeError(f"{name} failed on purpose")


def log_and_print(seq: int) -> int:
    """Print to stdout and log a warning to the root logger's handlers, then return ``seq``."""
    print(f"job {seq} printed", flush=True)
    logging.getLogger("engine_jobs").warning("job %s logged", seq)
    return seq


def start_noise(line_bytes: int = 2048) -> threading.Thread:
    """A daemon thread that logs long lines to the root logger without end.

    On a slowly drained stderr pipe it is blocked inside a write (holding
    ``sys.stderr``'s buffer lock) nearly all the time.
    """
    noise = logging.getLogger("engine_jobs.noise")
    text = "n" * line_bytes

    def run() -> None:
        while True:
            noise.warning("%s", text)

    thread = threading.Thread(target=run, name="noise", daemon=True)
    thread.start()
    return thread


class SlowDrain:
    """Reads a pipe on a thread, 512 bytes every 10 ms, until EOF.

    After ``close()`` it reads at full speed (so the writer can finish) and is joined.
    """

    def __init__(self, pipe: Any) -> None:
        self._fd = pipe.fileno()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = os.read(self._fd, 512 if not self._stop.is_set() else 1 << 16)
            if not data:
                return
            if not self._stop.is_set():
                time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def isolated_statuses(count: int, timeout: float) -> list[str]:
    """Run ``count`` timed jobs through ``run_isolated`` with noise on stderr; their statuses."""
    from kq._isolate import run_isolated
    from kq.job import Job

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start_noise()
    never = threading.Event()
    out = []
    for seq in range(count):
        func = log_and_print if seq % 2 else took
        result = run_isolated(Job(func=func, args=(seq,)), timeout, never)
        out.append(result.status)
    return out


if __name__ == "__main__":
    # python engine_jobs.py COUNT TIMEOUT: prints the statuses, one per line
    statuses = isolated_statuses(int(sys.argv[1]), float(sys.argv[2]))
    sys.stdout.write("".join(f"{s}\n" for s in statuses))
    sys.stdout.flush()
    os._exit(0)
