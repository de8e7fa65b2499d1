"""Key-ordered concurrency, commits that follow completion, back-pressure, coroutine jobs.

Every test runs against the real broker, for both client families. Parallelism
is proved behaviourally: rendezvous jobs wait (for a bounded time) until N of
them are running at once and fail otherwise, so a worker that ran them one
after another fails the test. Order and overlap are read from a ledger file
the jobs append ``start``/``end`` lines to. No test asserts a duration.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, cast

import concurrency_jobs as jobs
import pytest
from kafka_checks import committed, group_name, session_config
from ledger_jobs import wait_for
from throughput_support import WorkerProcess, WorkerThread, close_queue

from kq import Job, Message, Queue, Worker
from kq.clients import ClientName

CLIENTS = ["confluent", "kafka-python"]
MakeTopic = Any


class Outcomes:
    """A thread-safe callback keeping (status, key, offset, job id, result, error) per message."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes | None, int, str | None, Any, str | None]] = []
        self._lock = threading.Lock()

    def __call__(
        self, status: str, message: Message, job: Any, result: Any, exc: Any, tb: Any
    ) -> None:
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.items.append(
                (status, message.key, message.offset, job.id if job else None, result, error)
            )

    def failures(self) -> list[tuple[str, bytes | None, int, str | None]]:
        """(status, key, offset, error) of every outcome that is not a success."""
        with self._lock:
            return [(s, k, o, e) for s, k, o, _, _, e in self.items if s != "success"]

    def results(self) -> list[Any]:
        with self._lock:
            return [r for *_, r, _ in self.items]


class Observer:
    """Records what a worker reports: commits and rebalances."""

    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []
        self.rebalances: list[tuple[str, list[tuple[str, int]]]] = []
        self._lock = threading.Lock()

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        with self._lock:
            self.commits.append(dict(offsets))

    def rebalanced(self, event: str, partitions: list[tuple[str, int]]) -> None:
        with self._lock:
            self.rebalances.append((event, list(partitions)))

    def offsets(self, tp: tuple[str, int]) -> list[int]:
        """Every offset committed for one partition, in order."""
        with self._lock:
            return [c[tp] for c in self.commits if tp in c]


class InFlightSampler:
    """Reads ``worker.in_flight`` in a loop on its own thread until stopped."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.values: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.values.append(self.worker.in_flight)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _worker(
    bootstrap: str, topic: str, client: str, group: str | None = None, **options: Any
) -> Worker:
    name = cast(ClientName, client)
    return Worker.connect(bootstrap, topic, group or group_name(), client=name, **options)


def _run(worker: Worker, count: int, timeout: float = 120.0) -> int:
    return WorkerThread(worker, max_messages=count).start().join(timeout)


def _queue(bootstrap: str, topic: str, client: str) -> Queue:
    return Queue.connect(bootstrap, topic, client=client)


# -- 1. order per key, parallelism across keys ------------------------------------------

KEYS = [f"key-{i}" for i in range(6)]


@pytest.mark.parametrize("kind", ["function", "coroutine"])
@pytest.mark.parametrize("client", CLIENTS)
def test_same_key_jobs_never_overlap_and_run_in_offset_order(
    bootstrap: str, topic: str, tmp_path: Path, client: str, kind: str
) -> None:
    """One partition, six keys interleaved, concurrency 4: per key, each job ends before
    the next starts and they start in offset order; across keys, jobs did overlap."""
    ledger = str(tmp_path / "ledger")
    func = jobs.step if kind == "function" else jobs.async_step
    queue = _queue(bootstrap, topic, client)
    per_key = 5
    for seq in range(per_key):
        for key in KEYS:
            queue.using(key=key.encode()).enqueue(func, ledger, key, seq, 0.03)
    close_queue(queue)
    total = per_key * len(KEYS)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=4, callback=outcomes)
    assert _run(worker, total) == total
    assert outcomes.failures() == []
    log = jobs.events(ledger)
    want = [(kind, seq) for seq in range(per_key) for kind in ("start", "end")]
    for key in KEYS:
        mine = [(e.kind, e.seq) for e in log if e.name == key]
        assert mine == want, f"jobs of key {key} overlapped or ran out of offset order: {mine}"
        offsets = [o for _, k, o, *_ in outcomes.items if k == key.encode()]
        assert offsets == sorted(offsets), f"callbacks of key {key} out of offset order"
    assert jobs.max_running(ledger) > 1, "no two jobs ever overlapped with concurrency=4"


def _rendezvous_failures(outcomes: Outcomes) -> str:
    return "\n".join(f"{s} key={k!r} offset={o}: {e}" for s, k, o, e in outcomes.failures())


@pytest.mark.parametrize("client", CLIENTS)
def test_jobs_with_different_keys_run_in_parallel(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """N jobs with N different keys in one partition, concurrency N: each waits until
    all N are running at once (bounded), so they pass only if they ran in parallel."""
    n = 4
    ledger, room = str(tmp_path / "ledger"), tmp_path / "room"
    room.mkdir()
    queue = _queue(bootstrap, topic, client)
    for i in range(n):
        queue.using(key=f"key-{i}".encode()).enqueue(jobs.rendezvous, ledger, str(room), f"r{i}", n)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=n, callback=outcomes)
    assert _run(worker, n) == n
    assert not outcomes.failures(), (
        f"jobs with {n} different keys did not all run at once with concurrency={n}:\n"
        + _rendezvous_failures(outcomes)
    )


@pytest.mark.parametrize("timeout", [0, 30], ids=["thread", "child-process"])
@pytest.mark.parametrize("client", CLIENTS)
def test_unkeyed_jobs_run_in_parallel(
    bootstrap: str, topic: str, tmp_path: Path, client: str, timeout: int
) -> None:
    """N unkeyed jobs, concurrency N: all N run at once (also timed jobs, in child processes)."""
    n = 3
    ledger, room = str(tmp_path / "ledger"), tmp_path / "room"
    room.mkdir()
    queue = _queue(bootstrap, topic, client)
    for i in range(n):
        queue.using(timeout=timeout).enqueue(jobs.rendezvous, ledger, str(room), f"r{i}", n)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=n, callback=outcomes)
    assert _run(worker, n) == n
    assert not outcomes.failures(), (
        f"{n} unkeyed jobs did not all run at once with concurrency={n}:\n"
        + _rendezvous_failures(outcomes)
    )


BLOCKING_CASES = {
    "keyed-blocks-keyed": (b"blocked-key", True),
    "unkeyed-blocks-keyed": (None, True),
    "keyed-blocks-unkeyed": (b"blocked-key", False),
}


@pytest.mark.parametrize("case", list(BLOCKING_CASES))
@pytest.mark.parametrize("client", CLIENTS)
def test_a_blocked_job_holds_back_only_its_own_key(
    bootstrap: str, topic: str, tmp_path: Path, client: str, case: str
) -> None:
    """While one job is blocked, jobs of every other key (and unkeyed jobs) behind it in the
    same partition all run; only a later job of the blocked job's own key waits for it."""
    blocked_key, others_keyed = BLOCKING_CASES[case]
    others = 12
    ledger, release = str(tmp_path / "ledger"), tmp_path / "release"
    queue = _queue(bootstrap, topic, client)
    queue.using(key=blocked_key).enqueue(jobs.wait_for_file, ledger, "blocked", str(release), 90)
    for i in range(others):
        key = f"other-{i}".encode() if others_keyed else None
        queue.using(key=key).enqueue(jobs.step, ledger, "other", i)
    if blocked_key is not None:
        queue.using(key=blocked_key).enqueue(jobs.step, ledger, "same-key", 0)
    close_queue(queue)
    total = others + 1 + (blocked_key is not None)
    worker = _worker(bootstrap, topic, client, concurrency=4)
    runner = WorkerThread(worker, max_messages=total).start()
    try:
        wait_for(lambda: len(jobs.ended(ledger)) >= others, timeout=15)
        finished = jobs.ended(ledger)
        same_key_started = any(name == "same-key" for name, _ in jobs.started(ledger))
    finally:
        release.touch()
    assert runner.join(90) == total
    assert ("blocked", 0) not in finished
    held_back = [i for i in range(others) if ("other", i) not in finished]
    assert not held_back, (
        f"jobs {held_back} (of {others} with other keys or none) waited behind a blocked job "
        f"with concurrency=4"
    )
    assert not same_key_started, "a job of the blocked key started before the blocked job ended"
    log = [(e.kind, e.name) for e in jobs.events(ledger)]
    if blocked_key is not None:
        assert log.index(("start", "same-key")) > log.index(("end", "blocked"))


@pytest.mark.parametrize("client", CLIENTS)
def test_concurrency_one_runs_one_job_at_a_time_in_offset_order(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """The default: keyed and unkeyed jobs alike strictly one after another, in offset order."""
    ledger = str(tmp_path / "ledger")
    keys = [b"a", b"b", None, b"a", None, b"c", b"b", None, b"d", b"a", None, b"e"]
    queue = _queue(bootstrap, topic, client)
    for seq, key in enumerate(keys):
        queue.using(key=key).enqueue(jobs.step, ledger, "job", seq, 0.01)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, callback=outcomes)
    assert worker.concurrency == 1
    assert _run(worker, len(keys)) == len(keys)
    log = [(e.kind, e.seq) for e in jobs.events(ledger)]
    assert log == [(kind, seq) for seq in range(len(keys)) for kind in ("start", "end")]
    assert [o for _, _, o, *_ in outcomes.items] == list(range(len(keys)))


# -- 2. commits follow completion ---------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_commits_never_pass_an_unfinished_job(
    bootstrap: str, make_topic: MakeTopic, tmp_path: Path, client: str
) -> None:
    """Partition 0: offsets 0-2 finish, offset 3 blocks, 4-9 finish. The committed offset
    stops at 3 (also after a later commit round, proved by a commit of partition 1) and
    reaches 10 once the blocked job is released."""
    topic = make_topic(partitions=2)
    ledger, release = str(tmp_path / "ledger"), tmp_path / "release"
    group = group_name()
    queue = _queue(bootstrap, topic, client)
    p0 = queue.using(partition=0)
    for seq in range(3):
        p0.enqueue(jobs.step, ledger, "early", seq)
    p0.enqueue(jobs.wait_for_file, ledger, "blocked", str(release), 120)
    for seq in range(6):
        p0.enqueue(jobs.step, ledger, "late", seq)
    observer = Observer()
    worker = _worker(bootstrap, topic, client, group, concurrency=4, observer=observer)
    runner = WorkerThread(worker).start()
    try:

        def late_done() -> int:
            return sum(1 for name, _ in jobs.ended(ledger) if name == "late")

        assert wait_for(lambda: late_done() >= 3, timeout=60), (
            f"only {late_done()} of 6 later jobs finished while offset 3 was blocked"
        )
        assert wait_for(lambda: committed(bootstrap, group, topic, 0) == 3, 30, 0.5), (
            f"committed offset of partition 0 is {committed(bootstrap, group, topic, 0)}, "
            "expected 3 (offsets 0-2 finished, 3 blocked)"
        )
        # A job on partition 1, committed after the later jobs of partition 0 finished:
        # that commit round saw them too.
        queue.using(partition=1).enqueue(jobs.step, ledger, "tick", 0)
        assert wait_for(lambda: 1 in observer.offsets((topic, 1)), timeout=30), (
            "the job on partition 1 was never committed"
        )
        assert ("blocked", 0) not in jobs.ended(ledger)
        before_release = observer.offsets((topic, 0))
        assert committed(bootstrap, group, topic, 0) == 3
    finally:
        release.touch()
    assert before_release and max(before_release) == 3, (
        f"offsets committed for partition 0 while offset 3 ran: {before_release}"
    )
    assert wait_for(lambda: committed(bootstrap, group, topic, 0) == 10, 60, 0.5), (
        f"after the release partition 0 committed {committed(bootstrap, group, topic, 0)}, not 10"
    )
    runner.stop_and_join()
    close_queue(queue)
    assert committed(bootstrap, group, topic, 1) == 1
    assert observer.offsets((topic, 0)) == sorted(observer.offsets((topic, 0)))


@pytest.mark.parametrize("client", CLIENTS)
def test_sigkilled_concurrent_worker_every_unfinished_job_runs_again(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """A worker process with concurrency 4 is SIGKILLed with three jobs blocked mid-run and
    others finished: nothing past the first blocked job was committed, and a second
    worker runs every job that had not finished; every job finished at least once."""
    ledger, once = str(tmp_path / "ledger"), tmp_path / "once"
    once.mkdir()
    total, blockers = 40, (5, 17, 30)
    queue = _queue(bootstrap, topic, client)
    for seq in range(total):
        spec = queue.using(key=f"key-{seq % 8}".encode())
        if seq in blockers:
            spec.enqueue(jobs.block_first_run, ledger, "job", seq, 120, str(once))
        else:
            spec.enqueue(jobs.step, ledger, "job", seq, 0.05)
    close_queue(queue)
    everything = {("job", seq) for seq in range(total)}
    group = group_name()
    first = WorkerProcess(tmp_path, bootstrap, topic, group, client, "--concurrency", "4")
    try:
        ready = wait_for(
            lambda: (
                {("job", b) for b in blockers} <= set(jobs.started(ledger))
                and len(jobs.ended(ledger)) >= 15
            ),
            timeout=90,
        )
        assert ready, f"blockers did not start / jobs did not finish:\n{first.errors()}"
    finally:
        first.kill()
    unfinished = everything - jobs.ended(ledger)
    assert {("job", b) for b in blockers} <= unfinished
    offset = committed(bootstrap, group, topic)
    assert offset is None or offset <= blockers[0], (
        f"committed {offset} past the unfinished job at offset {blockers[0]}"
    )
    ended_before = jobs.ended(ledger)
    # Exact resume: the second worker runs what had not finished (the blockers, and
    # what finished after the last commit), not every job above the committed offset,
    # so it is stopped once every job has ended and all is committed.
    second = WorkerProcess(tmp_path, bootstrap, topic, group, client, "--concurrency", "4")
    try:
        done = wait_for(
            lambda: (
                everything <= jobs.ended(ledger) and committed(bootstrap, group, topic) == total
            ),
            timeout=120,
        )
        lost = sorted(seq for _, seq in everything - jobs.ended(ledger))
        assert done, f"jobs never finished: {lost}\n{second.errors()}"
    finally:
        second.signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, second.errors()
    starts = Counter(jobs.started(ledger))
    for blocker in blockers:
        assert starts[("job", blocker)] == 2
    rerun = {key for key, count in starts.items() if count > 1}
    # at most the jobs unfinished at the kill, plus those whose end came after the
    # last commit; never all of the jobs finished above the committed offset
    assert rerun < {("job", seq) for seq in range(offset or 0, total)}, rerun
    assert len(rerun - unfinished) < len(ended_before - {("job", s) for s in range(offset or 0)})


# -- 4. back-pressure -----------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_in_flight_never_exceeds_max_in_flight(bootstrap: str, topic: str, client: str) -> None:
    """2,000 jobs waiting, max_in_flight=20, concurrency 4: ``worker.in_flight``, read from
    inside every job, from the callback and by a sampling thread, never exceeds 20; every
    job runs once and is committed."""
    total, cap = 2000, 20
    token = uuid.uuid4().hex
    queue = _queue(bootstrap, topic, client)
    with queue.batch() as batch:
        sent = [
            batch.enqueue(
                Job(
                    func=jobs.sample,
                    args=(token, seq, 0.002),
                    key=f"key-{seq % 10}".encode() if seq % 2 else None,
                )
            )
            for seq in range(total)
        ]
    close_queue(queue)
    assert batch.acknowledged_count == total
    ids = {job.id for job in sent}
    assert len(ids) == total
    from_callback: list[int] = []
    outcomes = Outcomes()
    group = group_name()
    worker: Worker

    def callback(*args: Any) -> None:
        from_callback.append(worker.in_flight)
        outcomes(*args)

    worker = _worker(
        bootstrap, topic, client, group, concurrency=4, max_in_flight=cap, callback=callback
    )
    assert worker.max_in_flight == cap
    jobs.register_sampler(token, lambda: worker.in_flight)
    try:
        with InFlightSampler(worker) as sampler:
            assert _run(worker, total, timeout=240) == total
    finally:
        jobs.unregister_sampler(token)
    inside = jobs.samples(token)
    assert len(inside) == total
    assert min(inside) >= 1, "in_flight read 0 inside a running job"
    readings = {"jobs": inside, "callback": from_callback, "thread": sampler.values}
    print({where: max(values) for where, values in readings.items()})
    for where, values in readings.items():
        assert max(values) <= cap, f"in_flight reached {max(values)} > {cap} (read from {where})"
    assert outcomes.failures() == []
    assert {job_id for _, _, _, job_id, _, _ in outcomes.items} == ids
    assert len(outcomes.items) == total
    assert committed(bootstrap, group, topic) == total


@pytest.mark.parametrize("client", CLIENTS)
def test_worker_at_its_cap_with_slow_jobs_stays_in_the_group(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """max_in_flight=2 filled by two jobs longer than max.poll.interval.ms: the worker
    pauses, keeps polling and keeps its partition although a second member joins; every
    job runs exactly once and in_flight stays at most 2."""
    ledger = str(tmp_path / "ledger")
    queue = _queue(bootstrap, topic, client)
    for seq in range(2):
        queue.enqueue(jobs.step, ledger, "slow", seq, 8)
    for seq in range(6):
        queue.enqueue(jobs.step, ledger, "quick", seq)
    close_queue(queue)
    group = group_name()
    config = session_config(client, max_poll_ms=6000)
    observer = Observer()
    one = _worker(
        bootstrap,
        topic,
        client,
        group,
        consumer_config=config,
        concurrency=2,
        max_in_flight=2,
        observer=observer,
    )
    two = _worker(bootstrap, topic, client, group, consumer_config=config)
    with InFlightSampler(one) as sampler:
        first = WorkerThread(one, max_messages=8).start()
        assert wait_for(lambda: len(jobs.started(ledger)) >= 2, timeout=90), "jobs never started"
        second = WorkerThread(two).start()  # would take the partition if one were thrown out
        processed = first.join(120)
    second.stop_and_join()
    assert processed == 8
    starts = Counter(jobs.started(ledger))
    assert set(starts.values()) == {1}, f"jobs ran more than once: {starts}"
    assert len(starts) == 8
    assert max(sampler.values) <= 2
    assert not [e for e, _ in observer.rebalances if e == "lost"], observer.rebalances
    assert committed(bootstrap, group, topic) == 8


# -- 5. coroutine jobs --------------------------------------------------------------------


@pytest.mark.parametrize("keyed", [True, False], ids=["different-keys", "unkeyed"])
@pytest.mark.parametrize("client", CLIENTS)
def test_coroutine_jobs_overlap_on_one_event_loop(
    bootstrap: str, topic: str, tmp_path: Path, client: str, keyed: bool
) -> None:
    """N ``async def`` jobs, concurrency N: each awaits until all N are inside (a
    module-level count, bounded), so they pass only if they overlapped; they report
    their values, and all ran on one event loop."""
    n = 4
    ledger, token = str(tmp_path / "ledger"), uuid.uuid4().hex
    queue = _queue(bootstrap, topic, client)
    for i in range(n):
        key = f"key-{i}".encode() if keyed else None
        queue.using(key=key).enqueue(jobs.async_rendezvous, ledger, token, f"co{i}", n)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=n, callback=outcomes)
    assert _run(worker, n) == n
    assert not outcomes.failures(), (
        f"{n} coroutine jobs did not overlap with concurrency={n}:\n"
        + _rendezvous_failures(outcomes)
    )
    results = outcomes.results()
    assert sorted(name for name, _, _ in results) == [f"co{i}" for i in range(n)]
    assert len({loop for _, loop, _ in results}) == 1, "coroutine jobs ran on several loops"


@pytest.mark.parametrize("client", CLIENTS)
def test_coroutine_jobs_share_loop_bound_objects(bootstrap: str, topic: str, client: str) -> None:
    """Three coroutines await one ``asyncio.Event`` that a fourth sets: possible only when
    they overlap on the same loop (an event awaited from another loop raises)."""
    n, token = 4, uuid.uuid4().hex
    queue = _queue(bootstrap, topic, client)
    for i in range(n):
        queue.enqueue(jobs.async_shared_event, token, f"co{i}", i == n - 1)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=n, callback=outcomes)
    assert _run(worker, n) == n
    assert not outcomes.failures(), _rendezvous_failures(outcomes)
    assert sorted(outcomes.results()) == [f"co{i}" for i in range(n)]


@pytest.mark.parametrize("client", CLIENTS)
def test_coroutine_job_errors_are_reported_as_failures(
    bootstrap: str, topic: str, client: str
) -> None:
    """A coroutine job that raises is a ``failure`` and the worker goes on: also when it
    raises ``TimeoutError``, e.g. from an ``asyncio.wait_for`` that timed out."""
    queue = _queue(bootstrap, topic, client)
    queue.enqueue(jobs.async_wait_for_times_out, 0.05)
    queue.enqueue(jobs.async_raise, ValueError("boom"))
    queue.enqueue(jobs.async_raise, TimeoutError("gave up"))
    queue.enqueue(jobs.async_step, "/dev/null", "done", 0)
    close_queue(queue)
    outcomes = Outcomes()
    worker = _worker(bootstrap, topic, client, concurrency=2, callback=outcomes)
    runner = WorkerThread(worker, max_messages=4).start()
    try:
        runner.join(30)
    except AssertionError:
        pytest.fail(
            "the worker did not get through 4 coroutine jobs in 30 s (a coroutine that raised "
            f"was never reported); outcomes so far: {sorted(outcomes.items, key=lambda o: o[2])}"
        )
    by_offset = sorted(outcomes.items, key=lambda o: o[2])
    assert [(s, e) for s, _, _, _, _, e in by_offset] == [
        ("failure", "TimeoutError: "),
        ("failure", "ValueError: boom"),
        ("failure", "TimeoutError: gave up"),
        ("success", None),
    ]


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("client", CLIENTS)
def test_graceful_rebalance_runs_no_finished_job_again(
    bootstrap: str, make_topic: MakeTopic, tmp_path: Path, client: str, concurrency: int
) -> None:
    """A second worker joins mid-run and takes partitions from the first. The first
    commits no offsets on a timer (commit_interval=60 s), so what it finished on the
    partitions it gives up reaches the group only through the commit it makes when they
    are revoked; with that commit, no job that finished there runs again."""
    topic = make_topic(partitions=4)
    ledger = str(tmp_path / "ledger")
    total = 120
    queue = _queue(bootstrap, topic, client)
    for seq in range(total):
        queue.using(key=str(seq).encode()).enqueue(jobs.step, ledger, "j", seq, 0.03 * concurrency)
    close_queue(queue)
    group = group_name()
    config = session_config(client)
    observers = [Observer(), Observer()]
    one = _worker(
        bootstrap,
        topic,
        client,
        group,
        consumer_config=config,
        concurrency=concurrency,
        commit_interval=60.0,
        observer=observers[0],
    )
    two = _worker(
        bootstrap,
        topic,
        client,
        group,
        consumer_config=config,
        concurrency=concurrency,
        observer=observers[1],
    )
    first = WorkerThread(one).start()
    assert wait_for(lambda: len(jobs.ended(ledger)) >= 30, timeout=90), "the run did not start"
    second = WorkerThread(two).start()
    everything = {("j", seq) for seq in range(total)}
    done = wait_for(lambda: everything <= jobs.ended(ledger), timeout=120, interval=0.2)
    first.stop_and_join()
    second.stop_and_join()
    assert done, f"never ran: {sorted(everything - jobs.ended(ledger))[:10]}"
    revoked = [parts for event, parts in observers[0].rebalances if event == "revoked" and parts]
    assert revoked, f"no partition moved: {observers[0].rebalances}"
    again = sorted(seq for (_, seq), n in Counter(jobs.started(ledger)).items() if n > 1)
    assert not again, (
        f"{len(again)} jobs ran twice although the first worker finished them before it gave "
        f"their partitions up ({revoked}); its commits: {observers[0].commits}"
    )
