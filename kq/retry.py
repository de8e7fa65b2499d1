"""Retry policies, and the attempt state that travels with a job in Kafka headers.

A job's retry state rides in headers of its Kafka record, never in the pickled
job, so a retried or dead-lettered job is byte for byte the job that was
enqueued and KQ 2.2.1 workers (which ignore headers) still read it. kq's whole
header vocabulary is defined here (``H_*``):

- ``kq-attempt``: this delivery's attempt number, 1 for the first;
- ``kq-first``: milliseconds since the epoch of the first enqueue;
- ``kq-retry``: the job's retry policy as JSON (absent: no retries);
- ``kq-group``: on a retry (and a dead letter), the consumer group whose attempt
  failed: only that group runs the retry, workers of other groups on the same
  topic commit it without running it (a fresh job has none: every group runs it);
- on delay-tier records only: ``kq-due`` (when the job is due, ms on the
  writer's clock), ``kq-written`` (the writer's clock when it wrote the record),
  ``kq-topic`` (the home topic) and ``kq-partition`` (the home partition, if the
  job had one); the forwarder removes them when the job goes home;
- on dead letters: ``kq-status``, ``kq-error``, ``kq-traceback``, ``kq-source``;
- on signed jobs (``kq.signing``): ``kq-id`` (the job's id), ``kq-expires`` (ms
  since the epoch after which no worker runs it), ``kq-ttl`` (how long, in ms,
  a signed job stays valid after it is due: a retry or a requeue is valid that
  long after its own due time) and ``kq-sig`` (the signature).

A bad ``kq-attempt``/``kq-first``/``kq-retry`` header is a ``ValueError``
here; a worker then logs it on ``kq.retries`` and runs the job as a first
attempt under its own default policy. A worker with ``signing_keys`` reads
none of them before the record's size and signature are checked.
"""

from __future__ import annotations

import contextvars
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from kq._checks import fail_type, fail_value, is_number

__all__ = ["MAX_ATTEMPTS", "MAX_DELAY", "Attempt", "RetryPolicy", "current_attempt"]

H_ATTEMPT = "kq-attempt"
H_FIRST = "kq-first"
H_RETRY = "kq-retry"
H_GROUP = "kq-group"
H_DUE = "kq-due"
H_WRITTEN = "kq-written"
H_TOPIC = "kq-topic"
H_PARTITION = "kq-partition"
H_ERROR = "kq-error"
H_TRACEBACK = "kq-traceback"
H_SOURCE = "kq-source"
H_STATUS = "kq-status"
H_ID = "kq-id"
H_EXPIRES = "kq-expires"
H_TTL = "kq-ttl"
#: On a requeue marker in a dead-letter topic: the ``PARTITION:OFFSET`` of the letter
#: requeued, and where it went (a marker has an empty value and no ``kq-status``).
H_REQUEUED = "kq-requeued"
H_REQUEUED_TO = "kq-requeued-to"

#: Headers that only delay-tier records carry; removed when a job goes home.
TIER_HEADERS = frozenset({H_DUE, H_WRITTEN, H_TOPIC, H_PARTITION})

#: The ``kq-status`` of a dead letter the forwarder could never deliver home.
UNDELIVERABLE = "undeliverable"
#: ``kq-status`` of a message that is not a runnable job (kept by ``Worker(keep_invalid=...)``).
INVALID = "invalid"

MAX_ATTEMPTS = 10_000
"""The largest ``max_attempts`` a policy may have."""

MAX_DELAY = 365 * 86_400
"""The longest wait in seconds kq schedules: a ``delay``/``eta`` or a retry's backoff."""

_RETRYABLE = frozenset({"failure", "timeout"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and when a failed job runs again.

    ``max_attempts`` counts every run, the first included (1 = never retry;
    at most ``MAX_ATTEMPTS``). Attempt *n* failing waits
    ``backoff * factor ** (n - 1)`` seconds, at most ``max_backoff`` (itself at
    most ``MAX_DELAY``), scattered by ±``jitter`` (a fraction) so that jobs that
    failed together do not all come back together. Every number must be
    finite. ``retry_on`` names the outcomes retried: ``"failure"`` (default)
    and ``"timeout"``; an ``invalid`` message is never retried, since it would
    never get better.
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
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            fail_value(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
        for name in ("backoff", "factor", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not is_number(value):
                fail_type(f"{name} must be an int or float")
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every check
                fail_value(f"{name} must be a finite number, not {value!r}")
            if value < 0:
                fail_value(f"{name} must be 0 or greater")
        if self.factor < 1:
            fail_value("factor must be 1 or greater")
        if self.jitter > 1:
            fail_value("jitter must be between 0 and 1")
        for name in ("backoff", "max_backoff"):
            if getattr(self, name) > MAX_DELAY:
                fail_value(f"{name} must be at most {MAX_DELAY} seconds (kq.retry.MAX_DELAY)")
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
        """Seconds to wait after attempt number ``attempt`` failed (never above ``max_backoff``
        plus its jitter, whatever ``attempt``)."""
        base = float(min(self.backoff, self.max_backoff))
        steps = attempt - 1
        if steps > 0 and self.factor > 1 and 0 < base < self.max_backoff:
            # Compared in logarithms: factor ** steps alone overflows a float
            # (2.0 ** 1024) long before the cap is reached.
            if steps * math.log(self.factor) >= math.log(self.max_backoff / base):
                base = float(self.max_backoff)
            else:
                base = min(base * self.factor**steps, self.max_backoff)
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
        """Read a ``kq-retry`` header; any problem is a ``ValueError`` naming it.

        The header is checked as strictly as the constructor's arguments: JSON's
        ``NaN``/``Infinity``, a non-integral ``max_attempts`` or a value out of
        range are refused, never coerced.
        """
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            retry_on = raw["retry_on"]
            if not isinstance(retry_on, list):
                raise TypeError("retry_on must be a list")
            return cls(
                max_attempts=raw["max_attempts"],
                backoff=raw["backoff"],
                factor=raw["factor"],
                max_backoff=raw["max_backoff"],
                jitter=raw["jitter"],
                retry_on=frozenset(retry_on),
            )
        except Exception as exc:  # whatever a hostile header makes json or the checks raise
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
        number = _header_int(headers, H_ATTEMPT, 1)
        if number is None or number < 1:
            raise ValueError(f"bad kq-attempt header {headers[H_ATTEMPT]!r}")
        first = _header_int(headers, H_FIRST, None)
        policy = RetryPolicy.from_header(headers[H_RETRY]) if H_RETRY in headers else default
        return cls(number, first, policy)


def _header_int(headers: Mapping[str, bytes], name: str, default: int | None) -> int | None:
    """An integer header; ``ValueError`` naming it if it is not one."""
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad {name} header {bytes(raw)[:40]!r}") from exc


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
