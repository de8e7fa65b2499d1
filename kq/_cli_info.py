"""``kq info``: a topic's offsets, a group's committed offsets, lag and members."""

from __future__ import annotations

import json
from typing import Any

import click

from kq._admin import Cluster, ClusterError
from kq._cli_common import (
    CONTEXT,
    connection,
    connection_options,
    console,
    friendly,
)
from kq._cli_config import ENV


def _info(cluster: Cluster, topic: str, group: str | None) -> dict[str, Any]:
    from kq.schedule import dead_letter_topic

    states = cluster.states(topic, group)
    info: dict[str, Any] = {
        "topic": topic,
        "bootstrap": cluster.bootstrap,
        "partitions": [
            {
                "partition": s.partition,
                "earliest": s.earliest,
                "end": s.end,
                "committed": s.committed,
                "lag": s.lag if group else None,
            }
            for s in states
        ],
        "total": {
            "jobs": sum(s.end - s.earliest for s in states),
            "end": sum(s.end for s in states),
            "lag": sum(s.lag for s in states) if group else None,
        },
        "group": None,
    }
    if group:
        described = cluster.describe_group(group)
        info["group"] = {
            "id": group,
            "state": described.state,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "partitions": [p for t, p in m.assignment if t == topic],
                }
                for m in described.members
            ],
        }
    dead = dead_letter_topic(topic)
    if dead in cluster.topics():
        held = 0
        for p in cluster.partitions(dead):
            low, high = cluster.watermarks(dead, p)
            held += high - low
        info["dead_letters"] = {"topic": dead, "count": held}
    else:
        info["dead_letters"] = {"topic": dead, "count": 0}
    info["delay"] = _delay_info(cluster, topic)
    return info


def _delay_info(cluster: Cluster, topic: str) -> dict[str, Any]:
    """Jobs waiting in the delay tiers, and the forwarder group that moves them."""
    from kq.schedule import delay_topics, forwarder_group

    group = forwarder_group(topic)
    existing = cluster.topics()
    tiers = []
    try:
        for tier in (t for t in delay_topics(topic) if t in existing):
            states = cluster.states(tier, group)
            tiers.append({"topic": tier, "waiting": sum(s.lag for s in states)})
        described = cluster.describe_group(group)
    except ClusterError as exc:
        return {"group": group, "error": str(exc)}
    return {
        "group": group,
        "state": described.state,
        "members": [{"client_id": m.client_id, "host": m.host} for m in described.members],
        "waiting": sum(t["waiting"] for t in tiers),
        "tiers": tiers,
    }


def _show_info(info: dict[str, Any]) -> None:
    from rich.table import Table

    group = info["group"]
    title = f"topic {info['topic']}"
    if group is not None:
        title += f", group {group['id']} ({group['state']}, {len(group['members'])} members)"
    table = Table()
    for column in ("partition", "earliest", "end", "committed", "lag"):
        table.add_column(column, justify="right")

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    for row in info["partitions"]:
        table.add_row(*(cell(row[c]) for c in ("partition", "earliest", "end", "committed", "lag")))
    total = info["total"]
    table.add_section()
    table.add_row("total", "", cell(total["end"]), "", cell(total["lag"]))
    out = console()
    out.print(title, highlight=False)
    out.print(table)
    if group is not None and group["members"]:
        members = Table()
        for column in ("member", "client id", "host", "partitions"):
            members.add_column(column, overflow="fold")
        for m in group["members"]:
            partitions = ", ".join(str(p) for p in m["partitions"]) or "-"
            members.add_row(m["member_id"], m["client_id"], m["host"], partitions)
        out.print("members", highlight=False)
        out.print(members)
    dead = info["dead_letters"]
    out.print(f"dead letters: {dead['count']} in {dead['topic']}", highlight=False)
    delay = info["delay"]
    if "error" in delay:
        out.print(f"delay tiers: unknown ({delay['error']})", highlight=False)
    else:
        out.print(
            f"delay tiers: {delay['waiting']} waiting; forwarder group {delay['group']}"
            f" ({delay['state']}, {len(delay['members'])} members)",
            highlight=False,
        )


@click.command(context_settings=CONTEXT)
@click.argument("topic")
@connection_options
@click.option("-g", "--group", envvar=ENV["group"], help=f"consumer group [env {ENV['group']}]")
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@friendly
def info(
    topic: str,
    bootstrap: str | None,
    client_settings: tuple[str, ...],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
    group: str | None,
    as_json: bool,
) -> int:
    """Show TOPIC's partitions, end offsets, a group's committed offsets, lag and members.

    Lag is what the group has not finished yet: end offset minus committed
    offset (or minus the earliest offset where it has committed nothing).
    Also: the dead letters, the jobs waiting in the delay tiers and the state
    of the delay forwarders' group (no members while workers run: forwarding
    is down).
    """
    conn = connection(bootstrap, client_settings, client_config_file, connect_timeout, verbose)
    with conn.cluster() as cluster:
        data = _info(cluster, topic, group)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _show_info(data)
    return 0
