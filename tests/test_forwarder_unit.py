"""The forwarder's per-record decisions, in memory (a fake consumer and producer).

Fast checks in addition to the real-broker tests of tests/test_delay_tiers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import kq.schedule
from kq._forwarder import Forwarder, _Partitions

TIER = "t.kq-delay-1s"


class _Message:
    def __init__(self, offset: int, name: str, due: int, written: int, partition: int = 0) -> None:
        self._offset = offset
        self._partition = partition
        self._value = name.encode()
        self._headers = [
            ("kq-due", str(due).encode()),
            ("kq-written", str(written).encode()),
            ("kq-topic", b"t"),
        ]

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TIER

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


class _Consumer:
    def __init__(self) -> None:
        self.sought: list[tuple[int, int]] = []
        self.paused: list[int] = []
        self.committed: list[tuple[int, int]] = []

    def seek(self, tp: Any) -> None:
        self.sought.append((tp.partition, tp.offset))

    def pause(self, tps: list[Any]) -> None:
        self.paused += [tp.partition for tp in tps]

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.committed += [(tp.partition, tp.offset) for tp in offsets]


class _Producer:
    """Records what was sent; ``refuse(record)`` returns an error or None."""

    client = None
    hosts = "fake"

    def __init__(self, refuse: Callable[[Any], BaseException | None]) -> None:
        self.refuse = refuse
        self.sent: list[str] = []

    def send_all(self, records: Sequence[Any], timeout: float) -> list[BaseException | None]:
        errors = [self.refuse(r) for r in records]
        self.sent += [r[1].decode() for r, e in zip(records, errors, strict=True) if e is None]
        return errors


class _Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time(self) -> float:
        return self.ms / 1000

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock(1_000_000)
    monkeypatch.setattr(kq.schedule, "time", clock)
    return clock


def _forwarder(producer: _Producer) -> Forwarder:
    forwarder = Forwarder("fake:9092", "t", producer)  # type: ignore[arg-type]
    forwarder._dead_ready = True  # no topic to create
    return forwarder


def _transient(record: Any) -> BaseException:
    return KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))


def test_a_failed_send_ahead_of_a_held_record_is_tried_again(clock: _Clock) -> None:
    fail = {"A"}
    producer = _Producer(lambda r: _transient(r) if r[1].decode() in fail else None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), _Partitions()
    now = clock.ms
    batch = [_Message(0, "A", now - 1, now), _Message(1, "B", now + 2500, now)]
    forwarder._handle(consumer, batch, parts)
    # B was held at 1, but A failed: the partition goes back to A, nothing committed
    assert consumer.sought == [(0, 1), (0, 0)] and consumer.committed == []
    assert parts.held[(TIER, 0)] > now
    fail.clear()
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, batch, parts)
    assert producer.sent == ["A"] and consumer.committed == [(0, 1)]


def test_delivered_records_are_not_sent_again_after_a_failure(clock: _Clock) -> None:
    fail = {"victim"}
    producer = _Producer(lambda r: _transient(r) if r[1].decode() in fail else None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), _Partitions()
    now = clock.ms
    batch = [_Message(o, n, now, now) for o, n in enumerate(["s1", "victim", "s2", "s3"])]
    forwarder._handle(consumer, batch, parts)
    assert consumer.committed == [(0, 1)] and consumer.sought[-1] == (0, 1)
    fail.clear()
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, batch[1:], parts)
    assert producer.sent == ["s1", "s2", "s3", "victim"]
    assert consumer.committed == [(0, 1), (0, 4)] and parts.delivered[(TIER, 0)] == set()


def test_a_record_too_large_is_dead_lettered_and_the_rest_goes_on(clock: _Clock) -> None:
    too_large = KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
    producer = _Producer(lambda r: too_large if r[1] == b"big" and r[0] == "t" else None)
    forwarder, consumer = _forwarder(producer), _Consumer()
    now = clock.ms
    batch = [_Message(o, n, now, now) for o, n in enumerate(["s1", "big", "s2"])]
    forwarder._handle(consumer, batch, _Partitions())
    assert producer.sent == ["s1", "s2", "big"]  # big went to the dead-letter topic
    assert consumer.committed == [(0, 3)] and forwarder.dead_lettered == 1


def test_a_record_from_a_clock_ahead_counts_from_when_it_was_first_read(clock: _Clock) -> None:
    producer = _Producer(lambda r: None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), _Partitions()
    now = clock.ms
    ahead = _Message(0, "X", now + 20_000 + 5_000, now + 20_000)  # 5 s wait, 20 s ahead
    forwarder._handle(consumer, [ahead], parts)
    assert parts.held[(TIER, 0)] == now + 1000  # the 1 s tier's wait, from now
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, [ahead], parts)  # read again: still counted from `now`
    assert producer.sent == ["X"] and consumer.committed == [(0, 1)]
