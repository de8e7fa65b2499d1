"""Pure logic: committable offsets when jobs finish out of order (no broker)."""

from __future__ import annotations

import random

from kq._offsets import OffsetTracker

TP = ("t", 0)


def test_commits_only_below_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.started(TP, offset)
    tracker.finished(TP, 12)
    tracker.finished(TP, 13)
    assert tracker.committable() == {}  # 10 and 11 still running
    tracker.finished(TP, 10)
    assert tracker.committable() == {TP: 11}
    tracker.finished(TP, 11)
    assert tracker.committable() == {TP: 14}
    assert tracker.in_flight() == 0


def test_mark_committed_suppresses_repeats_and_drop_forgets() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 0)
    tracker.finished(TP, 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    tracker.started(TP, 1)
    tracker.drop([TP])
    tracker.finished(TP, 1)  # finished after the partition was revoked
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_partition_filter() -> None:
    tracker = OffsetTracker()
    other = ("t", 1)
    for tp in (TP, other):
        tracker.started(tp, 5)
        tracker.finished(tp, 5)
    assert tracker.committable({other}) == {other: 6}


def test_random_completion_order_never_passes_an_unfinished_offset() -> None:
    rng = random.Random(7)
    for _ in range(200):
        tracker = OffsetTracker()
        offsets = list(range(rng.randint(1, 40)))
        for offset in offsets:
            tracker.started(TP, offset)
        order = offsets[:]
        rng.shuffle(order)
        done: set[int] = set()
        for offset in order:
            tracker.finished(TP, offset)
            done.add(offset)
            safe = tracker.committable().get(TP)
            if safe is not None:
                assert all(o in done for o in range(safe))
            lowest_unfinished = min((o for o in offsets if o not in done), default=None)
            if lowest_unfinished is not None:
                assert safe is None or safe <= lowest_unfinished
        assert tracker.committable() == {TP: len(offsets)}
