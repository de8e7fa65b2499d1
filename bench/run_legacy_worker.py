"""A KQ 2.2.1 worker draining a topic, run in the legacy venv (``tests/legacy_kq.py``).

``run_legacy_worker.py BOOTSTRAP TOPIC GROUP COUNT``: KQ's own ``Worker`` with a
kafka-python consumer as KQ's README builds it, ``start(max_messages=COUNT)``.
The legacy venv has ``bench/`` on its path, never the repository root, so
``import kq`` is KQ 2.2.1. Prints ``RESULT {json}``.
"""

from __future__ import annotations

import sys
import time

import _child
import jobs  # noqa: F401  (the jobs' module, imported before the first message)
from kafka import KafkaConsumer

import kq


def main() -> None:
    """Drain COUNT messages with KQ 2.2.1."""
    bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    _child.die_with_parent()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    worker = kq.Worker(topic, consumer)
    started = time.monotonic()
    processed = worker.start(max_messages=count)
    consumer.close()
    _child.emit(
        {"processed": processed, "seconds": time.monotonic() - started, "version": kq.__version__}
    )


if __name__ == "__main__":
    main()
