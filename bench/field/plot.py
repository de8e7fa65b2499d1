"""The field benchmark's plot (matplotlib, the bench extra): throughput, the SIGKILL row,
and kq's commit-interval trade-off, in one PNG."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.field.report import FieldMeta, FieldResults

SYSTEMS = ("kq", "taskiq", "faststream", "celery", "faust")
COLORS = {
    "kq": "#3949ab",
    "taskiq": "#8d6e63",
    "faststream": "#26a69a",
    "celery": "#7cb342",
    "faust": "#ef6c00",
}
THROUGHPUT = (
    ("drain", "drain,\n1 process"),
    ("single", "enqueue,\nsingle"),
    ("batch", "enqueue,\nbatched"),
    ("io", "IO-bound,\nconcurrency 64"),
)


def write(results: FieldResults, meta: FieldMeta, path: Path) -> None:
    """Draw the three panels and save them as ``path`` (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.field.report import LABELS, _interval_values

    fig, (left, middle, right) = plt.subplots(
        1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [2.2, 1.2, 1.2]}
    )
    width = 0.16
    for n, system in enumerate(SYSTEMS):
        values = [results.median(f"{metric}.{system}") or 0.0 for metric, _ in THROUGHPUT]
        xs = [i + (n - 2) * width for i in range(len(THROUGHPUT))]
        left.bar(xs, values, width, label=LABELS[system], color=COLORS[system])
    left.set_yscale("log")
    left.set_xticks(range(len(THROUGHPUT)), [label for _, label in THROUGHPUT])
    left.set_ylabel("jobs per second (log scale)")
    left.set_title("Throughput (higher is better)")
    left.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    left.grid(axis="y", which="both", alpha=0.3)

    for offset, (metric, hatch) in enumerate((("lost", "xx"), ("twice", ""))):
        for n, system in enumerate(SYSTEMS):
            value = results.median(f"{metric}.{system}") or 0.0
            x = n + (offset - 0.5) * 0.38
            middle.bar(
                x, value, 0.38, color=COLORS[system], hatch=hatch, edgecolor="black", linewidth=0.4
            )
            middle.annotate(f"{value:,.0f}", (x, value), ha="center", va="bottom", fontsize=7)
    middle.set_xticks(range(len(SYSTEMS)), [LABELS[s] for s in SYSTEMS], fontsize=8)
    middle.set_title(
        f"SIGKILL mid-way, {meta.settings.sigkill_jobs:,} jobs\nhatched: lost · plain: run twice",
        fontsize=10,
    )
    middle.set_ylabel("jobs (lower is better)")
    middle.grid(axis="y", alpha=0.3)

    intervals = list(meta.settings.commit_intervals)
    drains, twice = [], []
    for seconds in intervals:
        d, t, _ = _interval_values(results, seconds)
        drains.append(statistics.median(d) if d else float("nan"))
        twice.append(statistics.median(t) if t else float("nan"))
    right.plot(intervals, twice, "o-", color="#c62828", label="run twice after SIGKILL")
    right.set_xlabel("kq commit_interval (s)")
    right.set_ylabel("jobs run twice", color="#c62828")
    right.set_title("kq: reruns against drain rate", fontsize=10)
    other = right.twinx()
    other.plot(intervals, drains, "s--", color=COLORS["kq"], label="drain rate")
    other.set_ylabel("drain, jobs/s", color=COLORS["kq"])
    other.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)

    fig.suptitle(
        f"kq beside taskiq, FastStream, Celery and Faust — one local Kafka, "
        f"medians of {meta.settings.runs} ({meta.date})",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
