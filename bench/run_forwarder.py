"""A delay forwarder alone in its process, for the delays benchmark (its CPU is its own).

Run as a script from ``bench/``::

    run_forwarder.py --bootstrap B --topic T

Forwards ``T``'s delay tiers, as a worker's forwarder does, until SIGTERM;
then prints ``RESULT {json}``: its CPU seconds (user+system, all threads,
the clients' included) and the records it forwarded.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

import _child


def main() -> None:
    """Forward until SIGTERM, report."""
    from kq._forwarder import Forwarder
    from kq._producer import adapt_producer
    from kq.clients import make_producer

    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    _child.die_with_parent()
    stop = threading.Event()

    def on_term(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    forwarder = Forwarder(args.bootstrap, args.topic, adapt_producer(make_producer(args.bootstrap)))
    forwarder.start()
    print("FORWARDING", flush=True)
    while not stop.wait(0.5):
        pass
    forwarder.stop()
    times = os.times()
    _child.emit(
        {
            "cpu": times.user + times.system,
            "forwarded": forwarder.forwarded,
            "restarts": forwarder.restarts,
        }
    )


if __name__ == "__main__":
    main()
