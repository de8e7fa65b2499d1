"""Finding objects by import path (``package.module:name``) with one-line errors."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from kq.errors import KQError

__all__ = ["ImportPathError", "cwd_on_path", "import_object"]


class ImportPathError(KQError):
    """An import path given to ``kq`` does not lead to an object."""


def cwd_on_path() -> None:
    """Put the current folder first on ``sys.path``, as ``python -m`` does.

    A console script's path starts with its own folder instead, so without this
    the project's modules (and so its jobs) would not import.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_object(path: str, what: str = "object", *, require_attr: bool = False) -> Any:
    """Import ``module`` or ``module:attr.attr`` and return the module or the object.

    Any failure (no such module, the module raised, no such attribute) becomes
    an ``ImportPathError`` whose text names ``what`` was wanted and why.
    """
    module_name, sep, attr = path.strip().partition(":")
    if not module_name or (sep and not attr) or (require_attr and not attr):
        form = "module:name" if require_attr else "module or module:name"
        raise ImportPathError(f"{what} must be given as {form}, not {path!r}")
    cwd_on_path()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ImportPathError(
                f"cannot import {what} {path!r}: no module named {exc.name!r}"
                " (is it on PYTHONPATH or in the current directory?)"
            ) from exc
        raise ImportPathError(f"cannot import {what} {path!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:
        raise ImportPathError(
            f"cannot import {what} {path!r}: importing {module_name!r} raised"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportPathError(
                f"cannot import {what} {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from exc
    return obj
