"""Signed jobs under attack: replays, forged kq-* headers, and the forwarder as a deputy.

Issue 15 item 4: the signature covered the topic, key and value only, so a
captured signed record written back (verbatim, or to another partition) ran
again, and a forged ``kq-retry``/``kq-attempt``/``kq-group`` made a signed job
run many times or by another group. Now it covers the job id, its enqueue time,
its expiry and every kq-* header the worker acts on, and a worker refuses an
expired signed job. Item 5: the delay forwarder sent a record wherever its
``kq-topic`` said, with the worker's credentials; now only home.

Against the real broker, with both clients. A worker's clock is moved forward
(``kq._runner.now_ms``) to see a captured record after it expired.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_procs import wait_until
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_checks import committed, group_name
from ledger_jobs import record, starts
from retry_jobs import attempts_seen, flaky
from tier_checks import Calls, now_ms, park, running, settled

import kq._runner
from kq import DeadLetters, Job, Queue, RetryPolicy, Worker
from kq.schedule import delay_topic, delay_topic_pattern, delay_topics, ensure_topics
from kq.signing import CLOCK_SKEW, DEFAULT_EXPIRES, SIGNED_HEADERS, Signer, Verifier

CLIENTS = ["confluent", "kafka-python"]
SECRET = b"signed-attack-secret-0123456789"
FAST = RetryPolicy(max_attempts=3, backoff=0.2, factor=1, jitter=0)

Headers = list[tuple[str, bytes]]


def _capture(bootstrap: str, topic: str, partition: int, offset: int) -> tuple[Any, bytes, Headers]:
    """The record at ``topic``/``partition``/``offset``: key, value and headers, as an attacker
    who can read the topic sees it."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_name(), "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        for _ in range(100):
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                return m.key(), m.value(), list(m.headers() or [])
        raise AssertionError(f"no record at {topic}/{partition}/{offset}")
    finally:
        consumer.close()


def _write(bootstrap: str, topic: str, key: Any, value: bytes, headers: Headers, **kw: Any) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value, key=key, headers=headers, **kw)
    assert producer.flush(30) == 0


def _with(headers: Headers, **changes: bytes | None) -> Headers:
    """``headers`` with kq-* headers replaced, added, or (None) removed; the signature kept."""
    named = {k.replace("_", "-"): v for k, v in changes.items()}
    kept = [(k, v) for k, v in headers if k not in named]
    return kept + [(k, v) for k, v in named.items() if v is not None]


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The worker's clock, ``seconds`` ahead of the real one, where it checks expiry."""
    real = kq._runner.now_ms
    monkeypatch.setattr(kq._runner, "now_ms", lambda: real() + int(seconds * 1000))


# -- item 4: replays -----------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_captured_signed_record_written_back_after_expiry_is_refused(
    bootstrap: str, make_topic: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, signing_key=SECRET, client=client)
    queue.using(partition=0).enqueue(record, ledger, "once")
    key, value, headers = _capture(bootstrap, topic, 0, 0)
    assert {k for k, _ in headers} >= {"kq-id", "kq-first", "kq-expires", "kq-ttl", "kq-sig"}
    group = group_name()

    def worker(calls: Calls) -> Worker:
        return Worker.connect(
            bootstrap, topic, group, client=client, callback=calls, signing_keys=SECRET,
            scheduling=False,
        )  # fmt: skip

    calls = Calls()
    assert worker(calls).start(max_messages=1) == 1
    assert [c[0] for c in calls.items] == ["success"]
    # written back verbatim, to its own partition and to the other one
    _write(bootstrap, topic, key, value, headers, partition=0)
    _write(bootstrap, topic, key, value, headers, partition=1)
    _later(monkeypatch, DEFAULT_EXPIRES + CLOCK_SKEW + 60)
    calls = Calls()
    assert worker(calls).start(max_messages=2) == 2
    assert [c[0] for c in calls.items] == ["invalid", "invalid"]
    assert starts(ledger)["once"] == 1
    assert committed(bootstrap, group, topic, 0) == 2 and committed(bootstrap, group, topic, 1) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_within_its_expiry_a_replayed_signed_record_runs_again(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """The limit the README states: expiry bounds replays in time, it does not stop them."""
    ledger = str(tmp_path / "ledger")
    Queue.connect(bootstrap, topic, signing_key=SECRET, client=client).enqueue(
        record, ledger, "twice"
    )
    key, value, headers = _capture(bootstrap, topic, 0, 0)
    _write(bootstrap, topic, key, value, headers)
    worker = Worker.connect(
        bootstrap, topic, group_name(), client=client, signing_keys=SECRET, scheduling=False
    )
    assert worker.start(max_messages=2) == 2
    assert starts(ledger)["twice"] == 2


@pytest.mark.parametrize("client", CLIENTS)
def test_per_job_expiry_and_clock_skew(
    bootstrap: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """``using(expires=60)``: valid up to 60 s + the skew after it is due, refused after."""
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, signing_key=SECRET, client=client)
    queue.using(expires=60).enqueue(record, ledger, "short")
    _, _, headers = _capture(bootstrap, topic, 0, 0)
    found = dict(headers)
    assert int(found["kq-expires"]) - int(found["kq-first"]) == 60_000
    assert found["kq-ttl"] == b"60000"
    queue.enqueue(record, ledger, "default")  # the queue's default: a day
    calls = Calls()
    _later(monkeypatch, 60 + CLOCK_SKEW + 30)
    worker = Worker.connect(
        bootstrap, topic, group_name(), client=client, callback=calls, signing_keys=SECRET,
        scheduling=False,
    )  # fmt: skip
    assert worker.start(max_messages=2) == 2
    assert [(c[0], c[1]) for c in calls.items] == [("invalid", None), ("success", "default")]
    with pytest.raises(ValueError, match="expires"):
        queue.using(expires=0)
    with pytest.raises(ValueError, match="signing_key"):
        Queue.connect(bootstrap, topic, client=client).using(expires=10)


# -- item 4: forged headers ------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_forged_kq_headers_on_a_signed_record_are_refused(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """Each signed header changed (or added, or removed) on a captured signed record:
    a bigger retry policy, an earlier attempt, another group, a later expiry, another
    id. Each is ``invalid``; the job never runs."""
    ledger = str(tmp_path / "ledger")
    Queue.connect(bootstrap, topic, signing_key=SECRET, client=client).using(
        retry=RetryPolicy(max_attempts=2)
    ).enqueue(record, ledger, "victim")
    key, value, headers = _capture(bootstrap, topic, 0, 0)
    policy = json.loads(dict(headers)["kq-retry"])
    expires = int(dict(headers)["kq-expires"])
    forgeries = [
        _with(headers, kq_retry=json.dumps({**policy, "max_attempts": 10_000}).encode()),
        _with(headers, kq_retry=None),  # the worker's own policy instead
        _with(headers, kq_attempt=b"0001"),
        _with(headers, kq_attempt=None),
        _with(headers, kq_group=b"some-other-group"),
        _with(headers, kq_expires=str(expires + 10**9).encode()),
        _with(headers, kq_ttl=b"999999999999"),
        _with(headers, kq_first=b"1"),
        _with(headers, kq_id=b"another-id"),
        _with(headers, kq_id=None),
    ]
    assert {name.replace("-", "_") for name in SIGNED_HEADERS} <= {
        "kq_id", "kq_first", "kq_expires", "kq_ttl", "kq_attempt", "kq_retry", "kq_group"
    }  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for forged in forgeries:
        producer.produce(topic, value=value, key=key, headers=forged)
    assert producer.flush(30) == 0
    calls = Calls()
    group = group_name()
    worker = Worker.connect(
        bootstrap, topic, group, client=client, callback=calls, signing_keys=SECRET,
        scheduling=False,
    )  # fmt: skip
    # offset 0 is the genuine job (it runs once); the forgeries follow
    assert worker.start(max_messages=1 + len(forgeries)) == 1 + len(forgeries)
    assert [c[0] for c in calls.items] == ["success"] + ["invalid"] * len(forgeries)
    assert starts(ledger)["victim"] == 1
    assert committed(bootstrap, group, topic) == 1 + len(forgeries)


def test_a_signed_id_that_is_not_the_jobs_id_is_refused(bootstrap: str, topic: str) -> None:
    """A signer that put one id in kq-id and another in the value: refused (kq-id must be
    the id a results store can trust)."""
    from kq.serialization import dumps

    value = dumps(Job(id="in-the-value", func=pow, args=(2, 2)))
    now = now_ms()
    headers = Signer(SECRET).sign_job(
        topic, None, value, (), job_id="in-the-header", enqueued_ms=now, due_ms=None, expires=60
    )
    _write(bootstrap, topic, None, value, list(headers))
    calls = Calls()
    worker = Worker.connect(
        bootstrap, topic, group_name(), callback=calls, signing_keys=SECRET, scheduling=False
    )
    assert worker.start(max_messages=1) == 1
    assert [c[0] for c in calls.items] == ["invalid"]
    assert Verifier(SECRET).problem(topic, None, value, dict(headers), now) == ""


# -- item 4: retries, delays, dead letters and requeues of signed jobs still work -------------


@pytest.mark.parametrize("client", CLIENTS)
def test_signed_jobs_retry_wait_dead_letter_and_requeue(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, signing_key=SECRET, client=client)
    queue.using(retry=FAST).enqueue(flaky, ledger, "recovers", 2)  # fails twice, then succeeds
    queue.using(retry=FAST).enqueue(flaky, ledger, "doomed", 3)  # fails all three attempts
    queue.using(delay=0.5).enqueue(flaky, ledger, "delayed", 0)
    calls = Calls()
    group = group_name()
    dead = DeadLetters(bootstrap, topic, signing_keys=[SECRET])
    worker = Worker.connect(
        bootstrap, topic, group, client=client, callback=calls, signing_keys=[SECRET]
    )
    with running(worker):
        wait_until(lambda: calls.of("recovers")[-1:] == [("success", 3)], "the third attempt")
        wait_until(lambda: calls.of("delayed") == [("success", 1)], "the delayed job")
        wait_until(lambda: len(dead.list()) == 1, "the dead letter")
        [letter] = dead.list()
        assert letter.signature == "valid" and letter.attempts == 3
        # without the keys, a signed letter cannot be requeued: it would be refused
        keyless = DeadLetters(bootstrap, topic)
        assert "signed letter" in keyless.refusal(keyless.get(letter.partition, letter.offset))
        with pytest.raises(ValueError, match="signed letter"):
            keyless.requeue(letter)
        dead.requeue(letter)  # signed again: attempt 1, a new expiry
        wait_until(lambda: starts(ledger)["doomed"] == 4, "the requeued run")
        wait_until(lambda: settled(bootstrap, topic, [group]), "everything committed")
    assert attempts_seen(ledger, "recovers") == [1, 2, 3]
    assert attempts_seen(ledger, "doomed") == [1, 2, 3, 1]
    assert not [c for c in calls.items if c[0] == "invalid"]


# -- item 5: the forwarder delivers only to its own topic --------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_the_forwarder_does_not_deliver_to_the_topic_a_record_names(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str
) -> None:
    """A record in this topic's tier naming ``victim`` as its home (kq-topic): the worker's
    forwarder would write it to ``victim`` with the worker's credentials. It is dead-lettered
    with the reason; ``victim`` gets nothing; the good record behind it goes home and runs."""
    topic, victim = make_topic(), make_topic()
    ledger = str(tmp_path / "ledger")
    ensure_topics(bootstrap, delay_topics(topic), topic, {})
    tier, now = delay_topic(topic, "1s"), now_ms()
    bad = Job(id="steered", func=record, args=(ledger, "steered"))
    good = Job(id="good", func=record, args=(ledger, "good"))
    park(bootstrap, tier, bad, home=victim, due_ms=now, written_ms=now)
    park(bootstrap, tier, good, home=topic, due_ms=now, written_ms=now)
    group = group_name()
    dead = DeadLetters(bootstrap, topic)
    with running(Worker.connect(bootstrap, topic, group, client=client)):
        wait_until(lambda: starts(ledger)["good"] == 1, "the good record")
        wait_until(lambda: dead.list(), "the dead letter")
        wait_until(lambda: settled(bootstrap, topic, [group]), "everything committed")
    [letter] = dead.list()
    assert letter.status == "undeliverable" and letter.describe().job_id == "steered"
    assert repr(victim) in letter.error and "kq-topic" in letter.error
    assert letter.source_topic == topic
    assert letter.problems == () and dead.refusal(letter) == ""  # a well-formed letter
    assert starts(ledger)["steered"] == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_name()})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(victim, 0), timeout=10) == (0, 0)
    finally:
        consumer.close()


def test_the_forwarder_subscribes_to_its_own_tiers_only() -> None:
    import re

    pattern = re.compile(delay_topic_pattern("jobs.a"))
    assert all(pattern.match(t) for t in delay_topics("jobs.a"))
    for other in ("jobs.a.kq-delay-evil", "jobs.a.kq-delay-1s.x", "jobsXa.kq-delay-1s",
                  "jobs.a.kq-dead", "jobs.a.kq-delay-1sx", "other.kq-delay-1s"):  # fmt: skip
        assert not pattern.match(other), other


def test_kq_enqueue_expires(bootstrap: str, topic: str, tmp_path: Path) -> None:
    from cli_procs import kq

    env = {"KQ_SIGNING_KEY": SECRET.decode()}
    args = ("enqueue", topic, "builtins:pow", "2", "3", "--expires", "90", "-b", bootstrap)
    done = kq(*args, env=env)
    assert done.returncode == 0, done.stderr
    found = dict(_capture(bootstrap, topic, 0, 0)[2])
    assert found["kq-ttl"] == b"90000" and found["kq-id"] == done.stdout.strip().encode()
    unsigned = kq(*args)
    assert unsigned.returncode != 0 and "signing_key" in unsigned.stderr
