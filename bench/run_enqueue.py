"""One benchmark enqueuing process: kq's enqueue paths, or raw confluent-kafka produce.

Run as a script from ``bench/``::

    run_enqueue.py MODE --bootstrap B --topic T --count N [--client C]
    run_enqueue.py paced-kq|paced-raw --bootstrap B --topic T --rate R --seconds S --path F
    run_enqueue.py paced-batch --bootstrap B --topic T --rate R --seconds S --path F

Modes: ``single`` (``queue.enqueue`` one at a time, each durable on return),
``batch`` (``with queue.batch() as b: b.enqueue(...)``), ``many``
(``queue.enqueue_many`` of ``Job`` objects), ``raw`` (confluent-kafka
``produce`` of the same bytes, pre-serialized, then ``flush``, with kq's
producer settings). The paced modes enqueue ``jobs.latency`` jobs at a steady
rate for the latency benchmark: through ``queue.enqueue`` or through a raw
``produce`` + ``flush`` per job. ``paced-batch`` (the soak) enqueues
``jobs.count(path, seq)`` jobs at a steady rate, a ``queue.batch()`` every
tenth of a second. Prints ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import _child
import jobs

from kq import Job, Queue
from kq.clients import make_producer
from kq.serialization import dumps


def job_bytes(topic: str, arg: Any) -> bytes:
    """What ``Queue.enqueue(jobs.noop, arg)`` writes, built without the queue."""
    job = Job(
        id=f"{time.monotonic_ns():032x}",
        timestamp=int(time.time() * 1000),
        topic=topic,
        func=jobs.noop,
        args=(arg,),
        kwargs={},
        timeout=0,
        key=None,
        partition=None,
    )
    return dumps(job)


def produce_all(producer: Any, topic: str, values: list[bytes]) -> None:
    """Produce every value (waiting for room when the local queue is full), then flush."""
    produce = producer.produce
    for value in values:
        while True:
            try:
                produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered within 60 s")


def timed(args: argparse.Namespace) -> tuple[float, float]:
    """Enqueue ``args.count`` jobs one way; return the seconds and the CPU seconds it took.

    CPU: user + system of the whole process (librdkafka's threads included).
    """
    count = args.count
    if args.mode == "raw":
        producer = make_producer(args.bootstrap)
        producer.list_topics(args.topic, timeout=10)  # connect before timing
        values = [job_bytes(args.topic, i) for i in range(count)]
        started, cpu = time.perf_counter(), _cpu()
        produce_all(producer, args.topic, values)
        return time.perf_counter() - started, _cpu() - cpu
    queue = Queue.connect(args.bootstrap, args.topic, client=args.client)
    queue.enqueue(jobs.noop, -1)  # connection and metadata, outside the timing
    started, cpu = time.perf_counter(), _cpu()
    if args.mode == "single":
        for i in range(count):
            queue.enqueue(jobs.noop, i)
    elif args.mode == "batch":
        with queue.batch() as batch:
            for i in range(count):
                batch.enqueue(jobs.noop, i)
    elif args.mode == "many":
        queue.enqueue_many([Job(func=jobs.noop, args=[i]) for i in range(count)])
    else:
        raise SystemExit(f"unknown mode {args.mode}")
    return time.perf_counter() - started, _cpu() - cpu


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def paced(args: argparse.Namespace) -> int:
    """Enqueue ``jobs.latency`` jobs at ``args.rate`` per second for ``args.seconds``."""
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    if args.mode == "paced-kq":
        queue = Queue.connect(args.bootstrap, args.topic, client=args.client)

        def send(sent_at: float) -> None:
            queue.enqueue(jobs.latency, args.path, sent_at)

    else:
        producer = make_producer(args.bootstrap)
        producer.list_topics(args.topic, timeout=10)

        def send(sent_at: float) -> None:
            job = Job(
                id=f"{time.monotonic_ns():032x}",
                timestamp=int(sent_at * 1000),
                topic=args.topic,
                func=jobs.latency,
                args=(args.path, sent_at),
                kwargs={},
                timeout=0,
            )
            producer.produce(args.topic, dumps(job))
            producer.flush(30)  # durable on return, as queue.enqueue

    start = time.monotonic()
    for i in range(total):
        # An absolute schedule: a slow send delays the next one but not the rate.
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(time.time())
    return total


def paced_batches(args: argparse.Namespace) -> int:
    """``jobs.count`` jobs at ``args.rate`` per second for ``args.seconds``: one batch per 0.1 s."""
    queue = Queue.connect(args.bootstrap, args.topic, client=args.client)
    total = int(args.rate * args.seconds)
    per_tick = max(1, int(args.rate / 10))
    start = time.monotonic()
    sent = 0
    tick = 0
    while sent < total:
        delay = start + tick * 0.1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with queue.batch() as batch:
            for seq in range(sent, min(sent + per_tick, total)):
                batch.enqueue(jobs.count, args.path, seq)
        sent = min(sent + per_tick, total)
        tick += 1
    return sent


def main() -> None:
    """Parse the arguments, enqueue, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode", choices=["single", "batch", "many", "raw", "paced-kq", "paced-raw", "paced-batch"]
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--client", default="confluent", choices=["confluent", "kafka-python"])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--path", default="")
    args = parser.parse_args()
    _child.die_with_parent()
    if args.mode.startswith("paced"):
        started = time.monotonic()
        sent = paced_batches(args) if args.mode == "paced-batch" else paced(args)
        _child.emit({"count": sent, "seconds": time.monotonic() - started})
    else:
        seconds, cpu_seconds = timed(args)
        _child.emit({"count": args.count, "seconds": seconds, "cpu_seconds": cpu_seconds})


if __name__ == "__main__":
    main()
