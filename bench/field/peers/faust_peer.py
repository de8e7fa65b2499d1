"""Faust (faust-streaming) in the field benchmark (runs in its own venv).

Worker, as Faust's docs run it::

    python faust_peer.py worker -l warning --without-web

Enqueue: ``faust_peer.py enqueue single|batch|fill|paced --count N``; single
is ``await topic.send(value=...)`` and awaiting the future it returns (the
record acknowledged: durable on return, as the others' single enqueue),
batched is ``topic.send`` for every job and one ``producer.flush()``.

Settings: Faust's at-least-once defaults (an event is acknowledged when the
agent takes the next one; acknowledged offsets are committed every
``broker_commit_interval``, 2.8 s, or every 10,000 events); the agent's
``concurrency`` from ``FIELD_CONCURRENCY``; ``broker_session_timeout`` 10 s
(Faust's default, 60 s, would keep a killed worker's partition from its
replacement that long; every other consumer here has 10 s); an in-memory
store and no web server (nothing here uses tables or the web views).
"""

from __future__ import annotations

import asyncio
import sys
import time

import faust
import fieldjobs
import peercommon as pc

app = faust.App(
    pc.GROUP,  # the app id is the consumer group
    broker=f"kafka://{pc.BOOTSTRAP}",
    store="memory://",
    web_enabled=False,
    broker_session_timeout=10.0,
    producer_acks=-1,
)
topic = app.topic(pc.TOPIC, value_serializer="json")


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


_handle = {"tick": tick, "io": io, "lat": lat, "mark": mark}[pc.JOB]


@app.agent(topic, concurrency=pc.CONCURRENCY)
async def work(stream: faust.StreamT) -> None:
    """Run each job of the stream."""
    async for body in stream:
        await _handle(body)


async def enqueue() -> None:
    """Enqueue jobs one way; report the seconds and CPU seconds it took."""
    args = pc.enqueue_args(sys.argv[2:])
    producer = app.producer
    await producer.start()
    try:
        if args.mode == "paced":
            await (await topic.send(value={"i": -1, "sent_at": time.time()}))
            pc.wait_for_probe()
            for i, wait in enumerate(pc.paced_times(args.count, args.rate)):
                if wait:
                    await asyncio.sleep(wait)
                await (await topic.send(value={"i": i, "sent_at": time.time()}))
            pc.emit({"count": args.count})
            return
        if args.mode != "fill":
            await (await topic.send(value={"i": -1}))  # connection, outside the timing
        numbers = range(args.start, args.start + args.count)
        started, cpu = time.perf_counter(), pc.cpu()
        if args.mode == "single":
            for i in numbers:
                await (await topic.send(value={"i": i}))
        else:
            for i in numbers:
                await topic.send(value={"i": i})
            await producer.flush()
        seconds, used = time.perf_counter() - started, pc.cpu() - cpu
        pc.emit({"count": args.count, "seconds": seconds, "cpu": used})
    finally:
        await producer.stop()


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        asyncio.run(enqueue())
    else:
        app.main()
