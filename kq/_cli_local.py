"""``kq local-kafka`` (and ``python -m kq.local``, the same command): a development broker.

It listens on 127.0.0.1:9092 when that port is free, so the quick start's
address works as written; when 9092 is taken it says so and uses a free port
(``--port N`` asks for a port and fails if it is taken; ``--port 0`` always
takes a free one).
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import click

from kq._cli_common import CONTEXT, fail, friendly
from kq._cli_config import ENV

DEFAULT_PORT = 9092


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _topics(specs: tuple[str, ...]) -> list[tuple[str, int]]:
    wanted: list[tuple[str, int]] = []
    for spec in specs:
        name, _, count = spec.partition(":")
        if not name or (count and not count.isdigit()) or count == "0":
            raise click.UsageError(f"--topic expects NAME or NAME:PARTITIONS, not {spec!r}")
        wanted.append((name, int(count or 1)))
    return wanted


@click.command("local-kafka", context_settings=CONTEXT)
@click.option("--nodes", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    help=f"node 1's client port (default {DEFAULT_PORT} when free, else a free one; 0: a free one)",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="NAME[:PARTITIONS]",
    help="create this topic once up; repeatable",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="keep the data here")
@click.option("--version", "kafka_version", help="Apache Kafka version (4.x; default: kq's)")
@click.option(
    "--auth",
    is_flag=True,
    help="SASL/SCRAM logins and ACLs (admin 'admin'/'admin-secret' unless --admin)",
)
@click.option(
    "--users-file",
    envvar="KQ_LOCAL_USERS_FILE",
    metavar="PATH",
    help="SCRAM users, one NAME=PASSWORD per line, in a file only you can read (chmod 600);"
    " the line of the --admin name (default 'admin') is the super user; implies --auth"
    " [env KQ_LOCAL_USERS_FILE]",
)
@click.option(
    "--admin",
    metavar="NAME",
    help="the super user, its password in --users-file (NAME=PASSWORD works but is visible"
    " to other users); implies --auth",
)
@click.option(
    "--user",
    "users",
    metavar="NAME=PASSWORD",
    multiple=True,
    help="a SCRAM user (repeatable; implies --auth); visible to every user of the machine:"
    " prefer --users-file",
)
@friendly
def local_kafka(
    nodes: str,
    port: int | None,
    topics: tuple[str, ...],
    workdir: str | None,
    kafka_version: str | None,
    auth: bool,
    users_file: str | None,
    admin: str | None,
    users: tuple[str, ...],
) -> int:
    """Run a local Apache Kafka in the foreground until Ctrl-C (or SIGTERM).

    Prints bootstrap_servers=HOST:PORT first; the data is thrown away on exit
    unless --workdir is given. Topics are not created by clients here
    (auto-create is off): create them with --topic or `kq topic create`.
    """
    from kq._local_users import credentials
    from kq.local import KAFKA_VERSION, LocalAuth, LocalKafka, port_is_free

    wanted = _topics(topics)
    login: LocalAuth | None = None
    if auth or admin or users or users_file:
        prog = click.get_current_context().command_path
        try:
            admin_login, accounts = credentials(users_file, admin, list(users), prog)
            login = LocalAuth(admin=admin_login, users=accounts)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    chosen: int | None = port or None
    if port is None:
        if port_is_free(DEFAULT_PORT):
            chosen = DEFAULT_PORT
        else:
            click.echo(
                f"port {DEFAULT_PORT} on 127.0.0.1 is in use (another Kafka?): using a free port;"
                " the address is printed below",
                err=True,
            )
    signal.signal(signal.SIGTERM, _interrupt)
    kafka = LocalKafka(
        int(nodes),
        version=kafka_version or KAFKA_VERSION,
        workdir=workdir,
        auth=login,
        port=chosen,
    )
    try:
        kafka.start()
        click.echo(f"bootstrap_servers={kafka.bootstrap_servers}")
        if login is not None:
            settings = kafka.client_config()
            settings["sasl.password"] = "***"
            names = ", ".join([login.admin_name, *login.users])
            click.echo(
                f"SASL/SCRAM on, ACLs enforced; users: {names}"
                f" (super user: {login.admin_name}); client settings: "
                + " ".join(f"{key}={value}" for key, value in settings.items())
            )
        for name, partitions in wanted:
            kafka.create_topic(name, partitions=partitions, replication_factor=int(nodes))
            click.echo(f"created topic {name} ({partitions} partitions)")
        click.echo(
            f"export {ENV['bootstrap']}={kafka.bootstrap_servers}   # then use kq; Ctrl-C stops",
            err=True,
        )
        sys.stdout.flush()
        while all(kafka.is_running(node_id) for node_id in kafka.node_ids):
            time.sleep(0.5)
        stopped = next(i for i in kafka.node_ids if not kafka.is_running(i))
        fail(f"Kafka node {stopped} exited: {kafka.log_tail(stopped, 5)}")
    except KeyboardInterrupt:
        return 0
    finally:
        kafka.stop()
