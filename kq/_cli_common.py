"""What every ``kq`` command shares: connection options, one-line errors, parsing."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from click.core import ParameterSource

from kq._admin import Cluster
from kq._cli_config import (
    ENV,
    ConfigError,
    client_config,
    is_secret_setting,
    parse_pairs,
    quiet_rdkafka_logger,
)
from kq._cli_errors import one_line

P = ParamSpec("P")
R = TypeVar("R")

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """An expected failure of a command, told in one line."""

    def __init__(self, message: str, command_path: str = "kq") -> None:
        super().__init__(message)
        self.command_path = command_path


def friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn expected exceptions (Kafka unreachable, bad import path, …) into one-line errors."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            text = one_line(exc)
            if text is None:
                raise
            raise CommandError(text, click.get_current_context().command_path) from exc

    return wrapper


def fail(message: str) -> NoReturn:
    """End the running command with a one-line error."""
    raise CommandError(message, click.get_current_context().command_path)


# -- shared options ---------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where the cluster is and how to talk to it, from the shared options."""

    bootstrap: str
    config: dict[str, str]
    timeout: float
    verbose: bool

    def quiet_config(self) -> dict[str, Any]:
        """Client settings for short-lived clients: librdkafka's log lines kept quiet."""
        return {**self.config, "logger": quiet_rdkafka_logger(self.verbose)}

    def cluster(self) -> Cluster:
        """An admin connection (nothing is sent until the first request)."""
        return Cluster(self.bootstrap, self.quiet_config(), self.timeout)


def connection_options(func: Callable[P, R]) -> Callable[P, R]:
    """Add the options every command that talks to Kafka shares (see ``connection``)."""
    options = [
        click.option(
            "-b",
            "--bootstrap",
            envvar=ENV["bootstrap"],
            metavar="HOST:PORT[,...]",
            help=f"Kafka bootstrap servers [env {ENV['bootstrap']}]",
        ),
        click.option(
            "-X",
            "client_settings",
            multiple=True,
            envvar=ENV["client_config"],
            metavar="KEY=VALUE",
            help="a Kafka client setting (librdkafka name), e.g. -X security.protocol=SASL_SSL;"
            f" repeatable [env {ENV['client_config']}, space-separated]",
        ),
        click.option(
            "--client-config-file",
            envvar=ENV["client_config_file"],
            metavar="PATH",
            help=f"a file of key=value client settings; -X wins [env {ENV['client_config_file']}]",
        ),
        click.option(
            "--connect-timeout",
            envvar=ENV["connect_timeout"],
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help=f"seconds to wait for the cluster to answer [env {ENV['connect_timeout']}]",
        ),
        click.option("-v", "--verbose", is_flag=True, help="show the Kafka client's log lines"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def connection(
    bootstrap: str | None,
    client_settings: Sequence[str],
    client_config_file: str | None,
    connect_timeout: float,
    verbose: bool,
) -> Connection:
    if not bootstrap or not bootstrap.strip():
        raise click.UsageError(
            f"no Kafka address: give --bootstrap HOST:PORT or set {ENV['bootstrap']}"
        )
    try:
        config = client_config(client_settings, client_config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    secret_pairs = sorted(
        {k for k in parse_pairs(client_settings) if is_secret_setting(k)}
        if _from_command_line("client_settings")
        else set()
    )
    if secret_pairs:
        _warn_visible(f"-X {', '.join(secret_pairs)}", ENV["client_config_file"])
    warn_if_on_command_line("signing_keys", "--signing-key", ENV["signing_keys"])
    warn_if_on_command_line("signing_key", "--signing-key", ENV["signing_key"])
    return Connection(bootstrap.strip(), config, connect_timeout, verbose)


def _from_command_line(param: str) -> bool:
    context = click.get_current_context(silent=True)
    if context is None or not context.params.get(param):
        return False
    return context.get_parameter_source(param) is ParameterSource.COMMANDLINE


def _warn_visible(what: str, instead: str) -> None:
    context = click.get_current_context()
    click.echo(
        f"{context.command_path}: warning: {what} on the command line can be read by every user"
        f" of this machine (ps, /proc/PID/cmdline); use {instead} instead",
        err=True,
    )


def warn_if_on_command_line(param: str, flag: str, instead: str) -> None:
    """Warn on stderr when the secret option ``param`` came from the command line."""
    if _from_command_line(param):
        _warn_visible(flag, instead)


def retry_options(func: Callable[P, R]) -> Callable[P, R]:
    options = [
        click.option(
            "--max-attempts",
            type=click.IntRange(min=1),
            help="retry policy: runs in all, the first included (default: no retries)",
        ),
        click.option(
            "--backoff",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="retry policy: seconds before the first retry (doubling after)",
        ),
        click.option(
            "--retry-timeouts",
            is_flag=True,
            help="retry policy: retry timeouts too, not only failures",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parse_time(text: str, what: str) -> datetime.datetime:
    """ISO 8601; ``Z`` allowed; a time without offset is local time."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise click.UsageError(
            f"{what} expects an ISO 8601 time such as 2026-05-01T12:00:00Z, not {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def parse_position(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.strip().isdigit() or not offset.strip().isdigit():
        raise click.UsageError(f"expected PARTITION:OFFSET such as 0:42, not {text!r}")
    return int(partition), int(offset)


def ms_to_iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=False)


def safe_text(text: str, *, multiline: bool = False, limit: int | None = None) -> str:
    """Untrusted text made inert on a terminal.

    Every character that is not printable (ESC and the other control
    characters, carriage returns, bidi overrides, ...) is shown as its Python
    escape, so no escape sequence reaches the terminal; ``multiline`` keeps
    newlines and tabs. Print the result as plain text (``click.echo`` or a
    rich ``Text``), never as rich markup.
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or (multiline and ch in "\n\t")
        else ch.encode("unicode_escape", errors="backslashreplace").decode("ascii")
        for ch in text
    )
