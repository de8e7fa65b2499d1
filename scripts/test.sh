#!/usr/bin/env bash
# The whole test suite: lint, format check, strict typing, then pytest against a
# real local Apache Kafka (fetched with Maven on first use).
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_chromium.sh"
ruff check kq tests scripts
ruff format --check kq tests scripts
mypy --strict kq
exec python -m pytest "$@"
