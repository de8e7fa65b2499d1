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
    safe_text,
)
from kq._cli_config import ENV
from kq._progress import progress


@click.group("dead-letters", context_settings=CONTEXT)
def dead_letters() -> None:
    """List, show and re-enqueue the dead-lettered jobs of a topic.

    A job that failed its last attempt of a retry policy is kept, unchanged,
    in TOPIC.kq-dead; so is a message a worker could not read as a job (a
    module it could not import). Kafka cannot delete single records: a
    requeued letter stays in the log, marked requeued, and is not requeued
    again unless --again.

    A letter is named by its position in the dead-letter topic (PARTITION:OFFSET,
    as `list` and the worker's log line show) or by the job's own position
    TOPIC/PARTITION/OFFSET (as in the worker's "Processing Message" line).

    Letters are never deserialized here: a job is read as data (JSON jobs) or
    its pickle's opcodes are walked without running them; everything shown is
    what the bytes claim. With --signing-key each letter's signature is checked
    and only validly signed letters are re-enqueued.
    """


def _dead_letter_options(func: Callable[P, R]) -> Callable[P, R]:
    func = click.option(
        "--signing-key",
        "signing_keys",
        multiple=True,
        envvar=ENV["signing_keys"],
        metavar="SECRET",
        help="the workers' signing secret(s): check each letter's signature; requeue only"
        f" validly signed ones (arguments are visible to other users) [env {ENV['signing_keys']},"
        " space-separated]",
    )(func)
    func = click.option(
        "--dead-letter-topic",
        envvar=ENV["dead_letter_topic"],
        help=f"default TOPIC.kq-dead [env {ENV['dead_letter_topic']}]",
    )(func)
    return connection_options(func)


def _letters_api(
    conn: Connection, topic: str, dead_letter_topic: str | None, signing_keys: Sequence[str]
) -> Any:
    from kq.dead_letters import DeadLetters

    with conn.cluster() as cluster:
        cluster.partitions(topic)
    return DeadLetters(
        conn.bootstrap,
        topic,
        dead_letter_topic_name=dead_letter_topic,
        config=conn.quiet_config(),
        delivery_timeout=30.0,
        signing_keys=list(signing_keys) or None,
    )


def _letter_dict(letter: Any, full: bool = False) -> dict[str, Any]:
    """A letter as data; every text in it is untrusted (escape it before printing)."""
    job = letter.describe()
    data: dict[str, Any] = {
        "position": f"{letter.partition}:{letter.offset}",
        "partition": letter.partition,
        "offset": letter.offset,
        "job_id": job.job_id,
        "call": job.call,
        "format": job.format,
        "size": job.size,
        "sha256": job.sha256,
        "signature": letter.signature,
        "problems": list(letter.problems),
        "source": f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}",
        "status": letter.status,
        "attempts": letter.attempts,
        "first_enqueued": ms_to_iso(letter.first_enqueued_ms),
        "requeued_to": letter.requeued_to or None,
        "requeued": ms_to_iso(letter.requeued_ms) if letter.requeued_ms is not None else None,
        "error": letter.error,
        "key": letter.key.decode(errors="replace") if letter.key is not None else None,
    }
    if full:
        data["traceback"] = letter.traceback
        data["headers"] = {
            k: v.decode(errors="replace") for k, v in letter.headers.items() if k != "kq-traceback"
        }
    return data


def _letters_at(api: Any, position: str, timeout: float) -> list[Any]:
    """The letter at PARTITION:OFFSET, or the letters of the job at TOPIC/PARTITION/OFFSET."""
    if "/" not in position:
        partition, offset = parse_position(position)
        try:
            return [api.get(partition, offset, timeout=timeout)]
        except LookupError as exc:
            fail(str(exc))
    rest, _, offset_text = position.rpartition("/")
    source, _, partition_text = rest.rpartition("/")
    if not source or not partition_text.isdigit() or not offset_text.isdigit():
        raise click.UsageError(
            f"expected PARTITION:OFFSET (0:42) or TOPIC/PARTITION/OFFSET (jobs/0/42),"
            f" not {position!r}"
        )
    found = api.find(source, int(partition_text), int(offset_text), timeout=timeout)
    if not found:
        fail(f"no dead letter of the job at {position} in {api.dead_topic}")
    return list(found)


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
    signing_keys: tuple[str, ...],
) -> int:
    """List TOPIC's dead letters, oldest first per partition (read as data, never run)."""
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    api = _letters_api(conn, topic, dead_letter_topic, signing_keys)
    letters = [
        _letter_dict(x) for x in api.list(limit=limit, since=_since(since), timeout=conn.timeout)
    ]
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return 0
    if not letters:
        click.echo(safe_text(f"no dead letters in {api.dead_topic}"))
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table()
    columns = ["at", "job", "status", "attempts", "first enqueued", "error"]
    if signing_keys:
        columns.insert(2, "signature")
    requeued = any(x["requeued_to"] for x in letters)
    if requeued:
        columns.append("requeued to")
    for column in columns:
        table.add_column(column, overflow="fold")
    for x in letters:
        # Text objects: untrusted text is never read as rich markup.
        error = Text(safe_text(x["error"], limit=80))
        if x["problems"]:
            error = Text("malformed: " + safe_text("; ".join(x["problems"]), limit=120), "red")
        cells = [
            Text(x["position"]),
            Text(f"{safe_text(x['call'], limit=60)}\n{safe_text(x['job_id'] or '?', limit=64)}"),
            Text(safe_text(x["status"], limit=20)),
            Text(str(x["attempts"] if x["attempts"] is not None else "?")),
            Text(x["first_enqueued"]),
            error,
        ]
        if signing_keys:
            cells.insert(2, Text(safe_text(x["signature"], limit=40)))
        if requeued:
            cells.append(Text(safe_text(x["requeued_to"] or "-", limit=60)))
        table.add_row(*cells)
    out = console()
    out.print(Text(safe_text(f"dead letters of {topic} ({api.dead_topic})")))
    out.print(table)
    return 0


@dead_letters.command("show", context_settings=CONTEXT)
@click.argument("topic")
@click.argument("position", metavar="PARTITION:OFFSET|TOPIC/PARTITION/OFFSET")
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
    signing_keys: tuple[str, ...],
) -> int:
    """Show a dead letter in full, with its traceback (read as data, never run).

    Given the job's TOPIC/PARTITION/OFFSET, every letter of that job is shown.
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    api = _letters_api(conn, topic, dead_letter_topic, signing_keys)
    shown = [_letter_dict(x, full=True) for x in _letters_at(api, position, conn.timeout)]
    if as_json:
        click.echo(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
        return 0
    for number, data in enumerate(shown):
        if number:
            click.echo()
        for name in ("position", "job_id", "call", "format", "size", "sha256", "signature",
                     "source", "status", "attempts", "first_enqueued", "requeued_to", "requeued",
                     "key", "error"):  # fmt: skip
            value = data[name]
            click.echo(f"{name:15} {safe_text(str('-' if value is None else value))}")
        for problem in data["problems"]:
            click.echo(f"{'malformed':15} {safe_text(problem)}")
        click.echo("headers:")
        for key, value in data["headers"].items():
            click.echo(f"  {safe_text(key)}: {safe_text(value, limit=500)}")
        click.echo("traceback:")
        click.echo(safe_text(data["traceback"].rstrip(), multiline=True) or "-")
    return 0


@dead_letters.command("requeue", context_settings=CONTEXT)
@click.argument("topic")
@click.argument("positions", nargs=-1, metavar="[PARTITION:OFFSET|TOPIC/PARTITION/OFFSET]...")
@_dead_letter_options
@click.option("--all", "all_", is_flag=True, help="every dead letter (up to --limit, from --since)")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--since", multiple=True, metavar="PARTITION:OFFSET", help="with --all; repeatable")
@click.option("--to", "target", metavar="TOPIC", help="enqueue to this topic instead")
@click.option(
    "--again", is_flag=True, help="also letters already requeued (each is requeued once otherwise)"
)
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
    again: bool,
    yes: bool,
    signing_keys: tuple[str, ...],
) -> int:
    """Enqueue dead letters again, each with a fresh set of attempts.

    They go to TOPIC, or to the topic --to names; never where a letter's own
    headers point. With --signing-key they are signed again with the first
    key (a signed letter cannot be re-enqueued without it). The letters stay
    in the dead-letter topic (Kafka cannot delete single records), each marked
    requeued: a letter is requeued once unless --again (--all skips them).
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    if bool(positions) == all_:
        raise click.UsageError("give positions or --all (not both)")
    api = _letters_api(conn, topic, dead_letter_topic, signing_keys)
    if target is not None:
        with conn.cluster() as cluster:
            cluster.partitions(target)
    if all_:
        letters = api.list(limit=limit, since=_since(since), timeout=conn.timeout)
        done = [x for x in letters if x.requeued_to and not again]
        letters = [x for x in letters if x not in done]
        if done:
            click.echo(f"{len(done)} letters already requeued skipped (--again to include them)")
        if not letters:
            click.echo(safe_text(f"no dead letters to requeue in {api.dead_topic}"))
            return 0
    else:
        letters = []
        for position in positions:
            found = _letters_at(api, position, conn.timeout)
            if len(found) > 1:
                fail(
                    f"{len(found)} dead letters of the job at {position}: name one of "
                    + ", ".join(f"{x.partition}:{x.offset}" for x in found)
                )
            letters.extend(found)

    def refusal(letter: Any) -> str:
        if letter.requeued_to and not again:
            return f"already requeued to {letter.requeued_to} (--again to requeue it once more)"
        return str(api.refusal(letter))

    good = [x for x in letters if not refusal(x)]
    for letter in letters:
        if refusal(letter):
            click.echo(
                f"{letter.partition}:{letter.offset} not requeued: "
                + safe_text(refusal(letter), limit=300),
                err=True,
            )
    if good and all_ and not yes:
        click.confirm(f"Re-enqueue {len(good)} dead letters?", abort=True, err=True)
    with progress("requeue", len(good)) as advance:
        for letter in good:
            api.requeue(letter, topic=target, again=again)
            destination = target or topic
            job_id = letter.describe().job_id or "?"
            click.echo(
                f"{letter.partition}:{letter.offset} -> {safe_text(destination)}"
                f" {safe_text(job_id, limit=64)}"
            )
            advance(1)
    if len(good) < len(letters):
        fail(f"{len(letters) - len(good)} of {len(letters)} dead letters not requeued (see above)")
    return 0
