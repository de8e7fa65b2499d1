"""Jobs as data: a JSON serializer that cannot execute code, with an allow-list.

``dill``/``pickle`` payloads run code while they are read. Here a job is a
JSON object; its function is named by import path (``module:qualname``) and
its arguments are limited to JSON data (``None``, ``bool``, ``int``, finite
``float``, ``str``, lists, and dicts with ``str`` keys; tuples become lists).
A worker reads it with ``JsonJobLoader(allow=[...])``, which runs only
functions and classes *defined* in the modules allowed (``"myapp.tasks"``, which
includes its public submodules) or named exactly (``"myapp.tasks:send_mail"``),
and refuses anything else before importing it: a name the allowed module merely
imported (``myapp.tasks:os.system``) is not one of its functions.

::

    queue = Queue(topic, producer, serializer=kq.json_jobs.dumps)
    worker = Worker(topic, consumer, deserializer=JsonJobLoader(allow=["myapp.tasks"]))
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from typing import Any

from kq._checks import fail_type, fail_value
from kq._json_resolve import check_entry, is_allowed, resolve
from kq.job import Job
from kq.refs import FunctionRef

__all__ = ["JsonJobLoader", "dumps"]

_FORMAT = "kq-json-1"
_MAX_DEPTH = 32


def _check_data(value: Any, path: str, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise TypeError(f"{path}: nested deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: {value!r} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_check_data(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: dict key {k!r} is not a str")
            out[k] = _check_data(v, f"{path}[{k!r}]", depth + 1)
        return out
    raise TypeError(f"{path}: {type(value).__name__} is not JSON data")


def _func_path(func: Any) -> str:
    if isinstance(func, FunctionRef):
        return func.path  # by name: the enqueuing side need not import it
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise TypeError(
            f"the function {func!r} has no import path (lambda, local or __main__ function)"
        )
    return f"{module}:{qualname}"


def dumps(job: Job) -> bytes:
    """Serialize a Job as JSON data; ``TypeError`` names the first field that is not data."""
    if not isinstance(job, Job):
        raise TypeError(f"expected a kq.Job, not {type(job).__name__}")
    document = {
        "format": _FORMAT,
        "id": job.id,
        "timestamp": job.timestamp,
        "topic": job.topic,
        "func": _func_path(job.func),
        "args": _check_data(list(job.args or ()), "args"),
        "kwargs": _check_data(dict(job.kwargs or {}), "kwargs"),
        "timeout": job.timeout,
        "key": None if job.key is None else base64.b64encode(job.key).decode(),
        "partition": job.partition,
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


class JsonJobLoader:
    """Reads ``dumps`` output into a Job, resolving only allowed functions.

    ``allow`` holds module names (every function or class defined in that
    module or one of its public submodules) and exact ``module:qualname``
    names. A function is found only in the ``__dict__`` of the module that
    defines it (or of a class defined there), never through another module or
    attribute; nothing outside the allow-list is imported. Every refusal is a
    ``ValueError`` saying why: the worker reports the message as ``invalid``.
    ``max_bytes`` refuses larger payloads before parsing; arguments nested
    deeper than 32 levels and non-finite numbers (``NaN``, ``Infinity``,
    ``1e999``) are refused as well.
    """

    def __init__(self, allow: Iterable[str], max_bytes: int = 1 << 20) -> None:
        entries = [allow] if isinstance(allow, str) else list(allow)
        if not entries or not all(isinstance(e, str) and e for e in entries):
            fail_value("allow must be a non-empty list of module names or module:function names")
        for entry in entries:
            problem = check_entry(entry)
            if problem:
                fail_value(f"allow entry {entry!r}: {problem}")
        if not isinstance(max_bytes, int) or max_bytes < 1:
            fail_type("max_bytes must be an int, 1 or greater")
        self._modules = tuple(e for e in entries if ":" not in e)
        self._names = frozenset(e for e in entries if ":" in e)
        self._max_bytes = max_bytes
        self._resolved: dict[str, Any] = {}  # only paths that resolved: bounded by the code

    def allowed(self, path: str) -> bool:
        """Whether ``module:qualname`` is on the allow-list (checked without importing)."""
        return is_allowed(path, self._modules, self._names)

    def __call__(self, data: bytes) -> Job:
        if len(data) > self._max_bytes:
            raise ValueError(f"payload of {len(data)} bytes exceeds max_bytes={self._max_bytes}")
        try:
            document = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not a JSON job: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} job document")
        path = document.get("func")
        if not isinstance(path, str) or path.count(":") != 1:
            raise ValueError(f"func must be 'module:qualname', not {path!r}")
        if not self.allowed(path):
            raise ValueError(f"function {path!r} is not allowed on this worker")
        func = self._resolved.get(path)
        if func is None:
            func = self._resolved[path] = resolve(path)
        args, kwargs = document.get("args", []), document.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError("args must be a list and kwargs an object")
        try:
            _check_data(args, "args")
            _check_data(kwargs, "kwargs")
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        key = document.get("key")
        try:
            raw_key = None if key is None else base64.b64decode(key, validate=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad key: {exc}") from None
        for name, kind in (("id", str), ("timestamp", int), ("topic", str), ("partition", int)):
            value = document.get(name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a {kind.__name__} or null")
        timeout = document.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ValueError("timeout must be a number, 0 or greater, or null")
        return Job(
            id=document.get("id"),
            timestamp=document.get("timestamp"),
            topic=document.get("topic"),
            func=func,
            args=tuple(args),
            kwargs=kwargs,
            timeout=timeout,
            key=raw_key,
            partition=document.get("partition"),
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value
