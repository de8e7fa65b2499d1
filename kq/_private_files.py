"""Files that hold secrets: created private, read only when private.

A file is private from the moment it exists (``os.open`` with mode 0600, not
a write followed by ``chmod``), in a folder only its owner can enter (0700).
A secrets file given to kq is refused when other users could read or change
it, and its errors name line numbers, never line contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "PRIVATE_UMASK",
    "append_private",
    "private_dir",
    "read_private",
    "read_text_and_mode",
    "write_private",
]

PRIVATE_UMASK = 0o077
"""The umask of processes kq starts that write secrets (the broker and its tools)."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with the leaf 0700; tighten it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, which is 0600 from its creation (and after, if it existed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(descriptor, 0o600)  # a file that existed keeps its mode through O_CREAT
        handle.write(text)


def append_private(path: Path) -> BinaryIO:
    """``path`` opened for appending bytes; 0600 when this creates it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o600), "ab")


def read_text_and_mode(path: str | Path, what: str) -> tuple[str, int]:
    """A text file and its mode, read through one descriptor; ``ValueError`` names ``what``."""
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            return handle.read(), mode
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text") from None


def read_private(path: str | Path, what: str) -> str:
    """The text of a secrets file; ``ValueError`` if other users can read or change it."""
    text, mode = read_text_and_mode(path, what)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{what} {str(path)!r} can be read or changed by other users (mode"
            f" {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return text
