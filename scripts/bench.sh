#!/usr/bin/env bash
# The benchmark suite (not part of the tests): starts a local Apache Kafka, runs
# every scenario several times with its reference measured in the same run, and
# prints a table of medians. Options: --quick (1 run, smaller counts),
# --write-readme (also the README's bench section), --profile SCENARIO (py-spy),
# --only drain,enqueue,... ; see `bash scripts/bench.sh --help`.
source "$(dirname "$0")/_venv.sh"
# The bench extra (py-spy) on top of what _venv.sh installs, again whenever
# pyproject.toml changes.
STAMP="$VENV/.kq-bench-installed"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    python -m pip install -q -e "$ROOT[dev,bench]"
    echo "$WANT" > "$STAMP"
fi
exec python -m bench "$@"
