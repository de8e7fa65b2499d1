"""Helpers of the concurrency and batch tests: read a topic back, run workers.

``read_topic`` reads what really is in a topic (with its own consumer, no
group offsets); ``WorkerThread`` runs a ``Worker`` on a thread with a bounded
join; ``spawn_worker`` starts ``worker_proc.py`` in a process that dies with
the test (its stdin is a pipe the test holds).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worker_proc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer, KafkaProducer

from kq import Queue, Worker

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


@dataclass(frozen=True)
class Stored:
    """A message as stored in the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Stored]:
    """Read ``count`` messages (or all there are within ``timeout`` s) from every partition.

    Reads up to the end of the topic as it is at the call: a message written
    later is not waited for. Fails if fewer than ``count`` are found in time.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    out: list[Stored] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = set(metadata.topics[topic].partitions)
        # assign, not subscribe: no group coordination (and its seconds of delay)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(out) >= count and at_end >= partitions:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(message.partition() or 0))
                    continue
                raise AssertionError(f"reading {topic}: {error}")
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            at_end.discard(partition)
            out.append(Stored(partition, offset, message.key(), message.value() or b""))
    finally:
        consumer.close()
    assert len(out) >= count, f"only {len(out)} of {count} messages found in {topic} in {timeout} s"
    return sorted(out, key=lambda s: (s.partition, s.offset))


class WorkerThread:
    """``worker.start(...)`` on a daemon thread; ``join`` is bounded and stops it if late."""

    def __init__(self, worker: Worker, **start_args: Any) -> None:
        self.worker = worker
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(start_args,), daemon=True)

    def _run(self, start_args: dict[str, Any]) -> None:
        try:
            self.result.append(self.worker.start(**start_args))
        except BaseException as exc:
            self.result.append(exc)

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop_and_join(self, timeout: float = 60.0) -> int:
        """Stop the worker gracefully, wait for ``start`` to return; its count."""
        self.worker.stop()
        return self.join(timeout)

    def join(self, timeout: float = 60.0) -> int:
        """Wait for ``start`` to return (a hard stop after ``timeout``); its count."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.worker.stop(immediately=True)
            self.thread.join(30)
            raise AssertionError(f"worker did not return within {timeout} s")
        close_consumer(self.worker.consumer)
        [result] = self.result
        if isinstance(result, BaseException):
            raise result
        return int(result)


def close_consumer(consumer: Any) -> None:
    """Close a worker's consumer now.

    An unclosed confluent consumer is destroyed by the garbage collector at
    some later point, in whatever test runs then, and that can hang there.
    """
    try:
        if isinstance(consumer, KafkaConsumer):
            consumer.close(autocommit=False)
        else:
            consumer.close()
    except Exception:
        pass  # closed already


def close_queue(queue: Queue) -> None:
    """Flush and close a queue's producer (kafka-python's keeps threads otherwise)."""
    producer = queue.producer
    if isinstance(producer, KafkaProducer):
        producer.close(timeout=10)
    else:
        producer.flush(10)


class WorkerProcess:
    """A ``worker_proc.py`` process; it SIGKILLs itself when its stdin (held here) closes.

    Its output goes to files in ``log_dir``, so a chatty worker never blocks on a pipe.
    """

    def __init__(
        self, log_dir: Path, bootstrap: str, topic: str, group: str, client: str, *extra: str
    ) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO)]))
        name = uuid.uuid4().hex[:8]
        self.stdout_path = log_dir / f"worker-{name}.out"
        self.stderr_path = log_dir / f"worker-{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                worker_proc.command(bootstrap, topic, group, client, "--exit-with-stdin", *extra),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.stdout_path.read_text()

    def errors(self, tail: int = 3000) -> str:
        return self.stderr_path.read_text()[-tail:]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit; kill it and fail if it runs past ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker {self.pid} did not exit in {timeout} s; stderr tail:\n{self.errors()}"
            ) from None
        self._close_stdin()
        return code

    def kill(self) -> None:
        """SIGKILL the process (this test started it) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
