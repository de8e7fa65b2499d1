"""Configuration of the ``kq`` command: flags, ``KQ_…`` variables, client settings.

Every option of ``kq`` can also be set through an environment variable
(``ENV`` below maps each option to it); Kafka client settings (security and
the like) come as ``-X key=value`` pairs, from ``KQ_CLIENT_CONFIG`` or from a
properties file, and go unchanged to every client the command creates.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterable, Mapping

from kq._private_files import read_text_and_mode
from kq.errors import KQError

__all__ = [
    "ENV",
    "ConfigError",
    "client_config",
    "is_secret_setting",
    "parse_pairs",
    "quiet_rdkafka_logger",
]

# option name -> environment variable, documented in the README in one table
ENV: Mapping[str, str] = {
    "bootstrap": "KQ_BOOTSTRAP",
    "group": "KQ_GROUP",
    "client_config": "KQ_CLIENT_CONFIG",
    "client_config_file": "KQ_CLIENT_CONFIG_FILE",
    "connect_timeout": "KQ_CONNECT_TIMEOUT",
    "log_level": "KQ_LOG_LEVEL",
    "log_jobs": "KQ_LOG_JOBS",
    "summary_interval": "KQ_SUMMARY_INTERVAL",
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
    "keep_invalid": "KQ_KEEP_INVALID",
}

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
# librdkafka settings that hold a secret (passwords, private keys, OAuth secrets).
_SECRET_WORDS = ("password", "secret", "private", "key.pem", "jaas", "oauthbearer.config")


class ConfigError(KQError):
    """A setting given to the ``kq`` command is malformed."""


def is_secret_setting(key: str) -> bool:
    """Whether a client setting's value is a secret (``sasl.password``, ``ssl.key.pem``, ...)."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def parse_pairs(pairs: Iterable[str], source: str = "-X") -> dict[str, str]:
    """``["a.b=1", "c=x=y"]`` -> ``{"a.b": "1", "c": "x=y"}``; a malformed pair is an error.

    The error names the pair by its number (and its key when it has one), never
    its text: a value may be a password.
    """
    out: dict[str, str] = {}
    for number, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(
                f"{source} expects key=value (a Kafka client setting); pair {number} {_why(sep)}"
            )
        out[key] = value
    return out


def _why(sep: str) -> str:
    # Never the text itself: a malformed line may well hold a password.
    if not sep:
        return "has no '=' (its text is not shown: it may hold a secret)"
    return "has no setting name before '=' (letters, digits, '.', '_', '-')"


def _read_properties(path: str) -> dict[str, str]:
    try:
        text, mode = read_text_and_mode(path, "client config file")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        key, sep, value = line.strip().partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(
                f"client config file {path!r} expects key=value lines (Kafka client settings);"
                f" line {number} {_why(sep)}"
            )
        config[key] = value
    secrets = sorted(k for k in config if is_secret_setting(k))
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"client config file {path!r} is writable by other users (mode"
            f" {stat.S_IMODE(mode):04o}): they could redirect kq's clients; chmod 600 it"
        )
    if secrets and mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ConfigError(
            f"client config file {path!r} holds {', '.join(secrets)} and other users can read"
            f" it (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return config


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
