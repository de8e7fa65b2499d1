"""Delayed jobs and retry backoff on Kafka topics, which have no delay of their own.

A job that must wait (``using(delay=...)``, or a failed attempt waiting for its
retry) is written to one of a few *delay tiers* of its topic,
``<topic>.kq-delay-1s`` … ``<topic>.kq-delay-1d``, with its due time, home
topic (and home partition, if it has one) in headers. A job waits in the
smallest tier whose time covers its wait (a job due in 45 s in the ``1m``
tier), so a record is ready at its due time, at most its tier's time after
it was written. Records in one tier partition are therefore ready in no
particular order: the forwarder reads each partition on as records arrive
and keeps those not ready yet in memory until they are (bounded; see
``kq._forwarder_state``), so none waits behind another. A ready record that
is due goes back to its home topic: one forwarded record per delayed job for
waits up to a day; a longer wait passes through the ``1d`` tier once a day
(a job due in 30 days: 31 records), never more than ``MAX_DELAY`` (365 days)
allows.

**Time.** Every wait is measured on the clock of the forwarder that reads the
record, from the moment the record was written, which is taken as the earlier
of the writer's clock (header ``kq-written``, else the record's timestamp) and
the moment the forwarder read it (a record cannot have been written later than
that). The wait itself, ``kq-due`` minus ``kq-written``, is a difference on the
writer's own clock, whatever that clock's offset. So:

- a writer (producer or worker) whose clock is *ahead* of the forwarder's never
  delays anything: its records count from when they are read, and neither they
  nor the records behind them wait longer than their tier's time;
- a writer whose clock is *behind* the forwarder's by *s* seconds makes its
  own records look *s* seconds older: they run up to *s* seconds early (never
  others' records); this is the one dependence on clocks agreeing, bounded by
  the skew;
- the broker's clock is never used, so tiers with ``LogAppendTime`` timestamps
  and a worker clock ahead of the broker do not make records hop: a record a
  forwarder writes counts from its own clock.

Every worker runs a forwarder. All forwarders of one topic share one consumer
group, ``<topic>.kq-delay``, whichever worker group they belong to, so each
delayed record is forwarded once: a delayed job goes home once and every group
then reads it as a fresh job; a retry carries the group whose attempt failed
(``kq-group``) and only that group runs it. What waits in the tiers survives
worker restarts and runs once a worker is back. A record is committed in a tier
only after the broker acknowledged its next hop (at least once, as everywhere
in kq); a record that can never be delivered home (too large for the home
topic, a partition it does not have, headers that name no home) goes to the
dead-letter topic with the reason instead of blocking its tier.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from kq._checks import fail_type, fail_value, is_number
from kq._producer import Record
from kq.errors import EnqueueError
from kq.retry import H_DUE, H_PARTITION, H_TOPIC, H_WRITTEN, MAX_DELAY, TIER_HEADERS

__all__ = [
    "MAX_DELAY",
    "TIERS",
    "dead_letter_topic",
    "delay_topic",
    "delay_topics",
    "forwarder_group",
    "route",
]

# (suffix, seconds), smallest first.
TIERS: tuple[tuple[str, int], ...] = (
    ("1s", 1),
    ("10s", 10),
    ("1m", 60),
    ("10m", 600),
    ("1h", 3600),
    ("1d", 86400),
)
TIER_MS = {suffix: seconds * 1000 for suffix, seconds in TIERS}
DUE_SLACK_MS = 5  # a record this close to due is forwarded home rather than held again
_TIER_MARK = ".kq-delay-"


def now_ms() -> int:
    """The wall clock of this process in milliseconds: the one kq schedules by."""
    return int(time.time() * 1000)


def delay_topic_prefix(topic: str) -> str:
    """What the names of ``topic``'s delay tiers start with (producers' ACL prefix)."""
    return f"{topic}{_TIER_MARK}"


def delay_topic(topic: str, suffix: str) -> str:
    """The delay tier ``suffix`` (e.g. ``"10s"``) of ``topic``."""
    return f"{topic}{_TIER_MARK}{suffix}"


def delay_topics(topic: str) -> list[str]:
    """All delay tiers of ``topic``, smallest first."""
    return [delay_topic(topic, suffix) for suffix, _ in TIERS]


def delay_topic_pattern(topic: str) -> str:
    """A subscription regex matching exactly the delay tiers of ``topic`` (also ones made later)."""
    suffixes = "|".join(re.escape(suffix) for suffix, _ in TIERS)
    return f"^{re.escape(topic)}{re.escape(_TIER_MARK)}({suffixes})$"


def tier_of(tier_topic: str) -> int | None:
    """The wait in ms of a tier topic, from its name; None if it is none of kq's tiers."""
    return TIER_MS.get(tier_topic.rsplit(_TIER_MARK, 1)[-1])


def dead_letter_topic(topic: str) -> str:
    """Where jobs of ``topic`` go after their last failed attempt (default name)."""
    return f"{topic}.kq-dead"


def forwarder_group(topic: str) -> str:
    """The one consumer group of every delay forwarder of ``topic`` (any worker group)."""
    return f"{topic}.kq-delay"


def route(home: str, due_ms: int, now_ms: int) -> str:
    """The tier a job due at ``due_ms`` waits in now: the smallest that covers its wait
    (the largest, ``1d``, for longer waits)."""
    remaining = due_ms - now_ms
    for suffix, seconds in TIERS:
        if seconds * 1000 >= remaining:
            return delay_topic(home, suffix)
    return delay_topic(home, TIERS[-1][0])


def _check_delay(seconds: float, what: str) -> None:
    if seconds > MAX_DELAY:
        fail_value(
            f"{what} must be at most {MAX_DELAY} seconds ({MAX_DELAY // 86400} days,"
            f" kq.schedule.MAX_DELAY) from now, not {seconds:g}"
        )


def check_wait(delay: Any, eta: Any) -> None:
    """Check ``using(delay=, eta=)``: a number of seconds, or an aware datetime or Unix
    time, within ``MAX_DELAY`` from now."""
    if delay is not None:
        if not is_number(delay):
            fail_type("delay must be an int or float (seconds)")
        if not delay >= 0:  # also NaN
            fail_value("delay must be 0 or greater")
        _check_delay(delay, "delay")
    if eta is None:
        return
    if delay is not None:
        fail_value("give delay or eta, not both")
    if isinstance(eta, datetime.datetime):
        if eta.tzinfo is None:
            fail_value("eta must be a timezone-aware datetime")
        _check_delay(eta.timestamp() - time.time(), "eta")
    elif not is_number(eta):
        fail_type("eta must be a datetime or a Unix time in seconds")
    elif eta != eta:
        fail_value("eta must be a Unix time in seconds, not NaN")
    else:
        _check_delay(eta - time.time(), "eta")


def check_fits(
    topic: str, limit: int | None, key: bytes | None, value: bytes, headers: Any
) -> None:
    """Refuse (``EnqueueError``) a delayed job its topic will not take when it is due.

    The tier may take what the job topic (``limit``: its ``max.message.bytes``) refuses.
    """
    if limit is None:
        return
    size = record_size(key, value, headers)
    if size > limit:
        raise EnqueueError(
            topic,
            f"the delayed job is {size} bytes, more than the topic's max.message.bytes"
            f" ({limit}): it could never be delivered when due",
        )


def delayed_record(
    home: str,
    value: bytes,
    key: bytes | None,
    headers: Mapping[str, bytes],
    due_ms: int,
    now_ms: int,
    partition: int | None = None,
) -> Record:
    """The record that parks a job until ``due_ms`` (``headers`` are the job's own).

    ``partition`` is the job's home partition, restored on its way home.
    """
    kept = tuple((k, v) for k, v in headers.items() if k not in TIER_HEADERS)
    extra = [
        (H_DUE, str(due_ms).encode()),
        (H_WRITTEN, str(now_ms).encode()),
        (H_TOPIC, home.encode()),
    ]
    if partition is not None:
        extra.append((H_PARTITION, str(partition).encode()))
    return Record(route(home, due_ms, now_ms), value, key, None, now_ms, (*kept, *extra))


class Timing(NamedTuple):
    """When a tier record is ready to move and when it is due, on the reader's clock."""

    anchor: int
    """When it was written: the earlier of the writer's stamp and when it was read."""
    ready: int
    due: int


def timing(tier_ms: int, stamp: int, due: int, read_at: int) -> Timing:
    """Where a record written at ``stamp`` (writer's clock) and due at ``due`` stands.

    ``read_at`` is when the reader first saw it (its own clock). See the module
    docstring for the clock model.
    """
    anchor = min(stamp, read_at)
    wait = max(due - stamp, 0)
    return Timing(anchor, anchor + min(tier_ms, wait), anchor + wait)


def record_size(key: bytes | None, value: bytes, headers: Any) -> int:
    """Bytes of a batch holding just this record, uncompressed (what ``max.message.bytes`` limits).

    Kafka's record batch format v2: a 61-byte batch header, then the record with
    varint lengths.
    """

    def varint(n: int) -> int:
        n = (n << 1) ^ (n >> 63)  # zigzag
        size = 1
        while n >= 0x80:
            n >>= 7
            size += 1
        return size

    body = 1 + varint(0) + varint(0)  # attributes, timestamp delta, offset delta
    body += varint(-1) if key is None else varint(len(key)) + len(key)
    body += varint(len(value)) + len(value)
    pairs = list(headers)
    body += varint(len(pairs))
    for name, data in pairs:
        raw = name.encode()
        body += varint(len(raw)) + len(raw)
        body += varint(-1) if data is None else varint(len(data)) + len(data)
    return 61 + varint(body) + body


def topic_limit(bootstrap: str, topic: str, config: Mapping[str, Any]) -> int | None:
    """The ``max.message.bytes`` in force for ``topic`` (None if it cannot be read)."""
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, **config})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=10)[resource].result(15)
        return int(entries["max.message.bytes"].value)
    except Exception:
        return None  # no DESCRIBE_CONFIGS right, say: the broker still checks at the last hop


def ensure_topics(bootstrap: str, topics: list[str], like: str, config: Mapping[str, Any]) -> None:
    """Create the missing ``topics`` with the partitions and replication of topic ``like``."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **config})
    metadata = admin.list_topics(timeout=10)
    missing = [t for t in topics if t not in metadata.topics]
    if not missing:
        return
    source = metadata.topics.get(like)
    if source is not None and source.partitions:
        partitions = len(source.partitions)
        replicas = len(next(iter(source.partitions.values())).replicas)
    else:
        partitions, replicas = 1, min(3, len(metadata.brokers))
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replicas) for t in missing],
        operation_timeout=10,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name!r}: {exc}") from exc


# What kq's helper clients (forwarder, retry producer, topic creation) take of
# the settings they are given: how to reach and log in to the cluster, never
# how to consume or produce (a worker's -X partition.assignment.strategy or
# group.instance.id would break the forwarder's own group).
_CONNECTION_PREFIXES = (
    "security.",
    "sasl.",
    "ssl.",
    "enable.ssl.",
    "enable.sasl.",
    "https.",
    "socket.",
    "broker.",
    "reconnect.",
    "client.",
    "connections.",
    "api.version.",
    "retry.backoff",
    "log.",
    "log_",
    "debug",
    "error_cb",
    "throttle_cb",
    "oauth_cb",
    "logger",
    "plugin.library.paths",
)


def connection_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings of ``config`` about reaching and logging in to the cluster only."""
    return {k: v for k, v in (config or {}).items() if k.startswith(_CONNECTION_PREFIXES)}
