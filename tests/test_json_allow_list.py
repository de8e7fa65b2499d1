"""The JSON jobs' allow-list under attack: only functions defined in allowed modules run.

``allowed_jobs`` is an allowed module that imports ``os``, ``logging``,
``subprocess``, ``os.system`` and ``pathlib.Path``, as real task modules do.
Each test attacks the loader the way a writer to the topic would; the fuzz
tests generate paths that try to escape (dotted walks, private and dunder
parts, imported modules) and check that none resolves to anything else than
the functions and classes defined in the allowed modules, and that nothing
outside the allow-list is imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import allowed_jobs
import allowed_jobs.public
import pytest
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_checks import group_name

from kq import Job, Worker
from kq.clients import ClientName
from kq.json_jobs import JsonJobLoader, dumps

ALLOWED = "allowed_jobs"
# Everything the allow-list ["allowed_jobs"] may run, and nothing else.
LEGITIMATE = {
    allowed_jobs.add,
    allowed_jobs.Greeter,
    allowed_jobs.Greeter.hello,
    allowed_jobs.Greeter.shout,
    allowed_jobs.Greeter.named.__func__,
    allowed_jobs.Greeter.Inner,
    allowed_jobs.Greeter.Inner.ping,
    allowed_jobs.public.triple,
}


def document(func: str, *args: Any, **extra: Any) -> bytes:
    return json.dumps(
        {"format": "kq-json-1", "func": func, "args": list(args), "kwargs": {}, **extra}
    ).encode()


@pytest.fixture
def import_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder where allowed_jobs' private modules leave a file when imported."""
    monkeypatch.setenv("KQ_TEST_IMPORT_TRACE", str(tmp_path))
    for name in ("allowed_jobs._internal", "allowed_jobs.__main__"):
        sys.modules.pop(name, None)
    yield tmp_path
    for name in ("allowed_jobs._internal", "allowed_jobs.__main__"):
        sys.modules.pop(name, None)


# -- the attacks of the report ---------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "allowed_jobs:logging.os.system",  # a walk through an imported module
        "allowed_jobs:os.system",
        "allowed_jobs:subprocess.run",
        "allowed_jobs:system",  # from os import system
        "allowed_jobs:Path",  # an imported class
        "allowed_jobs:Greeter.helper",  # a class attribute defined elsewhere
        "allowed_jobs:add.__globals__",
        "allowed_jobs.public:shutil.rmtree",
        "allowed_jobs:_private",
    ],
)
def test_names_the_allowed_module_imports_are_refused(path: str) -> None:
    loader = JsonJobLoader(allow=[ALLOWED])
    with pytest.raises(ValueError, match=r"not a function or class defined|not allowed"):
        loader(document(path, "id"))


@pytest.mark.parametrize("path", ["allowed_jobs._internal:wipe", "allowed_jobs.__main__:run"])
def test_private_and_main_submodules_are_never_imported(path: str, import_trace: Path) -> None:
    loader = JsonJobLoader(allow=[ALLOWED])
    assert not loader.allowed(path)
    with pytest.raises(ValueError, match="not allowed"):
        loader(document(path, str(import_trace)))
    assert list(import_trace.iterdir()) == [], "a module that is not allowed was imported"
    assert path.partition(":")[0] not in sys.modules


def test_an_explicit_entry_may_name_a_private_module(import_trace: Path) -> None:
    """The operator's own entry is trusted as written; only what an attacker adds is checked."""
    job = JsonJobLoader(allow=["allowed_jobs._internal"])(
        document("allowed_jobs._internal:wipe", "x")
    )
    assert job.func.__name__ == "wipe"


def test_functions_defined_in_the_allowed_modules_run() -> None:
    loader = JsonJobLoader(allow=[ALLOWED])
    for path, args, expected in [
        ("allowed_jobs:add", [2, 3], 5),
        ("allowed_jobs.public:triple", [4], 12),
        ("allowed_jobs:Greeter.shout", ["hi"], "HI"),
    ]:
        job = loader(document(path, *args))
        assert job.func(*job.args) == expected
    named = loader(document("allowed_jobs:Greeter.named", "ann")).func("ann")
    assert isinstance(named, allowed_jobs.Greeter) and named.hello() == "hello ann"
    assert loader(document("allowed_jobs:Greeter.Inner")).func is allowed_jobs.Greeter.Inner
    # what dumps writes for each of them resolves back to the same function
    for func in (allowed_jobs.add, allowed_jobs.Greeter.shout, allowed_jobs.public.triple):
        assert loader(dumps(Job(func=func))).func is func


def test_exact_entries_allow_that_name_only() -> None:
    loader = JsonJobLoader(allow=["allowed_jobs:add", "allowed_jobs:Greeter.shout"])
    assert loader(document("allowed_jobs:add", 1, 1)).func is allowed_jobs.add
    assert loader(document("allowed_jobs:Greeter.shout", "a")).func is allowed_jobs.Greeter.shout
    for path in ("allowed_jobs:Greeter", "allowed_jobs.public:triple", "allowed_jobs:add.x"):
        with pytest.raises(ValueError, match="not allowed"):
            loader(document(path))


def test_malformed_allow_entries_are_refused() -> None:
    for entry in ("", "my app", "m:", "m:_x", "m:a..b", ".m", "m:os.__dict__"):
        with pytest.raises(ValueError, match="allow"):
            JsonJobLoader(allow=[entry])


def test_the_documented_depth_limit_holds_when_loading() -> None:
    loader = JsonJobLoader(allow=["math"])
    deep: Any = 0
    for _ in range(31):
        deep = [deep]
    # args is level 0: the innermost value of [deep] would be at level 33
    assert loader(document("math:fsum", deep)).args == (deep,)
    with pytest.raises(ValueError, match="nested deeper than 32"):
        loader(document("math:fsum", [deep]))
    with pytest.raises(ValueError, match="nested deeper than 32"):
        loader(b'{"format":"kq-json-1","func":"math:fsum","args":' + b"[" * 500 + b"]" * 500 + b"}")
    with pytest.raises(ValueError, match="nested deeper than 32"):
        kwargs: Any = {"k": 1}
        for _ in range(40):
            kwargs = {"k": kwargs}
        loader(json.dumps({"format": "kq-json-1", "func": "math:fsum", "kwargs": kwargs}).encode())


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_non_finite_numbers_are_refused_anywhere(number: bytes) -> None:
    loader = JsonJobLoader(allow=["math"])
    for raw in (
        b'{"format":"kq-json-1","func":"math:fsum","args":[[' + number + b"]]}",
        b'{"format":"kq-json-1","func":"math:fsum","kwargs":{"x":' + number + b"}}",
        b'{"format":"kq-json-1","func":"math:fsum","timeout":' + number + b"}",
    ):
        with pytest.raises(ValueError, match="finite"):
            loader(raw)


# -- fuzzing the loader with paths that try to escape ---------------------------

_PARTS = [
    "allowed_jobs", "public", "_internal", "__main__", "os", "logging", "subprocess", "system",
    "Path", "Greeter", "helper", "hello", "shout", "named", "Inner", "ping", "add", "triple",
    "shutil", "rmtree", "path", "join", "getcwd", "run", "__class__", "__globals__",
    "__builtins__", "__dict__", "__init__", "__subclasses__", "mro", "__func__", "_private",
    "tests", "kq", "json_jobs", "importlib", "import_module", "sys", "modules", "", " ",
]  # fmt: skip
_SEPARATORS = [".", ".", ".", ":", "..", "/", "\\", ""]


@st.composite
def escaping_paths(draw: st.DrawFn) -> str:
    """``allowed_jobs[.part…]:part[.part…]``, now and then with odd separators or no colon."""
    module = ".".join(["allowed_jobs", *draw(st.lists(st.sampled_from(_PARTS), max_size=2))])
    parts = draw(st.lists(st.sampled_from(_PARTS), min_size=1, max_size=4))
    seps = draw(st.lists(st.sampled_from(_SEPARATORS), min_size=len(parts), max_size=len(parts)))
    if draw(st.integers(0, 3)):  # mostly well-formed dotted walks
        seps = ["."] * len(parts)
    qualname = "".join(p + s for p, s in zip(parts, seps, strict=True))[:-1]
    return f"{module}:{qualname}" if draw(st.integers(0, 7)) else module + "." + qualname


def _check_resolution(loader: JsonJobLoader, path: str) -> None:
    before = set(sys.modules)
    try:
        job = loader(document(path))
    except ValueError:
        pass
    else:
        assert getattr(job.func, "__func__", job.func) in LEGITIMATE, path
    for name in set(sys.modules) - before:
        assert name == "allowed_jobs" or name.startswith("allowed_jobs."), (path, name)
        assert not any(p.startswith("_") for p in name.split(".")), (path, name)


@settings(max_examples=1500, deadline=None)
@given(escaping_paths() | st.text(max_size=60))
def test_fuzz_no_path_escapes_a_module_allow_list(path: str) -> None:
    _check_resolution(JsonJobLoader(allow=[ALLOWED]), path)


@settings(max_examples=500, deadline=None)
@given(escaping_paths())
def test_fuzz_no_path_escapes_an_exact_allow_list(path: str) -> None:
    loader = JsonJobLoader(allow=["allowed_jobs:add", "allowed_jobs.public:triple"])
    try:
        job = loader(document(path))
    except ValueError:
        return
    assert job.func in (allowed_jobs.add, allowed_jobs.public.triple)


# -- on a worker, against the real broker ---------------------------------------


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value)
    assert producer.flush(30) == 0


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_worker_refuses_the_escapes_and_runs_the_allowed(
    bootstrap: str, topic: str, tmp_path: Path, client: ClientName
) -> None:
    """``kq worker --json-jobs allowed_jobs`` ran ``posix.system`` from ``logging.os.system``."""
    trace = tmp_path / "shell-ran"
    for path in ("allowed_jobs:logging.os.system", "allowed_jobs:os.system"):
        _produce(bootstrap, topic, document(path, f"touch {trace}"))
    _produce(bootstrap, topic, document("allowed_jobs:add", 2, 3, id="ok"))
    _produce(bootstrap, topic, document("math:pow", 2, 3))  # not on this worker's list
    outcomes: list[tuple[str, Any]] = []
    worker = Worker.connect(
        bootstrap,
        topic,
        group_name(),
        client=client,
        deserializer=JsonJobLoader(allow=[ALLOWED]),
        callback=lambda status, message, job, result, *_: outcomes.append((status, result)),
        scheduling=False,
    )
    assert worker.start(max_messages=4) == 4
    assert outcomes == [("invalid", None), ("invalid", None), ("success", 5), ("invalid", None)]
    assert not trace.exists(), "the allow-list let a shell command run"
