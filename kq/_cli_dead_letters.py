"""``kq dead-letters list|show|requeue``: the dead-lettered jobs of a topic."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from kq._cli_common import (
    CONTEXT,
    Connection,
    P,
    R,
    connection,
    connection_options,
    console,
    fail,
    friendly,
    ms_to_iso,
    parse_position,
)
from kq._cli_config import ENV
from kq._progress import progress


@click.group("dead-letters", context_settings=CONTEXT)
def dead_letters() -> None:
    """List, show and re-enqueue the dead-lettered jobs of a topic.

    A job that failed its last attempt of a retry policy is kept, unchanged,
    in TOPIC.kq-dead. Kafka cannot delete single records: re-enqueued letters
    stay in the log; use --since to skip what you have handled.
    """


def _dead_letter_options(func: Callable[P, R]) -> Callable[P, R]:
    func = click.option(
        "--dead-letter-topic",
        envvar=ENV["dead_letter_topic"],
        help=f"default TOPIC.kq-dead [env {ENV['dead_letter_topic']}]",
    )(func)
    return connection_options(func)


def _letters_api(conn: Connection, topic: str, dead_letter_topic: str | None) -> Any:
    from kq.dead_letters import DeadLetters

    with conn.cluster() as cluster:
        cluster.partitions(topic)
    return DeadLetters(
        conn.bootstrap,
        topic,
        dead_letter_topic_name=dead_letter_topic,
        config=conn.quiet_config(),
        delivery_timeout=30.0,
    )


def _describe_job(letter: Any) -> tuple[str | None, str]:
    """(job id, call) of a dead letter; the call says so when the job cannot be loaded."""
    from kq._calls import call_repr

    try:
        job = letter.job()
        return job.id, call_repr(job.func, job.args or (), job.kwargs or {})
    except Exception as exc:
        return None, f"<cannot load the job: {type(exc).__name__}: {exc}>"


def _letter_dict(letter: Any, full: bool = False) -> dict[str, Any]:
    job_id, call = _describe_job(letter)
    data: dict[str, Any] = {
        "position": f"{letter.partition}:{letter.offset}",
        "partition": letter.partition,
        "offset": letter.offset,
        "job_id": job_id,
        "call": call,
        "source": f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}",
        "status": letter.status,
        "attempts": letter.attempts,
        "first_enqueued": ms_to_iso(letter.first_enqueued_ms),
        "error": letter.error,
        "key": letter.key.decode(errors="replace") if letter.key is not None else None,
    }
    if full:
        data["traceback"] = letter.traceback
        data["headers"] = {
            k: v.decode(errors="replace") for k, v in letter.headers.items() if k != "kq-traceback"
        }
    return data


def _since(values: Sequence[str]) -> dict[int, int] | None:
    return dict(parse_position(v) for v in values) or None


@dead_letters.command("list", context_settings=CONTEXT)
@click.argument("topic")
@_dead_letter_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--since", multiple=True, metavar="PARTITION:OFFSET", help="start there; repeatable")
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@friendly
def dead_letters_list(
    topic: str,
    dead_letter_topic: str | None,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    limit: int,
    since: tuple[str, ...],
    as_json: bool,
) -> int:
    """List TOPIC's dead letters, oldest first per partition."""
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    api = _letters_api(conn, topic, dead_letter_topic)
    letters = [
        _letter_dict(x) for x in api.list(limit=limit, since=_since(since), timeout=conn.timeout)
    ]
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return 0
    if not letters:
        click.echo(f"no dead letters in {api.dead_topic}")
        return 0
    from rich.table import Table

    table = Table()
    for column in ("at", "job", "status", "attempts", "first enqueued", "error"):
        table.add_column(column, overflow="fold")
    for x in letters:
        table.add_row(
            x["position"],
            f"{x['call'][:60]}\n{x['job_id'] or '?'}",
            x["status"],
            str(x["attempts"]),
            x["first_enqueued"],
            x["error"][:80],
        )
    out = console()
    out.print(f"dead letters of {topic} ({api.dead_topic})", highlight=False)
    out.print(table)
    return 0


@dead_letters.command("show", context_settings=CONTEXT)
@click.argument("topic")
@click.argument("position", metavar="PARTITION:OFFSET")
@_dead_letter_options
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@friendly
def dead_letters_show(
    topic: str,
    position: str,
    dead_letter_topic: str | None,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    as_json: bool,
) -> int:
    """Show one dead letter in full, with its traceback."""
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    partition, offset = parse_position(position)
    api = _letters_api(conn, topic, dead_letter_topic)
    try:
        letter = api.get(partition, offset, timeout=conn.timeout)
    except LookupError as exc:
        fail(str(exc))
    data = _letter_dict(letter, full=True)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return 0
    for name in ("position", "job_id", "call", "source", "status", "attempts", "first_enqueued",
                 "key", "error"):  # fmt: skip
        click.echo(f"{name:15} {data[name]}")
    click.echo("traceback:")
    click.echo(data["traceback"].rstrip() or "-")
    return 0


@dead_letters.command("requeue", context_settings=CONTEXT)
@click.argument("topic")
@click.argument("positions", nargs=-1, metavar="[PARTITION:OFFSET]...")
@_dead_letter_options
@click.option("--all", "all_", is_flag=True, help="every dead letter (up to --limit, from --since)")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--since", multiple=True, metavar="PARTITION:OFFSET", help="with --all; repeatable")
@click.option("--to", "target", metavar="TOPIC", help="enqueue to this topic instead")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation (--all)")
@friendly
def dead_letters_requeue(
    topic: str,
    positions: tuple[str, ...],
    dead_letter_topic: str | None,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    all_: bool,
    limit: int,
    since: tuple[str, ...],
    target: str | None,
    yes: bool,
) -> int:
    """Enqueue dead letters again, each with a fresh set of attempts.

    The letters stay in the dead-letter topic (Kafka cannot delete single
    records); note the positions you re-enqueued, or use --since next time.
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    if bool(positions) == all_:
        raise click.UsageError("give PARTITION:OFFSET positions or --all (not both)")
    wanted = [parse_position(p) for p in positions]
    api = _letters_api(conn, topic, dead_letter_topic)
    if target is not None:
        with conn.cluster() as cluster:
            cluster.partitions(target)
    if all_:
        letters = api.list(limit=limit, since=_since(since), timeout=conn.timeout)
        if not letters:
            click.echo(f"no dead letters in {api.dead_topic}")
            return 0
        if not yes:
            click.confirm(f"Re-enqueue {len(letters)} dead letters?", abort=True, err=True)
    else:
        letters = []
        for partition, offset in wanted:
            try:
                letters.append(api.get(partition, offset, timeout=conn.timeout))
            except LookupError as exc:
                fail(str(exc))
    with progress("requeue", len(letters)) as advance:
        for letter in letters:
            api.requeue(letter, topic=target)
            job_id, _ = _describe_job(letter)
            destination = target or letter.source_topic or topic
            click.echo(f"{letter.partition}:{letter.offset} -> {destination} {job_id or '?'}")
            advance(1)
    return 0
