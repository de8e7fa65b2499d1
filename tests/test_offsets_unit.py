"""Pure logic: committable offsets when jobs finish out of order (no broker)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kq._offsets import OffsetTracker

TP = ("t", 0)


def test_commits_only_below_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        part = tracker.started(TP, offset)
    tracker.finished(part, 12)
    tracker.finished(part, 13)
    # 10 and 11 still running: the position it started from, with 12 and 13 above it
    assert tracker.committable() == {TP: 10}
    assert sorted(tracker.finished_above(TP)) == [12, 13]
    tracker.finished(part, 10)
    assert tracker.committable() == {TP: 11}
    tracker.finished(part, 11)
    assert tracker.committable() == {TP: 14}
    assert tracker.in_flight() == 0


def test_mark_committed_suppresses_repeats_and_drop_forgets() -> None:
    tracker = OffsetTracker()
    tracker.finished(tracker.started(TP, 0), 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    part = tracker.started(TP, 1)
    tracker.drop([TP])
    assert tracker.in_flight() == 1  # still running, though no longer committed for
    tracker.finished(part, 1)  # finished after the partition was revoked
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_a_failed_asynchronous_commit_is_offered_again() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1):
        tracker.finished(tracker.started(TP, offset), offset)
    tracker.mark_committed({TP: 2})
    assert tracker.committable() == {}
    tracker.commit_failed({TP: 2})
    assert tracker.committable() == {TP: 2}
    # a failure report of an older commit does not undo a newer one
    tracker.mark_committed({TP: 2})
    tracker.commit_failed({TP: 1})
    assert tracker.committable() == {}


def test_partition_filter() -> None:
    tracker = OffsetTracker()
    other = ("t", 1)
    for tp in (TP, other):
        tracker.finished(tracker.started(tp, 5), 5)
    assert tracker.committable({other}) == {other: 6}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=40).flatmap(
        lambda gaps: st.tuples(st.just(gaps), st.permutations(range(len(gaps))))
    )
)
def test_any_completion_order_never_passes_an_unfinished_offset(
    case: tuple[list[int], list[int]],
) -> None:
    gaps, order = case
    # Offsets with gaps, as after compaction or transaction markers.
    offsets = [sum(gaps[: i + 1]) + i for i in range(len(gaps))]
    tracker = OffsetTracker()
    parts = [tracker.started(TP, offset) for offset in offsets]
    done: set[int] = set()
    for index in order:
        tracker.finished(parts[index], offsets[index])
        done.add(offsets[index])
        safe = tracker.committable().get(TP)
        unfinished = [o for o in offsets if o not in done]
        if safe is not None:
            assert all(o in done for o in offsets if o < safe)
            assert not unfinished or safe <= min(unfinished)
        elif unfinished:
            assert min(unfinished) == offsets[0]  # nothing safe only while the first runs
        above = set(tracker.finished_above(TP))
        assert above <= done and (safe is None or all(o >= safe for o in above))
    assert tracker.committable() == {TP: offsets[-1] + 1}
    assert tracker.in_flight() == 0
