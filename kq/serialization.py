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

import pickle
from typing import Any

import dill

__all__ = ["dumps", "loads"]

_PROTOCOL: int = dill.settings["protocol"]
_MAIN = b"__main__"
_REF, _REF_MODULE = b"_resolve", b"kq.refs"


def dumps(obj: Any) -> bytes:
    """Serialize like ``dill.dumps``, with plain pickle whenever that writes the same."""
    try:
        data = pickle.dumps(obj, _PROTOCOL)
    except Exception:
        # Lambdas, local functions, anything pickle refuses.
        return bytes(dill.dumps(obj))
    # pickle wrote a reference to something in __main__ (a worker without the
    # script could not load it); dill writes such objects by value. A string
    # that merely contains "__main__" also lands here, which is only slower.
    if _MAIN in data:
        return bytes(dill.dumps(obj))
    if _REF in data and _REF_MODULE in data:
        # A FunctionRef (pickled as a call that resolves it): write the
        # reference to the function it names instead, the bytes the function
        # itself would give, so any worker reads it as an ordinary job.
        from kq.refs import dumps_with_refs

        return dumps_with_refs(obj, _PROTOCOL)
    return data


def loads(data: bytes) -> Any:
    """Deserialize plain pickle or dill output (``pickle.loads`` first: twice as fast)."""
    try:
        return pickle.loads(data)
    except Exception:
        return dill.loads(data)
