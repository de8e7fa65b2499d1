"""FastStream's Kafka broker in the field benchmark (runs in its own venv).

Worker, as FastStream's docs run it: ``faststream run faststream_peer:app``.
Enqueue: ``faststream_peer.py enqueue single|batch|fill|paced --count N``;
single is ``await broker.publish(...)`` (waits for the broker's
acknowledgement), batched is ``await broker.publish_batch(...)`` (one record
batch per call), in slices of ``_SLICE``, with a 1 MiB batch buffer.

Settings: ``ack_policy=AckPolicy.ACK`` (FastStream's documented at-least-once:
the offset is committed after the handler returned; the default, ACK_FIRST,
auto-commits on receipt), ``auto_offset_reset="earliest"``, a group id,
``max_workers`` from ``FIELD_CONCURRENCY`` (with ACK it runs one handler per
partition at a time), producer ``acks="all"`` as kq's.
"""

from __future__ import annotations

import asyncio
import sys
import time

import fieldjobs
import peercommon as pc
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

_SLICE = 1000

# max_batch_size: publish_batch sends one record batch, which must fit the
# client's buffer (aiokafka's default, 16 KiB, holds ~160 of these jobs).
broker = KafkaBroker(pc.BOOTSTRAP, acks="all", max_batch_size=1024 * 1024)
app = FastStream(broker)

_options: dict[str, object] = {
    "group_id": pc.GROUP,
    "auto_offset_reset": "earliest",
    "ack_policy": AckPolicy.ACK,
}
if pc.CONCURRENCY > 1:
    _options["max_workers"] = pc.CONCURRENCY


async def tick(body: dict[str, int]) -> None:
    """No-op job."""
    fieldjobs.tick(body["i"])


async def io(body: dict[str, int]) -> None:
    """IO-bound job: a 20 ms wait on the event loop."""
    start = time.monotonic()
    await asyncio.sleep(fieldjobs.IO_SECONDS)
    fieldjobs.io_done(body["i"], start)


async def lat(body: dict[str, float]) -> None:
    """Latency job."""
    fieldjobs.latency(int(body["i"]), body["sent_at"])


async def mark(body: dict[str, int]) -> None:
    """SIGKILL scenario's job."""
    await asyncio.sleep(fieldjobs.MARK_SECONDS)
    fieldjobs.mark_done(body["i"])


# One topic per run, one handler: the one for the run's job.
broker.subscriber(pc.TOPIC, **_options)(  # type: ignore[call-overload]
    {"tick": tick, "io": io, "lat": lat, "mark": mark}[pc.JOB]
)


async def enqueue() -> None:
    """Enqueue jobs one way; report the seconds and CPU seconds it took."""
    args = pc.enqueue_args(sys.argv[2:])
    await broker.connect()
    try:
        if args.mode == "paced":
            await broker.publish({"i": -1, "sent_at": time.time()}, topic=pc.TOPIC)
            pc.wait_for_probe()
            for i, wait in enumerate(pc.paced_times(args.count, args.rate)):
                if wait:
                    await asyncio.sleep(wait)
                await broker.publish({"i": i, "sent_at": time.time()}, topic=pc.TOPIC)
            pc.emit({"count": args.count})
            return
        if args.mode != "fill":
            await broker.publish({"i": -1}, topic=pc.TOPIC)  # connection, outside the timing
        numbers = range(args.start, args.start + args.count)
        started, cpu = time.perf_counter(), pc.cpu()
        if args.mode == "single":
            for i in numbers:
                await broker.publish({"i": i}, topic=pc.TOPIC)
        else:
            for first in range(0, len(numbers), _SLICE):
                bodies = [{"i": i} for i in numbers[first : first + _SLICE]]
                await broker.publish_batch(*bodies, topic=pc.TOPIC)
        seconds, used = time.perf_counter() - started, pc.cpu() - cpu
        pc.emit({"count": args.count, "seconds": seconds, "cpu": used})
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(enqueue())
