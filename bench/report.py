"""The benchmark's results: medians, rows against references and targets, text and README."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.scenarios import Settings


@dataclass
class Results:
    """Per-run values of every metric, failures, and details that are not numbers."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    details: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def median(self, metric: str) -> float | None:
        """Median of the runs that succeeded, or None when none did."""
        values = self.values.get(metric)
        return statistics.median(values) if values else None


@dataclass
class Row:
    """One line of the table: a kq figure, its reference from the same run, the target."""

    scenario: str
    kq: float | None
    ref_label: str
    ref: float | None
    unit: str
    target: str
    met: bool | None  # None: no target, or not measured
    table: str = ""  # which table: "" the main one, else its title
    measured_ref: bool = True  # False: ref_label states the ideal, nothing is measured

    @property
    def ratio(self) -> float | None:
        """kq divided by the reference."""
        if self.kq is None or self.ref is None or self.ref == 0:
            return None
        return self.kq / self.ref


def fmt(value: float | None, unit: str) -> str:
    """A figure with its unit: ``84,715/s``, ``2.2 ms``, ``94 MB``."""
    if value is None:
        return "failed"
    if unit == "/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "jobs":
        return f"{value:,.0f} jobs"
    if unit == "records":
        return f"{value:.2f}"
    if unit == "x":
        return "∞ (a partition got none)" if value == float("inf") else f"{value:.3f}x"
    return f"{value:g} {unit}"


def fmt_ratio(ratio: float | None) -> str:
    """``0.71x``, ``12.3x``, ``241x``."""
    if ratio is None:
        return "—"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def fmt_met(met: bool | None) -> str:
    """The last column."""
    return "—" if met is None else ("yes" if met else "**no**")


def _both(*conditions: bool | None) -> bool | None:
    if any(c is None for c in conditions):
        return None
    return all(conditions)


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _kq_at_most(row: Row, bound: float) -> bool | None:
    return _at_most(row.kq, bound)


def _order_kept(results: Results, concurrency: int) -> bool | None:
    runs = results.details.get(f"io.c{concurrency}.order")
    return None if not runs else all(not problems for problems in runs)


def build_rows(results: Results, settings: Settings) -> list[Row]:
    """The tables, from the medians of every metric."""
    from bench.report_growth import growth_rows

    rss_count, max_in_flight = settings.rss, settings.max_in_flight
    m = results.median
    rows: list[Row] = []

    def add(
        scenario: str,
        kq: str,
        ref_label: str,
        ref: str,
        unit: str,
        target: str,
        check: Callable[[Row], bool | None] | None = None,
    ) -> None:
        row = Row(scenario, m(kq), ref_label, m(ref), unit, target, None)
        row.met = check(row) if check else None
        rows.append(row)

    raw_loop = "raw loop (consume, dill.loads, call)"
    drain = "Drain no-op jobs, 1 process: kq"
    add(
        f"{drain}, confluent",
        "drain.kq-confluent",
        raw_loop,
        "drain.raw",
        "/s",
        "≥ 50,000/s and ≥ 0.40x raw",
        lambda r: _both(_at_least(r.kq, 50_000), _at_least(r.ratio, 0.40)),
    )
    add(
        f"{drain}, confluent",
        "drain.kq-confluent",
        "KQ 2.2.1",
        "drain.legacy",
        "/s",
        "≥ 50x KQ 2.2.1",
        lambda r: _at_least(r.ratio, 50),
    )
    add(f"{drain}, kafka-python", "drain.kq-kafka-python", raw_loop, "drain.raw", "/s", "—")
    add(f"{drain}, kafka-python", "drain.kq-kafka-python", "KQ 2.2.1", "drain.legacy", "/s", "—")

    def batched(r: Row) -> bool | None:
        return _both(_at_least(r.kq, 100_000), _at_least(r.ratio, 0.5))

    for path, metric in (("with queue.batch()", "batch"), ("queue.enqueue_many", "many")):
        add(
            f"Enqueue: `{path}`",
            f"enqueue.{metric}",
            "raw produce of the same bytes",
            "enqueue.raw",
            "/s",
            "≥ 100,000/s and ≥ 0.50x raw",
            batched,
        )
    for client, metric in (("confluent", "single"), ("kafka-python", "single-kafka-python")):
        add(
            f"Enqueue: single durable `enqueue`, {client}",
            f"enqueue.{metric}",
            "KQ 2.2.1 `enqueue`",
            "enqueue.legacy",
            "/s",
            "≥ 1x KQ 2.2.1",
            lambda r: _at_least(r.ratio, 1.0),
        )
    io = "IO-bound jobs (20 ms sleep), 1 partition, many keys"
    add(
        f"{io}: concurrency 8",
        "io.c8",
        "concurrency 1",
        "io.c1",
        "/s",
        "key order kept",
        lambda r: _order_kept(results, 8),
    )
    add(
        f"{io}: concurrency 64",
        "io.c64",
        "concurrency 1",
        "io.c1",
        "/s",
        "≥ 40x and key order kept",
        lambda r: _both(_at_least(r.ratio, 40), _order_kept(results, 64)),
    )
    latency = "Latency enqueue → job start at 200 jobs/s"
    raw_latency = "raw (produce+flush, poll loop)"
    for q, bound in (("p50", 5), ("p99", 25)):
        add(
            f"{latency}: {q}",
            f"latency.kq.{q}",
            raw_latency,
            f"latency.raw.{q}",
            "ms",
            f"≤ {bound} ms",
            functools.partial(_kq_at_most, bound=bound),
        )
    add(
        "Scaling, 2-partition topic, one group: 2 worker processes",
        "scaling.w2",
        "1 worker process",
        "scaling.w1",
        "/s",
        "—",
    )
    add(
        f"Peak RSS of a worker draining {rss_count:,} jobs (max_in_flight {max_in_flight:,})",
        "rss.peak",
        "RSS after 25% of the backlog",
        "rss.reference",
        "MB",
        "flat: ≤ 1.10x",
        lambda r: _at_most(r.ratio, 1.10),
    )
    return rows + growth_rows(results, settings)


def detail_lines(results: Results) -> list[str]:
    """What the table cannot show: per-run values, memory over the drain, checks, failures."""
    lines: list[str] = []
    for entry in results.details.get("rss", []):
        points = " / ".join(f"{mb:.0f}" for mb in entry.rss_mb.values())
        labels = " / ".join(f"{pct}%" for pct in entry.rss_mb)
        lines.append(
            f"Worker RSS (MB) at {labels} of the {entry.count:,}-job backlog: {points}; "
            f"peak (VmHWM) {entry.peak_mb:.0f} MB; {entry.samples} samples from /proc "
            f"(max VmRSS {entry.sampled_max_mb:.0f} MB); drained at {entry.rate:,.0f}/s."
        )
    cpu = [
        (system, results.median(f"drain-cpu.{system}"))
        for system in ("kq-confluent", "kq-kafka-python", "raw", "legacy")
    ]
    if any(us is not None for _, us in cpu):
        shown = ", ".join(f"{name} {us:,.1f}" for name, us in cpu if us is not None)
        lines.append(
            "Drain, CPU time per job (µs, user+system of all the worker process's threads, "
            f"first to last job; less sensitive to other load than the rates): {shown}."
        )
    enqueue_cpu = [
        (system, results.median(f"enqueue-cpu.{system}"))
        for system in ("batch", "many", "single", "single-kafka-python", "raw")
    ]
    if any(us is not None for _, us in enqueue_cpu):
        shown = ", ".join(f"{name} {us:,.1f}" for name, us in enqueue_cpu if us is not None)
        lines.append(
            "Enqueue, CPU time per job (µs, user+system of the whole enqueuing process, "
            f"librdkafka's threads included, over the timed part): {shown}."
        )
    for workers in (1, 2):
        splits = results.details.get(f"scaling.w{workers}", [])
        if workers == 2 and splits:
            shared = sum(1 for pids in splits if len(set(pids.values())) == 2)
            lines.append(
                f"Scaling: the two partitions were drained by two different processes in "
                f"{shared} of {len(splits)} runs."
            )
    for concurrency in (1, 8, 64):
        for problems in results.details.get(f"io.c{concurrency}.order", []):
            for problem in problems:
                lines.append(f"Key order at concurrency {concurrency}: {problem}")
    from bench.report_growth import growth_details

    lines += growth_details(results)
    per_run = ", ".join(
        f"{metric} [{'; '.join(_short(v) for v in values)}]"
        for metric, values in sorted(results.values.items())
    )
    lines.append(f"Per-run values: {per_run}.")
    for metric, errors in sorted(results.errors.items()):
        for error in errors:
            first = error.strip().splitlines()[0] if error.strip() else "?"
            lines.append(f"FAILED {metric}: {first}")
    return lines


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


# -- the machine ----------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU model, cores, memory, kernel, Python, load average: for the report's header."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if found:
            memory = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count() or "?"),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions(legacy: str) -> dict[str, str]:
    """Versions of everything measured."""
    import confluent_kafka
    import dill
    import kafka

    from kq.local import KAFKA_VERSION
    from kq.version import __version__ as kq_version

    return {
        "kq": kq_version,
        "kafka": KAFKA_VERSION,
        "confluent-kafka": (
            f"{confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"
        ),
        "kafka-python": kafka.__version__,
        "dill": dill.__version__,
        "legacy": legacy,
    }


@dataclass
class Meta:
    """The header of a report."""

    date: str
    quick: bool
    runs: int
    machine: dict[str, str]
    versions: dict[str, str]
    load_after: str
    seconds: float

    @classmethod
    def now(cls, quick: bool, runs: int, legacy: str, load_before: str, seconds: float) -> Meta:
        """Describe this run."""
        info = machine()
        load_after = info["load"]
        info["load"] = load_before
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return cls(date, quick, runs, info, versions(legacy), load_after, seconds)

    def header(self) -> list[str]:
        """Lines describing when, where and with what."""
        mach, ver = self.machine, self.versions
        kind = "quick run (--quick)" if self.quick else "default run"
        return [
            f"{self.date}, {kind}: medians of {self.runs} run(s) per figure, "
            f"{self.seconds / 60:.1f} min in all.",
            f"Machine: {mach['cpu']}, {mach['cores']} cores (nproc), {mach['memory']} RAM, "
            f"{mach['kernel']}, Python {mach['python']}; load average (1/5/15 min) "
            f"{mach['load']} before, {self.load_after} after.",
            f"Apache Kafka {ver['kafka']} (kq.local, 1 node, on the same 2 cores); kq {ver['kq']}; "
            f"confluent-kafka {ver['confluent-kafka']}; kafka-python {ver['kafka-python']}; "
            f"dill {ver['dill']}; reference KQ {ver['legacy']} from PyPI in its own venv.",
        ]


# -- rendering ------------------------------------------------------------------

_COLUMNS = ("scenario", "kq", "reference (same run)", "ratio", "target", "met")


def _cells(row: Row) -> list[str]:
    ref = f"{row.ref_label}: {fmt(row.ref, row.unit)}" if row.measured_ref else row.ref_label
    return [
        row.scenario,
        fmt(row.kq, row.unit),
        ref,
        fmt_ratio(row.ratio),
        row.target,
        fmt_met(row.met),
    ]


def _tables(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by table, in order of first appearance."""
    tables: dict[str, list[Row]] = {}
    for row in rows:
        tables.setdefault(row.table, []).append(row)
    return list(tables.items())


def text_table(rows: list[Row], meta: Meta, details: list[str], settings: Settings) -> str:
    """The plain-text report for stdout."""
    cells = [[c.replace("`", "").replace("**", "") for c in _cells(r)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_COLUMNS)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [*meta.header()]
    for title, group in _tables(rows):
        out += ["", title.replace("`", "").replace("**", "")] if title else [""]
        out += [line(_COLUMNS), line(["-" * w for w in widths])]
        out += [line([c.replace("`", "").replace("**", "") for c in _cells(r)]) for r in group]
    out += ["", *details, "", "How measured:", *(f"- {line}" for line in method(settings))]
    return "\n".join(out)


def method(settings: Settings) -> list[str]:
    """How each figure is measured (with this run's counts)."""
    from bench.report_growth import growth_method

    s = settings
    io_counts = ", ".join(f"{s.io_per_lane * c:,}" for c in (1, 8, 64))
    latency_jobs = int(s.latency_rate * s.latency_seconds)
    return [
        "Every run uses a fresh topic and consumer group on one local broker; kq and its "
        "reference run back to back; the ratio is kq's median over the reference's. Drain and "
        "scaling rates are timed inside the worker, from the first job's start to the last "
        "job's (process start and group join excluded).",
        f"Drain: {s.drain:,} pre-filled no-op jobs (kq's default serializer; KQ 2.2.1 gets "
        f"{s.drain_legacy:,}), one worker process, `Worker.connect(...)` defaults. Raw loop: "
        "confluent-kafka `consume(1000)`, `dill.loads`, call, no commits. KQ 2.2.1: its `Worker` "
        "with a kafka-python consumer (it commits after every message).",
        f"Enqueue: {s.enqueue_batch:,} jobs batched; {s.enqueue_single:,} single `enqueue` "
        f"calls (KQ 2.2.1: {s.enqueue_legacy:,}); each returns once the broker acknowledged. "
        "Raw: `produce` of the pre-serialized bytes with kq's producer settings, then `flush`.",
        f"IO-bound: {io_counts} jobs at concurrency 1, 8, 64, {s.io_keys:,} keys in turn on one "
        "partition; rate = jobs / (last end - first start). Key order: per key, in start "
        "order the sequence numbers ascend and each job starts after the previous one ended.",
        f"Latency: {latency_jobs:,} jobs at {s.latency_rate:.0f}/s through `queue.enqueue` to a "
        "worker that has joined and is idle; `time.time()` at the job's start minus just "
        "before `enqueue`. Raw: `produce` + `flush` per job, a `poll()` loop.",
        f"Scaling: {s.scaling:,} no-op jobs on 2 partitions, 1 or 2 kq workers of one group "
        "started together, first job to last job across both.",
        f"Memory: one run; VmRSS reported by jobs at points of a {s.rss:,}-job backlog, "
        "VmHWM (peak) and /proc samples every 0.25 s.",
        *growth_method(s),
    ]


def markdown(rows: list[Row], meta: Meta, details: list[str], settings: Settings) -> str:
    """The README section."""
    out = []
    for line in meta.header():
        out += [line, ""]
    for title, group in _tables(rows):
        if title:
            out += ["", f"**{title}**", ""]
        out.append("| " + " | ".join(_COLUMNS) + " |")
        out.append("| " + " | ".join(["---"] * len(_COLUMNS)) + " |")
        for row in group:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    out += ["", "How measured:", ""]
    out += [f"- {line}" for line in method(settings)]
    out += ["", "Details of this run:", ""]
    out += [f"- {d}" for d in details]
    return "\n".join(out)


def write_readme(readme: Path, section: str, marker: str = "bench") -> None:
    """Replace what is between the README's ``<!-- MARKER:start/end -->`` lines, nothing else."""
    text = readme.read_text()
    opening, closing = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    start, end = text.find(opening), text.find(closing)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {opening} ... {closing} section")
    before = text[: start + len(opening)]
    readme.write_text(f"{before}\n{section}\n{text[end:]}")
