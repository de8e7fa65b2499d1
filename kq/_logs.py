"""kq's own diagnostic loggers, kept apart from KQ's ``kq.queue`` and ``kq.worker``.

KQ's users read ``kq.queue`` and ``kq.worker`` (or the logger they inject) as
an exact sequence of lines, so everything kq says beyond KQ's lines goes to
the loggers below. None is a child of ``kq.queue`` or ``kq.worker``: a child's
records would reach its parent's handlers.
"""

from __future__ import annotations

import logging
import re
import threading
import time

CONSUMER = logging.getLogger("kq.consumer")
"""Group membership and offsets: partitions assigned, revoked or lost, commits
that failed, polling errors, consumer settings kq corrected."""

RUNTIME = logging.getLogger("kq.runtime")
"""A worker's own running: signals, graceful and hard stops, jobs stopped or
left running at shutdown, observer hooks that raised, anything that escaped
the processing of a message."""

RETRIES = logging.getLogger("kq.retries")
"""Retries scheduled, jobs dead-lettered, retry and dead-letter writes that failed
(and each new round of writing them while their partition is held)."""

DELAY = logging.getLogger("kq.delay")
"""The delay-tier forwarder: records it could not read, forward or commit."""

PRODUCER = logging.getLogger("kq.producer")
"""Enqueue-side diagnostics beyond KQ's ``Enqueueing`` line (batch failures)."""

CLIENT = logging.getLogger("kq.client")
"""librdkafka's own lines, for the confluent-kafka clients kq builds: through
Python logging (never raw on stderr), errors only by default (its warnings are
retries it makes by itself), a repeated line at most once a minute."""

_DIGITS = re.compile(r"\d+")


class _Repeats(logging.Filter):
    """Lets a line through once a ``window``, saying how many like it were held back.

    A client that cannot reach its cluster says the same thing (``Connect to
    ...:1 failed``) several times a second; its first line tells the story.
    Lines that differ only in numbers (times, ports, client ids) are alike.
    """

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self._window = window
        self._seen: dict[str, list[float]] = {}  # alike key -> [last let through, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._window:
                seen[1] += 1
                return False
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            record.msg = f"{record.getMessage()} ({int(seen[1])} more like it held back)"
            record.args = None
        return True


CLIENT.addFilter(_Repeats())
# librdkafka warns of every transient condition it retries by itself (a
# coordinator still loading, a broker reconnecting); errors stay visible.
# kq.client at WARNING or DEBUG shows them: logging.getLogger("kq.client").setLevel(...)
CLIENT.setLevel(logging.ERROR)
