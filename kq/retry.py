"""Retry policies, and the attempt state that travels with a job in Kafka headers.

A job's retry state rides in headers of its Kafka record, never in the pickled
job, so a retried or dead-lettered job is byte for byte the job that was
enqueued and KQ 2.2.1 workers (which ignore headers) still read it:

- ``kq-attempt``: this delivery's attempt number, 1 for the first;
- ``kq-first``: milliseconds since the epoch of the first enqueue;
- ``kq-retry``: the job's retry policy as JSON (absent: no retries);
- ``kq-due`` / ``kq-topic``: on delay topics, when and where the job is due.
"""

from __future__ import annotations

import contextvars
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from kq._checks import fail_type, fail_value, is_number

__all__ = ["Attempt", "RetryPolicy", "current_attempt"]

H_ATTEMPT = "kq-attempt"
H_FIRST = "kq-first"
H_RETRY = "kq-retry"
H_DUE = "kq-due"
H_TOPIC = "kq-topic"
H_ERROR = "kq-error"
H_TRACEBACK = "kq-traceback"
H_SOURCE = "kq-source"
H_STATUS = "kq-status"

_RETRYABLE = frozenset({"failure", "timeout"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and when a failed job runs again.

    ``max_attempts`` counts every run, the first included (1 = never retry).
    Attempt *n* failing waits ``backoff * factor ** (n - 1)`` seconds, at most
    ``max_backoff``, scattered by ±``jitter`` (a fraction) so that jobs that
    failed together do not all come back together. ``retry_on`` names the
    outcomes retried: ``"failure"`` (default) and ``"timeout"``; an
    ``invalid`` message is never retried, since it would never get better.
    """

    max_attempts: int = 3
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0
    jitter: float = 0.1
    retry_on: frozenset[str] = field(default=frozenset({"failure"}))

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            fail_type("max_attempts must be an int")
        if self.max_attempts < 1:
            fail_value("max_attempts must be 1 or greater")
        for name in ("backoff", "factor", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not is_number(value):
                fail_type(f"{name} must be an int or float")
            if value < 0:
                fail_value(f"{name} must be 0 or greater")
        if self.factor < 1:
            fail_value("factor must be 1 or greater")
        if self.jitter > 1:
            fail_value("jitter must be between 0 and 1")
        retry_on = self.retry_on
        if isinstance(retry_on, str) or not all(isinstance(s, str) for s in retry_on):
            fail_type("retry_on must be a collection of outcome names")
        unknown = set(retry_on) - _RETRYABLE
        if unknown:
            fail_value(
                f"retry_on may only hold 'failure' and 'timeout', not {sorted(unknown)}"
                " (an invalid message is never retried)"
            )
        object.__setattr__(self, "retry_on", frozenset(retry_on))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` failed."""
        base = min(self.backoff * self.factor ** (attempt - 1), self.max_backoff)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def retries(self, status: str, attempt: int) -> bool:
        """Whether an outcome ``status`` of attempt ``attempt`` is run again."""
        return status in self.retry_on and attempt < self.max_attempts

    def to_header(self) -> bytes:
        """The policy as the ``kq-retry`` header's JSON."""
        return json.dumps(
            {
                "max_attempts": self.max_attempts,
                "backoff": self.backoff,
                "factor": self.factor,
                "max_backoff": self.max_backoff,
                "jitter": self.jitter,
                "retry_on": sorted(self.retry_on),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_header(cls, data: bytes) -> RetryPolicy:
        """Read a ``kq-retry`` header; ``ValueError`` names what is wrong."""
        try:
            raw = json.loads(data)
            return cls(
                max_attempts=int(raw["max_attempts"]),
                backoff=float(raw["backoff"]),
                factor=float(raw["factor"]),
                max_backoff=float(raw["max_backoff"]),
                jitter=float(raw["jitter"]),
                retry_on=frozenset(raw["retry_on"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"bad kq-retry header {data[:200]!r}: {exc}") from exc


@dataclass(frozen=True)
class Attempt:
    """Where a job is in its life: which run this is and whether another may follow."""

    number: int
    """1 for the first run, 2 for the first retry, ..."""
    first_enqueued_ms: int | None
    """When the job was first enqueued (ms since the epoch), if kq enqueued it."""
    policy: RetryPolicy | None
    """The job's retry policy, if any."""

    @property
    def is_last(self) -> bool:
        """Whether a failure of this run is final (dead-lettered if a policy is set)."""
        return self.policy is None or self.number >= self.policy.max_attempts

    def is_final(self, status: str) -> bool:
        """Whether an outcome ``status`` of this run is the job's last (no retry follows)."""
        return self.policy is None or not self.policy.retries(status, self.number)

    @classmethod
    def from_headers(cls, headers: Mapping[str, bytes], default: RetryPolicy | None) -> Attempt:
        """The attempt of a delivered message; bad headers raise ``ValueError``."""
        number = int(headers[H_ATTEMPT]) if H_ATTEMPT in headers else 1
        if number < 1:
            raise ValueError(f"bad kq-attempt header {headers[H_ATTEMPT]!r}")
        first = int(headers[H_FIRST]) if H_FIRST in headers else None
        policy = RetryPolicy.from_header(headers[H_RETRY]) if H_RETRY in headers else default
        return cls(number, first, policy)


_CURRENT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "kq_attempt", default=None
)


def current_attempt() -> Attempt | None:
    """The attempt of the job being run or reported, inside a job or a worker callback.

    ``None`` outside of them.
    """
    return _CURRENT.get()


def set_current(attempt: Attempt | None) -> contextvars.Token[Attempt | None]:
    """Make ``attempt`` the current one for this thread or task."""
    return _CURRENT.set(attempt)


def reset_current(token: contextvars.Token[Attempt | None]) -> None:
    """Undo ``set_current``."""
    _CURRENT.reset(token)


def encode_headers(
    attempt: int, first_ms: int, policy: RetryPolicy | None
) -> tuple[tuple[str, bytes], ...]:
    """The headers of a job's record for its attempt ``attempt``."""
    headers: list[tuple[str, bytes]] = [
        (H_ATTEMPT, str(attempt).encode()),
        (H_FIRST, str(first_ms).encode()),
    ]
    if policy is not None:
        headers.append((H_RETRY, policy.to_header()))
    return tuple(headers)
