"""Pure logic needing no broker: call descriptions, isolated runs, lanes."""

from __future__ import annotations

import asyncio
import threading
import time

from kq._calls import call_repr
from kq._isolate import run_inline, run_isolated
from kq._lanes import Lanes
from kq._loop import EventLoopThread
from kq.clients import login_settings
from kq.errors import JobProcessError
from kq.job import Job
from kq.message import Message


def _sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def _generator() -> object:
    return (n for n in range(3))  # generators cannot be pickled, even by dill


def test_call_repr_matches_kq() -> None:
    assert call_repr(_sleepy, (1,), {"b": 2, "a": "x"}) == "test_units._sleepy(1, a='x', b=2)"
    assert call_repr(len, ("ab",), {}) == "builtins.len('ab')"


def test_isolated_run_returns_value_exception_and_timeout() -> None:
    never = threading.Event()
    ok = run_isolated(Job(func=_sleepy, args=(0,)), 10, never)
    assert (ok.status, ok.value) == ("success", "woke")
    failed = run_isolated(Job(func=int, args=("x",)), 10, never)
    assert failed.status == "failure" and isinstance(failed.exception, ValueError)
    assert failed.stacktrace and "ValueError" in failed.stacktrace
    slow = run_isolated(Job(func=_sleepy, args=(30,)), 0.5, never)
    assert slow.status == "timeout"


def test_isolated_child_that_dies_is_a_failure() -> None:
    result = run_isolated(Job(func=__import__("os")._exit, args=(3,)), 10, threading.Event())
    assert result.status == "failure"
    assert isinstance(result.exception, JobProcessError)
    assert "exit code 3" in str(result.exception)


def test_unpicklable_result_is_a_failure_naming_it() -> None:
    result = run_isolated(Job(func=_generator), 10, threading.Event())
    assert result.status == "failure"
    assert "could not be sent back" in str(result.exception)


def test_abort_stops_isolated_job() -> None:
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()
    assert run_isolated(Job(func=_sleepy, args=(30,)), 60, abort).status == "aborted"


def test_inline_catches_system_exit() -> None:
    loop = EventLoopThread()
    result = run_inline(Job(func=__import__("sys").exit, args=(2,)), loop, threading.Event())
    assert result.status == "failure" and isinstance(result.exception, SystemExit)


async def _gather_point(arrived: list[int], total: int) -> int:
    arrived.append(1)
    for _ in range(200):  # at most ~2 s
        if len(arrived) >= total:
            return len(arrived)
        await asyncio.sleep(0.01)
    raise TimeoutError("the other coroutines never ran alongside this one")


def test_coroutine_jobs_share_one_loop_and_overlap() -> None:
    loop = EventLoopThread()
    arrived: list[int] = []
    results: list[str] = []

    def run_one() -> None:
        job = Job(func=_gather_point, args=(arrived, 3))
        results.append(run_inline(job, loop, threading.Event()).status)

    threads = [threading.Thread(target=run_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    loop.close()
    assert results == ["success"] * 3


async def _forever() -> None:
    await asyncio.sleep(3600)


def test_hard_stop_cancels_a_running_coroutine_job() -> None:
    loop = EventLoopThread()
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    assert run_inline(Job(func=_forever), loop, abort).status == "aborted"
    loop.close()


def test_lanes_keep_key_order_and_run_keys_in_parallel() -> None:
    seen: list[tuple[bytes | None, int]] = []
    lock = threading.Lock()
    running = 0
    peak = 0

    def handle(m: Message, tag: object) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
            seen.append((m.key, m.offset))
        return True

    finished: list[int] = []
    lanes = Lanes(4, handle, lambda m, tag, ok: finished.append(m.offset))
    keys = [b"a", b"b", b"c", b"d"]
    messages = [Message("t", 0, i, keys[i % 4], b"") for i in range(40)]
    lanes.submit((m, None) for m in messages)
    assert lanes.wait_idle(timeout=30)
    lanes.close()
    assert len(finished) == 40
    for key in keys:
        offsets = [o for k, o in seen if k == key]
        assert offsets == sorted(offsets)
    assert peak > 1


def test_lanes_discard_removes_only_queued_messages_of_partition() -> None:
    gate = threading.Event()
    lanes = Lanes(1, lambda m, tag: gate.wait(10), lambda m, tag, ok: None)
    lanes.submit([(Message("t", p, o, None, b""), None) for o in range(3) for p in (0, 1)])
    time.sleep(0.1)
    assert lanes.busy() and lanes.busy([("t", 0)]) and lanes.busy([("t", 1)])
    removed = lanes.discard([("t", 1)])
    assert {m.partition for m, _ in removed} == {1}
    # partition 1's messages were all queued (the one running is of partition 0)
    assert not lanes.busy([("t", 1)]) and not lanes.busy([("u", 0)])
    assert lanes.busy([("t", 0)]) and not lanes.wait_idle([("t", 0)], timeout=0.1)
    assert lanes.wait_idle([("t", 1)], timeout=0.1)
    gate.set()
    assert lanes.wait_idle(timeout=10)
    assert not lanes.busy()
    lanes.close()


def test_login_settings_keep_only_login_and_tls_in_confluent_keys() -> None:
    confluent = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": "/ca.pem",
        "group.id": "not-a-login",
        "fetch.min.bytes": 1,
    }
    assert login_settings(confluent, "confluent") == {
        k: v for k, v in confluent.items() if k not in ("group.id", "fetch.min.bytes")
    }
    kafka_python = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
        "ssl_cafile": None,
        "ssl_check_hostname": False,
        "max_poll_records": 10,
    }
    assert login_settings(kafka_python, "kafka-python") == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert login_settings(None, "confluent") == {} == login_settings({}, "kafka-python")
