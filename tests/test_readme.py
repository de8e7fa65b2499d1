"""The README's quick start runs as written, against the real broker.

Only the address (127.0.0.1:9092), the topic name and the endless
``worker.start()`` are replaced: the address by the session broker's, the
topic by a fresh one, and ``start()`` by ``start(max_messages=N)`` so the
example ends.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def _quick_start_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start") : text.index("## Working on kq")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_quick_start_runs_as_written_and_every_job_runs(
    bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    tasks, enqueue, worker, kq_style = _quick_start_blocks()
    assert tasks.startswith("# tasks.py\n")
    (tmp_path / "tasks.py").write_text(tasks)
    topic = make_topic(partitions=4)

    def adapted(block: str, messages: int) -> str:
        block = block.replace("127.0.0.1:9092", bootstrap).replace('"jobs"', repr(topic))
        return block.replace("worker.start()", f"worker.start(max_messages={messages})")

    # enqueue one job; the Python worker (group "workers") runs it; KQ's style
    # enqueues three more and a worker of a new group runs all four from the start
    script = "\n".join(
        [adapted(enqueue, 0), adapted(worker, 1), "print('---')", adapted(kq_style, 4)]
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, _, second = done.stdout.partition("---")
    assert first.split()[1:] == ["success", "3"], done.stdout  # the job id, then the callback
    assert second.strip() == "", second
    executed = re.findall(r"Job \w+ returned: (\d+)", done.stderr)
    assert executed == ["3", "7", "11", "3"] or sorted(executed) == ["11", "3", "3", "7"], (
        done.stderr[-3000:]
    )
    # the clients' own chatter stays off, kq's diagnostics too: only KQ's lines
    noise = [
        line
        for line in done.stderr.splitlines()
        if line and not line.startswith(("INFO:kq.worker:", "ERROR:kq.worker:"))
    ]
    assert noise == [], noise
