"""Finding an allow-listed job function by ``module:qualname``, and nothing else.

A JSON job names its function; an attacker who can write to the topic chooses
that name. Following it with ``getattr`` would reach anything the allowed
module happens to import (``myapp.tasks:os.system``), and importing a module
runs its top-level code. So a name is resolved in two steps, each refusing
rather than guessing:

1. without importing: the module must be allowed (an entry itself, or a
   submodule of a module entry whose added parts are public names) and every
   part of the qualname must be a public identifier;
2. after importing that one module: each qualname part is looked up in the
   ``__dict__`` of the module or of a class defined in it (no ``getattr``, so
   no module ``__getattr__`` and nothing inherited), and every object on the
   way must say it was defined exactly there (``__module__`` and
   ``__qualname__``), the last one a function or a class.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Iterable
from typing import Any

__all__ = ["check_entry", "is_allowed", "resolve"]


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _public(parts: Iterable[str]) -> bool:
    return all(part.isidentifier() and not part.startswith("_") for part in parts)


def check_entry(entry: str) -> str:
    """Why an allow-list entry is malformed, or ``""``."""
    module, sep, qualname = entry.partition(":")
    if not _dotted(module):
        return "the module must be a dotted name such as myapp.tasks"
    if sep and not (qualname and _public(qualname.split("."))):
        return "the function must be a public name such as send_mail or Class.method"
    return ""


def is_allowed(path: str, modules: Iterable[str], names: Iterable[str]) -> bool:
    """Whether ``module:qualname`` may be looked for: syntax and allow-list, no import."""
    module, sep, qualname = path.partition(":")
    if not sep or not _dotted(module) or not qualname or not _public(qualname.split(".")):
        return False
    if path in names:
        return True
    for allowed in modules:
        if module == allowed:
            return True
        # A submodule: only public parts below the entry (no _private, no __main__).
        if module.startswith(allowed + ".") and _public(module[len(allowed) + 1 :].split(".")):
            return True
    return False


def _callable_kind(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)


def _defined_here(obj: Any, module: str, qualname: str) -> bool:
    # getattr on the object itself, never on what it is an instance of: a
    # function or class carries its own __module__/__qualname__.
    return (
        _callable_kind(obj)
        and getattr(obj, "__module__", None) == module
        and getattr(obj, "__qualname__", None) == qualname
    )


def _import(module: str, path: str) -> types.ModuleType:
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from None
    # Whatever sits in sys.modules under that name must be that module.
    if not isinstance(found, types.ModuleType) or found.__name__ != module:
        raise ValueError(f"{module!r} in sys.modules is not the module {module!r}")
    return found


def resolve(path: str) -> Any:
    """The function (or class) at an allowed ``module:qualname``; ``ValueError`` otherwise.

    Call ``is_allowed`` first: this imports the module.
    """
    module, _, qualname = path.partition(":")
    parts = qualname.split(".")
    owner: Any = _import(module, path)
    for index, part in enumerate(parts):
        namespace = vars(owner)
        if part not in namespace:
            raise ValueError(f"cannot import {path!r}: {module!r} defines no {qualname!r}")
        obj = namespace[part]
        last = index == len(parts) - 1
        here = ".".join(parts[: index + 1])
        if isinstance(owner, type):
            if isinstance(obj, staticmethod):
                obj = obj.__func__
            elif isinstance(obj, classmethod) and last:
                if not _defined_here(obj.__func__, module, here):
                    break
                return obj.__get__(None, owner)
        if not _defined_here(obj, module, here) or (not last and not inspect.isclass(obj)):
            break
        owner = obj
    else:
        return owner
    raise ValueError(
        f"{path!r} is not a function or class defined in {module!r}"
        " (names it imports from elsewhere are not allowed)"
    )
