"""``python -m bench [--quick] [--write-readme] [--only ...] [--profile SCENARIO]``.

Starts the project's local Kafka (one node), runs every scenario several
times with its reference beside it, and prints medians as a table on stdout
(progress goes to stderr). ``--write-readme`` puts the same table, with the
date and the machine, between the README's bench markers.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from bench import profiling
from bench.delays import DELAY_RANGES, MODEL_RANGES, delays, mean_hops, route_before
from bench.growth import (
    CONCURRENCY_KEYS,
    PARTITIONS,
    behind_a_slow_job,
    concurrency,
    drain_at_concurrency_8,
    enqueue_to_partitions,
    reruns_behind_a_slow_job,
    reruns_mid_drain,
)
from bench.harness import REPO_ROOT, Children, new_workdir
from bench.report import (
    Meta,
    Results,
    build_rows,
    detail_lines,
    markdown,
    text_table,
    write_readme,
)
from bench.report_growth import soak_markdown
from bench.scenarios import (
    DRAIN_SYSTEMS,
    ENQUEUE_SYSTEMS,
    IO_CONCURRENCY,
    LATENCY_SYSTEMS,
    LEGACY_VERSION,
    RSS_REFERENCE,
    Context,
    Settings,
    drain,
    enqueue,
    io_bound,
    latency,
    prepare_legacy,
    rss,
    scaling,
)
from bench.soak import SoakResult, soak
from bench.spread import burst, two_process_drain
from kq.local import LocalKafka

SCENARIOS = (
    "drain",
    "enqueue",
    "io",
    "latency",
    "scaling",
    "rss",
    "concurrency",
    "partitions",
    "resume",
    "spread",
    "delays",
)
ON_DEMAND = ("soak",)  # run only when named in --only
# one-offs: a flat line or a count of reruns needs one long run, not a median of three
SINGLE_RUN = ("rss", "resume", "soak", "delays")
# One node; a new group's first rebalance waits 0.5 s for more members, so the
# workers of the scaling scenario, started together, share the first assignment.
BROKER_CONFIG = {"group.initial.rebalance.delay.ms": "500"}

T = TypeVar("T")


def log(text: str) -> None:
    """Progress, on stderr (stdout is the report)."""
    print(text, file=sys.stderr, flush=True)


def measure_once(
    results: Results, name: str, label: str, fn: Callable[[], T], show: Callable[[T], str] = str
) -> T | None:
    """Run ``fn`` once and log its value (``show``) and time; on an exception log it, record
    it in ``results.errors[name]`` and return None."""
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:
        log(f"{label}: FAILED after {time.monotonic() - started:.1f} s: {exc}")
        results.errors[name].append(f"{type(exc).__name__}: {exc}")
        return None
    log(f"{label}: {show(value)} ({time.monotonic() - started:.1f} s)")
    return value


class Runner:
    """Runs measurements, records values or failures, and logs each."""

    def __init__(self, ctx: Context, results: Results) -> None:
        self.ctx = ctx
        self.results = results
        self.legacy_error: str | None = None
        self.soak_args = argparse.Namespace(soak_seconds=300.0, soak_rate=5000.0)

    def measure(self, name: str, run: int, fn: Callable[[], T], runs: int = 0) -> T | None:
        """One repetition of one measurement; None (and a recorded error) when it failed."""
        if name.endswith(".legacy") and self.legacy_error is not None:
            self.results.errors[name].append(self.legacy_error)
            return None
        label = f"[{name}] run {run + 1}/{runs or self.ctx.settings.runs}"
        return measure_once(self.results, name, label, fn, _show)

    def record(self, metric: str, value: float) -> None:
        """Keep one run's value of a metric."""
        self.results.values[metric].append(value)

    def drain(self, run: int) -> None:
        """Scenario 1."""
        for system in DRAIN_SYSTEMS:
            result = self.measure(
                f"drain.{system}", run, functools.partial(drain, self.ctx, system)
            )
            if result is not None:
                self.record(f"drain.{system}", result.rate)
                self.record(f"drain-cpu.{system}", result.cpu_us)

    def enqueue(self, run: int) -> None:
        """Scenario 2."""
        for system in ENQUEUE_SYSTEMS:
            result = self.measure(
                f"enqueue.{system}", run, functools.partial(enqueue, self.ctx, system)
            )
            if result is not None:
                self.record(f"enqueue.{system}", result.rate)
                if result.cpu_us == result.cpu_us:  # not NaN (KQ 2.2.1 reports no CPU)
                    self.record(f"enqueue-cpu.{system}", result.cpu_us)

    def io(self, run: int) -> None:
        """Scenario 3."""
        for c in IO_CONCURRENCY:
            result = self.measure(f"io.c{c}", run, functools.partial(io_bound, self.ctx, c))
            if result is not None:
                self.record(f"io.c{c}", result.rate)
                self.results.details[f"io.c{c}.order"].append(result.problems)

    def latency(self, run: int) -> None:
        """Scenario 4."""
        for system in LATENCY_SYSTEMS:
            name = f"latency.{system}"
            result = self.measure(name, run, functools.partial(latency, self.ctx, system))
            if result is not None:
                self.record(f"latency.{system}.p50", result[0])
                self.record(f"latency.{system}.p99", result[1])

    def scaling(self, run: int) -> None:
        """Scenario 5."""
        for workers in (1, 2):
            name = f"scaling.w{workers}"
            result = self.measure(name, run, functools.partial(scaling, self.ctx, workers))
            if result is not None:
                self.record(name, result.rate)
                self.results.details[name].append(result.pids_per_partition)

    def concurrency(self, run: int) -> None:
        """Scenario 7: what concurrency costs a short job (and exact resume's metadata)."""
        for keys in CONCURRENCY_KEYS:
            for level in (1, 8):
                name = f"conc.{keys}.c{level}"
                result = self.measure(
                    name, run, functools.partial(concurrency, self.ctx, keys, level)
                )
                if result is not None:
                    self.record(name, result.rate)
                    self.record(f"conc-cpu.{keys}.c{level}", result.cpu_us)
        for exact in (True, False):
            name = f"conc.resume-{'on' if exact else 'off'}.c8"
            rated = self.measure(
                name, run, functools.partial(drain_at_concurrency_8, self.ctx, exact)
            )
            if rated is not None:
                self.record(name, rated.rate)

    def partitions(self, run: int) -> None:
        """Scenario 8: batched enqueue to topics of more and more partitions."""
        for warmed in (True, False):
            for count in PARTITIONS:
                name = f"parts.{'warm' if warmed else 'new'}.p{count}"
                rate = self.measure(
                    name, run, functools.partial(enqueue_to_partitions, self.ctx, count, warmed)
                )
                if rate is not None:
                    self.record(name, rate)
        for count in (1, 256):  # kafka-python's batch path, on topics written to before
            name = f"parts.warm-kp.p{count}"
            rate = self.measure(
                name,
                run,
                functools.partial(enqueue_to_partitions, self.ctx, count, True, "kafka-python"),
            )
            if rate is not None:
                self.record(name, rate)

    def resume(self, run: int) -> None:
        """Scenario 9: jobs run again after a SIGKILL; memory behind a slow job."""
        for exact in (True, False):
            tag = "exact" if exact else "plain"
            for kind, scenario in (
                ("slow", reruns_behind_a_slow_job),
                ("mid", reruns_mid_drain),
            ):
                name = f"resume.{kind}.{tag}"
                found = self.measure(
                    name, run, functools.partial(scenario, self.ctx, exact), runs=1
                )
                if found is not None:
                    self.record(name, found.ran_again)
                    self.record(f"resume.{kind}-before.{tag}", found.ran_before_kill)
        for limited in (True, False):
            name = f"hol.{'limited' if limited else 'unlimited'}"
            held = self.measure(
                name, run, functools.partial(behind_a_slow_job, self.ctx, limited), runs=1
            )
            if held is not None:
                self.record(f"{name}.rss", held.peak_mb)
                self.record(f"{name}.behind", held.finished_behind)

    def spread(self, run: int) -> None:
        """Scenario 10: unkeyed jobs over 4 partitions, and two processes draining them."""
        for client in ("confluent", "kafka-python"):
            for raw in (False, True):
                name = f"spread.burst{'-raw' if raw else ''}.{client}"
                found = self.measure(name, run, functools.partial(burst, self.ctx, client, raw))
                if found is not None:
                    self.record(name, found.ratio)
                    self.results.details[name].append(found.counts)
            name = f"spread.drain2.{client}"
            ratio = self.measure(name, run, functools.partial(two_process_drain, self.ctx, client))
            if ratio is not None:
                self.record(name, ratio)

    def delays(self, run: int) -> None:
        """Scenario 11: delayed jobs, how late they run and what forwarding them costs."""
        for low, high in DELAY_RANGES:
            name = f"delays.{low:g}-{high:g}"
            found = self.measure(name, run, functools.partial(delays, self.ctx, low, high), runs=1)
            if found is not None:
                self.record(f"{name}.p50", found.quantile(0.5) * 1000)
                self.record(f"{name}.p99", found.quantile(0.99) * 1000)
                self.record(f"{name}.max", max(found.lateness) * 1000)
                self.record(f"{name}.min", min(found.lateness) * 1000)
                self.record(f"{name}.hops", found.per_job)
                self.record(f"{name}.cpu", found.cpu_us)
        for low, high in DELAY_RANGES + MODEL_RANGES:
            self.record(f"delays.{low:g}-{high:g}.model", mean_hops(low, high))
            before = mean_hops(low, high, route_before)
            self.record(f"delays.{low:g}-{high:g}.model-before", before)

    def soak(self, run: int) -> None:
        """On demand: the soak."""
        s = self.soak_args
        result = self.measure(
            "soak", run, lambda: soak(self.ctx, s.soak_seconds, s.soak_rate), runs=1
        )
        if result is not None:
            self.results.details["soak"].append(result)

    def rss(self, run: int) -> None:
        """Scenario 6."""
        result = self.measure("rss", run, lambda: rss(self.ctx), runs=1)
        if result is not None:
            self.record("rss.peak", result.peak_mb)
            self.record("rss.reference", result.rss_mb[RSS_REFERENCE])
            self.results.details["rss"].append(result)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, tuple):  # latency: (p50, p99)
        return "p50 {:.2f} ms, p99 {:.2f} ms".format(*value)
    rate = getattr(value, "rate", None)
    if not isinstance(rate, float):
        return str(value)
    cpu = getattr(value, "cpu_us", None)
    return f"{rate:,.1f}/s" + (f", {cpu:.1f} µs CPU/job" if isinstance(cpu, float) else "")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Unwind through the finally blocks: children killed, broker stopped.
    raise SystemExit(128 + signum)


def _prepare_legacy(runner: Runner) -> None:
    log("Preparing the KQ 2.2.1 venv (created once, then reused) ...")
    try:
        prepare_legacy()
    except Exception as exc:
        runner.legacy_error = f"KQ 2.2.1 venv unavailable: {exc}"
        log(runner.legacy_error)


def run_benchmarks(args: argparse.Namespace, settings: Settings) -> int:
    """The whole benchmark: every scenario, medians, the table (and the README)."""
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = only - set(SCENARIOS) - set(ON_DEMAND)
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS + ON_DEMAND}"
        )
    if args.write_readme and only not in (set(SCENARIOS), {"soak"}):
        raise SystemExit("--write-readme needs every scenario (no --only), or --only soak")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.monotonic()
    workdir = new_workdir()
    children = Children(workdir)
    results = Results()
    try:
        log("Starting a local Kafka ...")
        with LocalKafka(1, broker_config=BROKER_CONFIG) as kafka:
            ctx = Context(
                kafka.bootstrap_servers,
                lambda name, partitions: kafka.create_topic(name, partitions=partitions),
                children,
                workdir,
                settings,
            )
            runner = Runner(ctx, results)
            runner.soak_args = args
            if "drain" in only or "enqueue" in only:
                _prepare_legacy(runner)
            for scenario in SCENARIOS + ON_DEMAND:
                if scenario not in only:
                    continue
                runs = 1 if scenario in SINGLE_RUN else settings.runs
                for run in range(runs):
                    getattr(runner, scenario)(run)
                    children.close()
    finally:
        children.close()
    seconds = time.monotonic() - started
    meta = Meta.now(args.quick, settings.runs, LEGACY_VERSION, load_before, seconds)
    if only == {"soak"}:
        soaks: list[SoakResult] = results.details.get("soak", [])
        text = soak_markdown(soaks, meta, results)
        print(text)
        if args.write_readme:
            readme = REPO_ROOT / "README.md"
            write_readme(readme, text, marker="soak")
            log(f"Wrote the soak into {readme}")
    else:
        rows = build_rows(results, settings)
        details = detail_lines(results)
        print(text_table(rows, meta, details, settings))
        if args.write_readme:
            readme = REPO_ROOT / "README.md"
            write_readme(readme, markdown(rows, meta, details, settings))
            log(f"Wrote the table into {readme}")
    if args.keep:
        log(f"Child output and job reports kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if results.errors else 0


def run_profile(args: argparse.Namespace, settings: Settings) -> int:
    """One scenario with its kq process under py-spy; print the top of the profile."""
    child, what = profiling.TARGETS[args.profile]
    workdir = new_workdir()
    output = workdir / "py-spy.txt"
    children = Children(workdir)
    s = settings
    plans: dict[str, tuple[int, Callable[[Context], Any]]] = {
        "drain": (s.drain, lambda ctx: drain(ctx, "kq-confluent")),
        "drain-kafka-python": (s.drain, lambda ctx: drain(ctx, "kq-kafka-python")),
        "enqueue-batch": (s.enqueue_batch, lambda ctx: enqueue(ctx, "batch")),
        "enqueue-many": (s.enqueue_batch, lambda ctx: enqueue(ctx, "many")),
        "enqueue-single": (s.enqueue_single, lambda ctx: enqueue(ctx, "single")),
        "io": (s.io_per_lane * 64, lambda ctx: io_bound(ctx, 64)),
        "concurrency": (s.concurrency_jobs, lambda ctx: concurrency(ctx, "unkeyed", 8)),
        "latency": (int(s.latency_rate * s.latency_seconds), lambda ctx: latency(ctx, "kq")),
        "rss": (s.rss, rss),
    }
    jobs, plan = plans[args.profile]
    try:
        log("Starting a local Kafka ...")
        with LocalKafka(1, broker_config=BROKER_CONFIG) as kafka:
            ctx = Context(
                kafka.bootstrap_servers,
                lambda name, partitions: kafka.create_topic(name, partitions=partitions),
                children,
                workdir,
                settings,
                wrap={child: profiling.wrapper(output)},
            )
            log(f"Profiling {what} with py-spy ...")
            value = plan(ctx)
    finally:
        children.close()
    print(f"Measured under py-spy: {_show(value)}")
    print(profiling.summary(profiling.parse(output), jobs, what))
    if args.keep:
        log(f"py-spy's raw stacks kept in {output}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run (``--field``: the field benchmark, ``bench.field.cli``)."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    if "--field" in args_list:
        from bench.field.cli import main as field_main

        signal.signal(signal.SIGTERM, _terminate)
        return field_main([a for a in args_list if a != "--field"])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="kq's benchmarks on a local Kafka: medians of kq beside references "
        "measured in the same run (default run: 5-8 min on 2 cores).",
    )
    parser.add_argument("--quick", action="store_true", help="1 run, smaller counts (~1-2 min)")
    parser.add_argument(
        "--write-readme", action="store_true", help="also replace the README's bench section"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {','.join(SCENARIOS)}; on demand only: soak",
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=300.0, help="how long the soak enqueues (300)"
    )
    parser.add_argument(
        "--soak-rate", type=float, default=5000.0, help="jobs per second in the soak (5000)"
    )
    parser.add_argument(
        "--profile",
        choices=sorted(profiling.TARGETS),
        help="run one scenario's kq process under py-spy and print the top of the profile "
        "(with --quick: the quick counts)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the children's output files")
    parser.add_argument(
        "--field",
        action="store_true",
        help="the field benchmark instead: kq beside taskiq, FastStream, Celery and Faust "
        "(its own options: python -m bench --field --help)",
    )
    args = parser.parse_args(args_list)
    settings = Settings.quick() if args.quick else Settings.default()
    signal.signal(signal.SIGTERM, _terminate)
    if args.profile:
        return run_profile(args, settings)
    return run_benchmarks(args, settings)
