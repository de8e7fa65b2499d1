"""What every benchmark child process does, on the kq and the KQ 2.2.1 side alike.

Imported as the top-level module ``_child`` (the child scripts run from
``bench/``), so, like ``jobs``, it must not import ``kq``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


def die_with_parent() -> None:
    """SIGKILL this process once the benchmark that started it is gone.

    The benchmark kills its children on exit, but not after a SIGKILL of its
    own; then the child would otherwise poll a dead broker forever.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def wait_for_go() -> None:
    """Say ``GATE`` and block until the benchmark writes a line to stdin.

    Lets several workers, built and connected, join their group together.
    """
    print("GATE", flush=True)
    sys.stdin.readline()


def emit(result: dict[str, object]) -> None:
    """Hand the result to the benchmark: one JSON line on stdout."""
    print("RESULT " + json.dumps(result), flush=True)
