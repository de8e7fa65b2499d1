"""Signed jobs, size limits and the JSON job format, against the real broker."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_checks import committed, group_name

from kq import Job, Queue, Worker
from kq.json_jobs import JsonJobLoader, dumps
from kq.signing import Signer, Verifier

SECRET = b"s" * 32
OLD_SECRET = b"o" * 32


class _LeavesATrace:
    """Unpickling this creates a file: proof that a payload was deserialized."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _produce(
    bootstrap: str,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value, key=key, headers=headers or [])
    assert producer.flush(30) == 0


class Outcomes:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def __call__(self, status: str, message: Any, job: Any, result: Any, *_: Any) -> None:
        self.items.append((status, result))


# -- signing ----------------------------------------------------------------


def test_forged_tampered_replayed_and_unsigned_are_invalid_and_never_deserialized(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    trace = tmp_path / "unpickled"
    evil = pickle.dumps(_LeavesATrace(str(trace)))
    signer = Signer(SECRET)
    good = Queue.connect(bootstrap, topic, signing_key=SECRET).enqueue(pow, 2, 5)  # offset 0
    # 1: unsigned
    _produce(bootstrap, topic, evil)
    # 2: signed with another secret
    forged = Signer(b"x" * 32).sign(topic, None, evil)
    _produce(bootstrap, topic, evil, headers=[("kq-sig", forged)])
    # 3: a valid signature of other bytes (tampered value)
    _produce(bootstrap, topic, evil, headers=[("kq-sig", signer.sign(topic, None, b"harmless"))])
    # 4: a validly signed value replayed under another key
    _produce(
        bootstrap, topic, evil, key=b"other", headers=[("kq-sig", signer.sign(topic, b"k", evil))]
    )
    # 5: signed for another topic
    _produce(bootstrap, topic, evil, headers=[("kq-sig", signer.sign("elsewhere", None, evil))])
    outcomes = Outcomes()
    group = group_name()
    worker = Worker.connect(
        bootstrap, topic, group, callback=outcomes, signing_keys=SECRET, scheduling=False
    )
    assert worker.start(max_messages=6) == 6
    assert outcomes.items == [("success", 32)] + [("invalid", None)] * 5
    assert not trace.exists(), "a refused payload was deserialized"
    assert committed(bootstrap, group, topic) == 6
    assert good.id


def test_key_rotation_accepts_old_and_new_secrets(bootstrap: str, topic: str) -> None:
    Queue.connect(bootstrap, topic, signing_key=OLD_SECRET).enqueue(pow, 2, 2)
    Queue.connect(bootstrap, topic, signing_key=SECRET).enqueue(pow, 2, 3)
    outcomes = Outcomes()
    worker = Worker.connect(
        bootstrap,
        topic,
        group_name(),
        callback=outcomes,
        signing_keys=[SECRET, OLD_SECRET],
        scheduling=False,
    )
    assert worker.start(max_messages=2) == 2
    assert outcomes.items == [("success", 4), ("success", 8)]


def test_signed_jobs_with_keys_and_delays_keep_their_signature(bootstrap: str, topic: str) -> None:
    queue = Queue.connect(bootstrap, topic, signing_key=SECRET)
    queue.using(key=b"user-1").enqueue(pow, 3, 2)
    queue.using(delay=0.5).enqueue(pow, 3, 3)  # travels through a delay tier and back
    outcomes = Outcomes()
    worker = Worker.connect(bootstrap, topic, group_name(), callback=outcomes, signing_keys=SECRET)
    assert worker.start(max_messages=2) == 2
    assert sorted(outcomes.items) == [("success", 9), ("success", 27)]


def test_secrets_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer("short")
    with pytest.raises(TypeError, match="bytes or str"):
        Signer(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        Verifier([])
    assert Verifier(SECRET).problem("t", None, b"v", None).startswith("unsigned")


def test_oversized_message_is_invalid_before_decoding(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    trace = tmp_path / "unpickled"
    big = pickle.dumps([_LeavesATrace(str(trace)), b"x" * 5000])
    _produce(bootstrap, topic, big)
    Queue.connect(bootstrap, topic).enqueue(pow, 2, 4)
    outcomes = Outcomes()
    worker = Worker.connect(
        bootstrap, topic, group_name(), callback=outcomes, max_message_bytes=4096, scheduling=False
    )
    assert worker.start(max_messages=2) == 2
    assert outcomes.items == [("invalid", None), ("success", 16)]
    assert not trace.exists()
    with pytest.raises(ValueError, match="max_message_bytes"):
        Worker.connect(bootstrap, topic, group_name(), max_message_bytes=0)


# -- JSON jobs ----------------------------------------------------------------

data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(args=st.lists(data, max_size=4), kwargs=st.dictionaries(st.text(), data, max_size=4))
def test_json_round_trip_of_every_supported_type(args: list[Any], kwargs: dict[str, Any]) -> None:
    job = Job(id="j", timestamp=1, topic="t", func=math.hypot, args=tuple(args), kwargs=kwargs)
    back = JsonJobLoader(allow=["math"])(dumps(job))
    assert back.func is math.hypot
    assert list(back.args or ()) == args and back.kwargs == kwargs


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (b"bytes", "args[0]"),
        ({1: "int key"}, "args[0]"),
        (float("nan"), "args[0]"),
        ({1, 2}, "args[0]"),
        (object(), "args[0]"),
    ],
)
def test_json_refuses_non_data_arguments(value: Any, where: str) -> None:
    with pytest.raises(TypeError, match=rf"^{where.replace('[', '.').replace(']', '.')}"):
        dumps(Job(func=math.sqrt, args=(value,)))


def test_json_refuses_functions_without_an_import_path() -> None:
    with pytest.raises(TypeError, match="no import path"):
        dumps(Job(func=lambda: None))


@pytest.mark.parametrize(
    "path",
    ["os:system", "subprocess:run", "builtins:eval", "math:_private", "mathx:sqrt", "math.sub:x"],
)
def test_json_loader_refuses_functions_outside_the_allow_list(path: str) -> None:
    loader = JsonJobLoader(allow=["math", "json:dumps"])
    document = {"format": "kq-json-1", "func": path, "args": [], "kwargs": {}}
    with pytest.raises(ValueError, match=r"not allowed|not a public|cannot import"):
        loader(json.dumps(document).encode())


def test_json_loader_allows_exact_names_and_module_prefixes() -> None:
    loader = JsonJobLoader(allow=["json:dumps", "xml"])
    assert loader.allowed("json:dumps") and not loader.allowed("json:loads")
    assert loader.allowed("xml.dom.minidom:parseString") and not loader.allowed("xmlrpc:x")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_json_decoder_fuzz_only_refuses_with_value_error(payload: bytes) -> None:
    loader = JsonJobLoader(allow=["math"], max_bytes=200)
    try:
        job = loader(payload)
    except ValueError:
        return
    assert isinstance(job, Job) and job.func.__module__ == "math"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["format", "func", "args", "kwargs", "id", "timeout", "key", "partition"]),
        data,
    )
)
def test_json_decoder_fuzz_of_job_shaped_documents(document: dict[str, Any]) -> None:
    document.setdefault("format", "kq-json-1")
    try:
        job = JsonJobLoader(allow=["math"])(json.dumps(document).encode())
    except ValueError:
        return
    assert isinstance(job, Job)


def test_json_jobs_run_on_a_worker_and_disallowed_ones_are_invalid(
    bootstrap: str, topic: str
) -> None:
    queue = Queue.connect(bootstrap, topic, serializer=dumps)
    queue.enqueue(math.pow, 2, 8)
    queue.enqueue(json.dumps, {"a": 1})  # not on the worker's allow-list
    outcomes = Outcomes()
    worker = Worker.connect(
        bootstrap,
        topic,
        group_name(),
        callback=outcomes,
        deserializer=JsonJobLoader(allow=["math"]),
        scheduling=False,
    )
    assert worker.start(max_messages=2) == 2
    assert outcomes.items == [("success", 256.0), ("invalid", None)]
