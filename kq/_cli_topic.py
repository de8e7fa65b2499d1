"""``kq topic``: create job topics and list them."""

from __future__ import annotations

import click

from kq._cli_common import CONTEXT, connection, connection_options, friendly
from kq._cli_config import ConfigError, parse_pairs


@click.group(context_settings=CONTEXT)
def topic() -> None:
    """Create and list topics (a job topic must exist before jobs are enqueued)."""


@topic.command(context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "-p",
    "--partitions",
    type=click.IntRange(min=1),
    required=True,
    help="partitions: a group runs at most one worker process per partition at a time",
)
@click.option(
    "-r",
    "--replication-factor",
    type=click.IntRange(min=1),
    help="copies of each partition (default: the cluster's default)",
)
@click.option(
    "--config",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="a topic setting, e.g. --config retention.ms=604800000; repeatable",
)
@connection_options
@friendly
def create(
    name: str,
    partitions: int,
    replication_factor: int | None,
    settings: tuple[str, ...],
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
) -> int:
    """Create topic NAME and wait until every partition has a leader."""
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    try:
        config = parse_pairs(settings, source="--config")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    with conn.cluster() as cluster:
        cluster.topics()  # the cluster answers, or one line says it does not
        created = cluster.create_topic(name, partitions, replication_factor, config)
    click.echo(f"created topic {name} ({len(created)} partitions)")
    return 0


@topic.command("list", context_settings=CONTEXT)
@connection_options
@friendly
def list_topics(
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
) -> int:
    """List the cluster's topics with their partition counts (kq's own topics too)."""
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    with conn.cluster() as cluster:
        topics = cluster.topics()
    for name in sorted(t for t in topics if not t.startswith("__")):
        click.echo(f"{name}\t{len(topics[name])}")
    return 0
