"""A kq worker process for tests that kill, stop or signal workers.

Prints ``ready`` once subscribed and ``processed N`` when ``start`` returns.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kq import Worker


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.client == "confluent":
        config = {"session.timeout.ms": args.session_ms, "heartbeat.interval.ms": 500}
    else:
        config = {"session_timeout_ms": args.session_ms, "heartbeat_interval_ms": 500}
    worker = Worker.connect(
        args.bootstrap,
        args.topic,
        args.group,
        client=args.client,
        consumer_config=config,
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
    )
    print("ready", flush=True)
    processed = worker.start(max_messages=args.max)
    print(f"processed {processed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
