"""``kq dead-letters`` under attack: letters are untrusted bytes and untrusted text.

Whoever can write to ``<topic>.kq-dead`` (or to the job topic, whose failed
jobs land there) chooses a letter's value and headers. The operator's tools
must never unpickle the value, must print header text inert (no terminal
escape sequence, no rich markup), must list every letter when one is
malformed, and with the workers' signing keys must re-enqueue only validly
signed letters. The real ``kq`` command runs in subprocesses on the real broker.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_procs import kq
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_checks import group_name

from kq.dead_letters import DeadLetters
from kq.json_jobs import dumps as json_dumps
from kq.signing import Signer

SECRET = "dead-letter-secret-0123456789"


class _LeavesATrace:
    """Unpickling this creates a file: proof that a payload was deserialized."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _write(bootstrap: str, topic: str, letters: list[tuple[bytes, dict[str, bytes]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value, headers in letters:
        producer.produce(topic, value=value, headers=list(headers.items()))
    assert producer.flush(30) == 0


def _headers(topic: str, **extra: bytes) -> dict[str, bytes]:
    base = {
        "kq-source": f"{topic}/0/7".encode(),
        "kq-status": b"failure",
        "kq-error": b"RuntimeError('boom')",
        "kq-attempt": b"3",
        "kq-first": b"1700000000000",
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_name()})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


@pytest.fixture
def dead_topic(kafka: Any, topic: str) -> str:
    name = f"{topic}.kq-dead"
    kafka.create_topic(name)
    return name


# -- item 2: never unpickle ------------------------------------------------------


def test_list_show_and_requeue_never_unpickle_a_letter(
    bootstrap: str, topic: str, dead_topic: str, tmp_path: Path
) -> None:
    trace = tmp_path / "unpickled"
    evil = pickle.dumps(_LeavesATrace(str(trace)))
    _write(bootstrap, dead_topic, [(evil, _headers(topic))])
    for args in (
        ("list", topic),
        ("list", topic, "--json"),
        ("show", topic, "0:0"),
        ("show", topic, "0:0", "--json"),
        ("requeue", topic, "0:0"),
        ("requeue", topic, "--all", "--yes", "--again"),  # once more, on purpose
    ):
        done = kq("dead-letters", *args, "-b", bootstrap)
        assert done.returncode == 0, (args, done.stderr)
        assert not trace.exists(), f"kq dead-letters {' '.join(args)} unpickled the letter"
    [letter] = json.loads(kq("dead-letters", "list", topic, "--json", "-b", bootstrap).stdout)
    assert letter["format"] == "unknown" and letter["job_id"] is None
    assert letter["size"] == len(evil)
    assert letter["sha256"] == hashlib.sha256(evil).hexdigest()
    assert letter["signature"] == "unchecked"
    # the library reads it without unpickling too
    [read] = DeadLetters(bootstrap, topic).list()
    assert read.describe().format == "unknown" and not trace.exists()
    assert _end_offset(bootstrap, topic) == 2  # requeued twice, unread


def test_pickled_and_json_jobs_are_described_as_data(
    bootstrap: str, topic: str, dead_topic: str, tmp_path: Path
) -> None:
    from kq import Job

    trace = tmp_path / "ran"
    pickled = pickle.dumps(Job(id="p-1", func=pow, args=(2, 10), kwargs={"mod": 7}))
    json_job = json_dumps(Job(id="j-1", func=Path.touch, args=(str(trace),)))
    _write(bootstrap, dead_topic, [(pickled, _headers(topic)), (json_job, _headers(topic))])
    listed = json.loads(kq("dead-letters", "list", topic, "--json", "-b", bootstrap).stdout)
    assert [(x["format"], x["job_id"], x["call"]) for x in listed] == [
        ("pickle", "p-1", "builtins.pow(2, 10, mod=7)"),
        ("json", "j-1", f"pathlib:Path.touch({str(trace)!r})"),
    ]
    assert not trace.exists()


def test_with_signing_keys_only_validly_signed_letters_are_requeued(
    bootstrap: str, topic: str, dead_topic: str, tmp_path: Path
) -> None:
    trace = tmp_path / "unpickled"
    evil = pickle.dumps(_LeavesATrace(str(trace)))
    good = pickle.dumps(pow)
    signer = Signer(SECRET)
    base = _headers(topic)
    _write(
        bootstrap,
        dead_topic,
        [
            (good, _headers(topic, kq_sig=signer.sign(topic, None, good, base))),
            (evil, _headers(topic)),  # unsigned
            (evil, _headers(topic, kq_sig=Signer("x" * 32).sign(topic, None, evil, base))),
            (evil, _headers(topic, kq_sig=signer.sign(topic, None, good, base))),  # tampered
        ],
    )
    env = {"KQ_SIGNING_KEYS": SECRET}
    listed = kq("dead-letters", "list", topic, "--json", "-b", bootstrap, env=env)
    signatures = [x["signature"] for x in json.loads(listed.stdout)]
    assert signatures[0] == "valid"
    assert signatures[1].startswith("unsigned")
    assert all(s.startswith("bad signature") for s in signatures[2:])
    table = kq("dead-letters", "list", topic, "-b", bootstrap, env=env)
    assert table.returncode == 0 and "signature" in table.stdout and "valid" in table.stdout

    requeued = kq("dead-letters", "requeue", topic, "--all", "--yes", "-b", bootstrap, env=env)
    assert requeued.returncode == 1
    assert requeued.stdout.splitlines() == [f"0:0 -> {topic} ?"]
    refused = [line for line in requeued.stderr.splitlines() if "not requeued:" in line]
    assert [line.split()[0] for line in refused] == ["0:1", "0:2", "0:3"]
    assert "error: 3 of 4 dead letters not requeued" in requeued.stderr.strip().splitlines()[-1]
    one = kq("dead-letters", "requeue", topic, "0:1", "-b", bootstrap, env=env)
    assert one.returncode == 1 and "0:1 not requeued: unsigned" in one.stderr
    assert _end_offset(bootstrap, topic) == 1
    assert not trace.exists()
    # on the command line the key works, with a warning that others can read it
    visible = kq("dead-letters", "list", topic, "-b", bootstrap, "--signing-key", SECRET)
    assert visible.returncode == 0
    assert "warning: --signing-key on the command line" in visible.stderr


# -- item 5: requeue goes to the job topic (or --to), never where a letter points ------


def _topic_records(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_name(), "auto.offset.reset": "earliest"}
    )
    try:
        end = int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[tuple[bytes, dict[str, bytes]]] = []
        for _ in range(100):
            if len(found) >= end:
                break
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                found.append((m.value(), dict(m.headers() or [])))
        return found
    finally:
        consumer.close()


def test_requeue_never_sends_a_letter_where_its_kq_source_points(
    bootstrap: str, topic: str, dead_topic: str, make_topic: Any
) -> None:
    """``kq-source: victim/0/0`` made requeue write into ``victim`` with the operator's
    credentials. Now a letter goes to its job topic, or to the topic the operator typed."""
    victim, chosen = make_topic(), make_topic()
    job = pickle.dumps(pow)
    _write(
        bootstrap,
        dead_topic,
        [(job, _headers(topic, kq_source=f"{victim}/0/0".encode())) for _ in range(3)],
    )
    done = kq("dead-letters", "requeue", topic, "0:0", "-b", bootstrap)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"0:0 -> {topic} ")
    [letter] = DeadLetters(bootstrap, topic).list(limit=1, since={0: 1})
    assert letter.source_topic == victim  # shown as the letter claims it...
    DeadLetters(bootstrap, topic).requeue(letter)  # ...never used as the destination
    to = kq("dead-letters", "requeue", topic, "0:2", "--to", chosen, "-b", bootstrap)
    assert to.returncode == 0, to.stderr
    assert to.stdout.startswith(f"0:2 -> {chosen} ")
    assert _end_offset(bootstrap, victim) == 0
    assert [value for value, _ in _topic_records(bootstrap, topic)] == [job, job]
    [(value, headers)] = _topic_records(bootstrap, chosen)
    assert value == job and headers["kq-attempt"] == b"1" and "kq-source" not in headers


# -- item 6: terminal injection and brittle listing ------------------------------

_ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[1A\rrewritten \u202eevil"
_MARKUP = "[/x] [bold red]not markup[/bold red]"


def _hostile_letters(topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    job = pickle.dumps(pow)
    return [
        (job, _headers(topic, kq_error=(_ESCAPES + _MARKUP).encode(),
                       kq_traceback=f"Traceback\n  {_ESCAPES}\n{_MARKUP}\n".encode())),
        (job, _headers(topic, kq_attempt=b"x")),
        (job, _headers(topic, kq_source=b"no-slashes")),
        (job, _headers(topic, kq_first=b"yesterday")),
        (job, _headers(topic, kq_error=b"\xff\xfe not utf-8")),
        (job, {**_headers(topic), "kq-\x1b[31mheader": b"\x1b]0;title\x07"}),
        (job, _headers(topic)),
    ]  # fmt: skip


def test_hostile_text_is_printed_inert_and_one_bad_letter_does_not_stop_the_rest(
    bootstrap: str, topic: str, dead_topic: str
) -> None:
    _write(bootstrap, dead_topic, _hostile_letters(topic))
    positions = [f"0:{i}" for i in range(7)]

    listed = json.loads(kq("dead-letters", "list", topic, "--json", "-b", bootstrap).stdout)
    assert [x["position"] for x in listed] == positions
    problems = [x["problems"] for x in listed]
    assert problems[0] == [] and problems[5] == [] and problems[6] == []
    assert "malformed kq-attempt header b'x'" in problems[1] and listed[1]["attempts"] is None
    assert "malformed kq-source header b'no-slashes'" in problems[2]
    assert "malformed kq-first header b'yesterday'" in problems[3]
    assert "kq-error is not UTF-8" in problems[4]
    assert listed[0]["error"] == _ESCAPES + _MARKUP  # JSON carries the text, escaped by JSON

    for env in ({}, {"FORCE_COLOR": "1", "COLUMNS": "200"}):
        table = kq("dead-letters", "list", topic, "-b", bootstrap, env=env)
        assert table.returncode == 0, table.stderr
        for position in positions:
            assert position in table.stdout
        for injected in ("\x1b]", "\x1b[2J", "\x1b[1A", "\r", "\u202e", "\x07"):
            assert injected not in table.stdout + table.stderr, (env, injected)
        assert "malformed" in table.stdout
        if not env:
            assert "\x1b" not in table.stdout
            assert "[/x]" in table.stdout  # shown as text, not read as markup

    for position in positions:
        shown = kq("dead-letters", "show", topic, position, "-b", bootstrap)
        assert shown.returncode == 0, (position, shown.stderr)
        assert "\x1b" not in shown.stdout and "\r" not in shown.stdout
        assert "\x07" not in shown.stdout and "\u202e" not in shown.stdout
    shown = kq("dead-letters", "show", topic, "0:0", "-b", bootstrap)
    assert "\\x1b]0;pwned\\x07" in shown.stdout and _MARKUP in shown.stdout
    assert "\n  \\x1b]0;pwned" in shown.stdout  # the traceback keeps its lines
    header = kq("dead-letters", "show", topic, "0:5", "-b", bootstrap)
    assert "kq-\\x1b[31mheader: \\x1b]0;title\\x07" in header.stdout
    malformed = kq("dead-letters", "show", topic, "0:1", "-b", bootstrap)
    assert "malformed       malformed kq-attempt header b'x'" in malformed.stdout

    letters = DeadLetters(bootstrap, topic).list()  # the library lists them all too
    assert len(letters) == 7 and letters[1].attempts is None and letters[1].problems
    assert letters[2].source_topic == "" and letters[3].first_enqueued_ms is None
    with pytest.raises(ValueError, match="not requeued: malformed kq-attempt"):
        DeadLetters(bootstrap, topic).requeue(letters[1])

    requeued = kq("dead-letters", "requeue", topic, "--all", "--yes", "-b", bootstrap)
    assert requeued.returncode == 1
    assert [line.split()[0] for line in requeued.stdout.splitlines()] == ["0:0", "0:5", "0:6"]
    refused = [line.split()[0] for line in requeued.stderr.splitlines() if "not requeued:" in line]
    assert refused == ["0:1", "0:2", "0:3", "0:4"]
    assert _end_offset(bootstrap, topic) == 3


# -- fuzz: reading a letter never runs it ------------------------------------------

_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=15,
)


_FUZZ_TRACE = str(Path(tempfile.gettempdir()) / f"kq-fuzz-unpickled-{uuid.uuid4().hex}")


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    """Pickles of jobs and data, cut or with bytes flipped, and random bytes."""
    from kq import Job

    value = draw(_data)
    job = Job(id=draw(st.text(max_size=8)), func=pow, args=(value,), kwargs={"k": value})
    raw = pickle.dumps(draw(st.sampled_from([job, value, _LeavesATrace(_FUZZ_TRACE)])),
                       protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))  # fmt: skip
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    if raw and draw(st.booleans()):
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw


@settings(max_examples=1500, deadline=None)
@given(_payloads() | st.binary(max_size=200))
def test_fuzz_describing_a_letter_never_raises_imports_or_runs(payload: bytes) -> None:
    from kq._letter_view import summarize

    before = set(sys.modules)
    summary = summarize(payload)
    assert summary.size == len(payload) and summary.format in ("json", "pickle", "unknown")
    assert isinstance(summary.call, str) and len(summary.call) < 5000
    # pickletools decodes protocol 0 text with a codec loaded on first use; nothing else
    assert all(name.startswith("encodings.") for name in set(sys.modules) - before)
    assert not Path(_FUZZ_TRACE).exists()
