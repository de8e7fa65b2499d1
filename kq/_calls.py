"""Running a job's call (plain or coroutine) and describing it for logs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from kq._loop import run_coroutine
from kq.job import Job


def call_repr(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> str:
    """Return ``module.name(arg, ..., key=value)`` as KQ logged it."""
    if inspect.ismethod(func) or inspect.isfunction(func) or inspect.isbuiltin(func):
        name = f"{func.__module__}.{func.__qualname__}"
    elif not inspect.isclass(func) and hasattr(func, "__call__"):  # noqa: B004
        name = f"{type(func).__module__}.{type(func).__name__}"
    else:
        name = repr(func)
    parts = [repr(arg) for arg in args]
    parts += [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


def invoke(job: Job, run_awaitable: Callable[[Awaitable[Any]], Any] | None = None) -> Any:
    """Call the job's function; an awaitable result is run to completion.

    ``run_awaitable`` runs it (the worker's shared loop); by default a fresh
    loop does, as in a job's child process.
    """
    func = job.func
    if func is None:
        raise TypeError("Job.func must be a callable")
    result = func(*(job.args or ()), **(job.kwargs or {}))
    if inspect.isawaitable(result):
        result = (run_awaitable or run_coroutine)(result)
    return result
