#!/usr/bin/env bash
# Builds the documentation site into .cache/site (mkdocs, strict). Its examples
# are executed by the test suite (tests/test_docs.py).
source "$(dirname "$0")/_venv.sh"
export NO_MKDOCS_2_WARNING=1
exec python -m mkdocs build --strict "$@"
