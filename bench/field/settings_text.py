"""What the field report says about each library's setup and about the method.

Kept beside the peers' scripts' docstrings (``bench/field/peers``), which show
the same settings in code; the report prints these lines with every run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.field.scenarios import FieldSettings

# Short notes in the table's cells: the form each library was measured in.
CELL_NOTES: dict[tuple[str, str], str] = {
    ("batch", "kq"): "`queue.batch()`",
    ("batch", "taskiq"): "`gather` of `kiq`",
    ("batch", "faststream"): "`publish_batch`",
    ("batch", "celery"): "`group`",
    ("batch", "faust"): "`send`, `flush`",
    ("io", "faststream"): "ACK: 1 at a time per partition",
}

SETTINGS = (
    "**Every library**: one topic of one partition per run (created by the benchmark: "
    "automatic topic creation is off on this broker), a fresh consumer group, reading from "
    "the earliest offset, producers waiting for all in-sync replicas (`acks=all`), a "
    "consumer session timeout of 10 s (so a SIGKILLed worker's partition goes to its "
    "replacement after the same wait for all). The jobs run the same bodies "
    "(`bench/field/peers/fieldjobs.py`); libraries that run jobs on an event loop wait "
    "with `await asyncio.sleep`, those that run them on threads with `time.sleep`.",
    "**kq**: `Worker.connect(bootstrap, topic, group)` with its defaults: a confluent-kafka "
    "consumer; a job's offset is committed after the job and its callback, asynchronously "
    "every `commit_interval` and synchronously on a graceful stop; `concurrency=64` for the "
    "IO-bound jobs. `Queue.connect(...)`: `enqueue` returns once the broker acknowledged; "
    "batched: `with queue.batch() as b: b.enqueue(...)`.",
    "**taskiq** (`taskiq-aio-kafka`, on aiokafka): `taskiq worker taskiq_peer:broker "
    "--workers 1 --max-async-tasks N --ack-type when_executed`; the consumer's `group_id`, "
    '`auto_offset_reset="earliest"` (the default, latest, skips jobs enqueued before the '
    "worker's first start). *Changed to make it run*: taskiq-aio-kafka 1.0.0 hands aiokafka "
    "kafka-python's partitioner and assignor, which kafka-python 3.x (what its install "
    "brings) no longer supports — every send fails (`'DefaultPartitioner' object is not "
    "callable`) and the worker does not start (`'str' object has no attribute "
    "'metadata'`); aiokafka's own `DefaultPartitioner` and `RoundRobinPartitionAssignor` "
    "are passed through its `configure_producer` / `configure_consumer`. *Not available*: "
    "the Kafka broker yields plain bytes, so `--ack-type` has nothing to acknowledge; "
    "offsets are aiokafka's auto-commits (every 5 s) of what the receiver was handed, "
    "before the job ran. Batched: taskiq has no batch API; `asyncio.gather` of `kiq` "
    "calls, 100 at a time (7 times as fast as 5,000 at a time), lets aiokafka batch them.",
    "**FastStream** (`KafkaBroker`, on aiokafka): `faststream run faststream_peer:app`; "
    '`@broker.subscriber(topic, group_id=..., auto_offset_reset="earliest", '
    "ack_policy=AckPolicy.ACK)` — its documented at-least-once: the offset is committed "
    "(awaited) after each handler returns; the default, ACK_FIRST, auto-commits on receipt. "
    "`max_workers=64` for the IO-bound jobs: with `AckPolicy.ACK` FastStream runs one "
    "message per partition at a time (concurrency across partitions only), so on this "
    "one-partition topic the jobs run one after another. Single: `await broker.publish`; "
    "batched: `await broker.publish_batch(*bodies)` 1,000 at a time, with "
    "`max_batch_size` at 1 MiB (the default 16 KiB batch holds ~160 of these jobs).",
    "**Celery** on kombu's `confluentkafka` transport: `celery -A celery_peer worker -P solo` "
    "(one process; `-P threads -c 64` for the IO-bound jobs) `--without-gossip "
    "--without-mingle --without-heartbeat`; `task_acks_late=True`, "
    "`worker_prefetch_multiplier=1`, `task_reject_on_worker_lost=True` (Celery's documented "
    "setup for tasks that must not be lost), no result backend, "
    "`worker_enable_remote_control=False` (remote control needs fanout queues, which this "
    "transport lacks). *Changed from the defaults*: `session.timeout.ms` 10 s (librdkafka's "
    "45 s otherwise) and the virtual transport's `polling_interval` 0.01 s instead of 1 s: "
    "when its prefetch is full the worker sleeps that long, and with 64 busy threads every "
    "refill waited a second (67 jobs/s). The transport commits the consumer's position on "
    "each acknowledgement: everything fetched so far, not only the acknowledged message. "
    "Single: `task.delay`; batched: `group(...).apply_async()` (each message is still one "
    "produce and flush in this transport).",
    "**Faust** (`faust-streaming`, on aiokafka): `faust_peer.py worker --without-web`; an "
    "agent with `concurrency` 1 (64 for the IO-bound jobs), Faust's at-least-once default: "
    "an event is acknowledged when the agent has processed it, acknowledged offsets are "
    "committed every `broker_commit_interval` (2.8 s) or 10,000 events; "
    "`broker_session_timeout` 10 s (60 s by default), an in-memory store, no web server. "
    "Single: `await topic.send(...)` and then the returned future (acknowledged on "
    "return); batched: `topic.send` for each job, then `producer.flush()`.",
)


def method(settings: FieldSettings) -> list[str]:
    """How each figure is measured."""
    s = settings
    return [
        "Each repetition runs every scenario for kq and every peer back to back on one local "
        "broker; the figures are medians of the repetitions. Workers are started the way each "
        "library documents, from the command line, in their own venvs; each is SIGKILLed "
        "(its whole process group) once measured.",
        "Drain: jobs pre-filled with the library's own batched enqueue; one worker process; "
        "the rate is timed inside the worker by the jobs themselves, from the first job's "
        "start to the last one's (start-up and the group join excluded); CPU is the worker "
        "process's between those two points.",
        "Enqueue: a fresh process connects and sends one job first (outside the timing), "
        "then enqueues the jobs; the time ends when the last one is acknowledged.",
        f"IO-bound: {s.io_concurrency} as the concurrency knob (`concurrency`, "
        "`--max-async-tasks`, `max_workers`, `-c` with `-P threads`, agent `concurrency`); "
        "rate = jobs / (last end - first start).",
        f"Latency: {int(s.latency_rate * s.latency_seconds):,} jobs at {s.latency_rate:.0f}/s "
        "through the single enqueue, to a worker that has run a first probe job; "
        "`time.time()` at the job's start minus just before the enqueue call.",
        f"SIGKILL: {s.sigkill_jobs:,} pre-filled jobs (2 ms each, then a ledger line); the "
        f"worker is SIGKILLed once {s.sigkill_at:,} lines are in the ledger and a new worker "
        "of the same group starts; the run ends when every job ran (or the new worker was "
        "idle 10 s with jobs missing). Lost: jobs with no ledger line; run twice: ledger "
        "lines beyond the first per job.",
        "Ceilings: the raw loops run in the project's venv on confluent-kafka, the drain's on "
        "the same pre-filled kq jobs, without commits.",
        "`commit_interval`: kq's drain and SIGKILL scenarios at each interval "
        f"({', '.join(f'{c:g} s' for c in s.commit_intervals)}), in the same repetitions.",
    ]
