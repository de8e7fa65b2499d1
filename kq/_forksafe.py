"""A forked job process that never waits on a lock another thread held at the fork.

``fork`` copies only the forking thread. A lock that another thread of the
worker held at that moment stays held in the child for ever: the stdio buffers
(a thread blocked writing a log line to a slowly drained pipe holds
``sys.stderr``'s), a file handler's buffer, the event loop, the Kafka clients.
The child therefore touches none of them:

- ``sys.stdout``, ``sys.stderr`` and the streams of logging's stream handlers
  are replaced by new buffered writers on the same file descriptors (logging
  itself re-creates its handlers' locks after a fork); the old objects, and
  the output the parent had buffered in them, are never flushed by the child;
- objects that were already garbage at the fork (a dropped Kafka client) are
  never collected in the child, so their finalizers cannot wait for threads
  that do not exist there;
- coroutine jobs get an event loop of their own, and the child leaves with
  ``os._exit`` (no atexit handlers, no client shutdown).
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import sys
from typing import Any

_fresh: list[io.TextIOWrapper] = []


def _renewed(stream: Any) -> Any:
    """A new text stream on ``stream``'s descriptor, or ``stream`` if it has none."""
    if not isinstance(stream, io.TextIOWrapper):
        return stream  # no buffered layer (or not one of io's): nothing inherited to wait on
    try:
        fd = stream.fileno()
        # The same settings; a fresh BufferedWriter (and its lock) of its own.
        renewed = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(fd, "w", closefd=False)),
            encoding=stream.encoding,
            errors=stream.errors,
            line_buffering=stream.line_buffering,
            write_through=stream.write_through,
        )
    except (OSError, ValueError, AttributeError):
        return stream  # closed, or not backed by a descriptor
    _fresh.append(renewed)
    return renewed


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    # logging took its module lock before the fork and released it after, so
    # the registry is consistent here.
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    found: list[logging.StreamHandler[Any]] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler not in found:
                found.append(handler)
    return found


def after_fork_in_child() -> None:
    """Make the forked child independent of every lock the parent's threads held."""
    gc.freeze()
    renewed: dict[int, Any] = {}
    for name in ("stdout", "stderr"):
        old = getattr(sys, name)
        if old is not None:
            renewed[id(old)] = _renewed(old)
            setattr(sys, name, renewed[id(old)])
    for handler in _stream_handlers():
        old = handler.stream
        if id(old) not in renewed:
            renewed[id(old)] = _renewed(old)
        # not setStream(): that flushes the old stream, which may be locked
        with contextlib.suppress(AttributeError):  # e.g. a stream that is a property
            handler.stream = renewed[id(old)]


def flush_child_streams() -> None:
    """Write out what the job printed or logged (the child's own buffers only)."""
    for stream in _fresh:
        with contextlib.suppress(Exception):
            stream.flush()
