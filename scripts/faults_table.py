"""Write the fault-injection suite's results into README.md as a markdown table.

Reads ``.cache/faults-summary.json`` (written by the suite, see
``tests/faults/conftest.py``; ``.cache/faults-summary.txt`` holds the same
``FAULT ...`` lines) and replaces only the text between ``<!-- faults:start -->``
and ``<!-- faults:end -->`` in README.md. Run by ``bash scripts/faults.sh``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DETAILS = ROOT / ".cache" / "faults-summary.json"
README = ROOT / "README.md"
START, END = "<!-- faults:start -->", "<!-- faults:end -->"

SCENARIOS = {
    "1": "worker SIGKILLed mid-run, a replacement starts",
    "2": "1 of 3 brokers SIGKILLed (the group coordinator) during enqueue and processing; "
    "RF 3, min.insync.replicas 2",
    "3": "single broker stopped and restarted during processing; workers and queue not restarted",
    "4": "rolling restart of all 3 brokers during processing",
    "5": "group churn: 3 workers, one leaves (SIGTERM, or SIGKILL every third time) "
    "and one joins every ~2.5 s",
    "6": "worker frozen (SIGSTOP) past its session timeout, then resumed (SIGCONT)",
    "7": "poison input (hypothesis): arbitrary bytes and malformed jobs between good jobs",
    "8": "enqueue while the whole cluster is down, then after it returns",
    "9": "worker SIGKILLed while retries and delayed jobs wait in the delay tiers; "
    "a replacement starts",
    "10": "the delay forwarder's sends home fail for 8 s for a third of the delayed jobs "
    "and retries, between sends that succeed",
    "11": "two consumer groups on one topic: plain, delayed and retried jobs "
    "(counted per job and group)",
}
LINE = re.compile(
    r"FAULT (?P<scenario>\S+): enqueued=(?P<enqueued>\d+) executed=(?P<executed>\d+) "
    r"lost=(?P<lost>\d+) duplicated=(?P<duplicated>\d+)"
)
CLIENTS = ("confluent", "kafka-python")


def table(details: dict[str, dict[str, object]]) -> str:
    rows = [
        "Written by `bash scripts/faults.sh` (`scripts/test.sh -m faults`, then "
        "`scripts/faults_table.py`) from its last run; each scenario runs against the real "
        "local Kafka and checks a ledger written by the jobs themselves. *jobs*: enqueues the "
        "broker acknowledged; *executed*: distinct acknowledged jobs that ran; *lost*: "
        "acknowledged jobs that never ran; *duplicated*: runs beyond the first; *checks*: "
        "whether every other assertion of the scenario held (see `tests/faults/`).",
        "",
        "| # | scenario | client | jobs | executed | lost | duplicated | checks | time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for scenario, entry in details.items():
        found = LINE.match(str(entry["line"]))
        if found is None:
            continue
        number = scenario.split("-", 1)[0]
        client = next((c for c in CLIENTS if scenario.endswith(f"-{c}")), "")
        if not client:
            client = "kafka-python" if number == "4" else "confluent"
        rows.append(
            f"| {number} | {SCENARIOS.get(number, scenario)} | {client} "
            f"| {found['enqueued']} | {found['executed']} | {found['lost']} "
            f"| {found['duplicated']} | {entry.get('outcome', '?')} "
            f"| {entry.get('seconds', '?')} s |"
        )
    return "\n".join(rows)


def main() -> int:
    if not DETAILS.exists():
        print(f"{DETAILS} not found: run the suite first (bash scripts/faults.sh)")
        return 1
    details = json.loads(DETAILS.read_text())
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} markers")
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table(details)}\n{END}{tail}")
    print(f"README.md: reliability table with {len(details)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
