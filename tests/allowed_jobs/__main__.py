"""``python -m allowed_jobs``: importing it runs it, so it must never be imported for a job."""

import os
from pathlib import Path

_TRACE = os.environ.get("KQ_TEST_IMPORT_TRACE")
if _TRACE:
    Path(_TRACE, "allowed_jobs.__main__").touch()


def run() -> None:
    pass
