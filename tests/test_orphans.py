"""A timed job's process never outlives its worker (it would run on past its timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import worker_proc
from cli_jobs import note_and_sleep, noted, process_gone
from cli_procs import wait_until
from kafka_checks import group_name

from kq import Queue

TESTS_DIR = Path(__file__).resolve().parent


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_sigkilled_worker_takes_its_timed_job_process_with_it(
    bootstrap: str, topic: str, tmp_path: Path, client: str
) -> None:
    """No supervisor here: only the job process itself can notice its worker died."""
    notes = str(tmp_path / "pids")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)]))
    command = worker_proc.command(bootstrap, topic, group_name(), client, "--exit-with-stdin")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env)
    job_pid = None
    try:
        Queue.connect(bootstrap, topic).using(timeout=120).enqueue(note_and_sleep, notes, 100)
        [(job_pid, parent)] = wait_until(lambda: noted(notes), "the timed job to start")
        assert parent == worker.pid
        worker.kill()  # SIGKILL, by pid: a process this test started
        worker.wait(30)
        wait_until(lambda: process_gone(job_pid), "the job process to end with its worker", 20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        if worker.stdin is not None:
            worker.stdin.close()
        if job_pid is not None and not process_gone(job_pid):
            os.kill(job_pid, signal.SIGKILL)  # the job this test enqueued, by pid
