"""The tables of cost as work grows (issue 17), and the soak's section of the README."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.delays import DELAY_RANGES, MODEL_RANGES
from bench.report import Meta, Results, Row
from bench.spread import BURST_JOBS, DRAIN_JOB_SECONDS, DRAIN_JOBS

if TYPE_CHECKING:
    from bench.scenarios import Settings

CONCURRENCY = "Concurrency on short jobs: no-op jobs, 1 partition, 1 worker process"
PARTITIONS = "Batched enqueue (`with queue.batch()`) and partitions"
RESUME = "Head-of-line memory and exact resume (one partition, concurrency 8)"
DELAYS = "Delayed jobs: lateness and forwarding cost (forwarder in a process of its own)"
SPREAD = "Unkeyed jobs over 4 partitions, and a group of two worker processes"

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
        row = Row(scenario, m(kq), ref_label, m(ref), unit, target, None, table, bool(ref))
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
    add(
        PARTITIONS,
        f"{count:,} jobs, topic written to before, kafka-python: 256 partitions",
        "parts.warm-kp.p256",
        "1 partition",
        "parts.warm-kp.p1",
        "/s",
        "≥ 0.60x",
        _ratio_at_least(0.60),
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
    jobs_delayed = settings.delay_jobs
    for low, high in DELAY_RANGES:
        name = f"delays.{low:g}-{high:g}"
        what = f"{jobs_delayed:,} jobs delayed {low:g}-{high:g} s"
        for stat, target, bound in (("p50", "—", None), ("p99", "≤ 1,000 ms", 1000.0)):
            add(
                DELAYS,
                f"{what}: lateness {stat}",
                f"{name}.{stat}",
                "earliest (negative: early)",
                f"{name}.min",
                "ms",
                target,
                None if bound is None else _kq_at_most(bound),
            )
        add(
            DELAYS,
            f"{what}: records forwarded per job (hops and home)",
            f"{name}.hops",
            "the routing alone, on an ideal clock",
            f"{name}.model",
            "records",
            "≤ 2",
            _kq_at_most(2.0),
        )
    for low, high in MODEL_RANGES:
        add(
            DELAYS,
            f"Delays {low:g}-{high:g} s (not run: the routing alone, ideal clock):"
            " records forwarded per job",
            f"delays.{low:g}-{high:g}.model",
            "the routing before issue 17",
            f"delays.{low:g}-{high:g}.model-before",
            "records",
            "≤ 2" if high <= 3600 else "—",
            _kq_at_most(2.0) if high <= 3600 else None,
        )
    for client in ("confluent", "kafka-python"):
        add(
            SPREAD,
            f"{BURST_JOBS} single `enqueue` calls, {client}: fullest partition / emptiest",
            f"spread.burst.{client}",
            "the client's own partitioner",
            f"spread.burst-raw.{client}",
            "x",
            "≤ 1.10x",
            lambda r: None if r.kq is None else r.kq <= 1.10,
        )
    for client in ("confluent", "kafka-python"):
        add(
            SPREAD,
            f"{DRAIN_JOBS:,} jobs of 10 ms in a `queue.batch()` ({client}), 2 worker processes:"
            " later finish / earlier finish",
            f"spread.drain2.{client}",
            "ideal: 1.000x (both finish together)",
            "",
            "x",
            "≤ 1.10x",
            lambda r: None if r.kq is None else r.kq <= 1.10,
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
    for low, high in DELAY_RANGES:
        name = f"delays.{low:g}-{high:g}"
        per_job, latest = results.median(f"{name}.cpu"), results.median(f"{name}.max")
        if per_job is not None and latest is not None:
            lines.append(
                f"Delays {low:g}-{high:g} s: forwarder CPU per delayed job {per_job:,.0f} µs"
                f" (its whole process); latest job {latest:,.0f} ms after its due time."
            )
    for client in ("confluent", "kafka-python"):
        for raw in ("", "-raw"):
            counts = results.details.get(f"spread.burst{raw}.{client}", [])
            if counts:
                who = "the client's partitioner" if raw else "kq"
                shown = "; ".join("/".join(str(c) for c in run) for run in counts)
                lines.append(f"Burst of {BURST_JOBS}, {client}, {who}: jobs per partition {shown}.")
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
        f"Delays: {s.delay_jobs:,} jobs per range, their delays spread evenly over it (50 "
        "batches), run by a kq worker with `scheduling=False` while a delay forwarder runs alone "
        "in its own process, both started first on a topic whose tiers exist (one delayed "
        "job has gone through them); the forwarder's CPU: user+system of its process, clients "
        "included, over the whole run; lateness = `time.time()` at the job's start minus its "
        "due time; forwarded "
        "records = the tiers' end offsets (each job's first tier write plus every hop) over the "
        "jobs, which equals the forwarder's writes (hops plus the write home). One run. The "
        "*routing alone* rows count the writes of `kq.schedule.route` on a clock with no "
        "processing time (3,600 delays spread over the range).",
        f"Spread: {BURST_JOBS} unkeyed `queue.enqueue` calls into a new 4-partition topic, counted "
        "per partition from the end offsets; the reference sends the same job bytes through a "
        "producer with kq's settings, one acknowledged record at a time, partitioned by the client."
        f" Two processes: {DRAIN_JOBS:,} jobs sleeping {DRAIN_JOB_SECONDS * 1000:g} ms enqueued in "
        "one batch into a new 4-partition topic, then two kq workers of one group (concurrency 1) "
        "started together; the time from their start to each one's last job end, the later over "
        "the earlier.",
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
