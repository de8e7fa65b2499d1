"""Noticing code changes for ``kq worker --reload`` (development only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["CodeWatcher"]

_SKIP = {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"}


class CodeWatcher:
    """Compares the modification times of ``*.py`` files under ``roots`` between calls.

    Hidden folders (``.venv``, ``.git``, …) and the usual build and environment
    folders are skipped. Polling, not inotify: simple, and enough for a project.
    """

    def __init__(self, roots: list[str]) -> None:
        self._roots = [Path(r).resolve() for r in roots]
        self._seen = self._scan()

    def _scan(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for root in self._roots:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(folder, name)
                        with contextlib.suppress(OSError):
                            found[path] = os.stat(path).st_mtime
        return found

    def changed(self) -> str | None:
        """A file added, removed or modified since the last call, or None."""
        now = self._scan()
        before, self._seen = self._seen, now
        for path in sorted(set(now) | set(before)):
            if now.get(path) != before.get(path):
                return path
        return None
