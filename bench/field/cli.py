"""``python -m bench --field [--quick] [--write-readme] [--only ...] [--systems ...] [--keep]``.

Prepares the peers' virtual environments (once; then reused), starts the
project's local Kafka (one node), runs every scenario for kq and every peer
in turn, repeats the whole round (medians of 3), and prints the table on
stdout (progress on stderr). ``--write-readme`` puts the table between the
README's field markers and on ``docs/benchmarks.md``, and writes the plot
(``docs/assets/field-bench.png``).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import time
from collections.abc import Callable
from typing import TypeVar

from bench.cli import BROKER_CONFIG, log, measure_once
from bench.field import envs, report
from bench.field.procs import Procs
from bench.field.scenarios import (
    DEFAULT_COMMIT_INTERVAL,
    Field,
    FieldSettings,
    drain,
    enqueue,
    io_bound,
    latency,
    sigkill,
)
from bench.field.systems import KQ, RAW, SYSTEMS, System
from bench.harness import new_workdir
from kq.local import LocalKafka

SCENARIOS = ("drain", "enqueue", "io", "latency", "sigkill", "interval")

T = TypeVar("T")


class Round:
    """Runs one repetition of every chosen scenario and records values or failures."""

    def __init__(self, f: Field, results: report.FieldResults, systems: list[System]) -> None:
        self.f = f
        self.results = results
        self.systems = systems
        self.peers = [s for s in systems if s is not KQ and s is not RAW]

    def measure(self, name: str, run: int, fn: Callable[[], T]) -> T | None:
        """One measurement; None (and a recorded error) when it failed."""
        label = f"[{name}] run {run + 1}/{self.f.settings.runs}"
        try:
            return measure_once(self.results, name, label, fn)
        finally:
            self.f.procs.close()

    def record(self, metric: str, value: float) -> None:
        """Keep one run's value."""
        self.results.values[metric].append(value)

    def drain(self, run: int) -> None:
        """Drain: kq, the raw ceiling, every peer."""
        for system in [KQ, RAW, *self.peers]:
            if system in self.systems:
                rated = self.measure(
                    f"drain.{system.name}", run, functools.partial(drain, self.f, system)
                )
                if rated is not None:
                    self.record(f"drain.{system.name}", rated.rate)
                    self.record(f"drain-cpu.{system.name}", rated.cpu_us)

    def enqueue(self, run: int) -> None:
        """Single and batched enqueue; raw produce + pickle.dumps as the ceiling."""
        for mode in ("single", "batch"):
            for system in [KQ, *self.peers] + ([RAW] if mode == "batch" else []):
                if system not in self.systems:
                    continue
                name = f"{mode}.{system.name}"
                rated = self.measure(name, run, functools.partial(enqueue, self.f, system, mode))
                if rated is not None:
                    self.record(name, rated.rate)
                    self.record(f"{mode}-cpu.{system.name}", rated.cpu_us)

    def io(self, run: int) -> None:
        """IO-bound jobs at concurrency 64."""
        for system in [KQ, *self.peers]:
            if system in self.systems:
                rated = self.measure(
                    f"io.{system.name}", run, functools.partial(io_bound, self.f, system)
                )
                if rated is not None:
                    self.record(f"io.{system.name}", rated.rate)

    def latency(self, run: int) -> None:
        """Enqueue → start latency at 200 jobs/s."""
        for system in [KQ, *self.peers]:
            if system in self.systems:
                name = f"latency.{system.name}"
                value = self.measure(name, run, functools.partial(latency, self.f, system))
                if value is not None:
                    self.record(f"p50.{system.name}", value[0])
                    self.record(f"p99.{system.name}", value[1])

    def sigkill(self, run: int) -> None:
        """A worker SIGKILLed in the middle, a replacement started."""
        for system in [KQ, *self.peers]:
            if system in self.systems:
                name = f"sigkill.{system.name}"
                killed = self.measure(name, run, functools.partial(sigkill, self.f, system))
                if killed is not None:
                    self.record(f"lost.{system.name}", killed.lost)
                    self.record(f"twice.{system.name}", killed.twice)
                    self.results.details[name].append(killed)

    def interval(self, run: int) -> None:
        """kq's drain rate and SIGKILL reruns at each commit interval (the default's come
        from the drain and SIGKILL scenarios, when they ran)."""
        if KQ not in self.systems:
            return
        for seconds in self.f.settings.commit_intervals:
            if seconds == DEFAULT_COMMIT_INTERVAL and {"drain", "sigkill"} <= self.results.ran:
                continue
            more = {"commit_interval": seconds}
            rated = self.measure(
                f"interval.{seconds}.drain", run, functools.partial(drain, self.f, KQ, **more)
            )
            if rated is not None:
                self.record(f"ci-drain.{seconds}", rated.rate)
            killed = self.measure(
                f"interval.{seconds}.sigkill", run, functools.partial(sigkill, self.f, KQ, **more)
            )
            if killed is not None:
                self.record(f"ci-lost.{seconds}", killed.lost)
                self.record(f"ci-twice.{seconds}", killed.twice)


def run(args: argparse.Namespace) -> int:
    """The whole field benchmark."""
    settings = FieldSettings.quick() if args.quick else FieldSettings.default()
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    if only - set(SCENARIOS):
        raise SystemExit(
            f"unknown scenario(s) {sorted(only - set(SCENARIOS))}; choose from {SCENARIOS}"
        )
    names = args.systems.split(",") if args.systems else list(SYSTEMS)
    if set(names) - set(SYSTEMS):
        raise SystemExit(
            f"unknown system(s) {sorted(set(names) - set(SYSTEMS))}; choose from {list(SYSTEMS)}"
        )
    if args.write_readme and (only != set(SCENARIOS) or set(names) != set(SYSTEMS)):
        raise SystemExit("--write-readme needs every scenario and every system")
    systems = [SYSTEMS[n] for n in names]
    results = report.FieldResults(ran=only)
    versions: dict[str, dict[str, str]] = {}
    for system in systems:
        if system.env is not None:
            log(f"Preparing the {system.label} venv (created once, then reused) ...")
            versions[system.name] = envs.prepare(system.env)
    started = time.monotonic()
    workdir = new_workdir()
    procs = Procs(workdir)
    try:
        log("Starting a local Kafka ...")
        with LocalKafka(1, broker_config=BROKER_CONFIG) as kafka:
            f = Field(
                kafka.bootstrap_servers,
                lambda name: kafka.create_topic(name, partitions=1),
                procs,
                workdir,
                settings,
            )
            rounds = Round(f, results, systems)
            for repetition in range(settings.runs):
                for scenario in SCENARIOS:
                    if scenario in only:
                        getattr(rounds, scenario)(repetition)
    finally:
        procs.close()
    meta = report.FieldMeta.now(args.quick, settings, versions, time.monotonic() - started)
    print(report.text(results, meta))
    if args.write_readme:
        report.write_all(results, meta)
        log("Wrote the field section of README.md and docs/benchmarks.md, and the plot")
    if args.keep:
        log(f"Child output and report files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if results.errors else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench --field",
        description="kq beside taskiq, FastStream, Celery and Faust on one local Kafka, "
        "medians of 3 (about 20 min on 2 cores; the peers' venvs are created on first use).",
    )
    parser.add_argument("--quick", action="store_true", help="1 run, fewer jobs")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="also replace the README's and docs/benchmarks.md's field section and the plot",
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--systems", help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--keep", action="store_true", help="keep the children's output files")
    return run(parser.parse_args(argv))
