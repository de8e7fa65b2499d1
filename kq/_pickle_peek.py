"""Reading a pickled job's id and call without unpickling it.

Unpickling runs code chosen by whoever wrote the bytes, so operator tools
never do it. This module walks the pickle's opcodes (``pickletools.genops``,
which only parses) on a stack of plain data: strings, numbers, lists, tuples,
dicts. A reference to a global (``GLOBAL``, ``STACK_GLOBAL``) stays a name; a
call (``REDUCE``, ``NEWOBJ``) stays a record of the name and its arguments.
Nothing is imported, looked up or called, whatever the bytes say. What comes
out is what the bytes *claim*: unverified unless the record's signature was.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PickledJob", "peek", "render_data"]

_JOB = "kq.job.Job"
_FIELDS = ("id", "timestamp", "topic", "func", "args", "kwargs", "timeout", "key", "partition")
_MAX_BYTES = 1 << 20  # larger payloads are not walked at all
_RENDER_BUDGET = 400  # characters of a rendered call


@dataclass(frozen=True)
class _Name:
    dotted: str


@dataclass
class _Call:
    func: Any
    args: Any
    state: Any = None
    extra: list[Any] = field(default_factory=list)


class _Mark:
    pass


class _GiveUp(Exception):
    pass


@dataclass(frozen=True)
class PickledJob:
    """What a pickled ``kq.Job`` says about itself, read as data."""

    id: str | None
    call: str


_PUSH_ARG = frozenset(
    [
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    ]
)  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_IGNORED = frozenset({"PROTO", "FRAME", "NEXT_BUFFER", "READONLY_BUFFER"})


def _until_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if isinstance(stack[index], _Mark):
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise _GiveUp


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:
    # Raises _GiveUp (or IndexError, KeyError, TypeError on malformed input).
    if name in _PUSH_ARG:
        stack.append(arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name in ("EMPTY_LIST", "EMPTY_SET"):
        stack.append([])
    elif name == "EMPTY_DICT":
        stack.append({})
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif name == "MARK":
        stack.append(_Mark())
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        count = int(name[-1])
        if len(stack) < count:
            raise _GiveUp
        group = tuple(stack[-count:])
        del stack[-count:]
        stack.append(group)
    elif name in ("TUPLE", "LIST", "FROZENSET"):
        items = _until_mark(stack)
        stack.append(tuple(items) if name != "LIST" else list(items))
    elif name == "DICT":
        items = _until_mark(stack)
        stack.append(dict(zip(items[::2], items[1::2], strict=False)))
    elif name in ("APPEND", "APPENDS", "ADDITEMS"):
        items = [stack.pop()] if name == "APPEND" else _until_mark(stack)
        if not isinstance(stack[-1], list):
            raise _GiveUp
        stack[-1].extend(items)
    elif name in ("SETITEM", "SETITEMS"):
        items = stack[-2:] if name == "SETITEM" else _until_mark(stack)
        if name == "SETITEM":
            del stack[-2:]
        if not isinstance(stack[-1], dict):
            raise _GiveUp
        stack[-1].update(zip(items[::2], items[1::2], strict=False))
    elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
        memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
    elif name == "GLOBAL":
        module, _, qualname = str(arg).partition(" ")
        stack.append(_Name(f"{module}.{qualname}"))
    elif name == "STACK_GLOBAL":
        qualname, module = stack.pop(), stack.pop()
        stack.append(_Name(f"{module}.{qualname}"))
    elif name in ("REDUCE", "NEWOBJ"):
        args = stack.pop()
        stack.append(_Call(stack.pop(), args))
    elif name == "NEWOBJ_EX":
        kwargs, args = stack.pop(), stack.pop()
        stack.append(_Call(stack.pop(), args, extra=[kwargs]))
    elif name in ("INST", "OBJ"):
        items = _until_mark(stack)
        func = _Name(str(arg).replace(" ", ".")) if name == "INST" else items.pop(0)
        stack.append(_Call(func, tuple(items)))
    elif name == "BUILD":
        state = stack.pop()
        if not isinstance(stack[-1], _Call):
            raise _GiveUp
        stack[-1].state = state
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _until_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name not in _IGNORED:
        raise _GiveUp  # PERSID, EXT*, anything new: not read


def _walk(data: bytes) -> Any:
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "STOP":
            return stack.pop()
        _step(opcode.name, arg, stack, memo)
    raise _GiveUp


class _Renderer:
    """A bounded repr of walked data: cycles and shared parts cannot make it blow up."""

    def __init__(self) -> None:
        self.budget = _RENDER_BUDGET

    def __call__(self, value: Any, depth: int = 0) -> str:
        self.budget -= 1
        if self.budget <= 0 or depth > 8:
            return "…"
        if isinstance(value, _Name):
            text = value.dotted
        elif isinstance(value, _Call):
            head = value.func.dotted if isinstance(value.func, _Name) else "?"
            text = f"<{head}(…)>"
        elif isinstance(value, (list, tuple)):
            items = [self(v, depth + 1) for v in value[:20]]
            if len(value) > 20:
                items.append("…")
            text = "[" + ", ".join(items) + "]" if isinstance(value, list) else _tuple(items)
        elif isinstance(value, dict):
            pairs = [f"{self(k, depth + 1)}: {self(v, depth + 1)}" for k, v in value.items()]
            text = "{" + ", ".join(pairs[:20]) + (", …" if len(pairs) > 20 else "") + "}"
        elif value is None or isinstance(value, (bool, int, float, str, bytes, bytearray)):
            text = repr(value)
            if len(text) > 200:
                text = text[:200] + "…"
        else:
            text = "?"
        self.budget -= len(text)
        return text


def _tuple(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _fields(call: _Call) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(call.args, tuple):
        fields.update(zip(_FIELDS, call.args, strict=False))
    state = call.state
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
        state = {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, dict):
        fields.update((k, v) for k, v in state.items() if k in _FIELDS)
    return fields


def _render_call(fields: dict[str, Any]) -> str:
    func = fields.get("func")
    if isinstance(func, _Call) and getattr(func.func, "dotted", "").startswith("dill."):
        name = "<a function stored by value>"
    elif isinstance(func, (_Name, _Call)):
        name = _Renderer()(func)
    else:
        name = "<no function>"
    args = fields.get("args")
    return render_data(name, args if isinstance(args, (list, tuple)) else [], fields.get("kwargs"))


def render_data(name: str, args: Any, kwargs: Any) -> str:
    """``name(arg, ..., key=value)`` with a bounded rendering of untrusted data."""
    render = _Renderer()
    parts = [render(a) for a in args[:20]]
    if isinstance(kwargs, dict):
        pairs = sorted(kwargs.items(), key=lambda kv: str(kv[0]))[:20]
        parts += [f"{k}={render(v)}" for k, v in pairs]
    return f"{name}({', '.join(parts)})"


def peek(data: bytes) -> PickledJob | None:
    """The id and call a pickled ``kq.Job`` (KQ's or kq's) holds, or None if it is not one.

    Never raises, imports or calls anything for any input.
    """
    if len(data) > _MAX_BYTES:
        return None
    try:
        top = _walk(data)
        if not (isinstance(top, _Call) and isinstance(top.func, _Name) and top.func.dotted == _JOB):
            return None
        fields = _fields(top)
        job_id = fields.get("id")
        return PickledJob(job_id if isinstance(job_id, str) else None, _render_call(fields))
    except Exception:  # malformed bytes of any kind: not a job we can read
        return None
