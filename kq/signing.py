"""HMAC-SHA256 signatures of job records, checked before anything of a record is read.

Whoever can write to a topic read by a worker with the default (dill)
deserializer can run any code on that worker. With a shared secret, the queue
signs each record and the worker refuses, as ``invalid`` and without
deserializing it or reading any other header, every record that is unsigned,
tampered with, signed with another secret, or expired.

**What is signed.** The job topic, the message key, the value, and the
``kq-*`` headers that decide whether, how often and by whom a job runs
(``SIGNED_HEADERS``, each as present-with-this-value or absent):

- ``kq-id``: the job's id (the same as the id in the value; a worker refuses a
  job whose value says otherwise), so that a job's id can be trusted without
  deserializing it;
- ``kq-first``: when the job was first enqueued (ms);
- ``kq-expires``: when it stops being valid (ms since the epoch), and
  ``kq-ttl``: how long after it is due a job stays valid;
- ``kq-attempt``, ``kq-retry``, ``kq-group``: which attempt this is, the retry
  policy and the consumer group whose retry it is.

The signature travels in ``kq-sig`` (hex); the value is unchanged, so KQ 2.2.1
workers still read signed jobs.

**Not signed, and why that is safe.** ``kq-due`` and ``kq-written`` (when a
record waiting in a delay tier is ready) are rewritten by the forwarder at
every hop, on its own clock; changing them changes when a job runs, never how
often or where, and whoever can write to a tier can as well write the record to
the job topic, due now. ``kq-topic`` names the home of a delayed record: the
forwarder delivers only to its own job topic (anything else is dead-lettered),
and a record moved into another topic's tiers is refused there (the signature
names the job topic). ``kq-partition`` only chooses which partition of that
topic the job goes home to: it still runs once. The dead-letter headers
(``kq-status``, ``kq-error``, ``kq-traceback``, ``kq-source``) describe a
failure to operators; nothing routes by them (a requeue goes to the job topic
or to the topic the operator names). So the forwarder needs no secret.

**Who signs.** The queue (``Queue(signing_key=...)``) signs what it enqueues. A
worker with ``signing_keys`` signs what it writes, with the first key: retries
(with the next ``kq-attempt``, its ``kq-group`` and a new expiry) and dead
letters. ``DeadLetters(signing_keys=...)`` (``kq dead-letters requeue
--signing-key``) re-signs a requeued letter (attempt 1, a new expiry).

**Expiry.** A signed job carries ``kq-expires``: its due time (enqueue time,
or the end of its ``delay``/``eta``) plus ``expires`` seconds (the queue's
``expires=``, per job ``using(expires=...)``, ``DEFAULT_EXPIRES`` by default).
A retry is valid ``kq-ttl`` after its own due time, a requeued letter after
the requeue. A worker refuses a signed job as ``invalid`` once its clock is
past ``kq-expires`` by more than ``CLOCK_SKEW`` seconds: a worker whose clock
is behind accepts jobs that long after they expired (plus its lag), one whose
clock is ahead by more than ``CLOCK_SKEW`` refuses them early.

**What remains.** A captured signed record written back verbatim (to any
partition of its topic, or into its delay tiers) before it expires runs again:
expiry bounds replays in time, it does not prevent them (delivery is at least
once anyway; jobs should be idempotent).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kq._checks import fail_type, fail_value, is_number
from kq.retry import (
    H_ATTEMPT,
    H_EXPIRES,
    H_FIRST,
    H_GROUP,
    H_ID,
    H_RETRY,
    H_TTL,
    MAX_DELAY,
)

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_EXPIRES",
    "SIGNATURE_HEADER",
    "SIGNED_HEADERS",
    "Signer",
    "Verifier",
]

SIGNATURE_HEADER = "kq-sig"

#: The headers a signature covers, in this order (see the module docstring).
SIGNED_HEADERS = (H_ID, H_FIRST, H_EXPIRES, H_TTL, H_ATTEMPT, H_RETRY, H_GROUP)

DEFAULT_EXPIRES = 86_400.0
"""Seconds a signed job stays valid after it is due, unless the queue or the job says."""

CLOCK_SKEW = 300.0
"""Seconds a worker's clock may be ahead of the signer's before it refuses a job early."""

_DOMAIN = b"kq-sig-v2"
_ABSENT = b"\xff\xff\xff\xff"


def _secret(value: object, name: str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        fail_type(f"{name} must be bytes or str")
    if len(value) < 16:
        fail_value(f"{name} must be at least 16 bytes long")
    return value


def _field(data: bytes | None) -> bytes:
    return _ABSENT if data is None else len(data).to_bytes(4, "big") + data


def _message(
    topic: str, key: bytes | None, value: bytes, headers: Mapping[str, bytes] | None
) -> bytes:
    # Every part but the last carries its length (or the absent marker), so
    # no two different records encode alike.
    found = headers or {}
    return b"".join(
        (
            _DOMAIN,
            _field(topic.encode()),
            _field(key),
            *(_field(found.get(name)) for name in SIGNED_HEADERS),
            value,
        )
    )


def check_expires(expires: Any) -> None:
    """Refuse an ``expires`` that is not a number of seconds in (0, ``MAX_DELAY``]."""
    if not is_number(expires):
        fail_type("expires must be an int or float (seconds)")
    if not (math.isfinite(expires) and 0 < expires <= MAX_DELAY):
        fail_value(f"expires must be more than 0 and at most {MAX_DELAY} seconds")


def validity(due_ms: int, ttl_ms: int) -> dict[str, bytes]:
    """The expiry headers of a signed record due at ``due_ms``, valid ``ttl_ms`` after that."""
    return {H_EXPIRES: str(due_ms + ttl_ms).encode(), H_TTL: str(ttl_ms).encode()}


def ttl_of(headers: Mapping[str, bytes]) -> int:
    """The ``kq-ttl`` of a verified record, in ms (``DEFAULT_EXPIRES`` if it has none)."""
    raw = headers.get(H_TTL)
    if raw is not None and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return int(DEFAULT_EXPIRES * 1000)


def _int_header(headers: Mapping[str, bytes], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


class Signer:
    """Signs records with one secret (bytes or str, at least 16 bytes)."""

    def __init__(self, secret: bytes | str) -> None:
        self._secret = _secret(secret, "signing_key")

    def sign(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
    ) -> bytes:
        """The ``kq-sig`` header value for a record of job topic ``topic`` with ``headers``."""
        message = _message(topic, key, value, headers)
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest().encode()

    def seal(
        self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, bytes]
    ) -> dict[str, bytes]:
        """``headers`` with their ``kq-sig`` (any earlier one replaced)."""
        sealed = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
        sealed[SIGNATURE_HEADER] = self.sign(topic, key, value, sealed)
        return sealed

    def sign_job(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
        *,
        job_id: str,
        enqueued_ms: int,
        due_ms: int | None,
        expires: float,
    ) -> tuple[tuple[str, bytes], ...]:
        """A new job's headers (``headers`` plus id, enqueue time, expiry), signed."""
        found = dict(headers)
        found[H_ID] = job_id.encode()
        found.setdefault(H_FIRST, str(enqueued_ms).encode())
        found.update(validity(max(due_ms or 0, enqueued_ms), int(expires * 1000)))
        return tuple(self.seal(topic, key, value, found).items())


class Verifier:
    """Checks signatures against any of several secrets (to allow rotation)."""

    def __init__(self, secrets: bytes | str | Sequence[bytes | str]) -> None:
        if isinstance(secrets, (bytes, str)):
            secrets = [secrets]
        if not isinstance(secrets, Sequence) or not secrets:
            fail_value("signing_keys must be a secret or a non-empty list of secrets")
        self._secrets = [_secret(s, "signing_keys") for s in secrets]

    def signer(self) -> Signer:
        """A signer with the first (newest) secret: what a worker writes is signed with it."""
        return Signer(self._secrets[0])

    def problem(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None,
        now_ms: int | None = None,
    ) -> str:
        """Why the record must be refused, or ``""`` when one secret's signature matches.

        With ``now_ms`` (a worker about to run it) an expired job, or a signed
        one without its id or expiry, is refused too.
        """
        found = headers or {}
        signature = found.get(SIGNATURE_HEADER)
        if not signature:
            return "unsigned message (no kq-sig header)"
        message = _message(topic, key, value, found)
        digests = (hmac.new(s, message, hashlib.sha256).hexdigest() for s in self._secrets)
        if not any(hmac.compare_digest(d.encode(), signature) for d in digests):
            return (
                "bad signature (tampered with, signed with another secret, moved to another"
                " key or topic, or signed by a kq older than its kq-* header signing)"
            )
        if now_ms is None:
            return ""
        expires = _int_header(found, H_EXPIRES)
        if H_ID not in found or expires is None:
            return "signed message without a valid kq-id and kq-expires"
        late = now_ms - expires
        if late > CLOCK_SKEW * 1000:
            return (
                f"signed job expired {late / 1000:.0f} s ago (kq-expires {expires};"
                f" more than the {CLOCK_SKEW:.0f} s clock skew allowed): a replay, or enqueued"
                " with too short an expires="
            )
        return ""
