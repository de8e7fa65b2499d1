"""Argument checks that raise real exceptions (never ``assert``) with KQ's texts."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from kq.errors import ArgumentTypeError, ArgumentValueError


def fail_type(message: str) -> NoReturn:
    raise ArgumentTypeError(message)


def fail_value(message: str) -> NoReturn:
    raise ArgumentValueError(message)


def is_number(obj: Any) -> bool:
    # bool is an int subclass but never a sensible timeout
    return isinstance(obj, (int, float)) and not isinstance(obj, bool)


def check_str(obj: Any, message: str) -> None:
    if not isinstance(obj, str):
        fail_type(message)


def check_logger(obj: Any) -> None:
    if obj is not None and not isinstance(obj, logging.Logger):
        fail_type("bad logger instance")


def check_callable_or_none(obj: Any, message: str) -> None:
    if obj is not None and not callable(obj):
        fail_type(message)


def check_timeout(obj: Any, message: str = "timeout must be an int or float") -> None:
    if not is_number(obj):
        fail_type(message)
    if obj < 0 or obj != obj:  # obj != obj: NaN, which no comparison would catch
        fail_value(message.replace("must be an int or float", "must be 0 or greater"))


def check_bytes_or_none(obj: Any, message: str) -> None:
    if obj is not None and not isinstance(obj, bytes):
        fail_type(message)


def check_int_or_none(obj: Any, message: str) -> None:
    if obj is not None and (not isinstance(obj, int) or isinstance(obj, bool)):
        fail_type(message)
    if obj is not None and obj < 0:
        fail_value(message.replace("must be an int", "must be 0 or greater"))
