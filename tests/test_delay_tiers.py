"""The delay-tier forwarder under failures, oversized records, skewed clocks and crashes.

Against the real broker. Records are parked straight in a tier (``park``) to
control their order, partition, timestamps and headers; send failures are
injected in the worker's producer (``FailingSends``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from cli_procs import wait_until
from kafka_checks import group_name
from ledger_jobs import starts
from retry_jobs import run_times, stamp
from tier_checks import (
    inject_failing_sends,
    now_ms,
    park,
    running,
    settled,
    tier_records,
)

import kq.schedule
from kq import DeadLetters, EnqueueError, Job, Queue, Worker
from kq.schedule import delay_topic, delay_topics, ensure_topics

CLIENTS = ["confluent", "kafka-python"]


def _job(ledger: str, name: str, padding: int = 0) -> Job:
    """A ``stamp`` job; ``padding`` bytes make it big (it must then never run)."""
    return Job(
        id=name, func=stamp, args=(ledger, name), kwargs={"pad": "x" * padding} if padding else {}
    )


def _tiers(bootstrap: str, topic: str) -> None:
    ensure_topics(bootstrap, delay_topics(topic), topic, {})


# -- 14.1: a failed forward is never lost behind a held record ---------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failed_forward_is_not_lost_behind_a_record_that_is_held(
    bootstrap: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """A is due, B behind it in the same tier partition is not: B is held. The send of A
    fails once; A must still be forwarded (it was lost: A's partition stayed at B)."""
    ledger = str(tmp_path / "ledger")
    _tiers(bootstrap, topic)
    tier, now = delay_topic(topic, "1s"), now_ms()
    park(bootstrap, tier, _job(ledger, "A"), home=topic, due_ms=now - 1, written_ms=now)
    park(bootstrap, tier, _job(ledger, "B"), home=topic, due_ms=now + 2500, written_ms=now)
    injected = inject_failing_sends(monkeypatch, lambda call, record: call == 1)
    group = group_name()
    with running(Worker.connect(bootstrap, topic, group, client=client)):
        wait_until(lambda: starts(ledger)["A"] and starts(ledger)["B"], "A and B to run")
        wait_until(lambda: settled(bootstrap, topic, [group]), "everything committed")
    assert sum(p.failed for p in injected) >= 1
    assert (starts(ledger)["A"], starts(ledger)["B"]) == (1, 1)


# -- 14.2: per-record outcomes, oversized records, enqueue checked --------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_delayed_enqueue_is_checked_against_the_home_topics_limit(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str
) -> None:
    topic = make_topic(config={"max.message.bytes": "20000"})
    big = "x" * 50_000
    with pytest.raises(EnqueueError):  # the broker refuses it
        Queue.connect(bootstrap, topic, client=client).enqueue(stamp, str(tmp_path / "l"), big)
    queue = Queue.connect(bootstrap, topic, client=client)
    with pytest.raises(EnqueueError, match=r"max\.message\.bytes"):
        queue.using(delay=1).enqueue(stamp, str(tmp_path / "ledger"), big)
    queue.using(delay=1).enqueue(stamp, str(tmp_path / "ledger"), "small")  # still fine


@pytest.mark.parametrize("client", CLIENTS)
def test_a_record_too_large_for_home_is_dead_lettered_and_the_rest_runs_once(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str
) -> None:
    """A 50 kB job in a tier whose home takes 20 kB (parked there before the limit was
    lowered): it goes to the dead-letter topic with the reason; the small jobs around it
    run exactly once (they ran 13 times each, and the ones behind it never)."""
    topic = make_topic(config={"max.message.bytes": "20000"})
    ledger = str(tmp_path / "ledger")
    _tiers(bootstrap, topic)
    tier, now = delay_topic(topic, "1s"), now_ms()
    for name, padding in (("s1", 0), ("big", 50_000), ("s2", 0), ("s3", 0)):
        park(bootstrap, tier, _job(ledger, name, padding), home=topic, due_ms=now, written_ms=now)
    group = group_name()
    dead = DeadLetters(bootstrap, topic)
    with running(Worker.connect(bootstrap, topic, group, client=client)):
        wait_until(lambda: all(starts(ledger)[n] for n in ("s1", "s2", "s3")), "the small jobs")
        wait_until(lambda: dead.list(), "the dead letter")
        wait_until(lambda: settled(bootstrap, topic, [group]), "everything committed")
    assert [starts(ledger)[n] for n in ("s1", "big", "s2", "s3")] == [1, 0, 1, 1]
    [letter] = dead.list()
    assert letter.job().id == "big"
    assert letter.status == "undeliverable"
    assert "max.message.bytes" in letter.error and topic in letter.error
    assert letter.source_topic == topic  # where a requeue sends it
    assert f"{tier}/0/1" in letter.error  # where it waited


@pytest.mark.parametrize("client", CLIENTS)
def test_records_already_forwarded_are_not_sent_again_when_one_fails(
    bootstrap: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """The send of one record fails twice; the records around it in its batch were
    delivered and must not be delivered again."""
    ledger = str(tmp_path / "ledger")
    _tiers(bootstrap, topic)
    tier, now = delay_topic(topic, "1s"), now_ms()
    for name in ("s1", "victim", "s2", "s3"):
        park(bootstrap, tier, _job(ledger, name), home=topic, due_ms=now, written_ms=now)
    failures = {"left": 2}

    def fail(call: int, record: Any) -> bool:
        if b"victim" in record[1] and record[0] == topic and failures["left"]:
            failures["left"] -= 1
            return True
        return False

    injected = inject_failing_sends(monkeypatch, fail)
    group = group_name()
    with running(Worker.connect(bootstrap, topic, group, client=client)):
        wait_until(lambda: all(starts(ledger)[n] for n in ("s1", "victim", "s2", "s3")), "the jobs")
        wait_until(lambda: settled(bootstrap, topic, [group]), "everything committed")
    assert sum(p.failed for p in injected) == 2
    assert [starts(ledger)[n] for n in ("s1", "victim", "s2", "s3")] == [1, 1, 1, 1]


# -- 14.4: clocks -------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_producer_clock_ahead_does_not_hold_back_other_jobs(
    bootstrap: str, make_topic: Any, tmp_path: Path, client: str
) -> None:
    """X comes from a producer 20 s ahead, at the head of the 10 s tier's partition 0; A
    (delay 11 s) is behind it; S (delay 15 s) is in partition 1. A must run before S: it
    ran 19 s late, after S, while X held the partition until X's timestamp + 10 s."""
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    _tiers(bootstrap, topic)
    tier, now = delay_topic(topic, "10s"), now_ms()
    ahead = now + 20_000
    park(bootstrap, tier, _job(ledger, "X"), home=topic, due_ms=ahead + 10_000, written_ms=ahead)
    park(bootstrap, tier, _job(ledger, "A"), home=topic, due_ms=now + 11_000, written_ms=now)
    park(
        bootstrap, tier, _job(ledger, "S"), home=topic, due_ms=now + 15_000, written_ms=now,
        partition=1,
    )  # fmt: skip
    with running(Worker.connect(bootstrap, topic, group_name(), client=client)):
        wait_until(lambda: all(starts(ledger)[n] for n in "XAS"), "X, A and S", timeout=90)
    a, s = run_times(ledger, "A")[0], run_times(ledger, "S")[0]
    assert a < s, f"A ran {a - now / 1000:.1f} s after enqueue, S {s - now / 1000:.1f} s"
    assert a >= (now + 11_000) / 1000  # never early
    assert [starts(ledger)[n] for n in "XAS"] == [1, 1, 1]


class _ClockAhead:
    """kq.schedule's ``time`` module, with a wall clock ``seconds`` ahead."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def time(self) -> float:
        return time.time() + self._seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.parametrize("client", CLIENTS)
def test_no_hopping_with_log_append_time_tiers_and_a_worker_clock_ahead(
    bootstrap: str, kafka: Any, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:  # fmt: skip
    """Tiers stamped by the broker (LogAppendTime); the worker's clock is 30 s ahead of
    it. A job due in 12 s is written to the tiers 3 times (10 s tier, then twice the 1 s
    tier), not hopped within a tier at every poll; and it does not run early."""
    ledger = str(tmp_path / "ledger")
    for name in delay_topics(topic):
        kafka.create_topic(name, 1, None, {"message.timestamp.type": "LogAppendTime"})
    monkeypatch.setattr(kq.schedule, "time", _ClockAhead(30))
    parked_at = time.time()
    skewed_now = now_ms() + 30_000
    park(
        bootstrap, delay_topic(topic, "10s"), _job(ledger, "J"), home=topic,
        due_ms=skewed_now + 12_000, written_ms=skewed_now,
    )  # fmt: skip
    with running(Worker.connect(bootstrap, topic, group_name(), client=client)):
        wait_until(lambda: starts(ledger)["J"], "the job", timeout=60)
    written = tier_records(bootstrap, topic)
    assert written <= 4, f"{written} records written to the tiers for one job"
    assert run_times(ledger, "J")[0] >= parked_at + 12


# -- 14.7: the forwarder survives consumer settings and crashes -----------------------


class _CrashOnce(confluent_kafka.Consumer):  # type: ignore[misc]
    """A confluent consumer whose first ``consume`` raises, for forwarder groups."""

    crashes = 0

    def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._crash = str(config.get("group.id", "")).endswith(".kq-delay")

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        if self._crash and _CrashOnce.crashes == 0:
            _CrashOnce.crashes += 1
            raise RuntimeError("injected forwarder crash")
        return super().consume(*args, **kwargs)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_forwarder_that_stops_is_restarted_and_says_so(
    bootstrap: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, client: str,
) -> None:  # fmt: skip
    from prometheus_client import CollectorRegistry

    from kq.metrics import PrometheusObserver

    ledger = str(tmp_path / "ledger")
    monkeypatch.setattr(_CrashOnce, "crashes", 0)
    monkeypatch.setattr(confluent_kafka, "Consumer", _CrashOnce)
    Queue.connect(bootstrap, topic, client=client).using(delay=0.5).enqueue(stamp, ledger, "d")
    registry = CollectorRegistry()
    group = group_name()
    observer = PrometheusObserver(topic, group, registry=registry)
    worker = Worker.connect(bootstrap, topic, group, client=client, observer=observer)
    observer.watch(worker)
    with caplog.at_level(logging.INFO, logger="kq.delay"), running(worker):
        wait_until(lambda: starts(ledger)["d"], "the delayed job after the restart")
        up = registry.get_sample_value("kq_delay_forwarder_up", {"topic": topic, "group": group})
        restarts = registry.get_sample_value(
            "kq_delay_forwarder_restarts", {"topic": topic, "group": group}
        )
    assert _CrashOnce.crashes == 1
    assert (up, restarts) == (1.0, 1.0)
    stopped = [r for r in caplog.records if r.name == "kq.delay" and "restarting" in r.message]
    assert stopped and "injected forwarder crash" in stopped[0].message
