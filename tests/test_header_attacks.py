"""Hostile kq-* headers on unsigned records: a signing worker refuses them and goes on.

Issue 15 item 3: retry headers were parsed before the signature was checked,
and a hostile ``kq-retry`` (``"max_attempts": Infinity``, ``[[[...`` nested
deeper than the recursion limit) raised out of the job thread: the message kept
its in-flight slot for good, and with ``max_in_flight=3`` three such records
stopped a worker. Now nothing of a record is read before its size and its
signature are checked, and whatever the headers hold, one poison record is one
``invalid`` (or one run), committed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_checks import committed, group_name

from kq import Job, Queue, RetryPolicy, Worker
from kq._loop import EventLoopThread
from kq._retrying import RetryRouter
from kq._runner import MessageRunner
from kq.message import Message
from kq.retry import Attempt
from kq.serialization import dumps
from kq.signing import Signer, Verifier

CLIENTS = ["confluent", "kafka-python"]
SECRET = b"header-attack-secret-0123456789"

_INFINITE = (
    b'{"max_attempts":Infinity,"backoff":1,"factor":2,"max_backoff":10,"jitter":0,'
    b'"retry_on":["failure"]}'
)
_DEEP = b"[" * 100_000 + b"]" * 100_000
_POISON: list[dict[str, bytes]] = [
    {"kq-retry": _INFINITE, "kq-attempt": b"2"},
    {"kq-retry": _DEEP, "kq-first": b"9" * 5000},
    {"kq-retry": b"\xff\xfe{", "kq-attempt": b"-1", "kq-group": b"\xff", "kq-expires": b"x"},
]


class Outcomes:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, status: str, message: Any, job: Any, result: Any, *_: Any) -> None:
        with self._lock:
            self.items.append((status, result))


@pytest.mark.parametrize("client", CLIENTS)
def test_three_poisoned_unsigned_records_do_not_stop_a_signing_worker(
    bootstrap: str, topic: str, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for headers in _POISON:
        # a job that would run, were it read
        producer.produce(
            topic, value=dumps(Job(func=pow, args=(2, 1))), headers=list(headers.items())
        )
    assert producer.flush(30) == 0
    Queue.connect(bootstrap, topic, signing_key=SECRET, client=client).enqueue(pow, 2, 7)
    outcomes = Outcomes()
    group = group_name()
    worker = Worker.connect(
        bootstrap,
        topic,
        group,
        client=client,
        callback=outcomes,
        signing_keys=SECRET,
        max_in_flight=3,
        scheduling=False,
    )
    with caplog.at_level(logging.DEBUG, logger="kq"):
        assert worker.start(max_messages=4) == 4
    assert outcomes.items == [("invalid", None)] * 3 + [("success", 128)]
    assert committed(bootstrap, group, topic) == 4
    # refused on their signature, before any header was parsed
    assert "bad retry headers" not in caplog.text
    assert caplog.text.count("unsigned message (no kq-sig header)") == 3


# -- fuzzing the headers of one message, on the worker's own job-thread code -------

_NAMES = [
    "kq-attempt",
    "kq-first",
    "kq-retry",
    "kq-group",
    "kq-partition",
    "kq-due",
    "kq-topic",
    "kq-written",
    "kq-id",
    "kq-expires",
    "kq-ttl",
    "kq-sig",
    "kq-source",
    "kq-status",
]
_hostile = (
    st.binary(max_size=64)
    | st.sampled_from([_INFINITE, b"[" * 5000, b"NaN", b"1e999", b"-1", b"0", b"9" * 5000])
    | st.integers().map(lambda n: str(n).encode())
)


class _Router(RetryRouter):
    """The real router, with its writes kept in memory."""

    def __init__(self, signer: Signer | None) -> None:
        super().__init__("t", RetryPolicy(max_attempts=2, backoff=0), None, True, None, signer)
        self._group = "g"
        self.sent: list[Any] = []

    def _send(self, record: Any, delay: bool) -> bool:
        self.sent.append(record)
        return True


def _runner(
    router: RetryRouter,
    outcomes: Outcomes,
    verifier: Verifier | None,
    max_bytes: int | None = None,
) -> MessageRunner:
    from kq.serialization import loads

    return MessageRunner(
        logger=logging.getLogger("kq.worker"),
        callback=outcomes,
        observer=None,
        router=router,
        decode=loads,
        verifier=verifier,
        max_bytes=max_bytes,
        abort=threading.Event(),
        loop=EventLoopThread(),
        owns=lambda tp: True,
        hold=lambda tp, on: None,
    )


def _fail() -> None:
    raise RuntimeError("fails on purpose")


@pytest.mark.parametrize("signing", [False, True])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(st.sampled_from(_NAMES), _hostile, max_size=8),
    failing=st.booleans(),
)
def test_fuzzed_headers_give_one_outcome_and_never_raise(
    signing: bool, headers: dict[str, bytes], failing: bool
) -> None:
    """Random bytes in every kq-* header: ``process`` returns (finished) with one outcome."""
    outcomes = Outcomes()
    router = _Router(Signer(SECRET) if signing else None)
    runner = _runner(router, outcomes, Verifier(SECRET) if signing else None)
    value = dumps(Job(id="j", func=_fail) if failing else Job(id="j", func=pow, args=(2, 3)))
    message = Message("t", 0, 5, None, value)
    assert runner.process(message, (None, headers)) is True
    if signing:
        # nothing of these headers can carry a valid signature: refused unread
        assert outcomes.items == [("invalid", None)] and not router.sent
    elif headers.get("kq-group", b"g") != b"g":
        assert outcomes.items == [] and not router.sent  # another group's retry: skipped
    else:
        [(status, _)] = outcomes.items
        assert status == ("failure" if failing else "success")
        assert len(router.sent) == (1 if failing else 0)  # its retry or dead letter


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(_NAMES), _hostile, max_size=8))
def test_fuzzed_headers_are_read_as_an_attempt_or_a_value_error(headers: dict[str, bytes]) -> None:
    try:
        attempt = Attempt.from_headers(headers, None)
    except ValueError:
        return
    assert attempt.number >= 1


def test_headers_count_in_the_size_limit_and_are_not_read_past_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A small job with a 10 kB kq-retry header: over ``max_message_bytes``, refused unread."""
    outcomes = Outcomes()
    runner = _runner(_Router(None), outcomes, None, max_bytes=4096)
    value = dumps(Job(id="j", func=pow, args=(2, 3)))
    headers = {"kq-retry": b"[" * 10_000, "kq-group": b"other"}
    with caplog.at_level(logging.DEBUG, logger="kq"):
        assert runner.process(Message("t", 0, 0, None, value), (None, headers)) is True
    assert outcomes.items == [("invalid", None)]
    assert "exceeds max_message_bytes=4096" in caplog.text
    assert "bad retry headers" not in caplog.text and "Skipping a retry" not in caplog.text
