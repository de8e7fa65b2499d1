"""The ``kq`` command: run workers, enqueue jobs, inspect and replay a queue.

Every option can also come from an environment variable (``KQ_BOOTSTRAP``,
``KQ_GROUP``, …; see ``kq._cli_config.ENV`` and the README), and Kafka client
settings pass through as ``-X key=value``. A user's mistake ends with one line
on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from kq._cli_common import (
    CONTEXT,
    CommandError,
    connection,
    connection_options,
    friendly,
    retry_options,
)
from kq._cli_config import ENV
from kq._cli_dead_letters import dead_letters
from kq._cli_enqueue import enqueue
from kq._cli_info import info
from kq._cli_local import local_kafka
from kq._cli_replay import replay
from kq._cli_topic import topic
from kq._imports import cwd_on_path
from kq._worker_run import WorkerSettings, configure_logging, run_worker, worker_options
from kq.version import __version__

__all__ = ["cli", "main"]

_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


# -- the group ---------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="kq")
def cli() -> None:
    """kq: a job queue on Apache Kafka.

    Options can also be set in the environment (KQ_BOOTSTRAP, KQ_GROUP, ...);
    Kafka client settings pass through with -X key=value.
    """


for command in (enqueue, info, dead_letters, replay, topic, local_kafka):
    cli.add_command(command)


# -- worker ------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("topic")
@connection_options
@click.option("-g", "--group", envvar=ENV["group"], help=f"consumer group [env {ENV['group']}]")
@click.option(
    "--app",
    "apps",
    multiple=True,
    envvar=ENV["app"],
    metavar="MODULE[:DICT]",
    help="import MODULE first (your jobs); MODULE:DICT also passes that dict's keys as Worker"
    f" options; repeatable [env {ENV['app']}]",
)
@click.option(
    "--callback",
    envvar=ENV["callback"],
    metavar="MODULE:FUNC",
    help=f"the worker's callback [env {ENV['callback']}]",
)
@click.option(
    "--deserializer",
    envvar=ENV["deserializer"],
    metavar="MODULE:FUNC",
    help=f"turns message bytes into a Job [env {ENV['deserializer']}]",
)
@click.option(
    "--json-jobs",
    "json_jobs",
    multiple=True,
    envvar=ENV["json_jobs"],
    metavar="MODULE[:FUNC]",
    help="read jobs as JSON (kq.json_jobs) and run only these functions (a module allows"
    f" the public functions and classes defined in it); repeatable [env {ENV['json_jobs']}]",
)
@click.option(
    "--signing-key",
    "signing_keys",
    multiple=True,
    envvar=ENV["signing_keys"],
    metavar="SECRET",
    help="run only jobs signed with one of these secrets, newest first; prefer the env var"
    f" (arguments are visible to other users) [env {ENV['signing_keys']}, space-separated]",
)
@click.option(
    "--max-message-bytes",
    envvar=ENV["max_message_bytes"],
    type=click.IntRange(min=1),
    help=f"refuse larger messages as invalid [env {ENV['max_message_bytes']}]",
)
@click.option(
    "-p",
    "--processes",
    envvar=ENV["processes"],
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help=f"worker processes in the group, under one supervisor [env {ENV['processes']}]",
)
@click.option(
    "-c",
    "--concurrency",
    envvar=ENV["concurrency"],
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help=f"jobs run at once per process, key order kept [env {ENV['concurrency']}]",
)
@click.option(
    "--max-in-flight",
    envvar=ENV["max_in_flight"],
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help=f"jobs fetched and not finished, per process [env {ENV['max_in_flight']}]",
)
@click.option(
    "--shutdown-timeout",
    envvar=ENV["shutdown_timeout"],
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help=f"seconds running jobs get to finish on SIGTERM [env {ENV['shutdown_timeout']}]",
)
@retry_options
@click.option(
    "--dead-letter-topic",
    envvar=ENV["dead_letter_topic"],
    help=f"default TOPIC.kq-dead [env {ENV['dead_letter_topic']}]",
)
@click.option(
    "--keep-invalid/--no-keep-invalid",
    envvar=ENV["keep_invalid"],
    default=None,
    help="write messages that are not runnable jobs (a function the worker cannot import)"
    " to the dead-letter topic before committing them (default: when --max-attempts or"
    f" --dead-letter-topic is given) [env {ENV['keep_invalid']}]",
)
@click.option(
    "--metrics-port",
    envvar=ENV["metrics_port"],
    type=click.IntRange(min=1, max=65535),
    help="serve Prometheus metrics on this port (process i of --processes on PORT+i)"
    f" [env {ENV['metrics_port']}]",
)
@click.option(
    "--metrics-host",
    envvar=ENV["metrics_host"],
    default="127.0.0.1",
    show_default=True,
    help=f"address the metrics endpoint listens on [env {ENV['metrics_host']}]",
)
@click.option(
    "--max-restarts",
    envvar=ENV["max_restarts"],
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="with --processes: give up after more restarts than this within --restart-window"
    f" [env {ENV['max_restarts']}]",
)
@click.option(
    "--restart-window",
    envvar=ENV["restart_window"],
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help=f"seconds [env {ENV['restart_window']}]",
)
@click.option(
    "--reload",
    is_flag=True,
    help="development: restart the workers when a *.py file under the current folder changes",
)
@click.option(
    "--log-level",
    envvar=ENV["log_level"],
    type=_LEVELS,
    default="INFO",
    show_default=True,
    help=f"[env {ENV['log_level']}]",
)
@click.option(
    "--log-jobs",
    is_flag=True,
    envvar=ENV["log_jobs"],
    help="also log KQ's lines for every job on kq.worker (as --log-level DEBUG does);"
    f" off: only failures, and a summary on kq.runtime [env {ENV['log_jobs']}]",
)
@click.option(
    "--summary-interval",
    envvar=ENV["summary_interval"],
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="seconds between summary lines (jobs by outcome, rate, lag) on kq.runtime; 0: none"
    f" [env {ENV['summary_interval']}]",
)
@friendly
def worker(
    topic: str,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    group: str | None,
    apps: tuple[str, ...],
    callback: str | None,
    deserializer: str | None,
    json_jobs: tuple[str, ...],
    signing_keys: tuple[str, ...],
    max_message_bytes: int | None,
    processes: int,
    concurrency: int,
    max_in_flight: int,
    shutdown_timeout: float,
    max_attempts: int | None,
    backoff: float,
    retry_timeouts: bool,
    dead_letter_topic: str | None,
    keep_invalid: bool | None,
    metrics_port: int | None,
    metrics_host: str,
    max_restarts: int,
    restart_window: float,
    reload: bool,
    log_level: str,
    log_jobs: bool,
    summary_interval: float,
) -> int:
    """Run workers for TOPIC until SIGTERM or Ctrl-C (a second one stops at once).

    Jobs' functions must be importable here: run it from your project's folder,
    set PYTHONPATH, or name modules with --app. With --processes N, N worker
    processes share the group under a supervisor that restarts crashed ones;
    each gets KQ_WORKER_INDEX=0..N-1.
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    if not group:
        raise click.UsageError(f"no consumer group: give --group or set {ENV['group']}")
    if json_jobs and deserializer:
        raise click.UsageError("give --json-jobs or --deserializer, not both")
    if metrics_port is not None and metrics_port + processes - 1 > 65535:
        raise click.UsageError(
            f"--metrics-port {metrics_port} leaves no port for {processes} processes"
        )
    configure_logging(log_level, log_jobs)
    with conn.cluster() as cluster:
        cluster.partitions(topic)  # reachable, and the topic exists
    settings = WorkerSettings(
        bootstrap=conn.bootstrap,
        topic=topic,
        group=group,
        client_config=conn.config,
        apps=list(apps),
        callback=callback,
        deserializer=deserializer,
        json_jobs=list(json_jobs),
        signing_keys=list(signing_keys),
        max_message_bytes=max_message_bytes,
        concurrency=concurrency,
        max_in_flight=max_in_flight,
        shutdown_timeout=shutdown_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        retry_timeouts=retry_timeouts,
        dead_letter_topic=dead_letter_topic,
        keep_invalid=keep_invalid,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        log_level=log_level.upper(),
        log_jobs=log_jobs,
        summary_interval=summary_interval,
        reload=reload,
    )
    worker_options(settings)  # bad import paths fail here, once, before any process starts
    if processes == 1 and not reload:
        return run_worker(settings)
    from kq._reload import CodeWatcher
    from kq.supervisor import Supervisor

    def settings_for(index: int) -> str:
        return dataclasses.replace(settings, index=index).to_json()

    supervisor = Supervisor(
        processes,
        settings_for,
        max_restarts=max_restarts,
        restart_window=restart_window,
        stop_timeout=shutdown_timeout + 15.0,
        watch=CodeWatcher([os.getcwd()]).changed if reload else None,
    )
    return supervisor.run()


# -- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``kq``; errors end in one line on stderr and a non-zero exit code."""
    cwd_on_path()
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="kq", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("kq: aborted; nothing was changed", err=True)
        sys.exit(1)
    except CommandError as exc:
        click.echo(f"{exc.command_path}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "kq"
        message = " ".join(exc.format_message().split())
        click.echo(f"{path}: error: {message} (see '{path} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"kq: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
