"""The users of ``python -m kq.local``: passwords from a private file, not the command line.

A command line can be read by every user of the machine (``ps``,
``/proc/PID/cmdline``), so passwords come from ``--users-file`` (or
``KQ_LOCAL_USERS_FILE``): ``NAME=PASSWORD`` lines in a file only its owner may
read. ``--user NAME=PASSWORD`` still works, with a warning.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kq._private_files import read_private

__all__ = ["credentials", "read_users_file"]

_DEFAULT_ADMIN = ("admin", "admin-secret")


def read_users_file(path: str | Path) -> dict[str, str]:
    """``NAME=PASSWORD`` lines (``#`` comments) of a private file; errors name the line only."""
    users: dict[str, str] = {}
    text = read_private(path, "users file")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, separator, password = line.partition("=")
        if not separator or not name.strip():
            raise ValueError(
                f"users file {str(path)!r} line {number} is not NAME=PASSWORD"
                " (its text is not shown: it may hold a password)"
            )
        users[name.strip()] = password
    return users


def _pair(text: str) -> tuple[str, str]:
    name, separator, password = text.partition("=")
    if not separator:
        raise ValueError("expected NAME=PASSWORD (the text is not shown: it may be a password)")
    return name, password


def credentials(
    users_file: str | None, admin: str | None, pairs: list[str], prog: str
) -> tuple[tuple[str, str], dict[str, str]]:
    """``(admin, users)`` from ``--users-file``, ``--admin`` and ``--user``; ``ValueError``."""
    users = read_users_file(users_file) if users_file else {}
    users.update(_pair(text) for text in pairs)
    on_command_line = bool(pairs) or "=" in (admin or "")
    if on_command_line:
        print(
            f"{prog}: warning: a password given as --user/--admin NAME=PASSWORD can be"
            " read by every user of this machine (ps, /proc/PID/cmdline); use --users-file",
            file=sys.stderr,
            flush=True,
        )
    if admin and "=" in admin:
        return _pair(admin), users
    name = admin or _DEFAULT_ADMIN[0]
    if name in users:
        return (name, users.pop(name)), users
    if admin:
        raise ValueError(f"--admin {name}: no password for {name!r} in --users-file")
    return _DEFAULT_ADMIN, users
