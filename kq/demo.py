"""The main job end to end: a local Kafka, a queue, a worker and every outcome.

``python -m kq.demo`` starts a single-node Apache Kafka on 127.0.0.1, enqueues a
mix of jobs (successes, failures, timeouts, coroutines, and one message that is
not a job), runs a worker until every one of them has been reported to the
callback, prints the outcomes and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from kq._producer import Record, adapt_producer
from kq.clients import ClientName
from kq.job import Job
from kq.message import Message
from kq.queue import Queue
from kq.worker import Worker

_TOPIC = "kq-demo"


def add(a: int, b: int) -> int:
    """A job that succeeds."""
    return a + b


def divide(a: int, b: int) -> float:
    """A job that fails when ``b`` is 0."""
    return a / b


def nap(seconds: float) -> str:
    """A job that may run past its timeout (blocked in C, where KQ cannot stop it)."""
    time.sleep(seconds)
    return f"slept {seconds}s"


async def fetch(n: int) -> int:
    """A coroutine job: kq awaits it and reports its value."""
    await asyncio.sleep(0.01)
    return n * n


class _Outcomes:
    """Collects what the worker reports and says when everything has arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, str] = {}
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(
        self,
        status: str,
        message: Message,
        job: Job | None,
        result: Any,
        exception: BaseException | None,
        stacktrace: str | None,
    ) -> None:
        with self._lock:
            self.counts[status] += 1
            if status not in self.samples:
                if job is None:
                    what = repr(message.value[:12])
                else:
                    what = getattr(job.func, "__name__", repr(job.func))
                details = {
                    "success": f"returned {result!r}",
                    "failure": f"raised {exception!r}",
                    "timeout": f"stopped after {job.timeout if job else '?'}s",
                    "invalid": "not a job",
                }
                detail = details.get(status, status)
                self.samples[status] = f"{what}: {detail}"
            if sum(self.counts.values()) >= self.expected:
                self.done.set()


def run(bootstrap: str | None, jobs: int, client: ClientName, concurrency: int) -> int:
    """Enqueue ``jobs`` mixed jobs (plus one invalid message) and work them off."""
    from kq.local import LocalKafka

    if bootstrap is not None:
        return _enqueue_and_work(bootstrap, jobs, client, concurrency)
    started = time.monotonic()
    with LocalKafka(1) as kafka:
        print(f"local Kafka up at {kafka.bootstrap_servers} in {time.monotonic() - started:.1f}s")
        kafka.create_topic(_TOPIC, partitions=4)
        return _enqueue_and_work(kafka.bootstrap_servers, jobs, client, concurrency)


def _enqueue_and_work(address: str, jobs: int, client: ClientName, concurrency: int) -> int:
    queue = Queue.connect(address, _TOPIC, client=client)
    kinds = (
        lambda i: queue.enqueue(add, i, 1),
        lambda i: queue.enqueue(divide, i, 0),
        lambda i: queue.using(timeout=1).enqueue(nap, 5),
        lambda i: queue.enqueue(fetch, i),
        lambda i: queue.using(key=f"user-{i % 3}".encode()).enqueue(add, i, i),
    )
    started = time.monotonic()
    for i in range(jobs):
        kinds[i % len(kinds)](i)
    # Not a job at all: a worker reports it as invalid and goes on.
    junk = Record(_TOPIC, b"not a pickle", None, None, int(time.time() * 1000))
    adapt_producer(queue.producer).send_all([junk], timeout=30.0)
    print(f"enqueued {jobs} jobs + 1 invalid message in {time.monotonic() - started:.2f}s")

    outcomes = _Outcomes(jobs + 1)
    worker = Worker.connect(
        address, _TOPIC, group="kq-demo", client=client, callback=outcomes, concurrency=concurrency
    )
    threading.Thread(target=_stop_when_done, args=(worker, outcomes), daemon=True).start()
    started = time.monotonic()
    processed = worker.start()
    elapsed = time.monotonic() - started
    worker.consumer.close()  # before the broker goes, so the client does not complain
    print(f"worker processed {processed} messages in {elapsed:.1f}s")
    for status in ("success", "failure", "timeout", "invalid"):
        sample = outcomes.samples.get(status, "-")
        print(f"  {status:8} {outcomes.counts[status]:4}   e.g. {sample}")
    missing = outcomes.expected - sum(outcomes.counts.values())
    if missing:
        print(f"{missing} outcomes did not arrive", file=sys.stderr)
        return 1
    return 0


def _stop_when_done(worker: Worker, outcomes: _Outcomes) -> None:
    outcomes.done.wait(timeout=300)
    worker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; ``--bootstrap`` uses an existing Kafka instead of a local one."""
    parser = argparse.ArgumentParser(prog="python -m kq.demo", description=__doc__)
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--jobs", type=int, default=40, help="how many jobs (default 40)")
    parser.add_argument("--client", choices=("confluent", "kafka-python"), default="confluent")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs run at once")
    parser.add_argument("-v", "--verbose", action="store_true", help="show kq's log lines")
    args = parser.parse_args(argv)
    # Failures and timeouts are logged at ERROR with tracebacks: the demo shows
    # them as a summary instead unless asked.
    level = logging.INFO if args.verbose else logging.CRITICAL
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return run(args.bootstrap, args.jobs, args.client, args.concurrency)


if __name__ == "__main__":
    sys.exit(main())
