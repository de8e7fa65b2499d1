"""One benchmark worker process: a kq Worker, or the raw confluent-kafka loop.

Run as a script from ``bench/`` (so ``jobs`` is importable by that name)::

    run_worker.py MODE --bootstrap B --topic T --group G [--max N] [--gate] ...

MODE is ``kq`` (``--client confluent|kafka-python``, ``--concurrency``,
``--max-in-flight``, ``--head-of-line-limit``, ``--no-exact-resume``,
``--no-scheduling``), ``raw`` (``consume`` in batches, ``dill.loads``, call:
the ceiling of any Python worker on this client) or ``raw-poll`` (one
``poll`` per message: the raw loop tuned for latency rather than throughput).
Without ``--max`` the worker runs until SIGTERM. Prints ``RESULT {json}`` at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

import _child
import dill
import jobs  # noqa: F401  (the jobs' module, imported before the first message)


def run_kq(args: argparse.Namespace) -> int:
    """Drain with kq's Worker, built by ``Worker.connect`` as a user would."""
    from kq import Worker

    worker = Worker.connect(
        args.bootstrap,
        args.topic,
        args.group,
        client=args.client,
        concurrency=args.concurrency,
        max_in_flight=args.max_in_flight,
        head_of_line_limit=args.head_of_line_limit,
        exact_resume=not args.no_exact_resume,
        scheduling=not args.no_scheduling,
    )
    if args.gate:
        _child.wait_for_go()
    return worker.start(max_messages=args.max)


def run_raw(args: argparse.Namespace, batched: bool) -> int:
    """The least a Python worker on confluent-kafka can do per job: fetch, ``dill.loads``, call."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    if args.gate:
        _child.wait_for_go()
    consumer.subscribe([args.topic])
    loads = dill.loads
    processed = 0
    limit = args.max
    try:
        while not stopping and (limit is None or processed < limit):
            if batched:
                want = 1000 if limit is None else min(1000, limit - processed)
                messages = consumer.consume(num_messages=want, timeout=0.1)
            else:
                one = consumer.poll(0.1)
                messages = [] if one is None else [one]
            for message in messages:
                if message.error() is not None:
                    continue
                job = loads(message.value())
                job.func(*job.args, **job.kwargs)
                processed += 1
    finally:
        consumer.close()
    return processed


def main() -> None:
    """Parse the arguments, run the chosen loop, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["kq", "raw", "raw-poll"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--client", default="confluent", choices=["confluent", "kafka-python"])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--head-of-line-limit", type=int, default=10_000)
    parser.add_argument("--no-exact-resume", action="store_true")
    parser.add_argument("--no-scheduling", action="store_true", help="no delay forwarder")
    parser.add_argument("--max", type=int, default=None)
    parser.add_argument("--gate", action="store_true", help="start on a line on stdin")
    args = parser.parse_args()
    _child.die_with_parent()
    started = time.monotonic()
    processed = run_kq(args) if args.mode == "kq" else run_raw(args, batched=args.mode == "raw")
    times = os.times()
    _child.emit(
        {
            "processed": processed,
            "seconds": time.monotonic() - started,
            "cpu_seconds": times.user + times.system,
        }
    )


if __name__ == "__main__":
    main()
