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
import pickle
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
from kq._forksafe import after_fork_in_child, flush_child_streams
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
    except BaseException as exc:  # sys.exit() (or a CancelledError) must not end the thread
        return Result("failure", exception=exc, stacktrace=traceback.format_exc())
    return Result("success", value=value)


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<str() of the exception failed>"


def _child_payload(job: Job) -> bytes:
    # (kind, dill bytes of the value, stack, type name, text): the envelope is
    # plain pickle of builtins, so the parent can always read the type name and
    # text even when the value itself cannot be rebuilt there.
    try:
        value = invoke(job)
    except BaseException as exc:
        stack = traceback.format_exc()
        name, text = _type_name(exc), _text(exc)
        try:
            inner = bytes(dill.dumps(exc))
        except Exception:
            inner = bytes(dill.dumps(RemoteJobError(name, text)))
        return pickle.dumps(("failure", inner, stack, name, text))
    try:
        inner = bytes(dill.dumps(value))
    except Exception as exc:
        error = JobProcessError(f"the job's return value could not be sent back: {exc!r}")
        return pickle.dumps(
            ("failure", bytes(dill.dumps(error)), traceback.format_exc(), _type_name(error), "")
        )
    return pickle.dumps(("success", inner, None, _type_name(value), ""))


def _decode(data: bytes) -> Result:
    kind, inner, stack, name, text = pickle.loads(data)
    try:
        value = dill.loads(inner)
    except Exception as exc:
        if kind == "success":
            error: BaseException = JobProcessError(
                f"the job's return value ({name}) could not be rebuilt by the worker: {exc!r}"
            )
            return Result("failure", exception=error, stacktrace=None)
        # e.g. an exception class whose __init__ takes other arguments than it
        # passes to Exception: its pickle cannot be loaded
        return Result("failure", exception=RemoteJobError(name, text), stacktrace=stack)
    if kind == "success":
        return Result("success", value=value)
    return Result("failure", exception=value, stacktrace=stack)


def _run_child(job: Job, fd: int) -> None:
    # Ctrl-C goes to the whole process group; it is the worker's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    after_fork_in_child()
    payload = _child_payload(job)
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    flush_child_streams()


def run_isolated(job: Job, timeout: float, abort: threading.Event) -> Result:
    """Run the job in a forked child; kill it at ``timeout`` seconds or when ``abort`` is set."""
    # No flush of sys.stdout/sys.stderr first: another thread may hold them
    # (a blocked write), and the child never writes what they buffered.
    try:
        read_fd, write_fd = os.pipe()
    except OSError as exc:
        return _not_started(exc)
    worker_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return _not_started(exc)
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
    try:
        return _decode(data)
    except Exception as exc:  # a truncated or foreign envelope
        error = JobProcessError(f"the job process sent a result that cannot be read: {exc!r}")
        return Result("failure", exception=error)


def _not_started(exc: OSError) -> Result:
    error = JobProcessError(f"the job's process could not be started: {exc!r}")
    return Result("failure", exception=error)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    return f"exit code {os.waitstatus_to_exitcode(wait_status)}"
