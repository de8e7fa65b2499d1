"""SIGINT and SIGTERM handlers for as long as a worker runs (main thread only)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(handler: Callable[[int, FrameType | None], Any]) -> dict[int, Any] | None:
    """Handle SIGINT and SIGTERM with ``handler``; what they had (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set handlers; use stop() instead
    previous: dict[int, Any] = {}
    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return previous


def restore(previous: dict[int, Any] | None) -> None:
    """Put back what ``install`` replaced."""
    if previous is None:
        return
    for sig, handler in previous.items():
        signal.signal(sig, handler)
