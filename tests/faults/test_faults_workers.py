"""Fault scenarios on the worker side, against the session's broker.

1. a worker SIGKILLed mid-run, then a replacement;
5. group churn: workers joining and leaving every few seconds;
6. a worker frozen (SIGSTOP) past its session timeout, then resumed;
7. poison input between good jobs (hypothesis);
9. a worker SIGKILLed while retries and delayed jobs wait in the delay tiers.

Each runs a bounded workload and checks the jobs' own ledger: every
acknowledged job ran (lost = 0); duplicates are reported, and allowed only
where a fault explains them (see ``fault_harness.silent_duplicates``).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dill
import pytest
from confluent_kafka import Producer
from fault_harness import (
    CLIENTS,
    CommitMonitor,
    Feeder,
    OffsetReader,
    WorkerPool,
    duplicated_below,
    final_offsets,
    ledger_counts,
    outcome,
    owned_partitions,
    problems,
    read_ledger,
    topic_index,
    unexecuted_below_committed,
    wait_executed,
    wait_for,
)
from fault_jobs import fail_first, mark
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka_checks import group_name

from kq import Job, Queue, RetryPolicy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MakeTopic = Callable[..., str]


@pytest.mark.parametrize("client", CLIENTS)
def test_1_worker_sigkilled_mid_run_replacement_loses_nothing(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    fault_report: Any,
    client: str,
) -> None:
    topic = make_topic(partitions=6)
    group = group_name()
    queue = Queue.connect(bootstrap, topic, client=client)
    first = pool.spawn(bootstrap, topic, group, client, concurrency=4)
    # 3,000 jobs over ~6 s; every 25th has a timeout, so it runs in a forked child.
    feeder = Feeder(queue, ledger, 3000, batch=100, pause=0.2, sleep=0.002, timed_every=25)
    feeder.start()
    assert wait_for(lambda: len(ledger_counts(ledger)) >= 800, 60), pool.evidence()
    reader = OffsetReader(bootstrap, group, topic)
    try:
        first.kill()  # SIGKILL in the middle of the run
        at_kill = reader.committed()
        ran_at_kill = ledger_counts(ledger)
    finally:
        reader.close()
    replacement = pool.spawn(bootstrap, topic, group, client, concurrency=4)
    feeder.join(120)
    complete = wait_executed(ledger, feeder.acked, 120, pool)
    pool.stop(replacement)
    committed, ends = final_offsets(bootstrap, group, topic)
    result = outcome(f"1-worker-sigkill-{client}", feeder.acked, ledger)
    fault_report.add(result)
    found = problems(
        result, ledger, pool, complete=complete, feeder=feeder, committed=committed, ends=ends
    )
    index = topic_index(bootstrap, topic)
    # At least once: what was committed when the worker died had run by then, and
    # duplicates are jobs past that commit (the at-least-once window) only.
    unexecuted = unexecuted_below_committed(at_kill, index, ran_at_kill)
    if unexecuted:
        found.append(f"committed before they ran: {unexecuted[:5]}")
    # (Unless a starved worker lost its partitions before the kill: then they
    # were re-run from an earlier commit, which is no fault of the kill.)
    outside = duplicated_below(at_kill, index, result.counts)
    if outside and not any("Partitions lost" in proc.log() for proc in pool.procs):
        found.append(f"ran again although committed before the kill: {outside[:5]}")
    assert not found, "\n".join(found)


def test_5_group_churn_workers_join_and_leave_loses_nothing(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    fault_report: Any,
) -> None:
    topic = make_topic(partitions=6)
    group = group_name()
    queue = Queue.connect(bootstrap, topic)
    members = [pool.spawn(bootstrap, topic, group, concurrency=2) for _ in range(3)]
    feeder = Feeder(queue, ledger, 4000, batch=100, pause=0.3, sleep=0.002, timed_every=40)
    events: list[str] = []
    with CommitMonitor(bootstrap, group, topic) as monitor:
        feeder.start()
        # Every ~2.5 s the oldest member leaves (SIGTERM, or SIGKILL every third
        # time) and a new one joins: 5 leaves, 5 joins, 3 members most of the time.
        for round_ in range(5):
            time.sleep(2.5)
            leaving = members.pop(0)
            if round_ % 3 == 2:
                leaving.kill()
                events.append(f"kill {leaving.pid}")
            else:
                events.append(f"leave {leaving.pid} after {pool.stop(leaving)} jobs")
            members.append(pool.spawn(bootstrap, topic, group, concurrency=2))
            events.append(f"join {members[-1].pid}")
        feeder.join(120)
        complete = wait_executed(ledger, feeder.acked, 120, pool)
        for member in members:
            pool.stop(member)
        time.sleep(1.0)  # one more sample after the last commits
    committed, ends = final_offsets(bootstrap, group, topic)
    result = outcome("5-group-churn", feeder.acked, ledger)
    fault_report.add(result)
    print("churn:", ", ".join(events))
    found = problems(
        result,
        ledger,
        pool,
        complete=complete,
        feeder=feeder,
        committed=committed,
        ends=ends,
        monitor=monitor,
    )
    assert not found, "\n".join(found)


@pytest.mark.parametrize("client", CLIENTS)
def test_6_worker_frozen_past_session_timeout_partitions_move_nothing_lost(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    fault_report: Any,
    client: str,
) -> None:
    topic = make_topic(partitions=6)
    group = group_name()
    queue = Queue.connect(bootstrap, topic, client=client)
    frozen = pool.spawn(bootstrap, topic, group, client, concurrency=2)
    others = [pool.spawn(bootstrap, topic, group, client, concurrency=2) for _ in range(2)]
    feeder = Feeder(queue, ledger, 3000, batch=100, pause=0.4, sleep=0.004)
    with CommitMonitor(bootstrap, group, topic) as monitor:
        feeder.start()
        # Wait for a settled group in which the first worker owns partitions and runs jobs.
        assert wait_for(
            lambda: (
                len(ledger_counts(ledger)) >= 600
                and bool(owned_partitions(frozen.log()))
                and all(owned_partitions(o.log()) for o in others)
            ),
            60,
        ), pool.evidence()
        mine = owned_partitions(frozen.log())
        frozen.signal(signal.SIGSTOP)
        frozen_at = time.time()
        others_pids = {o.pid for o in others}

        def moved() -> bool:
            # Jobs of the frozen worker's partitions now run in the other workers.
            index = topic_index(bootstrap, topic)
            taken = {
                index[run.name][0][0]
                for run in read_ledger(ledger)
                if run.at > frozen_at and run.pid in others_pids and run.name in index
            }
            return mine <= taken

        try:
            assert wait_for(moved, 90, interval=1.0), f"partitions {mine} never moved"
        finally:
            frozen.signal(signal.SIGCONT)
        feeder.join(120)
        complete = wait_executed(ledger, feeder.acked, 120, pool)
        # The resumed worker learns that it lost its partitions, and rejoins.
        told = wait_for(lambda: "Partitions lost" in frozen.log(), 60)
        stopped = [pool.stop(member) for member in [frozen, *others]]
        time.sleep(1.0)
    committed, ends = final_offsets(bootstrap, group, topic)
    result = outcome(f"6-worker-sigstop-{client}", feeder.acked, ledger)
    fault_report.add(result)
    print(f"frozen worker owned {sorted(mine)}; processed per worker {stopped}")
    # A commit for a lost partition would move its offset back to the frozen
    # worker's older position: the monitor sees committed offsets go back.
    found = problems(
        result,
        ledger,
        pool,
        complete=complete,
        feeder=feeder,
        committed=committed,
        ends=ends,
        excused={frozen.pid},
        monitor=monitor,
    )
    if not told:
        found.append(f"the resumed worker never logged its lost partitions:\n{frozen.log_tail()}")
    assert not found, "\n".join(found)


# -- 7. poison input -------------------------------------------------------------


def _job_bytes(**fields: Any) -> bytes:
    return bytes(dill.dumps(Job(id="bad", **fields)))


class _ExitOnLoad:
    """Unpickling this calls sys.exit: a deserializer that raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, (3,))


_GOOD = _job_bytes(func=mark, args=("/dev/null", "x"))
# The same job, naming a module that does not exist (same length: the pickle stays valid).
_MISSING_MODULE = _GOOD.replace(b"fault_jobs", b"fault_jobz")
assert _MISSING_MODULE != _GOOD

_not_callable = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5))
_not_sequence = st.one_of(
    st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers())
)
_not_dict = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
_bad_timeout = st.one_of(
    st.text(max_size=3),
    st.booleans(),
    st.integers(max_value=-1),
    st.floats(max_value=-0.001),
)
# Not "0 or greater" either (every comparison with NaN is false); checked on its own
# after the generated examples, see the test.
NAN_TIMEOUT = _job_bytes(func=mark, args=(), timeout=float("nan"))
BAD_PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(_GOOD) - 1).map(lambda n: _GOOD[:n]),  # truncated
    st.just(_MISSING_MODULE),
    st.just(bytes(dill.dumps(_ExitOnLoad()))),
    st.builds(
        lambda obj: bytes(dill.dumps(obj)),
        st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers(), max_size=3)),
    ),  # not a Job
    _not_callable.map(lambda f: _job_bytes(func=f)),
    _not_sequence.map(lambda a: _job_bytes(func=mark, args=a)),
    _not_dict.map(lambda k: _job_bytes(func=mark, args=(), kwargs=k)),
    _bad_timeout.map(lambda t: _job_bytes(func=mark, args=(), timeout=t)),
    st.integers().map(lambda i: bytes(dill.dumps(Job(id=i, func=mark)))),  # type: ignore[arg-type]
)
# An example: runs of good jobs (how many) and bad payloads, interleaved.
ITEMS = st.lists(
    st.one_of(st.integers(1, 8).map(lambda n: n * 50), BAD_PAYLOADS), min_size=1, max_size=12
)


@pytest.mark.parametrize("client", CLIENTS)
def test_7_poison_input_every_bad_message_invalid_every_good_job_runs(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    tmp_path: Path,
    fault_report: Any,
    client: str,
) -> None:
    topic = make_topic(partitions=1)
    outcomes = tmp_path / "outcomes"
    # One worker for every example: it must survive all of them.
    worker = pool.spawn(bootstrap, topic, group_name(), client, concurrency=1, outcomes=outcomes)
    queue = Queue.connect(bootstrap, topic, client=client)
    raw = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    good: list[str] = []
    expected: list[str] = []
    bad_count = 0

    def outcome_lines() -> list[list[str]]:
        if not outcomes.exists():
            return []
        return [line.split() for line in outcomes.read_text().splitlines()]

    # No shrinking: the worker and the topic carry over from one example to the
    # next, so a failed example ends the test (hypothesis prints it).
    @settings(
        max_examples=10,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(items=ITEMS)
    def feed(items: list[int | bytes]) -> None:
        check(items)

    def check(items: list[int | bytes]) -> None:
        nonlocal bad_count
        wanted: list[str] = []
        for item in items:  # in this order, into the topic's one partition
            if isinstance(item, int):
                names = [f"g{len(good) + i:05d}" for i in range(item)]
                with queue.batch() as batch:
                    for name in names:
                        batch.enqueue(Job(id=name, func=mark, args=(ledger, name)))
                good.extend(names)
                wanted += [f"success {name}" for name in names]
            else:
                raw.produce(topic, value=item)
                assert raw.flush(30) == 0
                bad_count += 1
                wanted.append("invalid -")
        expected.extend(wanted)
        done = wait_for(lambda: len(outcome_lines()) >= len(expected), 12)
        got = [f"{line[0]} {line[3]}" for line in outcome_lines()[len(expected) - len(wanted) :]]
        assert done and got == wanted, (
            f"callbacks {got[:8]}... ({len(got)}), expected {wanted[:8]}... ({len(wanted)})\n"
            + worker.crash_report()
        )
        assert worker.alive(), worker.crash_report()

    try:
        feed()
        check([25, NAN_TIMEOUT, 25])
    finally:
        result = outcome(f"7-poison-input-{client}", good, ledger)
        fault_report.add(result)
        if len(outcome_lines()) != len(expected):
            worker.kill()  # stuck: a graceful stop would wait for its shutdown_timeout
    processed = pool.stop(worker)
    print(f"{bad_count} bad messages between {len(good)} good jobs; worker processed {processed}")
    assert processed == len(expected)
    assert not result.lost and result.duplicated == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_9_worker_sigkilled_while_retries_and_delays_wait_loses_nothing(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    tmp_path: Path,
    fault_report: Any,
    client: str,
) -> None:
    """200 jobs whose first attempt fails (retry after 3 s) and 100 jobs delayed by 5 s;
    the worker is SIGKILLed 1.5 s after every first attempt failed (past its 1 s commit
    interval, before any retry is due), while all 300 wait in the delay tiers; a
    replacement started a second later runs each of them, none early.

    Duplicates allowed: a retried job whose first attempt ran in the killed worker
    after its last commit runs that attempt again (now succeeding) besides its retry,
    so it may succeed twice; nothing may run more often, and delayed jobs (due only
    after the kill) exactly once."""
    topic = make_topic(partitions=3)
    group = group_name()
    attempts = tmp_path / "attempts"
    queue = Queue.connect(bootstrap, topic, client=client)
    first = pool.spawn(bootstrap, topic, group, client, concurrency=4)
    retried = [f"retry-{n:03d}" for n in range(200)]
    delayed = [f"delay-{n:03d}" for n in range(100)]
    policy = RetryPolicy(max_attempts=3, backoff=3, jitter=0)
    enqueued_at = time.time()
    with queue.using(retry=policy).batch() as batch:
        for name in retried:
            batch.enqueue(Job(id=name, func=fail_first, args=(ledger, str(attempts), name)))
    with queue.using(delay=5).batch() as batch:
        for name in delayed:
            batch.enqueue(Job(id=name, func=mark, args=(ledger, name)))

    def tried() -> list[tuple[str, int]]:
        lines = attempts.read_text().splitlines() if attempts.exists() else []
        return [(name, int(pid)) for name, pid in (line.split() for line in lines)]

    assert wait_for(lambda: len(tried()) >= len(retried), 60), pool.evidence()
    time.sleep(1.5)  # the worker commits what it finished every second
    ran_before_kill = ledger_counts(ledger)
    first.kill()
    time.sleep(1.0)
    replacement = pool.spawn(bootstrap, topic, group, client, concurrency=4)
    complete = wait_executed(ledger, [*retried, *delayed], 120, pool)
    pool.stop(replacement)
    result = outcome(f"9-retries-delays-sigkill-{client}", [*retried, *delayed], ledger)
    fault_report.add(result)
    # Duplicates are judged below, by this scenario's own rule.
    found = [
        line
        for line in problems(result, ledger, pool, complete=complete)
        if "with no fault to explain it" not in line
    ]
    in_killed = {name for name, pid in tried() if pid == first.pid}
    for name, count in result.counts.items():
        limit = 2 if name in in_killed else 1
        if count > limit:
            found.append(f"{name} ran {count} times (allowed {limit})")
    due = enqueued_at + 5
    early = [run.name for run in read_ledger(ledger) if run.name in delayed and run.at < due]
    if early:
        found.append(f"delayed jobs ran before they were due: {early[:5]}")
    if sum(ran_before_kill.values()) >= len(retried) + len(delayed):
        found.append("everything had run before the kill: the scenario tested nothing")
    assert not found, "\n".join(found)
