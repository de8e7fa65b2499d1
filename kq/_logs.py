"""kq's own diagnostic loggers, kept apart from KQ's ``kq.queue`` and ``kq.worker``.

KQ's users read ``kq.queue`` and ``kq.worker`` (or the logger they inject) as
an exact sequence of lines, so everything kq says beyond KQ's lines goes to
the loggers below. None is a child of ``kq.queue`` or ``kq.worker``: a child's
records would reach its parent's handlers.
"""

from __future__ import annotations

import logging

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
