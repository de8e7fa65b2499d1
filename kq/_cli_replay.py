"""``kq replay``: move a group's committed offsets back so that jobs run again."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import click

from kq._cli_common import (
    CONTEXT,
    connection,
    connection_options,
    fail,
    friendly,
    parse_time,
)
from kq._cli_config import ENV


@dataclass(frozen=True)
class _Move:
    partition: int
    committed: int | None
    target: int

    @property
    def again(self) -> int:
        return 0 if self.committed is None else max(self.committed - self.target, 0)


@click.command(context_settings=CONTEXT)
@click.argument("topic")
@connection_options
@click.option("-g", "--group", envvar=ENV["group"], help=f"consumer group [env {ENV['group']}]")
@click.option("--from-time", metavar="ISO-8601", help="jobs enqueued at or after this time")
@click.option("--from-offset", type=click.IntRange(min=0), help="jobs from this offset on")
@click.option(
    "--partition", "only", multiple=True, type=click.IntRange(min=0), help="only these; repeatable"
)
@click.option("--dry-run", is_flag=True, help="show what would move; change nothing")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@friendly
def replay(
    topic: str,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    group: str | None,
    from_time: str | None,
    from_offset: int | None,
    only: tuple[int, ...],
    dry_run: bool,
    yes: bool,
) -> int:
    """Move GROUP's committed offsets in TOPIC back, so jobs run again.

    Every job from the new position on runs again when the group's workers
    start (at least once: including jobs that succeeded, failed or were
    dead-lettered). The group must have no active members: stop its workers
    first. Offsets only move back; a partition already before the position
    is left alone.
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    if not group:
        raise click.UsageError(f"no consumer group: give --group or set {ENV['group']}")
    if (from_time is None) == (from_offset is None):
        raise click.UsageError("give --from-time or --from-offset (one of them)")
    moment = parse_time(from_time, "--from-time") if from_time is not None else None
    with conn.cluster() as cluster:
        partitions = cluster.partitions(topic)
        missing = sorted(set(only) - set(partitions))
        if missing:
            fail(f"topic {topic!r} has no partition {missing[0]} (it has {len(partitions)})")
        chosen = sorted(set(only)) if only else partitions
        described = cluster.describe_group(group)
        states = cluster.states(topic, group, chosen)
        if moment is not None:
            found = cluster.offsets_for_time(topic, chosen, int(moment.timestamp() * 1000))
            targets = {s.partition: found.get(s.partition) for s in states}
        else:
            targets = {s.partition: from_offset for s in states}
        moves = []
        for s in states:
            target = targets[s.partition]
            target = s.end if target is None else min(max(target, s.earliest), s.end)
            if s.committed is not None and target < s.committed:
                moves.append(_Move(s.partition, s.committed, target))
        _show_moves(topic, group, moves, moment, dry_run)
        active = len(described.members)
        if active:
            message = (
                f"group {group!r} has {active} active member(s) (state {described.state});"
                " stop its workers first: Kafka only lets an empty group's offsets be moved"
            )
            if dry_run:
                click.echo(f"note: {message}", err=True)
                return 0
            fail(message)
        if dry_run or not moves:
            return 0
        again = sum(m.again for m in moves)
        if not yes:
            click.confirm(
                f"Move group {group}'s offsets back on {len(moves)} partition(s);"
                f" {again} jobs will run again. Continue?",
                abort=True,
                err=True,
            )
        cluster.set_committed(group, topic, {m.partition: m.target for m in moves})
    click.echo(
        f"moved group {group} back on {len(moves)} partition(s): {again} jobs will run again"
    )
    return 0


def _show_moves(
    topic: str, group: str, moves: list[_Move], moment: datetime.datetime | None, dry_run: bool
) -> None:
    if not moves:
        click.echo(f"nothing to replay: group {group} is not past that position in {topic}")
        return
    since = f" (from {moment.astimezone(datetime.timezone.utc).isoformat()})" if moment else ""
    click.echo(f"{'would move' if dry_run else 'moving'} group {group} in {topic}{since}:")
    for m in moves:
        click.echo(f"  partition {m.partition}: {m.committed} -> {m.target} ({m.again} jobs again)")
