"""The ceilings of kq's own ratios: raw confluent-kafka loops (runs in the project's venv).

    raw_peer.py worker           # consume(1000), pickle.loads, call: what any Python worker must do
    raw_peer.py enqueue batch --count N   # pickle.dumps of the call, produce, then flush

The worker reads kq's job bytes (the same pre-filled jobs kq drains) and
commits nothing; the producer has kq's producer settings
(``kq.make_producer``: acks from all replicas, idempotent, linger 2 ms).
"""

from __future__ import annotations

import pickle
import sys
import time

import fieldjobs
import peercommon as pc
from confluent_kafka import Consumer

from kq import make_producer


def worker() -> None:
    """Consume in batches, unpickle, call; until killed."""
    consumer = Consumer(
        {
            "bootstrap.servers": pc.BOOTSTRAP,
            "group.id": pc.GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([pc.TOPIC])
    loads = pickle.loads
    while True:
        for message in consumer.consume(num_messages=1000, timeout=0.1):
            if message.error() is None:
                job = loads(message.value())
                job.func(*job.args, **job.kwargs)


def enqueue() -> None:
    """``pickle.dumps`` of each call and ``produce`` of its bytes, then ``flush``."""
    args = pc.enqueue_args(sys.argv[2:])
    producer = make_producer(pc.BOOTSTRAP)
    producer.list_topics(pc.TOPIC, timeout=10)  # connection and metadata, outside the timing
    produce, dumps, func = producer.produce, pickle.dumps, fieldjobs.tick
    started, cpu = time.perf_counter(), pc.cpu()
    for i in range(args.start, args.start + args.count):
        value = dumps((func, (i,), {}))
        while True:
            try:
                produce(pc.TOPIC, value)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(60)
    if left:
        raise SystemExit(f"{left} records not delivered within 60 s")
    pc.emit({"count": args.count, "seconds": time.perf_counter() - started, "cpu": pc.cpu() - cpu})


if __name__ == "__main__":
    {"worker": worker, "enqueue": enqueue}[sys.argv[1]]()
