"""kq's benchmark suite, not part of the tests.

``bash scripts/bench.sh [--quick] [--write-readme]``.

Run ``python -m bench --help`` for the options.

The child scripts (``run_*.py``) run from this folder as scripts, and import
``jobs`` and ``_child`` as top-level modules: the KQ 2.2.1 venv has only this
folder on its path, never the repository root (where the new ``kq`` lives).
"""
