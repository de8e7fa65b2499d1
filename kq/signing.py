"""HMAC-SHA256 signatures of job records, checked before anything is deserialized.

Whoever can write to a topic read by a worker with the default (dill)
deserializer can run any code on that worker. With a shared secret, the queue
signs each record and the worker refuses, as ``invalid`` and without
deserializing it, every record that is unsigned, tampered with or signed with
another secret. The signature covers the job topic, the message key and the
value, so a signed job cannot be replayed under another key or to another
topic. It travels in the ``kq-sig`` header (hex), leaving the value unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from kq._checks import fail_type, fail_value

__all__ = ["SIGNATURE_HEADER", "Signer", "Verifier"]

SIGNATURE_HEADER = "kq-sig"
_DOMAIN = b"kq-sig-v1"
_NO_KEY = b"\xff\xff\xff\xff"


def _secret(value: object, name: str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        fail_type(f"{name} must be bytes or str")
    if len(value) < 16:
        fail_value(f"{name} must be at least 16 bytes long")
    return value


def _message(topic: str, key: bytes | None, value: bytes) -> bytes:
    # Lengths make the encoding unambiguous: no topic/key/value split collides.
    encoded_topic = topic.encode()
    key_part = _NO_KEY if key is None else len(key).to_bytes(4, "big") + key
    return b"".join(
        (_DOMAIN, len(encoded_topic).to_bytes(4, "big"), encoded_topic, key_part, value)
    )


class Signer:
    """Signs records with one secret (bytes or str, at least 16 bytes)."""

    def __init__(self, secret: bytes | str) -> None:
        self._secret = _secret(secret, "signing_key")

    def sign(self, topic: str, key: bytes | None, value: bytes) -> bytes:
        """The ``kq-sig`` header value for a record of job topic ``topic``."""
        return (
            hmac.new(self._secret, _message(topic, key, value), hashlib.sha256).hexdigest().encode()
        )


class Verifier:
    """Checks signatures against any of several secrets (to allow rotation)."""

    def __init__(self, secrets: bytes | str | Sequence[bytes | str]) -> None:
        if isinstance(secrets, (bytes, str)):
            secrets = [secrets]
        if not isinstance(secrets, Sequence) or not secrets:
            fail_value("signing_keys must be a secret or a non-empty list of secrets")
        self._secrets = [_secret(s, "signing_keys") for s in secrets]

    def problem(self, topic: str, key: bytes | None, value: bytes, signature: bytes | None) -> str:
        """Why the record must be refused, or ``""`` when one secret's signature matches."""
        if not signature:
            return "unsigned message (no kq-sig header)"
        message = _message(topic, key, value)
        for secret in self._secrets:
            expected = hmac.new(secret, message, hashlib.sha256).hexdigest().encode()
            if hmac.compare_digest(expected, signature):
                return ""
        return "bad signature (tampered, signed with another secret, or moved to another key/topic)"
