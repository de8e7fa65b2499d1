"""A public submodule: covered by the allow-list entry ``allowed_jobs``."""

import shutil


def triple(x: int) -> int:
    return 3 * x


__all__ = ["shutil", "triple"]
