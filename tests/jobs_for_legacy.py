"""Job functions importable both here and in the KQ 2.2.1 environment (migration tests).

Workers unpickle module-level functions by reference, so this module must stay
free of imports of ``kq`` (the legacy side has the old one under that name) and
of test-only packages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def add(a: int, b: int) -> int:
    """Return the sum (a successful job)."""
    return a + b


def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the call's arguments as JSON-friendly data (shows args/kwargs arrived intact)."""
    return {"args": list(args), "kwargs": dict(kwargs)}


def raise_value_error(text: str) -> None:
    """Raise ``ValueError(text)`` (a failing job)."""
    raise ValueError(text)


def spin_for(seconds: float) -> str:
    """Busy-loop in Python bytecode, then return (a job that outlives a short timeout).

    KQ 2.2.1 times jobs out with ``_thread.interrupt_main()``, which only takes effect
    between bytecodes: it would not cut a ``time.sleep`` short, but it stops this loop.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "spun"


def make_multiplier(factor: int) -> Callable[[int], int]:
    """A lambda (closure): dill pickles it by value, not by name."""
    return lambda n: n * factor
