"""Retries at their edges: two groups on a topic, hostile retry headers, partitions, long waits."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from cli_procs import wait_until
from confluent_kafka import Producer
from kafka.partitioner.default import murmur2
from kafka_checks import committed, group_name
from ledger_jobs import starts
from retry_jobs import attempts_seen, flaky, stamp
from tier_checks import Calls, running, settled

from kq import DeadLetters, Job, Queue, RetryPolicy, Worker
from kq.retry import Attempt
from kq.schedule import MAX_DELAY, TIERS, route
from kq.serialization import dumps

CLIENTS = ["confluent", "kafka-python"]


# -- 14.5: policies are validated and capped where built and where read ---------------


def test_delay_never_overflows_and_stops_at_max_backoff() -> None:
    policy = RetryPolicy(max_attempts=5000, backoff=1, factor=2, max_backoff=60, jitter=0)
    assert policy.delay(1025) == 60.0
    assert policy.delay(4999) == 60.0
    assert RetryPolicy.from_header(policy.to_header()).delay(1025) == 60.0
    steep = RetryPolicy(max_attempts=10, backoff=1e-3, factor=1e6, max_backoff=5, jitter=0)
    assert steep.delay(9) == 5.0 and steep.delay(10**9) == 5.0
    assert RetryPolicy(backoff=0, max_backoff=0).delay(50) == 0.0
    assert RetryPolicy(factor=10**400, max_backoff=5, jitter=0).delay(3) == 5.0


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("max_attempts", 10**6, ValueError),
        ("backoff", math.nan, ValueError),
        ("backoff", math.inf, ValueError),
        ("factor", math.inf, ValueError),
        ("max_backoff", math.nan, ValueError),
        ("max_backoff", MAX_DELAY + 1, ValueError),
        ("jitter", math.nan, ValueError),
    ],
)
def test_policy_refuses_values_that_cannot_be_scheduled(
    field: str, value: float, error: type[Exception]
) -> None:
    with pytest.raises(error, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    [
        b'{"max_attempts":3,"backoff":NaN,"factor":2,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}',
        b'{"max_attempts":Infinity,"backoff":1,"factor":2,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}',
        b'{"max_attempts":3,"backoff":1,"factor":1e400,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}',
        b'{"max_attempts":3.5,"backoff":1,"factor":2,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}',
        b'{"max_attempts":3,"backoff":1,"factor":2,"max_backoff":10,"jitter":0,"retry_on":"f"}',
        b"[1, 2]",
        b'{"max_attempts":99999999,"backoff":1,"factor":2,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}',
    ],
)
def test_a_bad_retry_header_is_a_value_error(header: bytes) -> None:
    with pytest.raises(ValueError, match="kq-retry"):
        RetryPolicy.from_header(header)
    with pytest.raises(ValueError):
        Attempt.from_headers({"kq-retry": header}, None)


def _produce(bootstrap: str, topic: str, job: Job, headers: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=dumps(job), headers=headers)
    assert producer.flush(30) == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_a_nan_in_the_retry_header_runs_the_job_as_a_first_attempt(
    bootstrap: str, topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    """``"backoff": NaN`` passed the checks and ``int(nan)`` killed the job thread: the
    next job never ran and the offset never moved. Now the bad header is logged on
    kq.retries and the job runs as a first attempt with the worker's own policy."""
    ledger = str(tmp_path / "ledger")
    nan_policy = (
        b'{"max_attempts":3,"backoff":NaN,"factor":2,"max_backoff":10,"jitter":0,'
        b'"retry_on":["failure"]}'
    )
    _produce(
        bootstrap, topic, Job(id="bad", func=flaky, args=(ledger, "bad", 99)),
        [("kq-attempt", b"1"), ("kq-retry", nan_policy)],
    )  # fmt: skip
    _produce(bootstrap, topic, Job(id="next", func=stamp, args=(ledger, "next")), [])
    calls = Calls()
    group = group_name()
    worker = Worker.connect(bootstrap, topic, group, client=client, callback=calls)
    with caplog.at_level(logging.ERROR, logger="kq.retries"), running(worker):
        wait_until(lambda: starts(ledger)["next"] == 1, "the job behind the bad header")
        wait_until(lambda: committed(bootstrap, group, topic) == 2, "both committed")
    assert calls.of("bad") == [("failure", 1)]  # the worker's policy: none, so no retry
    assert any("kq-retry" in r.message for r in caplog.records if r.name == "kq.retries")
    assert DeadLetters(bootstrap, topic).list() == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_long_policy_read_back_from_its_header_keeps_retrying(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """``RetryPolicy(max_attempts=5000, factor=2)`` overflowed at attempt 1025
    (``2.0**1024``) when read back from its header, killing the job thread."""
    ledger = str(tmp_path / "ledger")
    policy = RetryPolicy(max_attempts=5000, backoff=0.001, factor=2, max_backoff=0.2, jitter=0)
    _produce(
        bootstrap, topic, Job(id="long", func=flaky, args=(ledger, "long", 1)),
        [("kq-attempt", b"1025"), ("kq-retry", policy.to_header())],
    )  # fmt: skip
    with running(Worker.connect(bootstrap, topic, group_name(), client=client)):
        wait_until(lambda: starts(ledger)["long"] == 2, "the retry after attempt 1025")
    assert attempts_seen(ledger, "long") == [1025, 1026]


# -- 14.3: two consumer groups on one topic -------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_two_groups_get_a_delayed_job_once_each_and_only_their_own_retries(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """A delay=1 job ran 4 times (twice per group) and a max_attempts=2 job's second
    attempt 8 times: every group's forwarder forwarded every record. Now each group sees
    the delayed job once, like a fresh job, and a retry only where its attempt failed."""
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    queue.using(delay=1).enqueue(stamp, ledger, "delayed")
    queue.using(retry=RetryPolicy(max_attempts=2, backoff=0.5, jitter=0)).enqueue(
        flaky, ledger, "doomed", 99
    )
    groups = [group_name(), group_name()]
    calls = [Calls(), Calls()]
    workers = [
        Worker.connect(bootstrap, topic, g, client=client, callback=c)
        for g, c in zip(groups, calls, strict=True)
    ]
    dead = DeadLetters(bootstrap, topic)
    with running(workers[0]), running(workers[1]):
        wait_until(lambda: starts(ledger)["delayed"] >= 2 and len(dead.list()) >= 2, "both groups")
        wait_until(lambda: settled(bootstrap, topic, groups), "everything committed")
    for group_calls in calls:
        assert group_calls.of("delayed") == [("success", 1)]
        assert group_calls.of("doomed") == [("failure", 1), ("failure", 2)]
    assert starts(ledger)["delayed"] == 2 and starts(ledger)["doomed"] == 4
    letters = dead.list()
    assert len(letters) == 2 and {letter.attempts for letter in letters} == {2}
    assert {letter.headers["kq-group"].decode() for letter in letters} == set(groups)


# -- 14.8: the partition survives the tiers; long delays are bounded ------------------


def _key_for(partition: int, partitions: int) -> bytes:
    """A key that the murmur2 partitioner puts in ``partition``."""
    for n in range(1000):
        key = f"k{n}".encode()
        if (murmur2(key) & 0x7FFFFFFF) % partitions == partition:
            return key
    raise AssertionError("no key found")


@pytest.mark.parametrize("client", CLIENTS)
def test_delayed_and_retried_jobs_keep_their_partition(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str
) -> None:
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    key = _key_for(0, 2)  # the key alone would send them to partition 0
    queue = Queue.connect(bootstrap, topic, client=client)
    pinned = queue.using(key=key, partition=1, retry=RetryPolicy(max_attempts=2, backoff=0.3))
    pinned.enqueue(flaky, ledger, "retried", 1)
    queue.using(key=key, partition=1, delay=0.5).enqueue(stamp, ledger, "delayed")
    calls = Calls()
    with running(Worker.connect(bootstrap, topic, group_name(), client=client, callback=calls)):
        wait_until(lambda: len(calls.items) == 3, "the three runs")
    assert sorted((s, n, a, p) for s, n, a, p in calls.items) == [
        ("failure", "retried", 1, 1),
        ("success", "delayed", 1, 1),
        ("success", "retried", 2, 1),
    ]


def _writes(remaining_ms: int) -> int:
    """How many times a job due in ``remaining_ms`` is written to the tiers."""
    writes, now, due = 0, 0, remaining_ms
    seconds = dict(TIERS)
    while due - now > 0:
        tier = route("t", due, now).rsplit("-", 1)[1]
        writes += 1
        now += min(seconds[tier] * 1000, due - now)
    return writes


def test_a_job_due_in_30_days_is_rewritten_a_bounded_number_of_times() -> None:
    # through the 1 h tier it took 720 rewrites and more
    assert _writes(30 * 86_400_000) <= 100
    assert _writes(MAX_DELAY * 1000) <= 500


def test_delays_beyond_the_maximum_are_refused_at_enqueue(bootstrap: str, topic: str) -> None:
    import time

    queue = Queue.connect(bootstrap, topic)
    with pytest.raises(ValueError, match="at most"):
        queue.using(delay=MAX_DELAY + 1)
    with pytest.raises(ValueError, match="at most"):
        queue.using(eta=time.time() + MAX_DELAY + 3600)
    assert json.loads(RetryPolicy(max_backoff=MAX_DELAY).to_header())["max_backoff"] == MAX_DELAY
