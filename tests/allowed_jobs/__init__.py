"""An allow-listed job module that, like real code, imports powerful things.

``JsonJobLoader(allow=["allowed_jobs"])`` must run ``add``, ``Greeter`` and its
methods and ``public.triple``, and nothing reached through ``os``, ``logging``,
``subprocess`` or the names imported below.
"""

from __future__ import annotations

import logging
import os
import subprocess
from os import system
from pathlib import Path

__all__ = ["Greeter", "Path", "add", "logging", "os", "subprocess", "system"]


def add(a: int, b: int) -> int:
    return a + b


class Greeter:
    helper = os.system  # a class attribute that is not defined here

    def __init__(self, name: str = "you") -> None:
        self.name = name

    def hello(self) -> str:
        return f"hello {self.name}"

    @staticmethod
    def shout(text: str) -> str:
        return text.upper()

    @classmethod
    def named(cls, name: str) -> Greeter:
        return cls(name)

    class Inner:
        def ping(self) -> str:
            return "pong"


def _private() -> None:
    system("echo private")
