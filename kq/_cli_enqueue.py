"""``kq enqueue``: enqueue calls from the shell, one or many (JSON lines)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click

from kq._cli_common import (
    CONTEXT,
    connection,
    connection_options,
    fail,
    friendly,
    parse_time,
    retry_options,
)
from kq._cli_config import ENV
from kq._imports import cwd_on_path, import_object
from kq._progress import progress
from kq.refs import FunctionRef


@dataclass(frozen=True)
class _Call:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: tuple[tuple[str, Any], ...]
    """using() options, grouped on: jobs with equal options share a batch."""


def _json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise click.UsageError(
            f"{what} is not JSON: {text!r} (write strings as '\"text\"')"
        ) from None


def _job_options(
    key: str | None,
    partition: int | None,
    timeout: float | None,
    delay: float | None,
    eta: str | None,
    max_attempts: int | None,
    backoff: float,
    retry_timeouts: bool,
) -> tuple[tuple[str, Any], ...]:
    from kq.retry import RetryPolicy

    if delay is not None and eta is not None:
        raise click.UsageError("give --delay or --eta, not both")
    if key is not None and not isinstance(key, str):
        raise click.UsageError(f"the key must be a string, not {key!r}")
    if eta is not None and not isinstance(eta, str):
        raise click.UsageError(f"eta must be an ISO 8601 string, not {eta!r}")
    options: dict[str, Any] = {}
    if timeout:
        options["timeout"] = timeout
    if key is not None:
        options["key"] = key.encode()
    if partition is not None:
        options["partition"] = partition
    if delay:
        options["delay"] = delay
    if eta is not None:
        options["eta"] = parse_time(eta, "--eta")
    if max_attempts is not None:
        retry_on = {"failure", "timeout"} if retry_timeouts else {"failure"}
        options["retry"] = RetryPolicy(
            max_attempts=max_attempts, backoff=backoff, retry_on=frozenset(retry_on)
        )
    return tuple(sorted(options.items()))


def _calls_from_lines(
    lines: Iterable[str], defaults: dict[str, Any], functions: dict[str, Any]
) -> list[_Call]:
    calls: list[_Call] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except ValueError:
            raise click.UsageError(
                f"--jsonl line {number} is not JSON: {line.strip()[:80]!r}"
            ) from None
        if not isinstance(spec, dict) or not isinstance(spec.get("function"), str):
            raise click.UsageError(
                f'--jsonl line {number}: expected an object with "function": "module:name"'
            )
        unknown = set(spec) - {
            "function", "args", "kwargs", "key", "partition", "timeout", "delay", "eta",
            "max_attempts", "backoff", "retry_timeouts",
        }  # fmt: skip
        if unknown:
            raise click.UsageError(f"--jsonl line {number}: unknown fields {sorted(unknown)}")
        args, kwargs = spec.get("args", []), spec.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise click.UsageError(f"--jsonl line {number}: args must be a list, kwargs an object")
        merged = {**defaults, **{k: v for k, v in spec.items() if k in defaults}}
        path = spec["function"]
        if path not in functions:
            functions[path] = _job_function(path)
        try:
            options = _job_options(**merged)
        except (click.UsageError, TypeError, ValueError) as exc:
            message = exc.format_message() if isinstance(exc, click.UsageError) else str(exc)
            raise click.UsageError(f"--jsonl line {number}: {message}") from None
        calls.append(_Call(functions[path], tuple(args), kwargs, options))
    return calls


def _function(path: str) -> Callable[..., Any]:
    func = import_object(path, "function", require_attr=True)
    if not callable(func):
        raise click.UsageError(f"{path!r} is not callable")
    return func  # type: ignore[no-any-return]


def _job_function(path: str) -> Callable[..., Any]:
    """The job's function; by name (``kq.FunctionRef``) when its module is not here.

    The workers import it when they read the job; a module that exists here
    but lacks the name is a typo and an error now.
    """
    module = path.partition(":")[0]
    cwd_on_path()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        try:
            return FunctionRef(path)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    return _function(path)


@click.command(context_settings=CONTEXT)
@click.argument("topic")
@click.argument("function", required=False, metavar="[MODULE:FUNCTION]")
@click.argument("args", nargs=-1, metavar="[JSON_ARG]...")
@connection_options
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="keyword arguments, a JSON object")
@click.option("--key", help="Kafka message key (UTF-8): same key, same partition, in order")
@click.option("--partition", type=click.IntRange(min=0), help="write to this partition")
@click.option(
    "--timeout", "job_timeout", type=click.FloatRange(min=0), help="the job's timeout in seconds"
)
@click.option("--delay", type=click.FloatRange(min=0), help="run no sooner than in SECONDS")
@click.option("--eta", metavar="ISO-8601", help="run no sooner than this time")
@retry_options
@click.option(
    "--count", type=click.IntRange(min=1), default=1, show_default=True, help="enqueue N such jobs"
)
@click.option(
    "--jsonl",
    type=click.File("r"),
    help="enqueue one job per JSON line of this file ('-': stdin), e.g."
    ' {"function": "m:f", "args": [1], "kwargs": {}, "key": "k", "timeout": 5,'
    ' "delay": 1, "max_attempts": 3}; options given here are defaults',
)
@click.option(
    "--serializer",
    envvar=ENV["serializer"],
    metavar="MODULE:FUNC",
    help=f"turns a Job into bytes (default: KQ's dill-compatible one) [env {ENV['serializer']}]",
)
@click.option(
    "--json-jobs",
    is_flag=True,
    help="write jobs as JSON data (kq.json_jobs): for workers started with --json-jobs",
)
@click.option(
    "--signing-key",
    envvar=ENV["signing_key"],
    metavar="SECRET",
    help="sign the jobs (HMAC-SHA256); prefer the env var (arguments are visible to"
    f" other users) [env {ENV['signing_key']}]",
)
@click.option(
    "--expires",
    type=float,
    metavar="SECONDS",
    help="signed jobs: how long after they are due workers still run them (default a day)",
)
@click.option(
    "--delivery-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="seconds to wait for the broker's acknowledgement",
)
@friendly
def enqueue(
    topic: str,
    function: str | None,
    args: tuple[str, ...],
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    kwargs_json: str | None,
    key: str | None,
    partition: int | None,
    job_timeout: float | None,
    delay: float | None,
    eta: str | None,
    max_attempts: int | None,
    backoff: float,
    retry_timeouts: bool,
    count: int,
    jsonl: Any,
    serializer: str | None,
    json_jobs: bool,
    signing_key: str | None,
    expires: float | None,
    delivery_timeout: float,
) -> int:
    """Enqueue MODULE:FUNCTION(JSON_ARG, ...) to TOPIC; print each job's id.

    Each JSON_ARG is one JSON value: 42, 1.5, true, null, '"text"', '[1, 2]'.
    Put -- before arguments that start with a dash. The function must be
    importable by the workers, under the same module name.
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    defaults: dict[str, Any] = {
        "key": key,
        "partition": partition,
        "timeout": job_timeout,
        "delay": delay,
        "eta": eta,
        "max_attempts": max_attempts,
        "backoff": backoff,
        "retry_timeouts": retry_timeouts,
    }
    if jsonl is not None:
        if function is not None or args or kwargs_json is not None:
            raise click.UsageError("give MODULE:FUNCTION and arguments, or --jsonl, not both")
        calls = _calls_from_lines(jsonl, defaults, {}) * count
    else:
        if function is None:
            raise click.UsageError("missing MODULE:FUNCTION (or --jsonl FILE)")
        values = tuple(_json_value(a, f"argument {i}") for i, a in enumerate(args, 1))
        kwargs = _json_value(kwargs_json, "--kwargs") if kwargs_json is not None else {}
        if not isinstance(kwargs, dict):
            raise click.UsageError("--kwargs must be a JSON object, e.g. '{\"n\": 1}'")
        call = _Call(_job_function(function), values, kwargs, _job_options(**defaults))
        calls = [call] * count
    if json_jobs and serializer:
        raise click.UsageError("give --json-jobs or --serializer, not both")
    encode = _function(serializer) if serializer else None
    if json_jobs:
        from kq.json_jobs import dumps

        encode = dumps

    with conn.cluster() as cluster:
        partitions = cluster.partitions(topic)
    bad = sorted({p for c in calls for k, p in c.options if k == "partition"} - set(partitions))
    if bad:
        fail(f"topic {topic!r} has no partition {bad[0]} (it has {len(partitions)})")

    from kq.queue import Queue

    queue = Queue.connect(
        conn.bootstrap,
        topic,
        delivery_timeout=delivery_timeout,
        producer_config=conn.quiet_config(),
        admin_config=conn.quiet_config(),
        serializer=encode,
        signing_key=signing_key or None,
        expires=expires,
    )
    _enqueue_calls(queue, calls)
    return 0


_CHUNK = 1000


def _enqueue_calls(queue: Any, calls: list[_Call]) -> None:
    from kq.errors import BatchEnqueueError

    with progress("enqueue", len(calls)) as advance:
        for start in range(0, len(calls), _CHUNK):
            chunk = calls[start : start + _CHUNK]
            batches: dict[tuple[tuple[str, Any], ...], Any] = {}
            jobs = []
            for call in chunk:
                batch = batches.get(call.options)
                if batch is None:
                    batch = batches[call.options] = queue.using(**dict(call.options)).batch()
                jobs.append(batch.enqueue(call.func, *call.args, **call.kwargs))
            failed: list[Any] = []
            first: BaseException | None = None
            for batch in batches.values():
                try:
                    batch.flush()
                except BatchEnqueueError as exc:
                    failed += [job for job, _ in exc.failed]
                    first = first or exc.cause
            lost = {id(job) for job in failed}
            for job in jobs:
                if id(job) not in lost:
                    click.echo(job.id)
            advance(len(chunk) - len(failed))
            if failed:
                fail(f"{len(failed)} jobs were not enqueued (first cause: {first})")
