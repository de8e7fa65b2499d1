"""One asyncio event loop, on its own thread, shared by a worker's coroutine jobs.

Job threads hand coroutines to it and wait for their results, so ``async def``
jobs of one worker run concurrently on a single loop (and can share loop-bound
resources such as client sessions) while per-key order still holds: a job
thread waits for its coroutine before it takes the next job of its lane.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Sequence
from concurrent.futures import Future, wait
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The coroutine was cancelled by a hard stop of the worker."""


async def _await(
    awaitable: Awaitable[T], values: Sequence[tuple[contextvars.ContextVar[Any], Any]] = ()
) -> T:
    # The task runs in the loop thread's context: carry over the caller's
    # context variables (e.g. kq.current_attempt()).
    for var, value in values:
        var.set(value)
    return await awaitable


class EventLoopThread:
    """A lazily started event loop thread; ``run`` blocks the caller, not the loop."""

    def __init__(self, name: str = "kq-asyncio") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                # daemon: a coroutine that never ends must not keep the process alive
                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, awaitable: Awaitable[T], abort: threading.Event | None = None) -> T:
        """Run ``awaitable`` on the shared loop and return its result (or raise its error).

        When ``abort`` is set first, the coroutine is cancelled and ``Cancelled`` raised.
        """
        values = list(contextvars.copy_context().items())
        future: Future[T] = asyncio.run_coroutine_threadsafe(
            _await(awaitable, values), self._ensure_loop()
        )
        # Not future.result(timeout=...): a coroutine that raises TimeoutError
        # would look like our own wait timing out.
        while not future.done():
            wait([future], timeout=0.1)
            if abort is not None and abort.is_set() and not future.done():
                future.cancel()
                raise Cancelled
        return future.result()

    def close(self, timeout: float = 1.0) -> None:
        """Cancel what still runs and stop the loop thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        def shutdown() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


def run_coroutine(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable to completion on a fresh loop (in a job's child process)."""
    return asyncio.run(_await(awaitable))
