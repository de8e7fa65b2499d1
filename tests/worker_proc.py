"""A kq worker process for tests that kill, stop or signal workers.

Prints ``ready`` once subscribed and ``processed N`` when ``start`` returns.

Optional: ``--max-in-flight``; ``--outcomes FILE`` appends one line per
callback (``<status> <partition> <offset> <job id or ->``); ``--exit-with-stdin``
SIGKILLs the process when its stdin reaches EOF, so a worker never outlives
the test that started it with ``stdin=PIPE`` (even a SIGKILLed one);
``--log-level`` (INFO); ``--noise`` starts a thread that logs long lines to
stderr without end (``engine_jobs.start_noise``); ``--fail-forwards SECONDS``
makes the delay forwarder's sends home of jobs keyed ``f-...`` fail (unsent)
for that long after ``ready``, and prints ``injected N`` at the end. The group
is in the environment of the jobs, as ``KQ_FAULT_GROUP``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kq import Message, Worker


def command(bootstrap: str, topic: str, group: str, client: str, *extra: str) -> list[str]:
    """The command line that runs this script as one worker of ``group``."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--client",
        client,
        *extra,
    ]


def _die_with_stdin() -> None:
    def watch() -> None:
        while os.read(0, 64):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _outcome_writer(path: str) -> Any:
    def callback(
        status: str, message: Message, job: Any, result: Any, exc: Any, stacktrace: Any
    ) -> None:
        job_id = job.id if job is not None and job.id else "-"
        line = f"{status} {message.partition} {message.offset} {job_id}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return callback


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--client", default="confluent")
    parser.add_argument("--max", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--session-ms", type=int, default=6000)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument("--max-in-flight", type=int, default=None)
    parser.add_argument("--outcomes", default=None)
    parser.add_argument("--exit-with-stdin", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--fail-forwards", type=float, default=0.0)
    args = parser.parse_args()
    if args.exit_with_stdin:
        _die_with_stdin()
    os.environ["KQ_FAULT_GROUP"] = args.group
    injection = _Injection(args.topic, args.fail_forwards) if args.fail_forwards else None
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr, format="%(asctime)s %(message)s"
    )
    if args.noise:
        import engine_jobs

        engine_jobs.start_noise()
    if args.client == "confluent":
        config = {"session.timeout.ms": args.session_ms, "heartbeat.interval.ms": 500}
    else:
        config = {"session_timeout_ms": args.session_ms, "heartbeat_interval_ms": 500}
    options: dict[str, Any] = {}
    if args.max_in_flight is not None:
        options["max_in_flight"] = args.max_in_flight
    if args.outcomes is not None:
        options["callback"] = _outcome_writer(args.outcomes)
    worker = Worker.connect(
        args.bootstrap,
        args.topic,
        args.group,
        client=args.client,
        consumer_config=config,
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
        **options,
    )
    print("ready", flush=True)
    if injection is not None:
        injection.ready_at = time.monotonic()
    processed = worker.start(max_messages=args.max)
    if injection is not None:
        print(f"injected {injection.failed()}", flush=True)
    print(f"processed {processed}", flush=True)
    return 0


class _Injection:
    """Send failures of the delay forwarder, from ``ready`` on, for ``seconds``."""

    def __init__(self, topic: str, seconds: float) -> None:
        from tier_checks import FailingSends

        import kq._retrying

        self.ready_at: float | None = None
        self.producers: list[FailingSends] = []
        real = kq._retrying.adapt_producer

        def fail(call: int, record: Any) -> bool:
            key = record[2] or b""
            return (
                self.ready_at is not None
                and record[0] == topic
                and key.startswith(b"f-")
                and time.monotonic() - self.ready_at < seconds
            )

        def adapt(producer: Any) -> Any:
            wrapper = FailingSends(real(producer), fail)
            self.producers.append(wrapper)
            return wrapper

        kq._retrying.adapt_producer = adapt  # type: ignore[assignment]

    def failed(self) -> int:
        return sum(p.failed for p in self.producers)


if __name__ == "__main__":
    sys.exit(main())
