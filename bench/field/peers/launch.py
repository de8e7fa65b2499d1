"""Start a peer's command so that it dies with the benchmark: ``launch.py ARGV...``.

Sets Linux's parent-death signal (SIGKILL) and then replaces itself with
``ARGV`` (the signal setting survives ``exec``). The command's own children
(taskiq's and Celery's worker processes) import a peer module, whose
``peercommon.die_with_parent`` watches their parent in turn.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1

if __name__ == "__main__":
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the benchmark died before prctl took effect
        os._exit(1)
    os.execv(sys.argv[1], sys.argv[1:])
