"""Running one job in a forked child process that can be killed at its timeout.

A thread cannot be stopped while it is blocked in C code (``time.sleep``, a
socket read), and signal-based timeouts only work in the main thread. A forked
child can always be killed, whichever thread started it, and the worker goes
on in a clean state. The price: a fork per timed job (milliseconds), results
and exceptions must be picklable by dill to come back, and the job's side
effects on the worker's memory do not survive it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import dill

from kq._calls import invoke
from kq._loop import Cancelled, EventLoopThread
from kq.errors import JobProcessError, RemoteJobError
from kq.job import Job

_READ_SIZE = 1 << 16
_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    # Looked up once in the worker: a forked child must not dlopen (a lock
    # another thread held at fork time would never be released in it).
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def _die_with_worker(worker_pid: int) -> None:
    """In the child: be SIGKILLed when the worker dies, so a timed job never outlives it.

    Linux sends the signal when the thread that forked the child ends, which in
    a worker is the job thread waiting for this child (or the whole process).
    Elsewhere, and if the worker died before this took effect, the parent pid
    says so once.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != worker_pid:
        os._exit(70)


@dataclass(slots=True)
class Result:
    """What a job run produced: ``status`` is success, failure, timeout or aborted."""

    status: str
    value: Any = None
    exception: BaseException | None = None
    stacktrace: str | None = None


def run_inline(job: Job, loop: EventLoopThread, abort: threading.Event) -> Result:
    """Run the job in this thread (no timeout); a coroutine on the shared ``loop``."""
    try:
        value = invoke(job, lambda awaitable: loop.run(awaitable, abort))
    except Cancelled:
        return Result("aborted")
    except (Exception, SystemExit) as exc:  # sys.exit() in a job must not end the thread
        return Result("failure", exception=exc, stacktrace=traceback.format_exc())
    return Result("success", value=value)


def _child_payload(job: Job) -> bytes:
    try:
        value = invoke(job)
    except BaseException as exc:
        stack = traceback.format_exc()
        try:
            return bytes(dill.dumps(("failure", exc, stack)))
        except Exception:
            remote = RemoteJobError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))
            return bytes(dill.dumps(("failure", remote, stack)))
    try:
        return bytes(dill.dumps(("success", value, None)))
    except Exception as exc:
        error = JobProcessError(f"the job's return value could not be sent back: {exc!r}")
        return bytes(dill.dumps(("failure", error, traceback.format_exc())))


def _run_child(job: Job, fd: int) -> None:
    # Ctrl-C goes to the whole process group; it is the worker's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    payload = _child_payload(job)
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    sys.stdout.flush()
    sys.stderr.flush()


def run_isolated(job: Job, timeout: float, abort: threading.Event) -> Result:
    """Run the job in a forked child; kill it at ``timeout`` seconds or when ``abort`` is set."""
    # buffered output would otherwise be written twice, once by the child
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    worker_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            _die_with_worker(worker_pid)
            os.close(read_fd)
            _run_child(job, write_fd)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    ended = False
    status = "timeout"
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if abort.is_set():
                status = "aborted"
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.05))
            if ready:
                chunk = os.read(read_fd, _READ_SIZE)
                if not chunk:
                    ended = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not ended:
            _kill(pid)
    if not ended:
        return Result(status)
    _, wait_status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        return Result(
            "failure",
            exception=JobProcessError(
                f"job process ended without a result ({_describe(wait_status)})"
            ),
        )
    kind, value, stack = dill.loads(data)
    if kind == "success":
        return Result("success", value=value)
    return Result("failure", exception=value, stacktrace=stack)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    return f"exit code {os.waitstatus_to_exitcode(wait_status)}"
