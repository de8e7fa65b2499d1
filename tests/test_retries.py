"""Retries with backoff, delayed jobs and dead letters, against the real broker."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_checks import committed, group_name, produce_raw
from ledger_jobs import starts, wait_for
from retry_jobs import attempts_seen, flaky, flaky_async, run_times, slow, stamp
from tier_checks import running

from kq import DeadLetters, Job, Queue, RetryPolicy, Worker
from kq.retry import Attempt
from kq.schedule import TIERS, dead_letter_topic, delay_topics, route

CLIENTS = ["confluent", "kafka-python"]
FAST = RetryPolicy(max_attempts=3, backoff=0.2, jitter=0)


class Calls:
    """A callback that records (status, job name, attempt number) per call."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, int | None]] = []
        self._lock = threading.Lock()

    def __call__(self, status: str, message: Any, job: Any, *_: Any) -> None:
        import kq

        attempt = kq.current_attempt()
        with self._lock:
            self.items.append(
                (status, job.args[1] if job else None, attempt.number if attempt else None)
            )


def _until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    assert wait_for(predicate, timeout=timeout), f"timed out waiting for {what}"


# -- pure logic --------------------------------------------------------------


def test_policy_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="never retried"):
        RetryPolicy(retry_on=frozenset({"invalid"}))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(TypeError, match="backoff"):
        RetryPolicy(backoff="1s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        RetryPolicy(factor=0.5)
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy(retry_on="failure")  # type: ignore[arg-type]


def test_backoff_grows_to_its_cap_within_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=1, factor=2, max_backoff=5, jitter=0.1)
    for attempt, expected in [(1, 1), (2, 2), (3, 4), (4, 5), (9, 5)]:
        for _ in range(50):
            assert expected * 0.9 <= policy.delay(attempt) <= expected * 1.1
    assert RetryPolicy(jitter=0).delay(1) == 1.0


def test_policy_round_trips_through_its_header() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=0.5, retry_on=frozenset({"failure", "timeout"}))
    assert RetryPolicy.from_header(policy.to_header()) == policy
    with pytest.raises(ValueError, match="kq-retry"):
        RetryPolicy.from_header(b"{not json")
    attempt = Attempt.from_headers({"kq-attempt": b"5", "kq-retry": policy.to_header()}, None)
    assert attempt.is_last and attempt.number == 5


def test_route_picks_the_smallest_tier_that_covers_the_wait() -> None:
    now = 1_000_000
    assert route("t", now - 5, now) == "t.kq-delay-1s"
    assert route("t", now + 500, now) == "t.kq-delay-1s"
    assert route("t", now + 1_000, now) == "t.kq-delay-1s"
    assert route("t", now + 1_001, now) == "t.kq-delay-10s"
    assert route("t", now + 10_000, now) == "t.kq-delay-10s"
    assert route("t", now + 45_000, now) == "t.kq-delay-1m"
    assert route("t", now + 3_600_000, now) == "t.kq-delay-1h"
    assert route("t", now + 7_200_000, now) == "t.kq-delay-1d"
    assert route("t", now + 30 * 86_400_000, now) == "t.kq-delay-1d"  # passes through daily
    assert delay_topics("t") == [f"t.kq-delay-{s}" for s, _ in TIERS]


def test_queue_rejects_bad_delay_arguments(bootstrap: str, topic: str) -> None:
    queue = Queue.connect(bootstrap, topic)
    with pytest.raises(ValueError, match="delay must be 0 or greater"):
        queue.using(delay=-1)
    with pytest.raises(ValueError, match="not both"):
        queue.using(delay=1, eta=time.time())
    with pytest.raises(ValueError, match="timezone-aware"):
        queue.using(eta=datetime.datetime.now())
    with pytest.raises(TypeError, match=r"retry must be a kq\.RetryPolicy"):
        queue.using(retry=3)  # type: ignore[arg-type]


# -- against the broker ------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_failed_job_is_retried_until_it_succeeds(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client, retry=FAST)
    queue.enqueue(flaky, ledger, "sync", 2)
    queue.enqueue(flaky_async, ledger, "async", 1)
    calls = Calls()
    group = group_name()
    with running(Worker.connect(bootstrap, topic, group, client=client, callback=calls)):
        _until(lambda: starts(ledger)["sync"] == 3 and starts(ledger)["async"] == 2, "retries")
        _until(lambda: len(calls.items) == 5, "all callbacks")
    # every attempt reaches the callback, which sees the attempt number
    assert sorted(c for c in calls.items if c[1] == "sync") == [
        ("failure", "sync", 1),
        ("failure", "sync", 2),
        ("success", "sync", 3),
    ]
    assert sorted(c for c in calls.items if c[1] == "async") == [
        ("failure", "async", 1),
        ("success", "async", 2),
    ]
    assert attempts_seen(ledger, "sync") == [1, 2, 3]
    assert attempts_seen(ledger, "async") == [1, 2]
    # each retry waited at least its backoff (0.2 s, then 0.4 s)
    times = run_times(ledger, "sync")
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4
    # retries come back as new records of the topic: 2 jobs + 3 retries
    assert committed(bootstrap, group, topic) == 5
    assert DeadLetters(bootstrap, topic).list() == []


@pytest.mark.parametrize("client", CLIENTS)
def test_last_failure_goes_to_the_dead_letter_topic_and_can_be_requeued(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    job = queue.using(retry=FAST, key=b"k1").enqueue(flaky, ledger, "doomed", 3)
    calls = Calls()
    with running(Worker.connect(bootstrap, topic, group_name(), client=client, callback=calls)):
        _until(lambda: starts(ledger)["doomed"] == 3, "three attempts")
        dead = DeadLetters(bootstrap, topic)
        _until(lambda: len(dead.list()) == 1, "the dead letter")
        [letter] = dead.list()
        assert letter.job() == job  # unchanged
        assert letter.key == b"k1"
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == (topic, 0, 0)
        assert letter.attempts == 3 and letter.status == "failure"
        assert "doomed failed on purpose" in letter.error
        assert "RuntimeError" in letter.traceback
        assert dead.get(letter.partition, letter.offset) == letter
        # a requeued job gets a fresh set of attempts: the 4th run succeeds
        dead.requeue(letter)
        _until(lambda: starts(ledger)["doomed"] == 4, "the requeued run")
        _until(lambda: ("success", "doomed", 1) in calls.items, "its success")
    assert [s for s, _, _ in calls.items] == ["failure"] * 3 + ["success"]
    assert dead_letter_topic(topic) == f"{topic}.kq-dead"


def test_timeouts_retried_only_when_asked(bootstrap: str, topic: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic)
    both = RetryPolicy(max_attempts=2, backoff=0.1, retry_on=frozenset({"failure", "timeout"}))
    queue.using(timeout=0.5, retry=both).enqueue(slow, ledger, "retried", 5)
    queue.using(timeout=0.5, retry=FAST).enqueue(slow, ledger, "final", 5)
    calls = Calls()
    with running(Worker.connect(bootstrap, topic, group_name(), callback=calls)):
        dead = DeadLetters(bootstrap, topic)
        _until(lambda: len(dead.list()) == 2, "two dead letters")
    assert starts(ledger)["retried"] == 2
    assert starts(ledger)["final"] == 1
    assert sorted(calls.items) == [
        ("timeout", "final", 1),
        ("timeout", "retried", 1),
        ("timeout", "retried", 2),
    ]
    assert {d.status for d in dead.list()} == {"timeout"}


def test_invalid_is_never_retried(bootstrap: str, topic: str) -> None:
    produce_raw(bootstrap, topic, [b"junk"])
    calls = Calls()
    group = group_name()
    worker = Worker.connect(bootstrap, topic, group, callback=calls, retry=FAST)
    assert worker.start(max_messages=1) == 1
    assert calls.items == [("invalid", None, 1)]
    assert committed(bootstrap, group, topic) == 1
    # never retried, but kept (a worker with retries keeps invalid messages)
    [letter] = DeadLetters(bootstrap, topic).list()
    assert (letter.value, letter.status, letter.attempts) == (b"junk", "invalid", 1)


def test_worker_policy_retries_jobs_enqueued_without_one(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    # e.g. jobs written by KQ 2.2.1, which knows nothing of retries
    ledger = str(tmp_path / "ledger")
    Queue.connect(bootstrap, topic).enqueue(flaky, ledger, "old", 1)
    with running(Worker.connect(bootstrap, topic, group_name(), retry=FAST)):
        _until(lambda: starts(ledger)["old"] == 2, "the retry")


@pytest.mark.parametrize("client", CLIENTS)
def test_delayed_jobs_do_not_run_before_they_are_due(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=client)
    enqueued = time.time()
    queue.using(delay=2.5).enqueue(stamp, ledger, "delay")
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1.5)
    queue.using(eta=eta).enqueue(stamp, ledger, "eta")
    queue.enqueue(stamp, ledger, "now")
    with running(Worker.connect(bootstrap, topic, group_name(), client=client)):
        _until(lambda: all(starts(ledger)[n] == 1 for n in ("delay", "eta", "now")), "all jobs")
    assert run_times(ledger, "delay")[0] >= enqueued + 2.5
    assert run_times(ledger, "eta")[0] >= eta.timestamp()
    assert run_times(ledger, "now")[0] < run_times(ledger, "eta")[0]


def test_backoff_does_not_stall_later_jobs_of_the_key_or_other_partitions(
    bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic)
    slow_retry = RetryPolicy(max_attempts=2, backoff=3, jitter=0)
    queue.using(key=b"k", retry=slow_retry, partition=0).enqueue(flaky, ledger, "first", 1)
    queue.using(key=b"k", partition=0).enqueue(stamp, ledger, "same-key-later")
    queue.using(partition=1).enqueue(stamp, ledger, "other-partition")
    with running(Worker.connect(bootstrap, topic, group_name())):
        _until(lambda: starts(ledger)["first"] == 2, "the retry")
    # Documented choice: a job waiting for its retry does not hold back later
    # jobs of its key; they run while it waits, so the retry runs after them.
    first_runs = run_times(ledger, "first")
    assert run_times(ledger, "same-key-later")[0] < first_runs[1]
    assert run_times(ledger, "other-partition")[0] < first_runs[1]
    assert first_runs[1] - first_runs[0] >= 3


def test_waiting_retries_and_delays_survive_a_worker_restart(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic)
    enqueued = time.time()
    queue.using(delay=4).enqueue(stamp, ledger, "delayed")
    queue.using(retry=RetryPolicy(max_attempts=2, backoff=4, jitter=0)).enqueue(
        flaky, ledger, "retry", 1
    )
    group = group_name()
    with running(Worker.connect(bootstrap, topic, group)):
        _until(lambda: starts(ledger)["retry"] == 1, "the first attempt")
    first_failed = run_times(ledger, "retry")[0]
    assert starts(ledger)["delayed"] == 0  # not before it is due
    # nothing runs while no worker is up; a new worker picks the waiting jobs up
    with running(Worker.connect(bootstrap, topic, group)):
        _until(lambda: starts(ledger)["delayed"] == 1 and starts(ledger)["retry"] == 2, "both")
    assert run_times(ledger, "delayed")[0] >= enqueued + 4
    assert run_times(ledger, "retry")[1] >= first_failed + 4
    assert starts(ledger)["delayed"] == 1 and starts(ledger)["retry"] == 2


def test_batch_enqueue_with_delay_and_retry(bootstrap: str, topic: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic)
    with queue.using(delay=1, retry=FAST).batch() as batch:
        for n in range(5):
            batch.enqueue(flaky, ledger, f"b{n}", 1)
    with running(Worker.connect(bootstrap, topic, group_name())):
        _until(lambda: all(starts(ledger)[f"b{n}"] == 2 for n in range(5)), "every retry")


def test_job_objects_keep_their_own_fields_with_a_policy(bootstrap: str, topic: str) -> None:
    queue = Queue.connect(bootstrap, topic, retry=FAST)
    job = queue.enqueue(Job(func=abs, args=[-3], key=b"own"))
    assert job.key == b"own" and job.args == (-3,)
    assert queue.retry == FAST
