"""Importable job functions for contract tests (workers unpickle jobs by reference)."""

from __future__ import annotations

import time


def add(a: int, b: int) -> int:
    """Return the sum (a successful job)."""
    return a + b


def raise_value_error(text: str) -> None:
    """Raise ``ValueError(text)`` (a failing job; its name shows in the traceback)."""
    raise ValueError(text)


def sleep_for(seconds: float) -> str:
    """Sleep, then return (a job that outlives a short timeout)."""
    time.sleep(seconds)
    return "slept"


def echo(value: object) -> object:
    """Return the argument unchanged."""
    return value


def wait_for_file(started: str, release: str, limit: float = 120.0) -> str:
    """Create ``started``, then wait (at most ``limit`` s) until ``release`` exists."""
    from pathlib import Path

    Path(started).write_text("started")
    deadline = time.monotonic() + limit
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.02)
    return "released"
