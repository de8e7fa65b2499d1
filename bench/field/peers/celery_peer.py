"""Celery on Kafka (kombu's ``confluentkafka`` transport) in the field benchmark.

Worker, as Celery's docs run it (``-P solo`` for one process; ``-P threads
-c C`` for the IO-bound scenario)::

    python -m celery -A celery_peer worker -P solo -Q TOPIC --without-gossip \
        --without-mingle --without-heartbeat -l warning

Enqueue: ``celery_peer.py enqueue single|batch|fill|paced --count N``; single
is ``task.delay(...)`` (the transport flushes its producer on every publish:
durable on return), batched is ``group(...).apply_async()`` in slices of
``_SLICE`` (Celery's form for many calls; each message is still one flush).

Settings: ``task_acks_late=True`` with ``worker_prefetch_multiplier=1`` (the
message is acknowledged after the task, one reserved at a time: Celery's
documented setup for tasks that must not be lost), ``task_reject_on_worker_lost``,
no result backend (``task_ignore_result``), ``worker_enable_remote_control=False``
(remote control needs fanout queues, which the Kafka transport does not have),
the same ``session.timeout.ms`` (10 s) as every other consumer here, and the
virtual transport's ``polling_interval`` at 0.01 s instead of 1 s (how long the
worker sleeps when its prefetch is full: with 64 threads busy, each refill
waited a whole second). The
transport names the consumer group after the queue (``TOPIC-consumer-group``).
"""

from __future__ import annotations

import sys
import time

import fieldjobs
import peercommon as pc
from celery import Celery, group

_SLICE = 1000

app = Celery("celery_peer", broker=f"confluentkafka://{pc.BOOTSTRAP}")
app.conf.update(
    task_default_queue=pc.TOPIC,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "polling_interval": 0.01,
        "kafka_consumer_config": {"session.timeout.ms": 10000},
        "kafka_producer_config": {"acks": "all"},
    },
)


@app.task(name="tick")
def tick(i: int) -> None:
    """No-op job."""
    fieldjobs.tick(i)


@app.task(name="io")
def io(i: int) -> None:
    """IO-bound job: a 20 ms blocking wait (Celery runs it on one of its threads)."""
    fieldjobs.io_sync(i)


@app.task(name="lat")
def lat(i: int, sent_at: float) -> None:
    """Latency job."""
    fieldjobs.latency(i, sent_at)


@app.task(name="mark")
def mark(i: int) -> None:
    """SIGKILL scenario's job."""
    fieldjobs.mark_sync(i)


TASKS = {"tick": tick, "io": io, "mark": mark}


def enqueue() -> None:
    """Enqueue jobs one way; report the seconds and CPU seconds it took."""
    args = pc.enqueue_args(sys.argv[2:])
    if args.mode == "paced":
        lat.delay(-1, time.time())
        pc.wait_for_probe()
        for i, wait in enumerate(pc.paced_times(args.count, args.rate)):
            if wait:
                time.sleep(wait)
            lat.delay(i, time.time())
        pc.emit({"count": args.count})
        return
    task = TASKS[pc.JOB]
    if args.mode != "fill":
        task.delay(-1)  # connection and metadata, outside the timing
    numbers = range(args.start, args.start + args.count)
    started, cpu = time.perf_counter(), pc.cpu()
    if args.mode == "single":
        for i in numbers:
            task.delay(i)
    else:
        for first in range(0, len(numbers), _SLICE):
            group(task.s(i) for i in numbers[first : first + _SLICE]).apply_async()
    pc.emit({"count": args.count, "seconds": time.perf_counter() - started, "cpu": pc.cpu() - cpu})


if __name__ == "__main__":
    enqueue()
