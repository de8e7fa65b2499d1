"""The forwarder's per-record decisions, in memory (a fake consumer and producer).

Fast checks in addition to the real-broker tests of tests/test_delay_tiers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import kq._forwarder_state
import kq.schedule
from kq._forwarder import Forwarder
from kq._forwarder_state import Partitions
from kq._resume import decode

TIER = "t.kq-delay-1s"
MINUTE = "t.kq-delay-1m"


class _Message:
    def __init__(
        self, offset: int, name: str, due: int, written: int, partition: int = 0, tier: str = TIER
    ) -> None:
        self._tier = tier
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
        return self._tier

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
        self.commits: list[tuple[int, int]] = []
        self.metadata: list[str | None] = []

    def seek(self, tp: Any) -> None:
        self.sought.append((tp.partition, tp.offset))

    def pause(self, tps: list[Any]) -> None:
        self.paused += [tp.partition for tp in tps]

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits += [(tp.partition, tp.offset) for tp in offsets]
        self.metadata += [tp.metadata for tp in offsets]


class _Producer:
    """Records what was sent; ``refuse(record)`` returns an error or None."""

    client = None
    hosts = "fake"

    def __init__(self, refuse: Callable[[Any], BaseException | None]) -> None:
        self.refuse = refuse
        self.sent: list[str] = []
        self.records: list[Any] = []

    def send_all(self, records: Sequence[Any], timeout: float) -> list[BaseException | None]:
        errors = [self.refuse(r) for r in records]
        self.sent += [r[1].decode() for r, e in zip(records, errors, strict=True) if e is None]
        self.records += [r for r, e in zip(records, errors, strict=True) if e is None]
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


class _Committed(_Consumer):
    """A consumer whose group committed ``last`` before (with its metadata)."""

    def __init__(self, last: Any) -> None:
        super().__init__()
        self._last = last

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [self._last for tp in partitions if tp.topic == self._last.topic]


def _forwarder(producer: _Producer) -> Forwarder:
    forwarder = Forwarder("fake:9092", "t", producer)  # type: ignore[arg-type]
    forwarder._dead_ready = True  # no topic to create
    return forwarder


def _transient(record: Any) -> BaseException:
    return KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))


def test_a_failed_send_ahead_of_a_waiting_record_is_tried_again(clock: _Clock) -> None:
    fail = {"A"}
    producer = _Producer(lambda r: _transient(r) if r[1].decode() in fail else None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = [_Message(0, "A", now - 1, now), _Message(1, "B", now + 800, now)]
    forwarder._handle(consumer, batch, parts)
    # B waits in memory; A failed: the partition goes back to A, nothing committed
    assert consumer.sought == [(0, 0)] and consumer.commits == []
    assert parts.is_waiting((TIER, 0), 1) and parts.held[(TIER, 0)] > now
    fail.clear()
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, batch, parts)  # read again from A; B still waits
    assert producer.sent == ["A"] and consumer.commits == [(0, 1)]
    clock.ms = now + 800
    forwarder._handle(consumer, [], parts)
    assert producer.sent == ["A", "B"] and consumer.commits == [(0, 1), (0, 2)]


def test_a_second_failure_above_a_first_one_does_not_skip_the_first(clock: _Clock) -> None:
    """A fails; B, waiting in memory above it, fails when it is ready, before A's retry:
    the partition must still be read again from A (seeking to B lost A)."""
    fail = {"A", "B"}
    producer = _Producer(lambda r: _transient(r) if r[1].decode() in fail else None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = [_Message(0, "A", now - 1, now), _Message(1, "B", now + 300, now)]
    forwarder._handle(consumer, batch, parts)
    assert consumer.sought == [(0, 0)]
    clock.ms = now + 300  # B is ready; A's retry is due at now + 500
    forwarder._handle(consumer, [], parts)
    assert consumer.sought == [(0, 0), (0, 0)] and consumer.commits == []
    fail.clear()
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, batch, parts)
    assert sorted(producer.sent) == ["A", "B"] and consumer.commits == [(0, 2)]


def test_delivered_records_are_not_sent_again_after_a_failure(clock: _Clock) -> None:
    fail = {"victim"}
    producer = _Producer(lambda r: _transient(r) if r[1].decode() in fail else None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = [_Message(o, n, now, now) for o, n in enumerate(["s1", "victim", "s2", "s3"])]
    forwarder._handle(consumer, batch, parts)
    assert consumer.commits == [(0, 1)] and consumer.sought[-1] == (0, 1)
    fail.clear()
    clock.ms = parts.held.pop((TIER, 0))
    forwarder._handle(consumer, batch[1:], parts)
    assert producer.sent == ["s1", "s2", "s3", "victim"]
    assert consumer.commits == [(0, 1), (0, 4)] and parts.delivered[(TIER, 0)] == set()


def test_a_record_too_large_is_dead_lettered_and_the_rest_goes_on(clock: _Clock) -> None:
    too_large = KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
    producer = _Producer(lambda r: too_large if r[1] == b"big" and r[0] == "t" else None)
    forwarder, consumer = _forwarder(producer), _Consumer()
    now = clock.ms
    batch = [_Message(o, n, now, now) for o, n in enumerate(["s1", "big", "s2"])]
    forwarder._handle(consumer, batch, Partitions())
    assert producer.sent == ["s1", "s2", "big"]  # big went to the dead-letter topic
    assert consumer.commits == [(0, 3)] and forwarder.dead_lettered == 1


def test_a_record_from_a_clock_ahead_counts_from_when_it_was_first_read(clock: _Clock) -> None:
    producer = _Producer(lambda r: None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    ahead = _Message(0, "X", now + 20_000 + 5_000, now + 20_000)  # 5 s wait, 20 s ahead
    forwarder._handle(consumer, [ahead], parts)
    assert parts.next_ready() == now + 1000  # the 1 s tier's wait, from now
    clock.ms = now + 999
    forwarder._handle(consumer, [], parts)
    assert producer.sent == []
    clock.ms = now + 1000
    forwarder._handle(consumer, [], parts)
    # 4 s left, on this clock: to the tier that covers them
    [record] = producer.records
    assert record.topic == "t.kq-delay-10s" and dict(record.headers)["kq-due"] == b"%d" % (
        now + 5000
    )
    assert consumer.commits == [(0, 1)]


def _later_then_sooner(now: int) -> list[_Message]:
    """In the 1 m tier: A due in 50 s, then B due in 5 s."""
    return [
        _Message(0, "A", now + 50_000, now, tier=MINUTE),
        _Message(1, "B", now + 5_000, now, tier=MINUTE),
    ]


def test_a_record_due_sooner_is_not_held_behind_one_due_later(clock: _Clock) -> None:
    """Both wait in the 1 m tier; B, behind A, is due 45 s before it and goes on time."""
    producer = _Producer(lambda r: None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = _later_then_sooner(now)
    forwarder._handle(consumer, batch, parts)
    clock.ms = now + 5_000
    forwarder._handle(consumer, [], parts)
    assert producer.sent == ["B"] and producer.records[0].topic == "t"
    # A still waits: the commit stays at it, and names B as delivered
    assert consumer.commits == [(0, 0)]
    known = decode(consumer.metadata[-1], 0)
    assert known is not None and 1 in known and 0 not in known
    clock.ms = now + 50_000
    forwarder._handle(consumer, [], parts)
    assert producer.sent == ["B", "A"] and consumer.commits[-1] == (0, 2)


def test_what_was_delivered_behind_a_waiting_record_is_not_delivered_again_after_a_takeover(
    clock: _Clock,
) -> None:
    from confluent_kafka import TopicPartition

    producer = _Producer(lambda r: None)
    first, consumer, first_parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = _later_then_sooner(now)
    first._handle(consumer, batch, first_parts)
    clock.ms = now + 5_000
    first._handle(consumer, [], first_parts)
    assert producer.sent == ["B"]
    # the first forwarder is gone; another one is assigned the partition
    last = TopicPartition(MINUTE, 0, consumer.commits[-1][1], metadata=consumer.metadata[-1])
    successor, parts = _forwarder(producer), Partitions()
    parts.unread.add((MINUTE, 0))
    taking_over = _Committed(last)
    clock.ms = now + 50_000
    successor._handle(taking_over, batch, parts)
    assert producer.sent == ["B", "A"]  # B not again
    assert taking_over.commits == [(0, 2)]


def test_waiting_records_over_the_window_are_written_again_and_the_commit_moves_on(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kq._forwarder_state, "WINDOW", 2)
    producer = _Producer(lambda r: None)
    forwarder, consumer, parts = _forwarder(producer), _Consumer(), Partitions()
    now = clock.ms
    batch = [_Message(o, f"J{o}", now + 50_000, now, tier=MINUTE) for o in range(5)]
    forwarder._handle(consumer, batch, parts)
    # at most 2 offsets between the commit point and the read position (5)
    assert producer.sent == ["J0", "J1", "J2"]
    assert {r.topic for r in producer.records} == {MINUTE}  # to the tier again, not home
    assert consumer.commits == [(0, 3)]
    assert all(dict(r.headers)["kq-due"] == b"%d" % (now + 50_000) for r in producer.records)
