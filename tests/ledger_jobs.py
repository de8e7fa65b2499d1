"""Job functions for semantic tests: each run is written to a ledger file.

The ledger is an append-only text file shared by every process of a test, so
a test can count how often each job really ran, whichever worker ran it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path


def _append(ledger: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic across processes
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def record(ledger: str, name: str, sleep: float = 0.0, first_time_only: bool = False) -> str:
    """Write start/end lines around an optional sleep (only on the first run if asked)."""
    first = starts(ledger)[name] == 0
    _append(ledger, f"start {name} {os.getpid()}")
    if sleep and (first or not first_time_only):
        time.sleep(sleep)
    _append(ledger, f"end {name} {os.getpid()}")
    return name


async def record_async(ledger: str, name: str) -> str:
    """A coroutine job that really awaits before it records."""
    await asyncio.sleep(0.01)
    _append(ledger, f"start {name} {os.getpid()}")
    _append(ledger, f"end {name} {os.getpid()}")
    return name.upper()


def _lines(ledger: str, kind: str) -> Counter[str]:
    path = Path(ledger)
    if not path.exists():
        return Counter()
    return Counter(
        parts[1]
        for parts in (line.split() for line in path.read_text().splitlines())
        if len(parts) == 3 and parts[0] == kind
    )


def starts(ledger: str) -> Counter[str]:
    """How often each job started."""
    return _lines(ledger, "start")


def ends(ledger: str) -> Counter[str]:
    """How often each job finished."""
    return _lines(ledger, "end")


def wait_for(predicate: object, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]
