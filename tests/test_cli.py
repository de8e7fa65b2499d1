"""The ``kq`` command as a user runs it: the real console script, in subprocesses, on a real broker.

Jobs write to a ledger file (tests/ledger_jobs.py), so a test sees what ran,
in whichever process. Every process a test starts is ended by the test
(``procs`` fixture), by pid.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_jobs import outcomes
from cli_procs import Processes, kq, kq_json, wait_until
from kafka_checks import committed, group_name
from ledger_jobs import ends, starts

import kq as kq_api
from kq import Queue, RetryPolicy

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Start background kq processes; all of them are ended after the test."""
    processes = Processes(tmp_path)
    yield processes
    processes.close()


def _worker(
    procs: Processes, bootstrap: str, topic: str, group: str, *extra: str, **env: str
) -> Any:
    return procs.start(
        "worker", topic, "-b", bootstrap, "-g", group, "--shutdown-timeout", "10", *extra,
        name="worker", env=env,
    )  # fmt: skip


def _stop(worker: Any) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.err()[-3000:]


def _lag(bootstrap: str, topic: str, group: str) -> Any:
    return kq_json("info", topic, "-b", bootstrap, "-g", group)


# -- enqueue and worker ---------------------------------------------------------


def test_enqueue_from_the_shell_then_a_worker_runs_it(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    one = kq("enqueue", topic, "ledger_jobs:record", f'"{ledger}"', '"single"', "-b", bootstrap)
    assert one.returncode == 0, one.stderr
    assert JOB_ID.match(one.stdout.strip()), one.stdout
    many = kq(
        "enqueue", topic, "cli_jobs:greet", f'"{ledger}"', '"many"', "--kwargs",
        '{"greeting": "hi"}', "--key", "k", "--count", "3", "-b", bootstrap,
    )  # fmt: skip
    assert many.returncode == 0, many.stderr
    ids = many.stdout.split()
    assert len(ids) == 3 and len(set(ids)) == 3 and all(JOB_ID.match(i) for i in ids)
    # not a terminal: plain progress lines, ending with the total
    assert many.stderr.strip().splitlines()[-1] == "enqueue: 3/3"
    lines = f'{{"function": "ledger_jobs:record", "args": ["{ledger}", "jsonl"]}}\n' * 2
    from_stdin = kq("enqueue", topic, "--jsonl", "-", "-b", bootstrap, stdin=lines)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert len(from_stdin.stdout.split()) == 2
    delayed = kq(
        "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', '"delayed"', "--delay", "1",
        "-b", bootstrap,
    )  # fmt: skip
    assert delayed.returncode == 0, delayed.stderr

    seen = str(tmp_path / "outcomes")
    worker = _worker(
        procs, bootstrap, topic, group_name(), "--concurrency", "2",
        "--app", "ledger_jobs", "--app", "cli_jobs:WORKER_OPTIONS", "--log-jobs",
        CLI_TEST_OUTCOMES=seen,
    )  # fmt: skip
    wait_until(
        lambda: ends(ledger) == {"single": 1, "hi-many": 3, "jsonl": 2, "delayed": 1},
        "every enqueued job to run once",
    )
    wait_until(lambda: outcomes(seen) == ["success"] * 7, "the --app callback to see each job")
    _stop(worker)
    assert "Job" in worker.err() and "returned: hi many" in worker.err()


_SUMMARY = re.compile(r"kq\.runtime: Last \d+ s: ([\d,]+) jobs \([\d,]+/s\)(.*)$", re.MULTILINE)


@pytest.mark.parametrize("flags", [(), ("--log-jobs",), ("--log-level", "DEBUG")])
def test_worker_logs_a_summary_and_failures_by_default_and_every_job_when_asked(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes, flags: tuple[str, ...]
) -> None:
    """At 5,000 jobs/s KQ's five INFO lines per job filled 510 MB in 5 minutes: by default
    `kq worker` keeps kq.worker at WARNING and logs a summary line on kq.runtime instead;
    --log-jobs (or --log-level DEBUG) gives every line back."""
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    done = kq(
        "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', '"ok"', "--count", "20",
        "-b", bootstrap,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    failing = kq(
        "enqueue", topic, "cli_jobs:fail_until", f'"{ledger}"', '"bad"',
        f'"{tmp_path / "never"}"', "-b", bootstrap,
    )  # fmt: skip
    assert failing.returncode == 0, failing.stderr
    worker = _worker(
        procs, bootstrap, topic, group_name(), "--summary-interval", "1", "--app", "ledger_jobs",
        *flags,
    )  # fmt: skip
    wait_until(lambda: ends(ledger) == {"ok": 20} and starts(ledger)["bad"] == 1, "the jobs")

    def summarized() -> int:
        return sum(int(m[1].replace(",", "")) for m in _SUMMARY.finditer(worker.err()))

    wait_until(lambda: summarized() == 21, "summary lines counting all 21 jobs", timeout=30)
    wait_until(lambda: re.search(r"Last \d+ s: .*lag 0$", worker.err(), re.M), "lag 0", 30)
    _stop(worker)
    log = worker.err()
    outcomes_summed: dict[str, int] = {}
    for _count, rest in _SUMMARY.findall(log):
        for number, status in re.findall(r"([\d,]+) (success|failure|timeout|invalid)", rest):
            outcomes_summed[status] = outcomes_summed.get(status, 0) + int(number.replace(",", ""))
    assert outcomes_summed == {"success": 20, "failure": 1}, _SUMMARY.findall(log)
    # the failure itself is always logged, with its traceback
    assert re.search(r"kq\.worker: Job [0-9a-f]{32} raised an exception: RuntimeError", log)
    per_job = len(re.findall(r"kq\.worker: Executing job [0-9a-f]{32}: ledger_jobs\.record", log))
    if flags:
        assert per_job == 20, log[-3000:]
        assert log.count("kq.worker: Processing Message(") == 21
    else:
        assert per_job == 0, log[-3000:]
        assert "Processing Message(" not in log and "returned:" not in log
        assert "one line per job is off (--log-jobs shows it); a summary every 1 s" in log


def test_info_shows_lag_before_and_after_a_worker(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    topic = make_topic(partitions=2)
    group = group_name()
    ledger = str(tmp_path / "ledger")
    for partition, count in ((0, 3), (1, 2)):
        done = kq(
            "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', f'"p{partition}"',
            "--partition", str(partition), "--count", str(count), "-b", bootstrap,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    before = _lag(bootstrap, topic, group)
    assert [(p["partition"], p["end"], p["committed"], p["lag"]) for p in before["partitions"]] == [
        (0, 3, None, 3),
        (1, 2, None, 2),
    ]
    assert before["total"]["lag"] == 5
    assert before["group"]["members"] == []

    worker = _worker(procs, bootstrap, topic, group)
    wait_until(lambda: ends(ledger) == {"p0": 3, "p1": 2}, "the five jobs to run")

    def caught_up() -> Any:
        info = _lag(bootstrap, topic, group)
        members = info["group"]["members"]
        return info["total"]["lag"] == 0 and len(members) == 1 and info

    running = wait_until(caught_up, "lag 0 with one member")
    assert running["group"]["state"] == "stable"
    assert running["group"]["members"][0]["partitions"] == [0, 1]

    _stop(worker)
    after = _lag(bootstrap, topic, group)
    assert [(p["partition"], p["committed"], p["lag"]) for p in after["partitions"]] == [
        (0, 3, 0),
        (1, 2, 0),
    ]
    assert after["group"]["members"] == []
    table = kq("info", topic, "-b", bootstrap, "-g", group)
    assert table.returncode == 0 and "total" in table.stdout and group in table.stdout


# -- the supervisor ---------------------------------------------------------------


def test_supervisor_restarts_a_killed_child_and_stops_all_on_sigterm(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    topic = make_topic(partitions=2)
    ledger = str(tmp_path / "ledger")
    supervisor = _worker(procs, bootstrap, topic, group_name(), "--processes", "2")
    first = int(supervisor.wait_for(r"Worker 0 started \(pid (\d+)\)").group(1))
    other = int(supervisor.wait_for(r"Worker 1 started \(pid (\d+)\)").group(1))
    supervisor.wait_for(rf"\[{first}\] kq.runtime: Running Worker")

    os.kill(first, signal.SIGKILL)  # a child of a process this test started, by pid
    supervisor.wait_for(rf"Worker 0 \(pid {first}\) was killed by SIGKILL; restarting")
    restarted = int(
        supervisor.wait_for(r"(?s)killed by SIGKILL.*Worker 0 started \(pid (\d+)\)")[1]
    )
    assert restarted != first

    for name in ("a", "b", "c", "d"):
        done = kq(
            "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', f'"{name}"', "-b", bootstrap
        )
        assert done.returncode == 0, done.stderr
    wait_until(lambda: set(ends(ledger)) == {"a", "b", "c", "d"}, "jobs to run after the restart")

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.err()[-3000:]
    log = supervisor.err()
    for pid in (other, restarted):
        assert f"(pid {pid}) exited with code 0" in log
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_supervisor_gives_up_when_children_keep_crashing(
    bootstrap: str, topic: str, procs: Processes
) -> None:
    supervisor = _worker(
        procs, bootstrap, topic, group_name(), "--processes", "2", "--app", "cli_crash_app",
        "--max-restarts", "3",
    )  # fmt: skip
    code = supervisor.wait(timeout=60)
    assert code == 1
    last = supervisor.err().strip().splitlines()[-1]
    assert last.startswith("kq worker: error: workers keep crashing: 4 exits within 60 s")
    assert "exited with code 3" in last
    assert "Traceback" not in supervisor.err()


def test_supervisor_stops_gracefully_on_sighup(
    bootstrap: str, topic: str, procs: Processes
) -> None:
    """A closed terminal (SIGHUP) stops the workers as SIGTERM does; it killed the
    supervisor at once."""
    supervisor = _worker(procs, bootstrap, topic, group_name(), "--processes", "2")
    for index in (0, 1):
        pid = int(supervisor.wait_for(rf"Worker {index} started \(pid (\d+)\)").group(1))
        supervisor.wait_for(rf"\[{pid}\] kq.runtime: Running Worker")
    supervisor.signal(signal.SIGHUP)
    assert supervisor.wait() == 0, supervisor.err()[-3000:]
    log = supervisor.err()
    assert "Stopping 2 workers gracefully" in log
    for pid in supervisor.child_pids():
        assert f"(pid {pid}) exited with code 0" in log


def test_worker_stops_gracefully_on_sighup(bootstrap: str, topic: str, procs: Processes) -> None:
    worker = _worker(procs, bootstrap, topic, group_name())
    worker.wait_for(r"kq.runtime: Running Worker")
    worker.signal(signal.SIGHUP)
    assert worker.wait() == 0, worker.err()[-3000:]


def test_supervisor_worker_sigkilled_takes_its_timed_job_process_with_it(
    bootstrap: str, make_topic: Any, tmp_path: Path, procs: Processes
) -> None:
    """A worker child SIGKILLed while its timed job runs: the job's process dies with it
    instead of running on past its timeout beside the rerun."""
    from cli_jobs import note_and_sleep, noted, process_gone

    topic = make_topic(partitions=2)
    notes = str(tmp_path / "pids")
    supervisor = _worker(procs, bootstrap, topic, group_name(), "--processes", "2")
    for index in (0, 1):
        pid = int(supervisor.wait_for(rf"Worker {index} started \(pid (\d+)\)").group(1))
        supervisor.wait_for(rf"\[{pid}\] kq.runtime: Running Worker")
    Queue.connect(bootstrap, topic).using(timeout=120).enqueue(note_and_sleep, notes, 100)
    [(job_pid, worker_pid)] = wait_until(lambda: noted(notes), "the timed job to start")
    assert worker_pid in supervisor.child_pids()
    os.kill(worker_pid, signal.SIGKILL)  # a child of a process this test started, by pid
    wait_until(lambda: process_gone(job_pid), "the job process to end with its worker", 20)
    wait_until(lambda: len(noted(notes)) == 2, "the rerun in a worker")


def test_supervisor_kills_what_a_killed_worker_left_in_its_process_group(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    """A job started a process of its own (here ``sleep``); its worker child is SIGKILLed:
    the supervisor kills what is left of the child's process group, which the job's
    process would otherwise outlive (re-parented to init)."""
    from cli_jobs import noted, process_gone, spawn_and_wait

    notes = str(tmp_path / "pids")
    supervisor = _worker(procs, bootstrap, topic, group_name(), "--processes", "2")
    for index in (0, 1):
        pid = int(supervisor.wait_for(rf"Worker {index} started \(pid (\d+)\)").group(1))
        supervisor.wait_for(rf"\[{pid}\] kq.runtime: Running Worker")
    Queue.connect(bootstrap, topic).enqueue(spawn_and_wait, notes, 100)
    [(sleep_pid, worker_pid)] = wait_until(lambda: noted(notes), "the job to start its process")
    assert worker_pid in supervisor.child_pids()
    os.kill(worker_pid, signal.SIGKILL)  # a child of a process this test started, by pid
    supervisor.wait_for(rf"\(pid {worker_pid}\) was killed by SIGKILL")
    wait_until(lambda: process_gone(sleep_pid), "the job's own process to end", 20)


_RELOADED_JOB = """
def job(ledger):
    with open(ledger, "a") as f:
        f.write("{version}\\n")
"""


def test_reload_restarts_workers_on_a_code_change_and_imports_from_the_current_folder(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    module = project / "reloaded_job.py"
    module.write_text(_RELOADED_JOB.format(version="v1"))
    ledger = tmp_path / "ledger"
    worker = procs.start(
        "worker", topic, "-b", bootstrap, "-g", group_name(), "--reload", cwd=project
    )
    worker.wait_for(r"Worker 0 started")

    def enqueue() -> None:
        done = kq("enqueue", topic, "reloaded_job:job", f'"{ledger}"', "-b", bootstrap, cwd=project)
        assert done.returncode == 0, done.stderr

    enqueue()
    wait_until(lambda: ledger.exists() and ledger.read_text() == "v1\n", "v1 to run")
    module.write_text(_RELOADED_JOB.format(version="v2"))
    later = time.time() + 5  # a new mtime even where the clock's resolution is coarse
    os.utime(module, (later, later))
    worker.wait_for(r"reloaded_job.py changed: restarting the workers gracefully")
    worker.wait_for(r"(?s)changed: restarting.*Worker 0 started")
    enqueue()
    wait_until(lambda: ledger.read_text() == "v1\nv2\n", "v2 to run")
    _stop(worker)


# -- replay -----------------------------------------------------------------------


def test_worker_consumer_settings_cannot_break_the_delay_forwarder(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    """``-X partition.assignment.strategy=cooperative-sticky`` (the worker's own strategy)
    killed the forwarder: its assign() was refused and delayed jobs never ran. ``kq info``
    shows the forwarder group and what waits in the tiers."""
    ledger = str(tmp_path / "ledger")
    group = group_name()
    worker = _worker(
        procs, bootstrap, topic, group, "-X", "partition.assignment.strategy=cooperative-sticky"
    )
    worker.wait_for(r"kq.runtime: Running Worker")
    done = kq(
        "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', '"delayed"', "--delay", "1",
        "-b", bootstrap,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_until(lambda: ends(ledger) == {"delayed": 1}, "the delayed job to run")

    def forwarding() -> Any:
        delay = _lag(bootstrap, topic, group)["delay"]
        return delay["waiting"] == 0 and len(delay["members"]) == 1 and delay

    delay = wait_until(forwarding, "the forwarder group with one member and nothing waiting")
    assert delay["group"] == f"{topic}.kq-delay" and delay["state"] == "stable"
    _stop(worker)
    assert not re.search(r"Delay forwarder .* stopped", worker.err()), worker.err()[-3000:]


def test_replay_dry_run_changes_nothing_and_yes_runs_jobs_again(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    group = group_name()
    ledger = str(tmp_path / "ledger")
    queue = Queue.connect(bootstrap, topic)
    from ledger_jobs import record

    for name in ("old1", "old2", "old3"):
        queue.enqueue(record, ledger, name)
    # record timestamps are in ms: keep the boundary strictly between old and new
    time.sleep(0.005)
    boundary = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.005)
    for name in ("new1", "new2"):
        queue.enqueue(record, ledger, name)

    worker = _worker(procs, bootstrap, topic, group)
    wait_until(lambda: sum(ends(ledger).values()) == 5, "the five jobs to run")
    wait_until(lambda: committed(bootstrap, group, topic) == 5, "the offsets to be committed")

    refused = kq("replay", topic, "-b", bootstrap, "-g", group, "--from-offset", "0", "--yes")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "has 1 active member(s)" in refused.stderr and "stop its workers first" in refused.stderr
    _stop(worker)

    dry = kq("replay", topic, "-b", bootstrap, "-g", group, "--from-offset", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would move" in dry.stdout and "partition 0: 5 -> 0 (5 jobs again)" in dry.stdout
    assert committed(bootstrap, group, topic) == 5

    unconfirmed = kq("replay", topic, "-b", bootstrap, "-g", group, "--from-offset", "0")
    assert unconfirmed.returncode == 1
    assert unconfirmed.stderr.strip().endswith("kq: aborted; nothing was changed")
    assert committed(bootstrap, group, topic) == 5

    since = boundary.isoformat().replace("+00:00", "Z")
    moved = kq("replay", topic, "-b", bootstrap, "-g", group, "--from-time", since, "--yes")
    assert moved.returncode == 0, moved.stderr
    assert "partition 0: 5 -> 3 (2 jobs again)" in moved.stdout
    assert committed(bootstrap, group, topic) == 3

    again = _worker(procs, bootstrap, topic, group)
    wait_until(lambda: ends(ledger)["new2"] == 2, "the replayed jobs to run again")
    wait_until(lambda: committed(bootstrap, group, topic) == 5, "the offsets to be committed")
    _stop(again)
    assert ends(ledger) == {"old1": 1, "old2": 1, "old3": 1, "new1": 2, "new2": 2}


# -- dead letters -----------------------------------------------------------------


def test_dead_letters_list_show_and_requeue(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    from cli_jobs import fail_until

    ledger = str(tmp_path / "ledger")
    flag = tmp_path / "flag"
    seen = str(tmp_path / "outcomes")
    worker = _worker(
        procs, bootstrap, topic, group_name(), "--callback", "cli_jobs:on_outcome",
        CLI_TEST_OUTCOMES=seen,
    )  # fmt: skip
    queue = Queue.connect(bootstrap, topic, retry=RetryPolicy(max_attempts=1))
    job = queue.enqueue(fail_until, ledger, "first", str(flag))
    by_cli = kq(
        "enqueue", topic, "cli_jobs:fail_until", f'"{ledger}"', '"second"', f'"{flag}"',
        "--max-attempts", "1", "-b", bootstrap,
    )  # fmt: skip
    assert by_cli.returncode == 0, by_cli.stderr

    def letters() -> Any:
        found = kq_json("dead-letters", "list", topic, "-b", bootstrap)
        return len(found) == 2 and found

    found = wait_until(letters, "two dead letters")
    first, second = sorted(found, key=lambda x: x["offset"])
    assert first["job_id"] == job.id and first["status"] == "failure"
    assert first["attempts"] == 1 and "first: not yet" in first["error"]
    assert first["call"].startswith("cli_jobs.fail_until(")
    assert first["source"] == f"{topic}/0/0"
    assert second["job_id"] == by_cli.stdout.strip()

    table = kq("dead-letters", "list", topic, "-b", bootstrap)
    assert table.returncode == 0 and first["position"] in table.stdout
    shown = kq("dead-letters", "show", topic, first["position"], "-b", bootstrap)
    assert shown.returncode == 0, shown.stderr
    assert "RuntimeError: first: not yet" in shown.stdout and job.id in shown.stdout

    flag.touch()
    requeued = kq("dead-letters", "requeue", topic, first["position"], "-b", bootstrap)
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.strip() == f"{first['position']} -> {topic} {job.id}"
    wait_until(lambda: ends(ledger)["first"] == 1, "the requeued job to succeed")

    unconfirmed = kq("dead-letters", "requeue", topic, "--all", "-b", bootstrap)
    assert unconfirmed.returncode == 1 and "aborted" in unconfirmed.stderr
    since = f"{second['partition']}:{second['offset']}"
    rest = kq("dead-letters", "requeue", topic, "--all", "--since", since, "--yes", "-b", bootstrap)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.strip().splitlines() == [f"{since} -> {topic} {second['job_id']}"]
    wait_until(lambda: ends(ledger)["second"] == 1, "the second requeued job to succeed")
    _stop(worker)
    assert starts(ledger) == {"first": 2, "second": 2}
    assert sorted(outcomes(seen)) == ["failure", "failure", "success", "success"]


# -- signed JSON jobs ---------------------------------------------------------------


def test_signed_json_jobs_from_the_shell(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    ledger = str(tmp_path / "ledger")
    old, new = "old-secret-0123456789", "new-secret-0123456789"
    worker = procs.start(
        "worker", topic, "-b", bootstrap, "-g", group_name(), "--json-jobs", "ledger_jobs",
        "--max-message-bytes", "100000", name="worker", env={"KQ_SIGNING_KEYS": f"{new} {old}"},
    )  # fmt: skip
    for name, key in (("signed-old", old), ("signed-new", new), ("unsigned", None)):
        env = {"KQ_SIGNING_KEY": key} if key else {}
        done = kq(
            "enqueue", topic, "ledger_jobs:record", f'"{ledger}"', f'"{name}"', "--json-jobs",
            "-b", bootstrap, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    worker.wait_for(r"Job was invalid: .*(sign|Sign)")
    wait_until(lambda: ends(ledger) == {"signed-old": 1, "signed-new": 1}, "the signed jobs")
    _stop(worker)
    assert starts(ledger)["unsigned"] == 0


# -- mistakes -----------------------------------------------------------------------


def test_user_mistakes_give_one_line_and_a_non_zero_exit(bootstrap: str, topic: str) -> None:
    b = ("-b", bootstrap)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("info", topic), "no Kafka address: give --bootstrap"),
        (
            ("info", topic, "-b", "127.0.0.1:1", "--connect-timeout", "2"),
            "no Kafka broker answered",
        ),
        (("info", "no-such-topic", *b), "topic 'no-such-topic' does not exist"),
        (("worker", "no-such-topic", *b, "-g", "g"), "topic 'no-such-topic' does not exist"),
        # (a module not here is enqueued by name: test_first_day.py)
        (("enqueue", topic, "no-such-module:f", *b), "expected 'module:qualname'"),
        (("enqueue", topic, "ledger_jobs:nope", *b), "'ledger_jobs' has no attribute 'nope'"),
        (("enqueue", topic, "ledger_jobs:record", "not-json", *b), "argument 1 is not JSON"),
        (("enqueue", topic, "ledger_jobs:record", "--partition", "7", *b), "has no partition 7"),
        (("enqueue", topic, "ledger_jobs:record", "-X", "oops", *b), "-X expects key=value"),
        (("enqueue", topic, "ledger_jobs:record", "-X", "no.such=1", *b), "bad Kafka client"),
        (("worker", topic, *b, "-g", "g", "--app", "no_such_app"), "no module named"),
        (("worker", topic, *b, "-g", "g", "--callback", "os:getcwdx"), "has no attribute"),
        (("worker", topic, *b), "no consumer group"),
        (("worker", topic, *b, "-g", "g", "--processes", "0"), "--processes"),
        (("replay", topic, *b, "-g", "g"), "give --from-time or --from-offset"),
        (("replay", topic, *b, "-g", "g", "--from-time", "soon"), "expects an ISO 8601 time"),
        (("dead-letters", "requeue", topic, *b), "positions or --all"),
        (("dead-letters", "show", topic, "0:999", *b), "no dead letter at"),
    ]
    import subprocess

    from cli_procs import KQ, TESTS_DIR, kq_env

    running = [
        (
            args,
            expected,
            subprocess.Popen(
                [KQ, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=kq_env(),
                cwd=str(TESTS_DIR),
            ),
        )
        for args, expected in cases
    ]
    problems = []
    for args, expected, proc in running:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        lines = err.strip().splitlines()
        if proc.returncode in (0, None) or len(lines) != 1 or expected not in err:
            problems.append(f"kq {' '.join(args)} -> {proc.returncode}: {err!r}")
        assert "Traceback" not in err
    assert not problems, "\n".join(problems)


# -- local Kafka ------------------------------------------------------------------


@pytest.mark.slow
def test_local_kafka_runs_in_the_foreground_until_ctrl_c(procs: Processes) -> None:
    local = procs.start("local-kafka", "--topic", "jobs:2", name="local-kafka")
    address = local.wait_for(r"^bootstrap_servers=(\S+)$", timeout=120, stream="out")[1]
    local.wait_for(r"^created topic jobs \(2 partitions\)$", stream="out")
    info = kq_json("info", "jobs", "-b", address)
    assert [p["partition"] for p in info["partitions"]] == [0, 1]
    local.signal(signal.SIGINT)
    assert local.wait() == 0, local.err()[-3000:]
    assert kq("info", "jobs", "-b", address, "--connect-timeout", "1").returncode == 1


def test_local_kafka_takes_9092_when_free_and_says_so_when_not(procs: Processes) -> None:
    import socket

    from kq.local import port_is_free

    if not port_is_free(9092):
        pytest.skip("port 9092 is used by something else on this machine")
    # 9092 taken: the command says so and uses a free port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 9092))
        holder.listen()
        busy = procs.start("local-kafka", name="local-kafka-busy")
        address = busy.wait_for(r"^bootstrap_servers=(\S+)$", timeout=120, stream="out")[1]
        assert address != "127.0.0.1:9092"
        assert "port 9092 on 127.0.0.1 is in use" in busy.err()
        busy.signal(signal.SIGINT)
        assert busy.wait() == 0
        # asked for explicitly, a taken port is an error of one line
        taken = kq("local-kafka", "--port", "9092", timeout=120)
        assert taken.returncode == 1
        assert taken.stderr.startswith("kq local-kafka: error: port 9092 on 127.0.0.1 is in use")
    # 9092 free: the quick start's address works as written
    local = procs.start("local-kafka", name="local-kafka-9092")
    assert local.wait_for(r"^bootstrap_servers=(\S+)$", timeout=120, stream="out")[1] == (
        "127.0.0.1:9092"
    )
    local.signal(signal.SIGINT)
    assert local.wait() == 0


def test_python_m_kq_local_is_the_same_command_as_kq_local_kafka() -> None:
    import subprocess
    import sys

    module = subprocess.run(
        [sys.executable, "-m", "kq.local", "--help"], capture_output=True, text=True, timeout=60
    )
    command = kq("local-kafka", "--help")
    assert module.returncode == command.returncode == 0
    assert module.stdout.replace("python -m kq.local", "kq local-kafka") == command.stdout
    assert "--port" in command.stdout and "--users-file" in command.stdout


def test_version() -> None:
    done = kq("--version")
    assert done.returncode == 0 and kq_api.__version__ in done.stdout
