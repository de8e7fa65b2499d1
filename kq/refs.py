"""Enqueue a function by name, without importing it (another service, a shell, a deploy ahead).

``FunctionRef("myapp.tasks:send_mail")`` stands for the function
``send_mail`` of module ``myapp.tasks``, which the enqueuing process need not
have::

    from kq import FunctionRef
    queue.enqueue(FunctionRef("myapp.tasks:send_mail"), "ann@example.com")

kq's serializer writes it exactly as it writes the function itself (a pickle
global reference ``myapp.tasks send_mail``; a JSON job's ``func`` path), so
the job on the wire is the same bytes as if the function had been imported,
and a worker (kq's or KQ 2.2.1's) imports it when it reads the job. A worker
that cannot import it reports the job ``invalid``. Called directly, a
``FunctionRef`` imports the function and calls it.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any, ClassVar

from kq._checks import fail_type, fail_value

__all__ = ["FunctionRef"]


class FunctionRef:
    """A function named by ``"module:qualname"``, not imported until it is called."""

    __slots__ = ("module", "qualname")

    def __init__(self, path: str) -> None:
        if not isinstance(path, str):
            fail_type("the function path must be a str, 'module:qualname'")
        module, sep, qualname = path.partition(":")
        if (
            not sep
            or not all(part.isidentifier() for part in module.split("."))
            or not all(part.isidentifier() for part in qualname.split("."))
        ):
            fail_value(f"expected 'module:qualname' such as 'myapp.tasks:send_mail', not {path!r}")
        self.module = module
        self.qualname = qualname

    @property
    def path(self) -> str:
        """``"module:qualname"``."""
        return f"{self.module}:{self.qualname}"

    def __repr__(self) -> str:
        """``FunctionRef('module:qualname')``."""
        return f"FunctionRef({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FunctionRef) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def resolve(self) -> Any:
        """Import the module and return the function (``ImportError``/``AttributeError``)."""
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Import the function and call it."""
        return self.resolve()(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # For serializers other than kq's (whose bytes name the function
        # itself, see dumps_with_refs): a kq worker resolves it when reading.
        return (_resolve, (self.path,))


def _resolve(path: str) -> Any:
    return FunctionRef(path).resolve()


# pickle's pure-Python pickler (its dispatch table can take one more type);
# typeshed describes it as the C one.
_PythonPickler: Any = pickle._Pickler


class _RefPickler(_PythonPickler):  # type: ignore[misc]
    """Pickle's own (Python) pickler, writing a FunctionRef as the global it names."""

    dispatch: ClassVar[dict[type, Any]] = dict(_PythonPickler.dispatch)

    def save_ref(self, obj: FunctionRef) -> None:
        # The same opcodes as save_global writes for an importable function
        # (protocol >= 4: STACK_GLOBAL, dotted qualnames allowed), without the
        # import that save_global makes to check the name.
        self.save(obj.module)
        self.save(obj.qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch[FunctionRef] = save_ref


def dumps_with_refs(obj: Any, protocol: int) -> bytes:
    """Pickle ``obj``, writing every FunctionRef in it as a reference to the function it names."""
    if protocol < 4:
        fail_value("jobs with a FunctionRef need pickle protocol 4 or later")
    out = io.BytesIO()
    _RefPickler(out, protocol).dump(obj)
    return out.getvalue()
