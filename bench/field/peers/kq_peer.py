"""kq in the field benchmark (runs in the project's venv).

    kq_peer.py worker                      # settings from FIELD_* (see peercommon)
    kq_peer.py enqueue single|batch|fill|paced --count N [--rate R]

Worker: ``Worker.connect(...)`` with kq's defaults (a confluent-kafka consumer,
commits after the job and the callback, asynchronously every
``commit_interval``), ``concurrency`` from ``FIELD_CONCURRENCY``, and
``commit_interval`` from ``FIELD_COMMIT_INTERVAL`` when set. Single enqueue:
``queue.enqueue`` (durable on return); batched: ``with queue.batch() as b``.
"""

from __future__ import annotations

import os
import sys
import time

import fieldjobs
import peercommon as pc

from kq import Queue, Worker

FUNCS = {"tick": fieldjobs.tick, "io": fieldjobs.io_sync, "mark": fieldjobs.mark_sync}


def worker() -> None:
    """Run jobs until SIGTERM (kq's graceful stop) or SIGKILL."""
    options: dict[str, object] = {"concurrency": pc.CONCURRENCY}
    interval = os.environ.get("FIELD_COMMIT_INTERVAL")
    if interval:
        options["commit_interval"] = float(interval)
    Worker.connect(pc.BOOTSTRAP, pc.TOPIC, pc.GROUP, **options).start()  # type: ignore[arg-type]


def enqueue() -> None:
    """Enqueue jobs one way; report the seconds and CPU seconds it took."""
    args = pc.enqueue_args(sys.argv[2:])
    queue = Queue.connect(pc.BOOTSTRAP, pc.TOPIC)
    if args.mode == "paced":
        queue.enqueue(fieldjobs.latency, -1, time.time())
        pc.wait_for_probe()
        for i, wait in enumerate(pc.paced_times(args.count, args.rate)):
            if wait:
                time.sleep(wait)
            queue.enqueue(fieldjobs.latency, i, time.time())
        pc.emit({"count": args.count})
        return
    func = FUNCS[pc.JOB]
    numbers = range(args.start, args.start + args.count)
    if args.mode != "fill":
        queue.enqueue(func, -1)  # connection and metadata, outside the timing
    started, cpu = time.perf_counter(), pc.cpu()
    if args.mode == "single":
        for i in numbers:
            queue.enqueue(func, i)
    else:  # batch, fill
        with queue.batch() as batch:
            for i in numbers:
                batch.enqueue(func, i)
    pc.emit({"count": args.count, "seconds": time.perf_counter() - started, "cpu": pc.cpu() - cpu})


if __name__ == "__main__":
    {"worker": worker, "enqueue": enqueue}[sys.argv[1]]()
