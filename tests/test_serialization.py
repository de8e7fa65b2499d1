"""``kq.serialization``: plain pickle where it writes what dill writes, dill where needed.

Pure unit tests, no broker. What goes on the wire must stay readable by
``dill.loads`` (KQ 2.2.1 workers) and, for anything defined in ``__main__``,
runnable by a process that does not have the enqueuing script: those cases
run a real script as ``__main__`` in a subprocess and load its output in a
second, fresh process.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import functools
import json
import operator
import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dill
import jobfuncs
import jobs_for_legacy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kq import Job
from kq.serialization import dumps, loads

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


def _job(func: Any, *args: Any, **kwargs: Any) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        timestamp=1_700_000_000_000,
        topic="topic",
        func=func,
        args=args,
        kwargs=kwargs,
        timeout=5,
        key=b"key",
        partition=None,
    )


IMPORTABLE_CALLS: dict[str, tuple[Any, tuple[Any, ...], dict[str, Any]]] = {
    "module function": (jobfuncs.add, (1, 2), {}),
    "kwargs": (jobfuncs.echo, (), {"value": {"nested": [1, (2, 3)], "b": b"\x00\xff"}}),
    "stdlib function": (os.path.join, ("a", "b"), {}),
    "builtin function": (divmod, (7, 2), {}),
    "C function": (time.sleep, (0,), {}),
    "stdlib class": (collections.OrderedDict, ([("a", 1)],), {}),
    "json": (json.dumps, ({"a": [1, 2.5, None, True]},), {"sort_keys": True}),
    "methodcaller": (operator.methodcaller("upper"), ("abc",), {}),
    "datetime and decimal args": (
        jobfuncs.echo,
        ((datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc), decimal.Decimal("1.5")),),
        {},
    ),
    "uuid and set args": (jobfuncs.echo, ((uuid.UUID(int=5), {1, 2, 3}, frozenset({"x"})),), {}),
    "a str that mentions __main__": (jobfuncs.echo, ("run as __main__",), {}),
}


@pytest.mark.parametrize("case", list(IMPORTABLE_CALLS))
def test_importable_jobs_are_written_byte_for_byte_as_dill_writes_them(case: str) -> None:
    func, args, kwargs = IMPORTABLE_CALLS[case]
    job = _job(func, *args, **kwargs)
    data = dumps(job)
    assert data == dill.dumps(job)
    back = loads(data)
    assert back.id == job.id
    assert back.args == job.args
    assert back.kwargs == job.kwargs
    assert back.func(*back.args, **back.kwargs) == func(*args, **kwargs)


BUILTIN_TYPES: dict[str, Any] = {
    "int as func": int,
    "functools.partial": functools.partial(jobfuncs.add, 1),
    "complex": complex(1, 2),
    "bytearray": bytearray(b"xy"),
    "range": range(3),
    "Ellipsis": Ellipsis,
    "NoneType": type(None),
    "unbound str method": str.upper,
}


@pytest.mark.parametrize("case", list(BUILTIN_TYPES))
def test_builtin_types_round_trip_through_dill_and_kq(case: str) -> None:
    """dill writes some builtin types its own way (``dill._dill._load_type``), so the
    bytes differ from pickle's (also for ``queue.enqueue(int, "5")``); both directions
    must still load to the same object, so KQ 2.2.1 workers read them."""
    value = BUILTIN_TYPES[case]
    job = _job(jobfuncs.echo, value)
    for back in (dill.loads(dumps(job)), loads(dill.dumps(job))):
        [arg] = back.args
        if isinstance(value, functools.partial):
            assert (arg.func, arg.args) == (value.func, value.args)
        else:
            assert arg == value


def _make_closure(factor: int) -> Any:
    def multiply(n: int) -> int:
        return n * factor

    return multiply


DILL_ONLY: dict[str, Any] = {
    "lambda": lambda n: n + 100,
    "closure from a module": jobs_for_legacy.make_multiplier(3),
    "nested function": _make_closure(5),
}


@pytest.mark.parametrize("case", list(DILL_ONLY))
def test_lambdas_and_nested_functions_fall_back_to_dill(case: str) -> None:
    func = DILL_ONLY[case]
    job = _job(func, 7)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(job)
    data = dumps(job)
    assert data == dill.dumps(job)
    for reader in (dill.loads, loads):
        back = reader(data)
        assert back.func(*back.args) == func(7)


def _fresh_python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter that imports kq and tests' modules, nothing else."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS_DIR)])
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_closure_from_a_module_runs_in_a_fresh_process(tmp_path: Path) -> None:
    data = dumps(_job(jobs_for_legacy.make_multiplier(4), 10))
    (tmp_path / "job.bin").write_bytes(data)
    code = (
        "import sys, dill\n"
        "job = dill.loads(open(sys.argv[1], 'rb').read())\n"
        "print(job.func(*job.args))\n"
    )
    proc = _fresh_python(code, str(tmp_path / "job.bin"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "40"


ENQUEUE_SCRIPT = """
import json, operator, pickle, sys
from pathlib import Path

import dill

from kq import Job
from kq.serialization import dumps


def triple(x):
    return x * 3


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def total(self):
        return self.x + self.y


square = lambda x: x * x  # noqa: E731

cases = {
    "function": Job(id="function", func=triple, args=(14,)),
    "lambda": Job(id="lambda", func=square, args=(7,)),
    "class": Job(id="class", func=Point, args=(1, 2)),
    "instance argument": Job(
        id="instance argument", func=operator.methodcaller("total"), args=(Point(2, 5),)
    ),
    "bound method": Job(id="bound method", func=Point(3, 4).total, args=()),
}
out = Path(sys.argv[1])
needed_dill = {}
for name, job in cases.items():
    (out / f"{name}.kq").write_bytes(dumps(job))
    (out / f"{name}.dill").write_bytes(dill.dumps(job))
    try:
        needed_dill[name] = b"__main__" in pickle.dumps(job, dill.settings["protocol"])
    except Exception:
        needed_dill[name] = True
print(json.dumps(needed_dill))
"""

LOAD_SCRIPT = """
import json, sys
from pathlib import Path

import dill

from kq.serialization import loads

folder = Path(sys.argv[1])
results = {}
for path in sorted(folder.glob("*.kq")):
    data = path.read_bytes()
    for reader_name, reader in (("dill", dill.loads), ("kq", loads)):
        job = reader(data)
        value = job.func(*job.args)
        if hasattr(value, "total"):
            value = ["instance", type(value).__name__, value.total()]
        results[f"{path.stem}/{reader_name}"] = value
print(json.dumps(results))
"""


def test_main_module_definitions_are_written_by_value_and_run_without_the_script(
    tmp_path: Path,
) -> None:
    """A function, a lambda, a class, an instance argument and a bound method defined
    in a real ``__main__`` script: each is written exactly as ``dill.dumps`` writes it,
    and a fresh process without the script runs it (read by dill and by kq)."""
    script_dir, out, elsewhere = tmp_path / "app", tmp_path / "out", tmp_path / "elsewhere"
    for folder in (script_dir, out, elsewhere):
        folder.mkdir()
    script = script_dir / "enqueue_app.py"
    script.write_text(ENQUEUE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    made = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=script_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    needed_dill = json.loads(made.stdout)
    assert all(needed_dill.values()), needed_dill  # plain pickle would reference __main__
    for name in needed_dill:
        assert (out / f"{name}.kq").read_bytes() == (out / f"{name}.dill").read_bytes(), name
    script.unlink()  # the loading process must not find it, even by accident
    loaded = _fresh_python(LOAD_SCRIPT, str(out), cwd=elsewhere)
    assert loaded.returncode == 0, loaded.stderr
    results = json.loads(loaded.stdout)
    for reader in ("dill", "kq"):
        assert results[f"function/{reader}"] == 42
        assert results[f"lambda/{reader}"] == 49
        assert results[f"class/{reader}"] == ["instance", "Point", 3]
        assert results[f"instance argument/{reader}"] == 7
        assert results[f"bound method/{reader}"] == 7


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_loads_reads_plain_pickle_of_any_protocol(protocol: int) -> None:
    job = _job(jobfuncs.add, 1, 2)
    assert loads(pickle.dumps(job, protocol)) == job


def test_loads_reads_what_dill_writes() -> None:
    job = _job(jobfuncs.add, 1, 2)
    assert loads(dill.dumps(job)) == job
    lam = loads(dill.dumps(_job(lambda n: n * 2, 21)))
    assert lam.func(*lam.args) == 42


@pytest.mark.parametrize("data", [b"", b"not a pickle", dumps(_job(jobfuncs.add, 1, 2))[:-5]])
def test_loads_raises_on_bytes_that_are_not_a_pickle(data: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the worker turns any error into "invalid"
        loads(data)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    args=st.lists(_values, max_size=4),
    kwargs=st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=3),
    key=st.none() | st.binary(max_size=16),
    timeout=st.none() | st.integers(0, 100) | st.floats(0, 100),
)
def test_job_arguments_round_trip_and_match_dill(
    args: list[Any], kwargs: dict[str, Any], key: bytes | None, timeout: float | None
) -> None:
    job = Job(
        id="id",
        timestamp=1,
        topic="t",
        func=jobfuncs.echo,
        args=args,
        kwargs=kwargs,
        timeout=timeout,
        key=key,
        partition=None,
    )
    data = dumps(job)
    assert data == dill.dumps(job)
    assert loads(data) == job
    assert dill.loads(data) == job
