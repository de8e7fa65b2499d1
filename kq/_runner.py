"""Processing one message on a job thread: check, run, route a failure, report.

Whatever happens while one message is processed, its job thread goes on and
the message is finished: an outcome reaches the callback, or (hard stop,
partition gone while its retry could not be written) it is left to run again.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from kq._calls import call_repr
from kq._isolate import Result, run_inline, run_isolated
from kq._logs import RETRIES, RUNTIME
from kq._loop import EventLoopThread
from kq._retrying import RetryRouter
from kq.job import Job
from kq.message import Message
from kq.retry import H_ID, H_RETRY, Attempt, reset_current, set_current
from kq.schedule import now_ms
from kq.signing import Verifier

TopicPartition = tuple[str, int]
Callback = Callable[[str, Message, "Job | None", Any, "BaseException | None", "str | None"], Any]

# A retry or dead-letter write that failed (after the router's own tries) is
# written again by the job thread, waiting this long before the first new
# round and doubling up to the maximum, for as long as it fails.
RETRY_WRITE_BACKOFF = 1.0
RETRY_WRITE_BACKOFF_MAX = 30.0


class InvalidJob(Exception):
    """Why a message is not a runnable job."""


class Invalid:
    """A message that is not a runnable job: the error, and the module it could not import."""

    __slots__ = ("error", "module", "refused")

    def __init__(self, error: BaseException, refused: bool) -> None:
        self.error = error
        self.module = _unimportable_module(error)
        # refused unread (size, signature, expiry): its letter is never signed
        self.refused = refused


def _unimportable_module(error: BaseException) -> str | None:
    """The module a deserializer could not import, when that is why (its cause chain)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ImportError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def safe_repr_text(error: BaseException) -> str:
    """``str(error)``, or a placeholder when that raises."""
    try:
        return str(error)
    except (Exception, SystemExit):
        return f"<{type(error).__name__} whose str() raised>"


class Unimportable:
    """Says loudly, once per streak, that jobs keep naming a module this worker cannot import.

    KQ's ``Job was invalid: ...`` line is written for each such message; this
    adds one clear line (``kq.runtime``) after ``STREAK`` in a row and every
    ``EVERY`` seconds while it lasts, and the observer's ``job_unimportable``.
    """

    STREAK = 10
    EVERY = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: str | None = None
        self._count = 0
        self._said = 0.0

    def seen(self, module: str | None, observer: Any, kept: bool) -> None:
        if module is None:
            with self._lock:
                self._module, self._count = None, 0
            return
        if observer is not None:
            notify(observer, "job_unimportable", module)
        with self._lock:
            if module != self._module:
                self._module, self._count, self._said = module, 0, 0.0
            self._count += 1
            count = self._count
            now = time.monotonic()
            if count < self.STREAK or now - self._said < self.EVERY:
                return
            self._said = now
        RUNTIME.error(
            "%s jobs in a row name module %r, which this worker cannot import: are the"
            " workers running the code the producers enqueue (same version, same folder or"
            " PYTHONPATH)? Each is reported invalid and %s",
            count,
            module,
            "kept in the dead-letter topic: requeue them once the code is deployed"
            if kept
            else "committed (Worker(keep_invalid=True) keeps them as dead letters)",
        )


def check_job(obj: Any) -> Job:
    """``obj`` if it is a runnable ``kq.Job``; ``InvalidJob`` naming what is wrong otherwise."""
    if not isinstance(obj, Job):
        raise InvalidJob(f"expected a kq.Job, got {type(obj).__module__}.{type(obj).__qualname__}")
    if obj.id is not None and not isinstance(obj.id, str):
        raise InvalidJob("Job.id must be a str")
    if not callable(obj.func):
        raise InvalidJob("Job.func must be a callable")
    if obj.args is not None and not isinstance(obj.args, (list, tuple)):
        raise InvalidJob("Job.args must be a list or tuple")
    if obj.kwargs is not None and not isinstance(obj.kwargs, dict):
        raise InvalidJob("Job.kwargs must be a dict")
    if obj.timeout is not None and (
        not isinstance(obj.timeout, (int, float))
        or isinstance(obj.timeout, bool)
        or not obj.timeout >= 0  # also NaN
    ):
        raise InvalidJob("Job.timeout must be an int or float, 0 or greater")
    return obj


def notify(observer: Any, method: str, *args: Any) -> None:
    """Call ``observer.method(*args)`` if it has one; what it raises is logged, never fatal."""
    hook = getattr(observer, method, None)
    if hook is None:
        return
    try:
        hook(*args)
    except BaseException as exc:
        RUNTIME.warning("Observer %s raised: %r", method, exc)


class MessageRunner:
    """Runs messages for a worker (``process`` is its lanes' handler)."""

    def __init__(
        self,
        *,
        logger: logging.Logger,
        callback: Callback | None,
        observer: Any,
        router: RetryRouter,
        decode: Callable[[bytes], Any],
        verifier: Verifier | None,
        max_bytes: int | None,
        abort: threading.Event,
        loop: EventLoopThread,
        owns: Callable[[TopicPartition], bool],
        hold: Callable[[TopicPartition, bool], None],
    ) -> None:
        self._logger = logger
        self._callback = callback
        self._callback_lock = threading.Lock()
        self._observer = observer
        self._router = router
        self._decode = decode
        self._verifier = verifier
        self._max_bytes = max_bytes
        self._limits = verifier is not None or max_bytes is not None
        self._abort = abort
        self._loop = loop
        self._owns = owns
        self._hold = hold
        self._unimportable = Unimportable()

    def process(self, message: Message, tag: tuple[Any, Mapping[str, bytes] | None]) -> bool:
        """Run one message's job and its callback; False if it must run again."""
        headers = tag[1]
        job: Job | None = None
        try:
            # Size and signature before anything of the record is read, its
            # kq-* headers included: a refused record is one `invalid`.
            refusal = self._refusal(message, headers) if self._limits else ""
            if refusal:
                attempt = self._router.first
            else:
                if self._router.foreign(headers):
                    return True  # another group's retry: committed here, run there
                attempt = self._router.attempt(headers)
            token = set_current(attempt)
            try:
                checked = self._checked(message, headers, refusal)
                if isinstance(checked, Invalid):
                    return self._invalid(message, headers, checked)
                job = checked
                return self._run(message, headers, attempt, job)
            finally:
                reset_current(token)
        except BaseException as exc:  # nothing one message does may end its job thread
            return self._escaped(message, job, exc)

    def _escaped(self, message: Message, job: Job | None, exc: BaseException) -> bool:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        RUNTIME.error(
            "Processing Message(topic=%s, partition=%s, offset=%s) failed inside the worker;"
            " reported as a failure:\n%s",
            message.topic,
            message.partition,
            message.offset,
            stack,
        )
        if self._observer is not None:
            notify(self._observer, "job_finished", "failure", 0.0)
        self._run_callback("failure", message, job, None, exc, stack)
        return True

    def _run_callback(
        self,
        status: str,
        message: Message,
        job: Job | None,
        result: Any,
        exception: BaseException | None,
        stacktrace: str | None,
    ) -> None:
        if self._callback is None:
            return
        try:
            self._logger.info("Executing callback ...")
            with self._callback_lock:
                self._callback(status, message, job, result, exception, stacktrace)
        except BaseException as exc:  # also SystemExit: a callback never ends the thread
            self._logger.exception("Callback raised an exception: %s", exc)

    def _refusal(self, message: Message, headers: Mapping[str, bytes] | None) -> str:
        """Why the record is refused unread (too large, not validly signed, expired), or ``""``."""
        if self._max_bytes is not None:
            # what the worker reads of it: key, value and kq's headers
            size = len(message.value) + len(message.key or b"")
            size += sum(len(k) + len(v) for k, v in (headers or {}).items())
            if size > self._max_bytes:
                return f"message of {size} bytes exceeds max_message_bytes={self._max_bytes}"
        if self._verifier is not None:
            return self._verifier.problem(
                message.topic, message.key, message.value, headers, now_ms()
            )
        return ""

    def _checked(
        self, message: Message, headers: Mapping[str, bytes] | None, refusal: str
    ) -> Job | Invalid:
        """The message's job, or why it is not one (KQ's ``Job was invalid`` line written)."""
        # Asked once per job: three INFO lines per no-op job are a measurable
        # share of it even when INFO is off.
        info = self._logger.isEnabledFor(logging.INFO)
        if info:
            self._logger.info(
                "Processing Message(topic=%s, partition=%s, offset=%s) ...",
                message.topic,
                message.partition,
                message.offset,
            )
        try:
            if refusal:
                raise InvalidJob(refusal)
            job = check_job(self._decode(message.value))
            if self._verifier is not None:
                signed_id = (headers or {})[H_ID].decode(errors="replace")
                if job.id != signed_id:
                    raise InvalidJob(f"job id {job.id!r} is not its signed kq-id {signed_id!r}")
        except BaseException as exc:  # a deserializer may raise anything, sys.exit() included
            self._logger.error("Job was invalid: %s", exc)
            return Invalid(exc, refused=bool(refusal))
        # Outside the check: how a job is logged never decides whether it runs
        # (call_repr shows an argument whose repr() fails as unrepresentable).
        # The repr is the costliest step of a no-op job: only when logged.
        if info:
            description = call_repr(job.func, job.args or (), job.kwargs or {})  # type: ignore[arg-type]
            self._logger.info("Executing job %s: %s", job.id, description)
        return job

    def _invalid(
        self, message: Message, headers: Mapping[str, bytes] | None, invalid: Invalid
    ) -> bool:
        """Report an invalid message; keep it as a dead letter first when the worker keeps them."""
        # A job enqueued with a retry policy asked to be kept: its producer's
        # headers say so (read only for a record that passed the signature check).
        keep = self._router.keeps_invalid or (
            not invalid.refused and headers is not None and H_RETRY in headers
        )
        self._unimportable.seen(invalid.module, self._observer, keep)
        if keep:
            reason = f"{type(invalid.error).__name__}: {safe_repr_text(invalid.error)}"
            if not self._write(
                message,
                lambda: self._router.invalid(message, headers, reason, signed=not invalid.refused),
            ):
                return False
        if self._observer is not None:
            notify(self._observer, "job_finished", "invalid", 0.0)
        self._run_callback("invalid", message, None, None, None, None)
        return True

    def _run(
        self, message: Message, headers: Mapping[str, bytes] | None, attempt: Attempt, job: Job
    ) -> bool:
        result: Result
        started = time.perf_counter() if self._observer is not None else 0.0
        if job.timeout:
            result = run_isolated(job, float(job.timeout), self._abort)
        else:
            result = run_inline(job, self._loop, self._abort)
        if self._observer is not None and result.status != "aborted":
            notify(self._observer, "job_finished", result.status, time.perf_counter() - started)
        if result.status == "aborted":
            RUNTIME.warning("Job %s was stopped by a hard shutdown; it will run again", job.id)
            return False
        if result.status == "success":
            if self._logger.isEnabledFor(logging.INFO):
                self._logger.info("Job %s returned: %s", job.id, result.value)
            self._run_callback("success", message, job, result.value, None, None)
            return True
        if result.status == "timeout":
            self._logger.error("Job %s timed out after %s seconds", job.id, job.timeout)
        else:
            self._logger.error(
                "Job %s raised an exception: %r\n%s", job.id, result.exception, result.stacktrace
            )
        # The retry (or dead letter) is durably written before the callback runs
        # and before the offset can be committed.
        if not self._write(
            message,
            lambda: self._router.route(
                message,
                headers,
                attempt,
                result.status,
                job.timestamp,
                result.exception,
                result.stacktrace,
            ),
        ):
            return False
        if result.status == "timeout":
            self._run_callback("timeout", message, job, None, None, None)
        else:
            self._run_callback("failure", message, job, None, result.exception, result.stacktrace)
        return True

    def _write(self, message: Message, write: Callable[[], bool]) -> bool:
        """Write a retry or dead letter until it is written; False if given up (runs again)."""
        tp = (message.topic, message.partition)
        failures = 0
        try:
            while True:
                try:
                    if write():
                        break
                except Exception:
                    # not an outage: writing again would fail the same way
                    RETRIES.exception(
                        "Could not route the failed job at %s/%s/%s; it is not retried",
                        message.topic,
                        message.partition,
                        message.offset,
                    )
                    break
                failures += 1
                if failures == 1:
                    self._hold(tp, True)
                delay = min(RETRY_WRITE_BACKOFF_MAX, RETRY_WRITE_BACKOFF * 2 ** (failures - 1))
                RETRIES.warning(
                    "Partition %s/%s takes no new jobs until the retry or dead letter of offset"
                    " %s is written (%s failed rounds; next in %.0f s)",
                    message.topic,
                    message.partition,
                    message.offset,
                    failures,
                    delay,
                )
                reason = self._wait(tp, delay)
                if reason:
                    RETRIES.warning(
                        "Gave up writing the retry or dead letter of %s/%s/%s (%s): it is not"
                        " committed and will run again",
                        message.topic,
                        message.partition,
                        message.offset,
                        reason,
                    )
                    return False
            if failures:
                RETRIES.warning(
                    "Wrote the retry or dead letter of %s/%s/%s after %s failed rounds",
                    message.topic,
                    message.partition,
                    message.offset,
                    failures,
                )
            return True
        finally:
            if failures:
                self._hold(tp, False)

    def _wait(self, tp: TopicPartition, seconds: float) -> str | None:
        """Wait before writing again; why not to, if the write must be given up."""
        deadline = time.monotonic() + seconds
        while True:
            if self._abort.is_set():
                return "hard stop"
            if not self._owns(tp):
                return "partition no longer owned by this worker"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._abort.wait(min(remaining, 0.1))
