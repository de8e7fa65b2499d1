"""Running a job's call (plain or coroutine) and describing it for logs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from kq._loop import run_coroutine
from kq.job import Job


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except (Exception, SystemExit) as exc:
        # How a job is logged never decides whether it runs.
        try:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            reason = f"{type(exc).__name__}: {exc}"
        except (Exception, SystemExit):
            kind, reason = "object", type(exc).__name__
        return f"<unrepresentable: repr() of {kind} raised {reason}>"


def _name(func: Callable[..., Any]) -> str:
    if inspect.ismethod(func) or inspect.isfunction(func) or inspect.isbuiltin(func):
        return f"{func.__module__}.{func.__qualname__}"
    if not inspect.isclass(func) and hasattr(func, "__call__"):  # noqa: B004
        return f"{type(func).__module__}.{type(func).__name__}"
    return repr(func)


def call_repr(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> str:
    """Return ``module.name(arg, ..., key=value)`` as KQ logged it.

    Never raises: a part whose ``repr()`` fails shows as ``<unrepresentable: ...>``.
    """
    try:
        name = _name(func)
    except (Exception, SystemExit):
        name = _safe_repr(func)
    parts = [_safe_repr(arg) for arg in args]
    try:
        items = sorted(kwargs.items())
    except (Exception, SystemExit):  # keys that do not compare (not all str)
        items = list(kwargs.items())
    parts += [f"{k if isinstance(k, str) else _safe_repr(k)}={_safe_repr(v)}" for k, v in items]
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
