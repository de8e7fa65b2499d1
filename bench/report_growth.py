"""The tables of cost as work grows (issue 17), and the soak's section of the README."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.report import Meta, Results, Row

if TYPE_CHECKING:
    from bench.scenarios import Settings

CONCURRENCY = "Concurrency on short jobs: no-op jobs, 1 partition, 1 worker process"
PARTITIONS = "Batched enqueue (`with queue.batch()`) and partitions"
RESUME = "Head-of-line memory and exact resume (one partition, concurrency 8)"

_KEYS = (("unkeyed", "unkeyed"), ("1000-keys", "1,000 keys"), ("1-key", "1 key"))


def _ratio_at_least(bound: float) -> Callable[[Row], bool | None]:
    return lambda r: None if r.ratio is None else r.ratio >= bound


def _kq_at_most(bound: float) -> Callable[[Row], bool | None]:
    return lambda r: None if r.kq is None else r.kq <= bound


def growth_rows(results: Results, settings: Settings) -> list[Row]:
    """Rows of the three tables."""
    m = results.median
    rows: list[Row] = []

    def add(
        table: str,
        scenario: str,
        kq: str,
        ref_label: str,
        ref: str,
        unit: str,
        target: str,
        check: Callable[[Row], bool | None] | None = None,
    ) -> None:
        row = Row(scenario, m(kq), ref_label, m(ref), unit, target, None, table)
        row.met = check(row) if check else None
        rows.append(row)

    n = settings.concurrency_jobs
    for keys, label in _KEYS:
        add(
            CONCURRENCY,
            f"{n:,} jobs, {label}: concurrency 8",
            f"conc.{keys}.c8",
            "concurrency 1",
            f"conc.{keys}.c1",
            "/s",
            "≥ 0.60x",
            _ratio_at_least(0.60),
        )
    add(
        CONCURRENCY,
        f"{n:,} jobs, unkeyed, concurrency 8: with exact resume (default)",
        "conc.resume-on.c8",
        "without (`exact_resume=False`)",
        "conc.resume-off.c8",
        "/s",
        "≥ 0.90x",
        _ratio_at_least(0.90),
    )
    count = settings.partition_jobs
    for warmed in (True, False):
        kind = "warm" if warmed else "new"
        state = "topic written to before" if warmed else "new topic (first writes)"
        for partitions in (16, 64, 256):
            add(
                PARTITIONS,
                f"{count:,} jobs, {state}: {partitions} partitions",
                f"parts.{kind}.p{partitions}",
                "1 partition",
                f"parts.{kind}.p1",
                "/s",
                "≥ 0.60x" if warmed and partitions == 256 else "—",
                _ratio_at_least(0.60) if warmed and partitions == 256 else None,
            )
    limit = settings.head_of_line_limit
    add(
        RESUME,
        f"Jobs run again after a SIGKILL behind a slow job ({limit:,} finished behind it)",
        "resume.slow.exact",
        "without exact resume",
        "resume.slow.plain",
        "jobs",
        "only those running (≤ 8)",
        _kq_at_most(8),
    )
    add(
        RESUME,
        f"Jobs run again after a SIGKILL halfway through {settings.mid_drain_jobs:,} jobs",
        "resume.mid.exact",
        "without exact resume",
        "resume.mid.plain",
        "jobs",
        "—",
    )
    behind = settings.behind_jobs
    add(
        RESUME,
        f"Peak RSS while a {settings.slow_seconds:g} s job holds back {behind:,} short ones:"
        " head_of_line_limit 10,000 (default)",
        "hol.limited.rss",
        "no limit (as before)",
        "hol.unlimited.rss",
        "MB",
        "—",
    )
    add(
        RESUME,
        "Jobs finished behind that slow job when it ended: head_of_line_limit 10,000",
        "hol.limited.behind",
        "no limit (as before)",
        "hol.unlimited.behind",
        "jobs",
        "≤ limit + max_in_flight",
        _kq_at_most(10_000 + settings.max_in_flight),
    )
    return rows


def growth_details(results: Results) -> list[str]:
    """CPU per job at each concurrency, and what the reruns were out of."""
    lines: list[str] = []
    cpu = []
    for keys, label in _KEYS:
        one, eight = (results.median(f"conc-cpu.{keys}.c{c}") for c in (1, 8))
        if one is not None and eight is not None:
            cpu.append(f"{label} {one:.1f} / {eight:.1f}")
    if cpu:
        lines.append(
            "Concurrency, CPU time per no-op job (µs, all the worker's threads) at concurrency "
            f"1 / 8: {', '.join(cpu)}."
        )
    for kind, what in (("slow", "behind the slow job"), ("mid", "halfway through the drain")):
        before = [
            (tag, results.median(f"resume.{kind}-before.{tag}")) for tag in ("exact", "plain")
        ]
        shown = ", ".join(f"{tag} {v:,.0f}" for tag, v in before if v is not None)
        if shown:
            lines.append(f"SIGKILL {what}: jobs that had run when it came: {shown}.")
    return lines


def growth_method(s: Settings) -> list[str]:
    """How the three tables are measured."""
    return [
        f"Concurrency: {s.concurrency_jobs:,} pre-filled no-op jobs on one partition, drained "
        "by one kq worker at concurrency 1 and 8 (unkeyed; 1,000 keys in turn; one key), "
        "first job to last job; and at concurrency 8 with exact resume (its default) or "
        "without. IO-bound scaling (concurrency 64 vs 1) is in the first table.",
        f"Partitions: {s.partition_jobs:,} no-op jobs through `with queue.batch()` into a new "
        "topic of 1, 16, 64 or 256 partitions (kq spreads unkeyed jobs evenly). *Written to "
        "before*: each partition got two small produce batches first (over 4 KiB, so the "
        "broker has made its first index entry); *new*: it had none, so the broker's "
        "one-time index set-up of each partition falls inside the timing.",
        f"Reruns: one partition, a job that sleeps 600 s the first time it runs, then "
        f"{2 * s.head_of_line_limit:,} short jobs that record each run; a worker at "
        f"concurrency 8 (head_of_line_limit {s.head_of_line_limit:,}) is SIGKILLed 2.5 s "
        "after the partition paused at the limit; a new worker of the group runs until every "
        "job ran; *run again* = runs beyond the first. Halfway: "
        f"{s.mid_drain_jobs:,} such short jobs, no slow one, SIGKILL once half have run. "
        "Both with and without exact resume, one run each.",
        f"Head-of-line memory: one job sleeping {s.slow_seconds:g} s, then {s.behind_jobs:,} "
        "short jobs, concurrency 8; VmRSS sampled every 0.1 s while the slow job runs; "
        "*finished behind it* = short jobs that ran before it ended. One run each.",
    ]


def soak_markdown(soaks: list[Any], meta: Meta, results: Results) -> str:
    """The README's soak section."""
    out: list[str] = []
    for line in meta.header()[:2]:
        out += [line, ""]
    if not soaks:
        errors = "; ".join(results.errors.get("soak", ["no result"]))
        return "\n".join([*out, f"The soak failed: {errors}"])
    out.append("Run on demand: `bash scripts/bench.sh --only soak [--write-readme]`.")
    out.append("")
    out += [f"- {line}" for line in soaks[0].lines()]
    return "\n".join(out)
