"""taskiq with taskiq-aio-kafka in the field benchmark (runs in its own venv).

Worker, as taskiq's docs run it::

    python -m taskiq worker taskiq_peer:broker --workers 1 --max-async-tasks C \
        --ack-type when_executed --log-level WARNING

Enqueue: ``taskiq_peer.py enqueue single|batch|fill|paced --count N``; single
is ``await task.kiq(...)`` (returns once the broker acknowledged the record),
batched is ``asyncio.gather`` over ``kiq`` calls (taskiq has no batch API; the
client batches records sent concurrently), in slices of ``_SLICE`` (100 went
7 times as fast as 5,000 here: larger gathers spend their time in the event loop).

Settings (see the README's field section for why): the consumer's group and
``auto_offset_reset="earliest"`` (taskiq-aio-kafka's default, "latest", skips
jobs enqueued before the first worker starts); producer ``acks="all"`` as kq's.
taskiq-aio-kafka 1.0.0 yields raw bytes to the receiver, so ``--ack-type`` has
nothing to acknowledge: offsets are aiokafka's auto-commits (every 5 s) of the
records handed to the receiver, the only commit policy this broker has.
"""

from __future__ import annotations

import asyncio
import sys
import time

import fieldjobs
import peercommon as pc
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.partitioner import DefaultPartitioner
from taskiq_aio_kafka import AioKafkaBroker

_SLICE = 100

broker = AioKafkaBroker(bootstrap_servers=pc.BOOTSTRAP, kafka_topic=pc.TOPIC)
# taskiq-aio-kafka 1.0.0 gives aiokafka kafka-python's partitioner and assignor
# by default; with kafka-python 3.x (what `pip install taskiq-aio-kafka` brings)
# every send fails ("'DefaultPartitioner' object is not callable") and the
# worker's consumer does not start ("'str' object has no attribute 'metadata'").
# aiokafka's own, through the documented configure_* methods, are the fix.
broker.configure_producer(acks="all", partitioner=DefaultPartitioner())
broker.configure_consumer(
    group_id=pc.GROUP,
    auto_offset_reset="earliest",
    partition_assignment_strategy=(RoundRobinPartitionAssignor,),
)


@broker.task(task_name="tick")
async def tick(i: int) -> None:
    """No-op job."""
    fieldjobs.tick(i)


@broker.task(task_name="io")
async def io(i: int) -> None:
    """IO-bound job: a 20 ms wait on the event loop."""
    start = time.monotonic()
    await asyncio.sleep(fieldjobs.IO_SECONDS)
    fieldjobs.io_done(i, start)


@broker.task(task_name="lat")
async def lat(i: int, sent_at: float) -> None:
    """Latency job."""
    fieldjobs.latency(i, sent_at)


@broker.task(task_name="mark")
async def mark(i: int) -> None:
    """SIGKILL scenario's job."""
    await asyncio.sleep(fieldjobs.MARK_SECONDS)
    fieldjobs.mark_done(i)


TASKS = {"tick": tick, "io": io, "mark": mark}


async def enqueue() -> None:
    """Enqueue jobs one way; report the seconds and CPU seconds it took."""
    args = pc.enqueue_args(sys.argv[2:])
    await broker.startup()
    try:
        if args.mode == "paced":
            await lat.kiq(-1, time.time())
            pc.wait_for_probe()
            for i, wait in enumerate(pc.paced_times(args.count, args.rate)):
                if wait:
                    await asyncio.sleep(wait)
                await lat.kiq(i, time.time())
            pc.emit({"count": args.count})
            return
        task = TASKS[pc.JOB]
        if args.mode != "fill":
            await task.kiq(-1)  # connection and metadata, outside the timing
        numbers = range(args.start, args.start + args.count)
        started, cpu = time.perf_counter(), pc.cpu()
        if args.mode == "single":
            for i in numbers:
                await task.kiq(i)
        else:
            for first in range(0, len(numbers), _SLICE):
                await asyncio.gather(*(task.kiq(i) for i in numbers[first : first + _SLICE]))
        seconds, used = time.perf_counter() - started, pc.cpu() - cpu
        pc.emit({"count": args.count, "seconds": seconds, "cpu": used})
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(enqueue())
