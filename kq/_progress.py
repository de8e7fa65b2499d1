"""Progress of long operations: a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["progress"]

Advance = Callable[[int], None]


def _ignore(n: int = 1) -> None:
    pass


@contextmanager
def progress(description: str, total: int, stream: TextIO | None = None) -> Iterator[Advance]:
    """Yield ``advance(n)``; shows a rich progress bar when ``stream`` (stderr) is a terminal.

    Nothing is shown for a single item. Otherwise a line ``description: done/total``
    is written at every tenth of the way and at the end, so logs and pipes get a
    bounded, readable trace.
    """
    out = stream or sys.stderr
    if total <= 1:
        yield _ignore
        return
    if out.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(file=out)) as bar:
            task = bar.add_task(description, total=total)

            def advance_bar(n: int = 1) -> None:
                bar.advance(task, n)

            yield advance_bar
        return

    done = 0
    step = max(total // 10, 1)
    next_line = step

    def advance(n: int = 1) -> None:
        nonlocal done, next_line
        done += n
        if done >= next_line or done >= total:
            print(f"{description}: {done}/{total}", file=out, flush=True)
            while next_line <= done:
                next_line += step

    yield advance
    if done < total:
        print(f"{description}: {done}/{total} (stopped)", file=out, flush=True)
