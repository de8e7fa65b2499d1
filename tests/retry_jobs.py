"""Jobs for retry and delay tests: each run is written to a ledger file."""

from __future__ import annotations

import time

from ledger_jobs import _append, starts

import kq


def flaky(ledger: str, name: str, failures: int) -> str:
    """Fail the first ``failures`` runs, then succeed; record each run and its attempt."""
    attempt = kq.current_attempt()
    number = attempt.number if attempt is not None else 0
    _append(ledger, f"start {name} {number}")
    _append(ledger, f"at-{name} {time.time():.3f} {number}")
    if starts(ledger)[name] <= failures:
        raise RuntimeError(f"{name} failed on purpose")
    return name


async def flaky_async(ledger: str, name: str, failures: int) -> str:
    """The coroutine variant: also sees its attempt through kq.current_attempt()."""
    return flaky(ledger, name, failures)


def slow(ledger: str, name: str, seconds: float) -> str:
    """Sleep (to time out), recording each run."""
    _append(ledger, f"start {name} 0")
    time.sleep(seconds)
    return name


def stamp(ledger: str, name: str) -> str:
    """Record when the job ran (for delay tests)."""
    _append(ledger, f"start {name} 0")
    _append(ledger, f"at-{name} {time.time():.3f} 0")
    return name


def run_times(ledger: str, name: str) -> list[float]:
    """When each run of ``name`` started (Unix seconds), from the ledger."""
    from pathlib import Path

    path = Path(ledger)
    if not path.exists():
        return []
    return [
        float(parts[1])
        for parts in (line.split() for line in path.read_text().splitlines())
        if len(parts) == 3 and parts[0] == f"at-{name}"
    ]


def attempts_seen(ledger: str, name: str) -> list[int]:
    """The attempt numbers the runs of ``name`` saw, in order."""
    from pathlib import Path

    path = Path(ledger)
    if not path.exists():
        return []
    return [
        int(parts[2])
        for parts in (line.split() for line in path.read_text().splitlines())
        if len(parts) == 3 and parts[0] == f"at-{name}"
    ]
