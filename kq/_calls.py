"""Running a job's call (plain or coroutine) and describing it for logs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from kq._loop import run_coroutine
from kq.job import Job


def safe_repr(value: Any) -> str:
    """``repr(value)``, or ``<unrepresentable: ...>`` when that raises."""
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


class SafeRepr:
    """Formats as ``repr(value)``, or ``<unrepresentable: ...>`` when that raises (lazily)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        value = self.value
        try:
            return repr(value)
        except (Exception, SystemExit):
            if not isinstance(value, Job):
                return safe_repr(value)
        # Job(id=..., args=(..., <unrepresentable: ...>), ...): only the parts that fail
        fields = ", ".join(
            f"{name}={_part(getattr(value, name))}" for name in Job.__dataclass_fields__
        )
        return f"Job({fields})"


def _part(value: Any) -> str:
    if type(value) in (tuple, list):
        inner = ", ".join(safe_repr(v) for v in value)
        if type(value) is list:
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if type(value) is dict:
        return "{" + ", ".join(f"{safe_repr(k)}: {safe_repr(v)}" for k, v in value.items()) + "}"
    return safe_repr(value)


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
        name = safe_repr(func)
    parts = [safe_repr(arg) for arg in args]
    try:
        items = sorted(kwargs.items())
    except (Exception, SystemExit):  # keys that do not compare (not all str)
        items = list(kwargs.items())
    parts += [f"{k if isinstance(k, str) else safe_repr(k)}={safe_repr(v)}" for k, v in items]
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
