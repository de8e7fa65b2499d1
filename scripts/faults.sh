#!/usr/bin/env bash
# The fault-injection suite (tests/faults, marker `faults`) against the real
# local Kafka, then its results into README.md's reliability table (between the
# faults:start/end markers). Extra arguments go to pytest. Exits with the
# suite's status; the table is written either way, with each check's verdict.
source "$(dirname "$0")/_venv.sh"
rm -f .cache/faults-summary.txt .cache/faults-summary.json
status=0
bash scripts/test.sh -m faults "$@" || status=$?
python scripts/faults_table.py || status=$((status ? status : 1))
exit "$status"
