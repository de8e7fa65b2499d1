"""What every job of the field benchmark does, whichever library runs it.

Imported as the top-level module ``fieldjobs`` by every peer's script (in its
own virtual environment) and by kq's: it imports nothing outside the standard
library. The worker's scenario settings come from its environment
(``FIELD_PATH``: the run's report file; ``FIELD_TARGET``: jobs in a drain).

Each report is one line appended to the run's file with one ``O_APPEND``
write: atomic for lines this short, so threads and processes share the file.
"""

from __future__ import annotations

import os
import time

PATH = os.environ.get("FIELD_PATH", "")
TARGET = int(os.environ.get("FIELD_TARGET", "0") or 0)
IO_SECONDS = 0.02  # the IO-bound job's wait
MARK_SECONDS = 0.002  # the SIGKILL scenario's job: a little work, then its ledger line

_count = 0
_first = 0.0
_first_cpu = 0.0


def append(line: str) -> None:
    """Append one line to the run's report file."""
    fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def tick(i: int) -> None:
    """The drain's no-op job: counts, and reports the first and the ``TARGET``-th start.

    Reports ``drain FIRST LAST CPU PID``: monotonic seconds of the first and the
    last job, and the process's CPU seconds (all threads) between them.
    """
    global _count, _first, _first_cpu
    _count += 1
    if _count == 1:
        _first, _first_cpu = time.monotonic(), _cpu()
    if _count == TARGET:
        append(
            f"drain {_first:.6f} {time.monotonic():.6f} {_cpu() - _first_cpu:.4f} {os.getpid()}\n"
        )


def io_done(i: int, start: float) -> None:
    """Record ``io I START END`` (monotonic) of an IO-bound job that began at ``start``."""
    append(f"io {i} {start:.6f} {time.monotonic():.6f}\n")


def io_sync(i: int) -> None:
    """The IO-bound job, for libraries that run jobs in threads: a 20 ms blocking wait."""
    start = time.monotonic()
    time.sleep(IO_SECONDS)
    io_done(i, start)


def latency(i: int, sent_at: float) -> None:
    """Record ``lat I SECONDS``: wall time from just before the enqueue to this job's start.

    Job -1 is the enqueuer's probe: it waits for it before it starts timing.
    """
    append(f"lat {i} {time.time() - sent_at:.6f}\n")


def mark_done(i: int) -> None:
    """Record ``mark I PID``: job ``i`` ran to its end in this process."""
    append(f"mark {i} {os.getpid()}\n")


def mark_sync(i: int) -> None:
    """The SIGKILL scenario's job, for thread-running libraries: 2 ms of work, then its line."""
    time.sleep(MARK_SECONDS)
    mark_done(i)
