"""Job functions for the concurrency tests (workers unpickle them by reference).

Every job writes ``start``/``end`` lines to an append-only ledger file, so a test
can see, whichever thread or process ran a job, in which order jobs started
and ended and which of them overlapped. The rendezvous jobs prove parallelism
behaviourally: each waits, with a bounded timeout, until ``parties`` jobs are
inside at once, and fails if that never happens (as it would if the jobs
were run one after another).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RENDEZVOUS_TIMEOUT = 15.0  # seconds a rendezvous job waits for the others


class NotTogether(Exception):
    """A rendezvous job gave up: the others never ran at the same time."""


def append(ledger: str, line: str) -> None:
    """Append one line; O_APPEND writes of one short line are atomic across processes."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def step(ledger: str, key: str, seq: int, sleep: float = 0.0) -> int:
    """Record ``start key seq``, sleep, record ``end key seq``; return ``seq``."""
    append(ledger, f"start {key} {seq}")
    if sleep:
        time.sleep(sleep)
    append(ledger, f"end {key} {seq}")
    return seq


def _wait_for_parties(directory: str, name: str, parties: int, timeout: float) -> None:
    Path(directory, name).touch()
    deadline = time.monotonic() + timeout
    while True:
        inside = len(os.listdir(directory))
        if inside >= parties:
            return
        if time.monotonic() >= deadline:
            raise NotTogether(
                f"rendezvous {name}: only {inside} of {parties} jobs were running at once "
                f"after {timeout} s (the jobs were not run in parallel)"
            )
        time.sleep(0.01)


def rendezvous(
    ledger: str, directory: str, name: str, parties: int, timeout: float = RENDEZVOUS_TIMEOUT
) -> str:
    """Wait until ``parties`` rendezvous jobs of ``directory`` are inside at once.

    Raises ``NotTogether`` (so the job fails) if they never are within ``timeout``.
    Works across threads and processes (timed jobs run in forked children).
    """
    append(ledger, f"start {name} 0")
    _wait_for_parties(directory, name, parties, timeout)
    append(ledger, f"end {name} 0")
    return name


def wait_for_file(ledger: str, name: str, release: str, timeout: float = 60.0) -> str:
    """Record ``start``, block until the file ``release`` exists, record ``end``.

    Raises ``TimeoutError`` after ``timeout`` seconds (a bounded block).
    """
    append(ledger, f"start {name} 0")
    deadline = time.monotonic() + timeout
    while not os.path.exists(release):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name}: {release} did not appear within {timeout} s")
        time.sleep(0.01)
    append(ledger, f"end {name} 0")
    return name


def block_first_run(ledger: str, name: str, seq: int, sleep: float, once: str) -> int:
    """Like ``step``, but only the first run (across processes) sleeps ``sleep`` seconds.

    ``once`` is a directory; a file named after the job marks its first run.
    """
    append(ledger, f"start {name} {seq}")
    try:
        fd = os.open(os.path.join(once, f"{name}-{seq}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        time.sleep(sleep)
    append(ledger, f"end {name} {seq}")
    return seq


# -- coroutine jobs --------------------------------------------------------------


async def async_step(ledger: str, key: str, seq: int, sleep: float = 0.0) -> int:
    """``step`` as a coroutine that really awaits between its two lines."""
    append(ledger, f"start {key} {seq}")
    await asyncio.sleep(sleep)
    append(ledger, f"end {key} {seq}")
    return seq


_counters: dict[str, int] = {}
_counter_lock = threading.Lock()


async def async_rendezvous(
    ledger: str, token: str, name: str, parties: int, timeout: float = RENDEZVOUS_TIMEOUT
) -> tuple[str, int, int]:
    """A coroutine that awaits until ``parties`` coroutines of ``token`` are inside.

    The count is module-level (one worker process), so this passes when the
    coroutines of one worker run concurrently (on one loop or several). Returns
    ``(name, id of the running loop, id of the thread)``.
    """
    append(ledger, f"start {name} 0")
    with _counter_lock:
        _counters[token] = _counters.get(token, 0) + 1
    deadline = time.monotonic() + timeout
    while _counters[token] < parties:
        if time.monotonic() >= deadline:
            raise NotTogether(
                f"async rendezvous {name}: only {_counters[token]} of {parties} coroutines "
                f"were running at once after {timeout} s (they did not overlap)"
            )
        await asyncio.sleep(0.01)
    append(ledger, f"end {name} 0")
    return name, id(asyncio.get_running_loop()), threading.get_ident()


_events: dict[str, asyncio.Event] = {}


async def async_shared_event(token: str, name: str, setter: bool, timeout: float = 20.0) -> str:
    """Coroutines that share one ``asyncio.Event`` (a loop-bound resource).

    The first coroutine of ``token`` creates the event; the ``setter`` sets it and
    the others await it. Awaiting an event made on another loop raises.
    """
    event = _events.setdefault(token, asyncio.Event())
    if setter:
        event.set()
    else:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            raise NotTogether(f"{name}: the event was not set within {timeout} s") from None
    return name


async def async_wait_for_times_out(seconds: float) -> str:
    """An ``asyncio.wait_for`` that times out: the job raises ``asyncio.TimeoutError``."""
    await asyncio.wait_for(asyncio.Event().wait(), seconds)
    return "not reached"


async def async_raise(exc: BaseException) -> None:
    """A coroutine job that raises ``exc``."""
    await asyncio.sleep(0)
    raise exc


# -- ledger views -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One ledger line: ``kind`` is start or end."""

    kind: str
    name: str
    seq: int


def events(ledger: str) -> list[Event]:
    """All ledger lines, in the order they were written."""
    path = Path(ledger)
    if not path.exists():
        return []
    out: list[Event] = []
    for line in path.read_text().splitlines():
        kind, name, seq = line.split()
        out.append(Event(kind, name, int(seq)))
    return out


def ended(ledger: str) -> set[tuple[str, int]]:
    """``(name, seq)`` of every job that ended at least once."""
    return {(e.name, e.seq) for e in events(ledger) if e.kind == "end"}


def started(ledger: str) -> list[tuple[str, int]]:
    """``(name, seq)`` of every start, in order (repeated for re-runs)."""
    return [(e.name, e.seq) for e in events(ledger) if e.kind == "start"]


def max_running(ledger: str) -> int:
    """The most jobs that were between start and end at one time."""
    running = peak = 0
    for event in events(ledger):
        running += 1 if event.kind == "start" else -1
        peak = max(peak, running)
    return peak


# -- in-flight sampling from inside jobs ---------------------------------------------

_samplers: dict[str, Any] = {}


def register_sampler(token: str, read: Any) -> None:
    """Make ``read()`` (e.g. a worker's ``in_flight``) visible to ``sample`` jobs of ``token``."""
    _samplers[token] = read


def unregister_sampler(token: str) -> None:
    """Forget a registered reader."""
    _samplers.pop(token, None)


_samples: dict[str, list[int]] = {}


def sample(token: str, seq: int, sleep: float = 0.0) -> int:
    """A job that records what ``register_sampler``'s reader says now, then sleeps."""
    read = _samplers.get(token)
    if read is not None:
        _samples.setdefault(token, []).append(int(read()))
    if sleep:
        time.sleep(sleep)
    return seq


def samples(token: str) -> list[int]:
    """What ``sample`` jobs of ``token`` recorded."""
    return list(_samples.get(token, []))
