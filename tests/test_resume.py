"""Head-of-line memory and exact resume (issue 17.1).

A slow job at the head of a partition no longer lets the finished jobs behind
it grow without bound (``head_of_line_limit`` pauses the partition), and the
commit records which of them finished (``kq._resume``), so a worker that takes
the partition over after a crash runs again only what had not finished.
The format and the engine's rules are tested fast (in-memory adapter); each
behaviour is also proven on the real broker with both clients.
"""

from __future__ import annotations

import base64
import signal
import uuid
from pathlib import Path
from typing import Any, cast

import dill
import engine_jobs
import jobfuncs
import ledger_jobs
import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTP
from fake_consumer import FakeConsumer
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_checks import group_name, session_config
from ledger_jobs import wait_for
from throughput_support import WorkerProcess, WorkerThread, close_queue

import kq.worker
from kq import Job, Queue, Worker
from kq._resume import METADATA_MAX, decode, encode, intervals
from kq.clients import ClientName

CLIENTS = ["confluent", "kafka-python"]
TP = ("t", 0)


# -- the format ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**40),
    st.sets(st.integers(1, 3000), max_size=400) | st.sets(st.integers(1, 10**7), max_size=50),
)
def test_what_is_encoded_decodes_to_the_same_offsets(base: int, relative: set[int]) -> None:
    done = {base + r for r in relative}
    text, left_out = encode(base, intervals(done))
    assert len(text) <= METADATA_MAX and text.isascii()
    if not done:
        assert (text, left_out) == ("", 0)
        return
    finished = decode(text, base)
    assert finished is not None and left_out == 0
    assert finished.count == len(done)
    for offset in done | {base, base + 1, max(done) + 1}:
        assert (offset in finished) == (offset in done)


def test_too_many_to_encode_keeps_a_prefix_and_says_how_many_are_left_out() -> None:
    done = set(range(1, 200_000, 2))  # alternating: neither runs nor bits hold them all
    text, left_out = encode(0, intervals(done))
    assert len(text) <= METADATA_MAX
    finished = decode(text, 0)
    assert finished is not None and 0 < left_out < len(done)
    assert finished.count == len(done) - left_out
    kept = [o for o in sorted(done) if o in finished]
    assert kept == sorted(done)[: len(kept)], "not a prefix of the finished offsets"


def test_a_dense_backlog_costs_a_few_bytes() -> None:
    text, left_out = encode(100, intervals(range(101, 1_000_101)))
    assert left_out == 0 and len(text) < 32


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "anything",
        "kq1:",
        "kq1:10",
        "kq1:10:",
        "kq1:11:rAAE=",  # a commit of another offset
        "kq1:10:xAAE=",  # unknown kind
        "kq1:10:r!!!!",  # not base64
        "kq1:10:rgA==",  # a varint cut short
        "kq1:10:rAA==",  # a run without its pair
        "kq1:10:r" + base64.b64encode(b"\xff" * 12).decode(),  # a varint past 63 bits
        "kq1:10:r" + base64.b64encode(b"\x00\xff\xff\xff\xff\xff\xff\xff\x7f").decode(),
        "kq1:१०:rAAE=",  # digits, but not ASCII ones
        "kq1:10:b" + "A" * 5000,  # longer than kq writes
        "kq1:10:bAA==",  # no bit set
        "{'parallel-consumer': 'metadata of another library'}",
    ],
)
def test_metadata_that_is_not_kqs_is_ignored(text: object) -> None:
    assert decode(text, 10) is None


# -- the engine, against the in-memory adapter ------------------------------------------


def _fake_worker(monkeypatch: pytest.MonkeyPatch, fake: FakeConsumer, **options: Any) -> Worker:
    monkeypatch.setattr(kq.worker, "adapt_consumer", lambda consumer: consumer)
    return Worker(fake.topic, fake, scheduling=False, **options)


def _job(func: Any, *args: Any) -> bytes:
    return bytes(dill.dumps(Job(id=uuid.uuid4().hex, func=func, args=args)))


class Blocked:
    """An observer keeping every ``partitions_blocked`` report."""

    def __init__(self) -> None:
        self.reports: list[list[tuple[str, int]]] = []

    def partitions_blocked(self, partitions: list[tuple[str, int]]) -> None:
        self.reports.append(list(partitions))


def test_a_slow_job_blocks_its_partition_at_the_head_of_line_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t", partitions=2)
    fake.add(0, _job(engine_jobs.wait_at_gate, token, "slow"))
    for i in range(60):
        fake.add(0, _job(engine_jobs.note, token, f"p0-{i}"))
    observer = Blocked()
    worker = _fake_worker(
        monkeypatch, fake, concurrency=2, max_in_flight=5, head_of_line_limit=10, observer=observer
    )
    run = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: observer.reports == [[TP]], timeout=10), observer.reports
        assert wait_for(lambda: worker.in_flight == 1, timeout=10)  # only the slow job
        ran = [n for n in engine_jobs.notes(token) if n.startswith("p0-")]
        # the limit, and what was fetched before the pause took effect
        assert 10 <= len(ran) <= 10 + 5, ran
        assert TP in fake.paused
        # the other partition still takes jobs
        fake.add(1, _job(engine_jobs.note, token, "p1"))
        assert wait_for(lambda: "p1" in engine_jobs.notes(token), timeout=10)
        assert [n for n in engine_jobs.notes(token) if n.startswith("p0-")] == ran
        # committed: the slow job's offset, with what finished behind it
        assert wait_for(lambda: fake.metadata.get(TP, "").startswith("kq1:0:"), timeout=10)
        finished = decode(fake.metadata[TP], fake.committed[TP])
        assert finished is not None and finished.count == len(ran)
        engine_jobs.gate(token).set()
        assert wait_for(lambda: fake.committed.get(TP) == 61, timeout=10), fake.commits
    finally:
        engine_jobs.gate(token).set()
        worker.stop()
        run.join()
    assert observer.reports == [[TP], []]
    assert sorted(engine_jobs.notes(token)) == sorted(
        ["slow", "slow:end", *(f"p0-{i}" for i in range(60)), "p1"]
    )
    assert fake.metadata[TP] == ""
    assert any("head_of_line_limit 10" in r.getMessage() for r in caplog.records)


def test_a_new_owner_skips_what_the_last_commit_says_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    fake.add(0, _job(engine_jobs.wait_at_gate, token, "slow", 60.0))
    for i in range(30):
        fake.add(0, _job(engine_jobs.note, token, f"j{i}"))
    outcomes: list[int] = []
    first = _fake_worker(monkeypatch, fake, concurrency=4, commit_interval=0.05)
    run = WorkerThread(first).start()
    assert wait_for(lambda: len(engine_jobs.notes(token)) == 31, timeout=10)

    def recorded() -> int:
        finished = decode(fake.metadata.get(TP), fake.committed.get(TP, -1))
        return 0 if finished is None else finished.count

    assert wait_for(lambda: recorded() == 30, timeout=10), fake.metadata
    first.stop(immediately=True)  # its last commit says the same
    run.join()
    engine_jobs.gate(token).set()  # the slow job, run again, finishes now
    second = _fake_worker(
        monkeypatch,
        fake,
        concurrency=4,
        callback=lambda status, message, *rest: outcomes.append(message.offset),
    )
    run = WorkerThread(second).start()
    assert wait_for(lambda: fake.committed.get(TP) == 31, timeout=10), fake.commits
    second.stop()
    assert run.join() == 1
    ran = engine_jobs.notes(token)
    assert ran.count("slow") == 2 and ran.count("slow:end") == 2
    assert sorted(n for n in ran if n.startswith("j")) == sorted(f"j{i}" for i in range(30))
    assert outcomes == [0], "skipped jobs reached the callback"
    assert fake.metadata[TP] == ""


@pytest.mark.parametrize("metadata", ["", "kq1:5:rAQ=", "garbage", "kq1:0:r" + "A" * 8])
def test_metadata_a_worker_cannot_use_runs_everything(
    monkeypatch: pytest.MonkeyPatch, metadata: str
) -> None:
    """Another consumer's metadata, KQ 2.2.1's empty string, or kq's for another offset."""
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    for i in range(5):
        fake.add(0, _job(engine_jobs.note, token, f"j{i}"))
    fake.committed[TP] = 0
    fake.metadata[TP] = metadata
    assert WorkerThread(_fake_worker(monkeypatch, fake), max_messages=5).start().join() == 5
    assert engine_jobs.notes(token) == [f"j{i}" for i in range(5)]


def test_a_failing_read_of_the_commit_runs_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    for i in range(3):
        fake.add(0, _job(engine_jobs.note, token, f"j{i}"))
    fake.committed[TP] = 0
    fake.metadata[TP] = encode(0, [(1, 3)])[0]

    def refuse(partitions: Any, timeout: float) -> Any:
        raise RuntimeError("coordinator not available (test)")

    monkeypatch.setattr(fake, "read_committed", refuse)
    assert WorkerThread(_fake_worker(monkeypatch, fake), max_messages=3).start().join() == 3
    assert engine_jobs.notes(token) == ["j0", "j1", "j2"]


def test_without_exact_resume_nothing_is_recorded_or_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex
    fake = FakeConsumer("t")
    fake.add(0, _job(engine_jobs.wait_at_gate, token, "slow"))
    fake.add(0, _job(engine_jobs.note, token, "quick"))
    worker = _fake_worker(monkeypatch, fake, concurrency=2, exact_resume=False)
    run = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: "quick" in engine_jobs.notes(token), timeout=10)
        assert wait_for(lambda: bool(fake.commits), timeout=10)
        assert fake.metadata[TP] == ""
    finally:
        engine_jobs.gate(token).set()
        worker.stop()
        run.join()
    assert fake.reads == []


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_head_of_line_limit_must_be_a_positive_int(
    monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    with pytest.raises(ValueError, match="head_of_line_limit"):
        _fake_worker(monkeypatch, FakeConsumer("t"), head_of_line_limit=value)


# -- the real broker, both clients ------------------------------------------------------


def _committed_finished(bootstrap: str, group: str, topic: str) -> int:
    """How many finished offsets the group's commit of partition 0 records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([CTP(topic, 0)], timeout=10)
    finally:
        consumer.close()
    finished = decode(tp.metadata, tp.offset) if tp.offset >= 0 else None
    return 0 if finished is None else finished.count


@pytest.mark.parametrize("client", CLIENTS)
def test_a_worker_killed_behind_a_long_job_is_replaced_without_rerunning_finished_jobs(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """One long job, then 200 quick ones, concurrency 4: all 200 finish behind it and the
    commit records them. The worker is SIGKILLed; its replacement runs the long job
    again and none of the 200 (before exact resume it ran all 201 again)."""
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic, client=cast(ClientName, client))
    with queue.batch() as batch:
        batch.enqueue(ledger_jobs.record, ledger, "long", 600.0, True)
        for i in range(200):
            batch.enqueue(ledger_jobs.record, ledger, f"q{i}")
    close_queue(queue)
    group = group_name()
    first = WorkerProcess(tmp_path, bootstrap, topic, group, client, "--concurrency", "4")
    try:
        assert wait_for(lambda: len(ledger_jobs.ends(ledger)) == 200, 60), first.errors()
        assert ledger_jobs.ends(ledger)["long"] == 0
        assert wait_for(lambda: _committed_finished(bootstrap, group, topic) == 200, 30)
        first.kill()
        second = WorkerProcess(tmp_path, bootstrap, topic, group, client, "--concurrency", "4")
        try:
            assert wait_for(lambda: ledger_jobs.ends(ledger)["long"] == 1, 60), second.errors()
            second.signal(signal.SIGTERM)
            assert second.wait(60) == 0
        finally:
            second.kill()
    finally:
        first.kill()
    starts = ledger_jobs.starts(ledger)
    assert starts["long"] == 2
    rerun = sorted(name for name, count in starts.items() if name != "long" and count != 1)
    assert not rerun, f"ran again although recorded as finished: {rerun[:10]}"
    assert len(starts) == 201
    assert "resumes at offset 0: 200 jobs after it finished before" in second.errors(100_000)


@pytest.mark.parametrize("client", CLIENTS)
def test_head_of_line_limit_pauses_the_partition_behind_a_long_job(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    token = uuid.uuid4().hex
    queue = Queue.connect(bootstrap, topic, client=cast(ClientName, client))
    with queue.batch() as batch:
        batch.enqueue(jobfuncs.wait_for_file, str(started), str(release))
        for i in range(100):
            batch.enqueue(engine_jobs.note, token, f"q{i}")
    close_queue(queue)
    observer = Blocked()
    worker = Worker.connect(
        bootstrap,
        topic,
        group_name(),
        client=cast(ClientName, client),
        consumer_config=session_config(client),
        concurrency=2,
        max_in_flight=5,
        head_of_line_limit=20,
        observer=observer,
    )
    run = WorkerThread(worker).start()
    try:
        assert wait_for(lambda: observer.reports == [[(topic, 0)]], 60), observer.reports
        assert wait_for(lambda: worker.in_flight == 1, 30)
        ran = len(engine_jobs.notes(token))
        assert 20 <= ran <= 20 + 5, ran
        release.write_text("go")
        assert wait_for(lambda: len(engine_jobs.notes(token)) == 100, 60)
        assert wait_for(lambda: observer.reports == [[(topic, 0)], []], 30), observer.reports
    finally:
        release.write_text("go")
        assert run.stop_and_join(60) == 101
    assert sorted(engine_jobs.notes(token)) == sorted(f"q{i}" for i in range(100))
