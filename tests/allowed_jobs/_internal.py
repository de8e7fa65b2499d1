"""A private submodule: never imported through ``allowed_jobs`` (importing it leaves a trace)."""

import os
from pathlib import Path

_TRACE = os.environ.get("KQ_TEST_IMPORT_TRACE")
if _TRACE:
    Path(_TRACE, "allowed_jobs._internal").touch()


def wipe(folder: str) -> None:
    Path(folder, "wiped").touch()
