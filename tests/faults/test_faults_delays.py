"""Fault scenarios of the delay tiers, against the session's broker.

10. the forwarder's sends home fail for a while, mid-partition;
11. two consumer groups on one topic, with delayed jobs and retries.

Each runs a bounded workload and checks the jobs' own ledger: every
acknowledged job ran (lost = 0), none ran early, none ran twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_harness import (
    CLIENTS,
    Outcome,
    WorkerPool,
    outcome,
    problems,
    read_ledger,
    wait_executed,
    wait_for,
)
from fault_jobs import fail_first, fail_first_in_group, mark
from kafka_checks import group_name
from tier_checks import settled

from kq import DeadLetters, Job, Queue, RetryPolicy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MakeTopic = Callable[..., str]

# Lines a worker logs when something may make a record go home twice (a
# forwarder commit that failed, partitions it lost): the only excuses for a
# duplicate in these scenarios.
_EXCUSES = ("Committing forwarded delayed jobs failed", "Offset commit failed", "Partitions lost")


def _injected(stdout: str) -> int:
    found = re.search(r"^injected (\d+)$", stdout, re.MULTILINE)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize("client", CLIENTS)
def test_10_forward_failures_lose_nothing_and_deliver_nothing_twice(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    tmp_path: Path,
    fault_report: Any,
    client: str,
) -> None:
    """300 jobs delayed by 1 to 6 s and 100 whose first attempt fails (retry after 2 s);
    for the first 8 s the forwarder's sends home of every job keyed ``f-...`` (a third,
    spread over every tier partition, between jobs whose sends succeed) fail unsent.

    Every job runs exactly once and never before it is due: a failed send is retried
    from that record on, the records behind it that were delivered are not sent again,
    and a failed forward is never skipped (it was lost when the record behind it was
    held). After the graceful stop the forwarder group has committed every tier."""
    topic = make_topic(partitions=3)
    group = group_name()
    worker = pool.spawn(
        bootstrap, topic, group, client, concurrency=4, options=["--fail-forwards", "8"]
    )
    attempts = str(tmp_path / "attempts")
    queue = Queue.connect(bootstrap, topic, client=client)
    due: dict[str, float] = {}
    delayed = [f"{'f-' if n % 3 == 0 else ''}d{n:03d}" for n in range(300)]
    for index, seconds in enumerate((1, 2, 4, 6)):
        with queue.using(delay=seconds).batch() as batch:
            for name in delayed[index::4]:
                job = batch.enqueue(Job(id=name, func=mark, args=(ledger, name), key=name.encode()))
                due[name] = (job.timestamp or 0) / 1000 + seconds
    retried = [f"{'f-' if n % 3 == 0 else ''}r{n:03d}" for n in range(100)]
    with queue.using(retry=RetryPolicy(max_attempts=3, backoff=2, jitter=0)).batch() as batch:
        for name in retried:
            batch.enqueue(
                Job(id=name, func=fail_first, args=(ledger, attempts, name), key=name.encode())
            )
    complete = wait_executed(ledger, [*delayed, *retried], 120, pool)
    pool.stop(worker)
    result = outcome(f"10-forward-failures-{client}", [*delayed, *retried], ledger)
    fault_report.add(result)
    found = problems(result, ledger, pool, complete=complete)
    if result.duplicated:
        twice = [name for name, count in result.counts.items() if count > 1]
        found.append(f"{len(twice)} jobs ran more than once, e.g. {twice[:5]}")
    early = [run.name for run in read_ledger(ledger) if run.at < due.get(run.name, 0)]
    if early:
        found.append(f"delayed jobs ran before they were due: {early[:5]}")
    injected = _injected(worker.stdout())
    if injected == 0 or "Forwarding " not in worker.log():
        found.append(f"no send failed (injected {injected}): the scenario tested nothing")
    if not settled(bootstrap, topic, [group]):
        found.append("the tiers or the topic are not committed to their end after the stop")
    print(f"{injected} sends failed on purpose")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("client", CLIENTS)
def test_11_two_groups_on_one_topic_run_every_job_once_each(
    bootstrap: str,
    make_topic: MakeTopic,
    pool: WorkerPool,
    ledger: str,
    tmp_path: Path,
    fault_report: Any,
    client: str,
) -> None:
    """Two consumer groups of two workers each on one topic: 200 plain jobs, 100 jobs
    delayed by 1 to 4 s and 100 whose first attempt fails in each group (retry after
    1 s). Each group runs every job exactly once, like a fresh job: a delayed job is
    forwarded home once (by the topic's one forwarder group) and read by both groups;
    a retry runs only in the group whose attempt failed (the other commits it without
    running it). Nothing is dead-lettered."""
    topic = make_topic(partitions=3)
    groups = [group_name(), group_name()]
    procs = [pool.spawn(bootstrap, topic, g, client, concurrency=2) for g in groups for _ in "ab"]
    group_of = {proc.pid: groups[index // 2] for index, proc in enumerate(procs)}
    attempts = str(tmp_path / "attempts")
    queue = Queue.connect(bootstrap, topic, client=client)
    plain = [f"p{n:03d}" for n in range(200)]
    delayed = [f"d{n:03d}" for n in range(100)]
    retried = [f"r{n:03d}" for n in range(100)]
    with queue.batch() as batch:
        for name in plain:
            batch.enqueue(Job(id=name, func=mark, args=(ledger, name), key=name.encode()))
    for seconds in (1, 2, 3, 4):
        with queue.using(delay=seconds).batch() as batch:
            for name in delayed[seconds - 1 :: 4]:
                batch.enqueue(Job(id=name, func=mark, args=(ledger, name), key=name.encode()))
    with queue.using(retry=RetryPolicy(max_attempts=2, backoff=1, jitter=0)).batch() as batch:
        for name in retried:
            batch.enqueue(
                Job(
                    id=name,
                    func=fail_first_in_group,
                    args=(ledger, attempts, name),
                    key=name.encode(),
                )
            )
    names = [*plain, *delayed, *retried]
    wanted = {f"{name}@{g}" for name in names for g in groups}

    def per_group() -> Counter[str]:
        pids = pool.pids()
        return Counter(
            f"{run.name}@{group_of.get(run.worker(pids), '?')}" for run in read_ledger(ledger)
        )

    complete = wait_for(lambda: all(per_group()[w] for w in wanted), 120, 0.25)
    for proc in procs:
        pool.stop(proc)
    result = Outcome(f"11-two-groups-{client}", wanted, per_group())
    fault_report.add(result)
    # Each job runs once per group: judged per (job, group) below, not by name.
    found = [
        line
        for line in problems(result, ledger, pool, complete=complete)
        if "with no fault to explain it" not in line
    ]
    excused = any(excuse in proc.log() for proc in procs for excuse in _EXCUSES)
    twice = sorted(key for key, count in result.counts.items() if count > 1)
    if twice and not excused:
        found.append(f"{len(twice)} (job, group) pairs ran more than once, e.g. {twice[:5]}")
    tries = Counter(line.split()[0] for line in Path(attempts).read_text().splitlines())
    if sorted(set(tries.values())) != [2] or len(tries) != len(retried) * len(groups):
        found.append(f"retried jobs: attempts per (job, group) {sorted(Counter(tries.values()))}")
    letters = DeadLetters(bootstrap, topic).list()
    if letters:
        found.append(f"{len(letters)} dead letters, e.g. {letters[0].error}")
    if not settled(bootstrap, topic, groups):
        found.append("the tiers or the topic are not committed to their end after the stop")
    ran = sum(result.counts.values())
    print(f"{ran} runs for {len(names)} jobs in {len(groups)} groups; excused={excused}")
    assert not found, "\n".join(found)
