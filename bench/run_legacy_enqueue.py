"""KQ 2.2.1 enqueuing no-op jobs, run in the legacy venv (``tests/legacy_kq.py``).

``run_legacy_enqueue.py BOOTSTRAP TOPIC COUNT``: ``Queue.enqueue`` one at a
time, as KQ users do (KQ flushes the producer after every send). Prints
``RESULT {json}``.
"""

from __future__ import annotations

import sys
import time

import _child
import jobs
from kafka import KafkaProducer

import kq


def main() -> None:
    """Enqueue COUNT jobs with KQ 2.2.1 and time it."""
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _child.die_with_parent()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    queue = kq.Queue(topic, producer)
    queue.enqueue(jobs.noop, -1)  # connection and metadata, outside the timing
    started = time.perf_counter()
    for i in range(count):
        queue.enqueue(jobs.noop, i)
    seconds = time.perf_counter() - started
    producer.close()
    _child.emit({"count": count, "seconds": seconds, "version": kq.__version__})


if __name__ == "__main__":
    main()
