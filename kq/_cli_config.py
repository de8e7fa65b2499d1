"""Configuration of the ``kq`` command: flags, ``KQ_…`` variables, client settings.

Every option of ``kq`` can also be set through an environment variable
(``ENV`` below maps each option to it); Kafka client settings (security and
the like) come as ``-X key=value`` pairs, from ``KQ_CLIENT_CONFIG`` or from a
properties file, and go unchanged to every client the command creates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from kq.errors import KQError

__all__ = ["ENV", "ConfigError", "client_config", "parse_pairs", "quiet_rdkafka_logger"]

# option name -> environment variable, documented in the README in one table
ENV: Mapping[str, str] = {
    "bootstrap": "KQ_BOOTSTRAP",
    "group": "KQ_GROUP",
    "client_config": "KQ_CLIENT_CONFIG",
    "client_config_file": "KQ_CLIENT_CONFIG_FILE",
    "connect_timeout": "KQ_CONNECT_TIMEOUT",
    "log_level": "KQ_LOG_LEVEL",
    "app": "KQ_APP",
    "callback": "KQ_CALLBACK",
    "deserializer": "KQ_DESERIALIZER",
    "serializer": "KQ_SERIALIZER",
    "json_jobs": "KQ_JSON_JOBS",
    "signing_keys": "KQ_SIGNING_KEYS",
    "signing_key": "KQ_SIGNING_KEY",
    "max_message_bytes": "KQ_MAX_MESSAGE_BYTES",
    "processes": "KQ_PROCESSES",
    "concurrency": "KQ_CONCURRENCY",
    "max_in_flight": "KQ_MAX_IN_FLIGHT",
    "shutdown_timeout": "KQ_SHUTDOWN_TIMEOUT",
    "max_restarts": "KQ_MAX_RESTARTS",
    "restart_window": "KQ_RESTART_WINDOW",
    "metrics_port": "KQ_METRICS_PORT",
    "metrics_host": "KQ_METRICS_HOST",
    "dead_letter_topic": "KQ_DEAD_LETTER_TOPIC",
}

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ConfigError(KQError):
    """A setting given to the ``kq`` command is malformed."""


def parse_pairs(pairs: Iterable[str], source: str = "-X") -> dict[str, str]:
    """``["a.b=1", "c=x=y"]`` -> ``{"a.b": "1", "c": "x=y"}``; a malformed pair is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(f"{source} expects key=value (a Kafka client setting), not {pair!r}")
        out[key] = value
    return out


def _read_properties(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read client config file {path!r}: {exc.strerror}") from exc
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "!"))
    ]
    return parse_pairs(lines, source=f"client config file {path!r}")


def client_config(pairs: Iterable[str], file: str | None) -> dict[str, str]:
    """Kafka client settings: the file's (if any), then the ``-X`` pairs, which win."""
    config = _read_properties(file) if file else {}
    config.update(parse_pairs(pairs))
    return config


def quiet_rdkafka_logger(verbose: bool = False) -> logging.Logger:
    """A logger for librdkafka that keeps its retry chatter off the terminal.

    Short commands report a failure once, themselves; with ``verbose`` the
    client's own lines go to the ``kq.rdkafka`` logger (and so to stderr).
    """
    logger = logging.getLogger("kq.rdkafka")
    if not verbose:
        logger.propagate = False
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    return logger
