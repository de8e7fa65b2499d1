"""``--profile``: one scenario's kq process under py-spy, and the top of its profile.

py-spy samples the process from outside (``--nonblocking``: without stopping
it), and only threads holding the GIL (``--gil``): in a worker, Python's
serial cost, which bounds its rate; a thread blocked in a wait is not
counted. Its raw output is one line per distinct stack,
``thread (TID)[: NAME];frame;...;frame COUNT``, summed here per function:
*self* (the function was on top, including C code it called) and
*inclusive* (anywhere on the stack), in shares and in µs per job. Samples
spent importing modules (start-up) are left out.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# scenario -> (the child to wrap, what it is)
TARGETS: dict[str, tuple[str, str]] = {
    "drain": ("drain-kq-confluent", "kq worker (confluent) draining no-op jobs"),
    "drain-kafka-python": ("drain-kq-kafka-python", "kq worker (kafka-python) draining no-ops"),
    "enqueue-batch": ("enqueue-batch", "`with queue.batch()` enqueuing no-op jobs"),
    "enqueue-many": ("enqueue-many", "`queue.enqueue_many` of no-op jobs"),
    "enqueue-single": ("enqueue-single", "single durable `queue.enqueue`"),
    "io": ("io-c64", "kq worker, concurrency 64, 20 ms IO-bound jobs"),
    "concurrency": ("conc-unkeyed-c8", "kq worker, concurrency 8, no-op jobs"),
    "latency": ("latency-kq", "kq worker at 200 jobs/s"),
    "rss": ("rss", "kq worker draining the large backlog"),
}
RATE = 250  # samples per second

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str:
    """The py-spy executable (the ``bench`` extra installs it into the venv)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[dev,bench]'")
    return found


def wrapper(output: Path) -> list[str]:
    """The argv prefix that runs a child under py-spy, writing raw stacks to ``output``."""
    return [
        py_spy(),
        "record",
        "--nonblocking",
        "--threads",
        "--gil",
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--output",
        str(output),
        "--",
    ]


def _function(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: one entry per function."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({Path(match['file']).name})"


@dataclass
class Profile:
    """Samples per thread and per function."""

    total: int
    imports: int  # samples spent importing modules, left out of the rest
    threads: Counter[str]
    self_samples: Counter[str]
    inclusive: Counter[str]


def parse(path: Path) -> Profile:
    """Read py-spy's raw output."""
    threads: Counter[str] = Counter()
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = imports = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        if not frames:
            continue  # a thread sampled between frames
        if any(f.startswith("_find_and_load ") for f in frames):
            imports += count  # start-up, not per-job work
            continue
        name = thread.split(": ", 1)[1] if ": " in thread else thread
        # lane threads are numbered (kq-job-0, kq-job-1, ...): one entry for all
        threads[re.sub(r"-\d+$", "-N", name)] += count
        total += count
        functions = [_function(f) for f in frames]
        self_samples[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    return Profile(total, imports, threads, self_samples, inclusive)


def summary(profile: Profile, jobs: int, what: str, top: int = 20) -> str:
    """The top of the profile as text: shares and µs per job."""

    def per_job(samples: int) -> str:
        return f"{samples / RATE / jobs * 1e6:8.2f}" if jobs else "       ?"

    lines = [
        f"Profile of {what}: {profile.total} samples holding the GIL at {RATE}/s "
        f"(≈ {profile.total / RATE:.1f} s), {jobs:,} jobs "
        f"(≈ {profile.total / RATE / max(jobs, 1) * 1e6:.1f} µs with the GIL per job); "
        f"{profile.imports} samples of imports left out.",
        "",
        "Samples per thread:",
    ]
    for name, count in profile.threads.most_common():
        lines.append(f"  {count / profile.total:6.1%}  {per_job(count)} µs/job  {name}")
    for title, counter in (("self", profile.self_samples), ("inclusive", profile.inclusive)):
        lines += ["", f"Top {top} functions by {title} time:", "  share   µs/job  function"]
        for function, count in counter.most_common(top):
            lines.append(f"  {count / profile.total:6.1%}  {per_job(count)}  {function}")
    return "\n".join(lines)
