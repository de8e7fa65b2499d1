"""An ``--app`` module that crashes every supervised worker process as it starts.

The supervisor imports it too (to check the path) and survives: only its
children have ``KQ_WORKER_INDEX`` set.
"""

from __future__ import annotations

import os

if "KQ_WORKER_INDEX" in os.environ:
    os._exit(3)
