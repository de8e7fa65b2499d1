"""Which exceptions are a user's mistake or the environment's, told in one line."""

from __future__ import annotations

from typing import Any

from kq.errors import ArgumentTypeError, ArgumentValueError, KQError

__all__ = ["one_line"]


def one_line(exc: BaseException) -> str | None:
    """The one-line text for an expected error, or None for a bug (shown with its traceback)."""
    text: str | None = None
    if isinstance(exc, (KQError, ArgumentTypeError, ArgumentValueError)):
        text = str(exc)
    elif type(exc).__name__ == "LocalKafkaError":
        return str(exc)  # the broker's log tail, when it did not come up, is the useful part
    elif type(exc).__name__ == "KafkaException":
        error: Any = exc.args[0] if exc.args else None
        text = str(error.str()) if hasattr(error, "str") else str(exc)
    elif isinstance(exc, OSError):
        text = str(exc)
    if text is None:
        return None
    return " ".join(text.split()) or type(exc).__name__
