"""What every peer script shares: its settings from the environment, results, CPU time.

Imported as the top-level module ``peercommon`` (the scripts run from
``bench/field/peers``); standard library only, as ``fieldjobs``.

The benchmark sets, for a worker: ``FIELD_BOOTSTRAP``, ``FIELD_TOPIC``,
``FIELD_GROUP``, ``FIELD_JOB`` (tick, io, lat, mark), ``FIELD_CONCURRENCY``,
``FIELD_PATH`` and ``FIELD_TARGET``; for an enqueuer the first two and
``FIELD_JOB``, with the rest on the command line (``enqueue_args``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

BOOTSTRAP = os.environ.get("FIELD_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("FIELD_TOPIC", "field")
GROUP = os.environ.get("FIELD_GROUP", "field")
JOB = os.environ.get("FIELD_JOB", "tick")
CONCURRENCY = int(os.environ.get("FIELD_CONCURRENCY", "1") or 1)
JOBS = ("tick", "io", "lat", "mark")


def die_with_parent() -> None:
    """SIGKILL this process once the benchmark that started it is gone (no orphans)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def cpu() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    times = os.times()
    return times.user + times.system


def emit(result: dict[str, object]) -> None:
    """Hand the result to the benchmark: one JSON line on stdout."""
    print("RESULT " + json.dumps(result), flush=True)


def enqueue_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``enqueue single|batch|fill --count N [--start I]`` or ``paced --rate R --count N``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["single", "batch", "fill", "paced"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start", type=int, default=0, help="first job number")
    parser.add_argument("--rate", type=float, default=200.0)
    return parser.parse_args(argv if argv is not None else sys.argv[1:])


def wait_for_probe(timeout: float = 120.0) -> None:
    """Wait until the worker ran the latency probe (job -1): it is ready, and so is the path."""
    path = os.environ.get("FIELD_PATH", "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as report:
                if any(line.startswith("lat -1 ") for line in report):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the worker did not run the latency probe within {timeout:.0f} s")


def paced_times(count: int, rate: float):  # type: ignore[no-untyped-def]
    """Yield the seconds to wait before each of ``count`` sends at ``rate`` per second.

    An absolute schedule: a slow send delays the next one, not the rate.
    """
    start = time.monotonic()
    for i in range(count):
        yield max(0.0, start + i / rate - time.monotonic())


# Every process that imports a peer module (the worker processes that taskiq
# and Celery start too) ends when the process that started it does.
die_with_parent()
