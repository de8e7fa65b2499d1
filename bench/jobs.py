"""Job functions of the benchmark, imported as the top-level module ``jobs``.

Workers unpickle module-level functions by reference (``jobs.noop``), so both
kq workers and KQ 2.2.1 workers (whose venv has only ``bench/`` on its path)
must import this module under the same name. It therefore imports nothing
from ``kq``: the legacy side has the old one under that name.

Jobs that report something append one line to a file named in their
arguments: one write with ``O_APPEND`` is atomic for lines this short, so
threads and processes can share the file.
"""

from __future__ import annotations

import os
import time


def noop(*args: object) -> None:
    """Do nothing: the job of the drain and enqueue benchmarks."""


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _memory_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in kB, or zeros where /proc is missing."""
    rss = hwm = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def stamp(path: str, label: str) -> None:
    """Record ``stamp LABEL MONOTONIC PID RSS_KB HWM_KB CPU_S`` (marks a point of a drain).

    ``time.monotonic`` is CLOCK_MONOTONIC on Linux, one clock for all processes;
    CPU_S is the process's user+system time so far, all its threads.
    """
    now = time.monotonic()
    times = os.times()
    rss, hwm = _memory_kb()
    cpu = times.user + times.system
    _append(path, f"stamp {label} {now:.6f} {os.getpid()} {rss} {hwm} {cpu:.3f}\n")


def io_sleep(path: str, key: str, seq: int, seconds: float) -> None:
    """Sleep like a job waiting on IO; record ``io KEY SEQ START END`` (monotonic)."""
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    _append(path, f"io {key} {seq} {start:.6f} {end:.6f}\n")


def latency(path: str, sent_at: float) -> None:
    """Record ``lat SECONDS``: wall time from just before the enqueue to this job's start."""
    _append(path, f"lat {time.time() - sent_at:.6f}\n")


def count(path: str, seq: int) -> None:
    """Record ``run SEQ``: one line per run, so a report counts runs per job."""
    _append(path, f"run {seq}\n")


def slow_once(path: str, marker: str, seconds: float) -> None:
    """Sleep ``seconds`` the first time only (``marker`` records it); record ``run slow``."""
    first = not os.path.exists(marker)
    if first:
        _append(marker, "started\n")
    _append(path, "run slow\n")
    if first:
        time.sleep(seconds)
        _append(path, f"stamp slow-end {time.monotonic():.6f} {os.getpid()} 0 0 0\n")


def sleep_done(path: str, seconds: float) -> None:
    """Sleep ``seconds``; record ``done PID END`` (monotonic): which process ran it, and when."""
    time.sleep(seconds)
    _append(path, f"done {os.getpid()} {time.monotonic():.6f}\n")
