"""A topic's and a consumer group's state as the cluster reports it, and moving offsets.

Used by ``kq info``, ``kq replay`` and the metrics' lag thread. Every call is
bounded by the connection's ``timeout``; a broker that does not answer is a
``ClusterError`` with one line of text, never a hang.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.errors import ArgumentValueError, ClusterError

__all__ = [
    "Cluster",
    "ClusterError",
    "GroupState",
    "Member",
    "PartitionState",
    "check_reachable",
    "create_topic",
]


@dataclass(frozen=True)
class PartitionState:
    """One partition: its offsets and the group's position in it."""

    partition: int
    earliest: int
    end: int
    committed: int | None
    """The group's committed offset (the next job it will run), None if it has none."""

    @property
    def lag(self) -> int:
        """Jobs in the partition the group has not finished (and committed) yet."""
        position = self.earliest if self.committed is None else max(self.committed, self.earliest)
        return max(self.end - position, 0)


@dataclass(frozen=True)
class Member:
    """One member of a consumer group."""

    member_id: str
    client_id: str
    host: str
    assignment: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class GroupState:
    """A consumer group: its state (``stable``, ``empty``, ``dead``, …) and members."""

    group: str
    state: str
    members: list[Member]


def _reason(exc: BaseException) -> str:
    error: Any = exc.args[0] if exc.args else None
    text = error.str() if hasattr(error, "str") else str(exc)
    return str(text)


class Cluster:
    """Admin access to a Kafka cluster: an ``AdminClient`` and a consumer that joins no group."""

    def __init__(
        self, bootstrap: str, config: Mapping[str, Any] | None = None, timeout: float = 10.0
    ) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self.timeout = timeout
        base = {"bootstrap.servers": bootstrap, **(config or {})}
        try:
            self._admin = AdminClient(dict(base))
            self._consumer = Consumer(
                {
                    **base,
                    # never subscribes nor commits: it only reads offsets and metadata
                    "group.id": f"kq-admin-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
        except Exception as exc:  # bad client settings (-X)
            raise ClusterError(f"bad Kafka client settings: {_reason(exc)}") from exc
        self._topics: dict[str, list[int]] | None = None

    def close(self) -> None:
        """Close the connections."""
        self._consumer.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- topics --------------------------------------------------------------

    def topics(self, refresh: bool = False) -> dict[str, list[int]]:
        """Every topic and its partitions; the first call proves the cluster answers."""
        if self._topics is None or refresh:
            try:
                metadata = self._admin.list_topics(timeout=self.timeout)
            except Exception as exc:
                raise ClusterError(
                    f"no Kafka broker answered at {self.bootstrap} within {self.timeout:g} s"
                    f" ({_reason(exc)})"
                ) from exc
            self._topics = {
                name: sorted(info.partitions)
                for name, info in metadata.topics.items()
                if info.error is None
            }
        return self._topics

    def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``; ``ClusterError`` if there is no such topic."""
        found = self.topics().get(topic)
        if found is None:
            found = self.topics(refresh=True).get(topic)
        if found is None:
            raise ClusterError(
                f"topic {topic!r} does not exist at {self.bootstrap};"
                f" create it first: kq topic create {topic} --partitions N"
            )
        return found

    def create_topic(
        self,
        topic: str,
        partitions: int,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> list[int]:
        """Create ``topic`` and wait until every partition has a leader; return its partitions.

        ``replication_factor`` None takes the cluster's default. ``ClusterError``
        says why it could not be created (it exists, a bad setting, no rights, …).
        """

        from confluent_kafka.cimpl import NewTopic

        new = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=-1 if replication_factor is None else replication_factor,
            config=dict(config or {}),
        )
        try:
            futures = self._admin.create_topics(
                [new], operation_timeout=self.timeout, request_timeout=self.timeout
            )
            futures[topic].result(timeout=self.timeout + 5)
        except Exception as exc:
            raise ClusterError(f"cannot create topic {topic!r}: {_reason(exc)}") from exc
        # Clients that ask before the leaders are elected see UNKNOWN_TOPIC_OR_PART.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                found = self._admin.list_topics(topic=topic, timeout=self.timeout).topics.get(topic)
            except Exception:
                found = None
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 for p in found.partitions.values())
            ):
                self._topics = None
                return sorted(found.partitions)
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"topic {topic!r} was created but its partitions had no leader"
                    f" within {self.timeout:g} s"
                )
            time.sleep(0.05)

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """``(earliest, end)`` offsets of one partition."""
        from confluent_kafka import TopicPartition

        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout, cached=False
            )
        except Exception as exc:
            raise ClusterError(
                f"cannot read the offsets of {topic}/{partition}: {_reason(exc)}"
            ) from exc
        return int(low), int(high)

    def offsets_for_time(
        self, topic: str, partitions: Iterable[int], ms: int
    ) -> dict[int, int | None]:
        """Per partition, the first offset written at or after ``ms``; None if none was."""
        from confluent_kafka import TopicPartition

        wanted = [TopicPartition(topic, p, ms) for p in partitions]
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=self.timeout)
        except Exception as exc:
            raise ClusterError(
                f"cannot look up offsets by time in {topic}: {_reason(exc)}"
            ) from exc
        return {tp.partition: (int(tp.offset) if tp.offset >= 0 else None) for tp in found}

    def states(
        self, topic: str, group: str | None, partitions: list[int] | None = None
    ) -> list[PartitionState]:
        """Offsets of ``partitions`` (default: all) and ``group``'s position in each."""
        wanted = partitions if partitions is not None else self.partitions(topic)
        committed = self.committed(group, topic, wanted) if group else {}
        states = []
        for p in wanted:
            low, high = self.watermarks(topic, p)
            states.append(PartitionState(p, low, high, committed.get(p)))
        return states

    # -- groups --------------------------------------------------------------

    def committed(self, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """The group's committed offset per partition (None where it has none)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in partitions]
        )
        try:
            futures = self._admin.list_consumer_group_offsets(
                [request], request_timeout=self.timeout
            )
            result = futures[group].result(timeout=self.timeout + 5)
        except Exception as exc:
            raise ClusterError(
                f"cannot read the committed offsets of group {group!r}: {_reason(exc)}"
            ) from exc
        return {
            tp.partition: (int(tp.offset) if tp.offset >= 0 else None)
            for tp in result.topic_partitions
        }

    def describe_group(self, group: str) -> GroupState:
        """The group's state and members (state ``dead`` and no members if it does not exist)."""
        try:
            futures = self._admin.describe_consumer_groups([group], request_timeout=self.timeout)
            description = futures[group].result(timeout=self.timeout + 5)
        except Exception as exc:
            raise ClusterError(f"cannot describe group {group!r}: {_reason(exc)}") from exc
        members = [
            Member(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                assignment=sorted(
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                ),
            )
            for m in description.members
        ]
        state = getattr(description.state, "name", str(description.state)).lower()
        return GroupState(group, state, members)

    def set_committed(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Set the group's committed offsets; Kafka allows it only for a group without members."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
        )
        try:
            futures = self._admin.alter_consumer_group_offsets(
                [request], request_timeout=self.timeout
            )
            result = futures[group].result(timeout=self.timeout + 5)
        except Exception as exc:
            raise ClusterError(
                f"cannot move the offsets of group {group!r}: {_reason(exc)}"
            ) from exc
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            raise ClusterError(
                f"cannot move the offsets of group {group!r}: {failed[0].error.str()}"
                " (a group's offsets can only be moved while it has no active members)"
            )


def create_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    replication_factor: int | None = None,
    config: Mapping[str, str] | None = None,
    *,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[int]:
    """Create a job topic with ``partitions`` partitions (as ``kq topic create`` does).

    Partitions are a topic's unit of parallelism: a group runs at most one
    worker process per partition at a time. Returns the partition ids once
    every partition has a leader; raises ``kq.ClusterError`` naming why not.
    """
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise ArgumentValueError("partitions must be an int, 1 or greater")
    with Cluster(bootstrap_servers, client_config, timeout) as cluster:
        return cluster.create_topic(topic, partitions, replication_factor, config)


def check_reachable(bootstrap_servers: str, config: Mapping[str, Any], timeout: float) -> None:
    """Raise ``ClusterError`` naming the address unless the cluster answers within ``timeout``."""
    from confluent_kafka.admin import AdminClient

    # The client says why it cannot connect (a refused login, a plain client
    # at a TLS or SASL listener) only in its log: keep those lines for the error.
    noted = _NotingLogger()
    try:
        settings: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": noted}
        admin = AdminClient({**settings, **config})
    except Exception as exc:
        raise ClusterError(f"bad Kafka client settings: {_reason(exc)}") from exc
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:
        # The log lines come through the client's queue, served by poll; the
        # last ones may still be on their way from its threads.
        settle = time.monotonic() + 1.0
        admin.poll(0)
        while not noted.errors and time.monotonic() < settle:
            admin.poll(0.05)
        reason = noted.reason() or _reason(exc)
        if "closed by peer" in reason and "security.protocol" not in config:
            reason += "; does the cluster want a login or TLS (security.protocol)?"
        raise ClusterError(
            f"no Kafka broker answered at {bootstrap_servers} within {timeout:g} s ({reason})"
        ) from exc


class _NotingLogger(logging.Logger):
    """librdkafka's lines for one client: passed on to ``kq.client``, the errors kept."""

    def __init__(self) -> None:
        from kq._logs import CLIENT

        super().__init__("kq.client")
        self._client_log = CLIENT  # its filter holds back repeated lines
        self.errors: list[str] = []

    def handle(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            # "FAIL [rdkafka#producer-1] [thrd:...]: 127.0.0.1:1/bootstrap: Connect ... failed"
            self.errors.append(record.getMessage().split("]: ", 1)[-1])
        self._client_log.handle(record)

    def reason(self) -> str | None:
        return self.errors[-1] if self.errors else None
