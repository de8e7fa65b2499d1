"""What a dead letter's job is, told without deserializing it.

A dead letter's value is untrusted bytes. JSON jobs are read as data (the
function's name is only text: nothing is imported); pickled jobs are read by
``kq._pickle_peek`` (opcodes walked as data, never unpickled); anything else is
only measured. Size and SHA-256 are always given, so an operator can match a
letter against what a producer sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kq._pickle_peek import peek, render_data

__all__ = ["JobSummary", "summarize"]

_JSON_FORMAT = "kq-json-1"
_MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class JobSummary:
    """A job described from its bytes alone: what they claim, unverified."""

    format: str
    """``json``, ``pickle`` or ``unknown``."""
    job_id: str | None
    call: str
    size: int
    sha256: str


def _json_call(document: dict[str, Any]) -> str:
    func = document.get("func")
    name = func if isinstance(func, str) else "<no function>"
    args, kwargs = document.get("args"), document.get("kwargs")
    return render_data(name, args if isinstance(args, list) else [], kwargs)


def summarize(value: bytes) -> JobSummary:
    """Describe a job's record value; never raises and never runs anything it names."""
    digest = hashlib.sha256(value).hexdigest()
    document: Any = None
    if value[:1] == b"{" and len(value) <= _MAX_JSON_BYTES:
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):
            document = None
    if isinstance(document, dict) and document.get("format") == _JSON_FORMAT:
        job_id = document.get("id")
        return JobSummary(
            "json",
            job_id if isinstance(job_id, str) else None,
            _json_call(document),
            len(value),
            digest,
        )
    pickled = peek(value)
    if pickled is not None:
        return JobSummary("pickle", pickled.id, pickled.call, len(value), digest)
    unreadable = "<not a job kq can read without running it>"
    return JobSummary("unknown", None, unreadable, len(value), digest)
