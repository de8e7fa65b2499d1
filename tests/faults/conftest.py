"""Fixtures of the fault-injection suite, and its summary at the end of the session.

Each scenario reports one ``FAULT <scenario>: ...`` line through ``fault_report``.
At the end of the session all lines are printed in the terminal summary and
merged (by scenario) into ``.cache/faults-summary.txt``, and with each test's
verdict and duration into ``.cache/faults-summary.json``, from which
``scripts/faults_table.py`` writes the README's reliability table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_harness import SUMMARY_FILE, Outcome, WorkerPool

DETAILS_FILE = SUMMARY_FILE.with_suffix(".json")
_REPORTED = pytest.StashKey[dict[str, dict[str, Any]]]()  # scenario -> line, test
_VERDICTS = pytest.StashKey[dict[str, dict[str, Any]]]()  # test id -> outcome, seconds


class FaultReport:
    """Collects the summary line of each scenario run in this session."""

    def __init__(self, reported: dict[str, dict[str, Any]], test: str) -> None:
        self._reported = reported
        self._test = test

    def add(self, result: Outcome) -> str:
        line = result.line()
        self._reported[result.scenario] = {"line": line, "test": self._test}
        print(line)
        return line


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.config.stash.setdefault(_REPORTED, {}), request.node.nodeid)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[WorkerPool]:
    """Worker processes of one test; any still running at the end are SIGKILLed by pid."""
    workers = WorkerPool(tmp_path)
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """The file the test's jobs record their executions in."""
    return str(tmp_path / "ledger")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    verdicts = item.config.stash.setdefault(_VERDICTS, {})
    verdict = verdicts.setdefault(item.nodeid, {"outcome": "passed", "seconds": 0.0})
    verdict["seconds"] += report.duration
    if report.failed:
        verdict["outcome"] = "failed"
    elif report.skipped and report.when == "setup":
        verdict["outcome"] = "skipped"
    return report


def _scenario_key(scenario: str) -> tuple[int, str]:
    number = scenario.split("-", 1)[0]
    return (int(number) if number.isdigit() else 99, scenario)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    reported = config.stash.get(_REPORTED, {})
    if not reported:
        return
    verdicts = config.stash.get(_VERDICTS, {})
    terminalreporter.section("fault-injection summary")
    for scenario in sorted(reported, key=_scenario_key):
        terminalreporter.write_line(reported[scenario]["line"])
    # Merge: scenarios not run this time keep their last result.
    details: dict[str, dict[str, Any]] = {}
    if DETAILS_FILE.exists():
        details = json.loads(DETAILS_FILE.read_text())
    now = time.strftime("%Y-%m-%d %H:%M")
    for scenario, entry in reported.items():
        verdict = verdicts.get(entry["test"], {})
        details[scenario] = {
            **entry,
            "outcome": verdict.get("outcome", "unknown"),
            "seconds": round(verdict.get("seconds", 0.0), 1),
            "when": now,
        }
    ordered = {key: details[key] for key in sorted(details, key=_scenario_key)}
    SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    DETAILS_FILE.write_text(json.dumps(ordered, indent=1) + "\n")
    SUMMARY_FILE.write_text("".join(f"{entry['line']}\n" for entry in ordered.values()))
    terminalreporter.write_line(f"(written to {SUMMARY_FILE} and {DETAILS_FILE.name})")
