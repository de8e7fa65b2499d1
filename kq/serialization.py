"""dill-compatible job serialization, at the cost of plain pickle where it can be.

``dill.dumps`` costs ~50 µs for a typical job, ``pickle.dumps`` ~3 µs, and for a
job whose function and arguments are importable the two write the same bytes.
``dumps`` pickles first and hands the job to dill only when pickle would not
write what dill writes: for lambdas, nested functions and anything defined in
``__main__``, which dill stores by value so a worker can run it without the
enqueuing script. ``loads`` reads plain pickle and dill alike (falling back to
dill for dill's own constructs), so it reads jobs from KQ 2.2.1 as well.

Queues and workers left with KQ's defaults (``dill.dumps`` / ``dill.loads``) use
these functions under the hood; what goes on the wire stays readable by
``dill.loads``, so KQ 2.2.1 workers can run the jobs.
"""

from __future__ import annotations

import io
import pickle
from types import FunctionType
from typing import Any

import dill

__all__ = ["dumps", "loads"]

_PROTOCOL: int = dill.settings["protocol"]


class _NeedsDill(Exception):
    """Raised inside the pickler: this object must be written by dill."""


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # Called for every function and class pickle meets. Those of __main__
        # would be written by reference (so a worker without the script could
        # not load them); dill writes them by value.
        if isinstance(obj, (FunctionType, type)) and obj.__module__ == "__main__":
            raise _NeedsDill
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Serialize like ``dill.dumps``, with plain pickle whenever that writes the same."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, _PROTOCOL).dump(obj)
    except Exception:
        # Lambdas, local functions, __main__ objects, anything pickle refuses.
        return bytes(dill.dumps(obj))
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Deserialize plain pickle or dill output (``pickle.loads`` first: twice as fast)."""
    try:
        return pickle.loads(data)
    except Exception:
        return dill.loads(data)
