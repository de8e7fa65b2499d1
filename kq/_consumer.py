"""One small interface over kafka-python's and confluent-kafka's consumers."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from kq._checks import fail_type, fail_value
from kq._logs import CONSUMER
from kq.message import Message, received

TopicPartition = tuple[str, int]
PartitionsCallback = Callable[[list[TopicPartition]], None]


class RebalanceHandler(Protocol):
    """What the worker does when its partitions change (called inside ``poll``).

    ``on_revoked`` waits (bounded) for running jobs of the revoked partitions
    where blocking is harmless; a client whose listener must not block runs
    its three steps itself: ``begin_revoke``, then waits while
    ``revoke_waiting`` (for at most the seconds ``begin_revoke`` returned)
    without blocking, then ``end_revoke``.
    """

    def on_assigned(self, partitions: list[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: list[TopicPartition]) -> None: ...

    def on_lost(self, partitions: list[TopicPartition]) -> None: ...

    def begin_revoke(self, partitions: list[TopicPartition]) -> float: ...

    def revoke_waiting(self, partitions: list[TopicPartition]) -> bool: ...

    def end_revoke(self, partitions: list[TopicPartition]) -> None: ...


class ConsumerAdapter(Protocol):
    """What the worker needs from a Kafka consumer."""

    client: Any
    headers: dict[tuple[str, int, int], dict[str, bytes]]
    """kq's headers of fetched messages that have any, by (topic, partition, offset)."""

    @property
    def hosts(self) -> str: ...

    @property
    def group(self) -> str: ...

    def resolve_hosts(self, timeout: float = 2.0) -> None: ...

    def max_poll_interval(self) -> float | None:
        """The consumer's ``max.poll.interval`` in seconds, when the client tells it."""

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None: ...

    def subscribed_to(self, topic: str) -> bool: ...

    def poll(self, timeout: float, max_records: int) -> list[Message]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next (raises if the client refuses)."""

    def commit(
        self,
        offsets: dict[TopicPartition, int],
        asynchronous: bool,
        timeout: float = 10.0,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit ``offsets`` (with a metadata string for some); a synchronous commit
        raises when it fails (within ``timeout``)."""

    def read_committed(
        self, partitions: Iterable[TopicPartition], timeout: float
    ) -> dict[TopicPartition, tuple[int, str]]:
        """The group's committed offset and its metadata ("" if none) per partition
        that has one; raises if the cluster does not answer within ``timeout``."""

    def failed_commits(self) -> list[dict[TopicPartition, int]]:
        """Asynchronous commits the client reported as failed since the last call."""

    def unsubscribe(self) -> None: ...


def _join_hosts(value: Any) -> str:
    if isinstance(value, str):
        return value
    return ",".join(str(v) for v in value)


class _KafkaPythonConsumer:
    def __init__(self, client: Any) -> None:
        group = client.config.get("group_id")
        if not group:
            fail_value("consumer must have group_id")
        self.client = client
        self.hosts = _join_hosts(client.config["bootstrap_servers"])
        self.group = str(group)
        self._in_listener = False
        self._topic: str | None = None
        self._failed: deque[dict[TopicPartition, int]] = deque()
        self.headers: dict[tuple[str, int, int], dict[str, bytes]] = {}
        self._logger = CONSUMER

    def resolve_hosts(self, timeout: float = 2.0) -> None:
        """Nothing to learn: kafka-python keeps its configuration readable."""

    def max_poll_interval(self) -> float | None:
        return float(self.client.config["max_poll_interval_ms"]) / 1000.0

    def neutralise_auto_commit(self) -> None:
        coordinator = getattr(self.client, "_coordinator", None)
        if self.client.config.get("enable_auto_commit") or (
            coordinator is not None and coordinator.config.get("enable_auto_commit")
        ):
            # Auto-commit would commit fetched positions before their jobs finish.
            self._logger.warning(
                "consumer has enable_auto_commit=True: kq turns it off and commits "
                "offsets itself once jobs have finished"
            )
            self.client.config["enable_auto_commit"] = False
            if coordinator is not None:
                coordinator.config["enable_auto_commit"] = False

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None:
        from kafka import AsyncConsumerRebalanceListener

        def pairs(tps: Iterable[Any]) -> list[tuple[str, int]]:
            return [(tp.topic, tp.partition) for tp in tps]

        adapter = self
        # kafka-python 3 calls listeners on its IO thread, the one that also
        # sends heartbeats: blocking there while jobs finish would get the
        # member thrown out of the group after session.timeout.ms. Its IO loop
        # awaits coroutine listeners, and sleeping on that loop keeps the
        # heartbeats going while the revoked partitions' jobs finish.
        sleep = getattr(getattr(self.client, "_net", None), "sleep", None)

        class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                parts = pairs(revoked)
                # a blocking commit is refused on the IO thread: commit asynchronously
                adapter._in_listener = True
                try:
                    deadline = time.monotonic() + handler.begin_revoke(parts)
                    # (without a loop to sleep on, never block the heartbeats)
                    while (
                        sleep is not None
                        and time.monotonic() < deadline
                        and handler.revoke_waiting(parts)
                    ):
                        await sleep(0.05)
                    handler.end_revoke(parts)
                finally:
                    adapter._in_listener = False

            async def on_partitions_assigned(self, assigned: Any) -> None:
                handler.on_assigned(pairs(assigned))

            async def on_partitions_lost(self, lost: Any) -> None:
                handler.on_lost(pairs(lost))

        if self.client.subscription():
            self.client.unsubscribe()
        self.client.subscribe(topics=[topic], listener=_Listener())
        self._topic = topic

    def subscribed_to(self, topic: str) -> bool:
        return self._topic == topic and self.client.subscription() == {topic}

    def poll(self, timeout: float, max_records: int) -> list[Message]:
        batches = self.client.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        out: list[Message] = []
        for records in batches.values():
            for r in records:
                out.append(received(r.topic, r.partition, r.offset, r.key, r.value))
                if r.headers:
                    _keep_headers(self.headers, r.topic, r.partition, r.offset, r.headers)
        if not out and self._topic is not None:
            self._raise_if_denied(self._topic)
        return out

    def _raise_if_denied(self, topic: str) -> None:
        # kafka-python raises from poll() when the group is denied, but a
        # topic it may not read only goes into its metadata (and its log):
        # poll() would return nothing forever.
        cluster = getattr(getattr(self.client, "_client", None), "cluster", None)
        if topic in getattr(cluster, "unauthorized_topics", ()):
            from kafka.errors import TopicAuthorizationFailedError

            raise TopicAuthorizationFailedError(f"not authorized to read topic {topic!r}")

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.client.assignment()}

    def _tps(self, partitions: Iterable[TopicPartition]) -> list[Any]:
        from kafka import TopicPartition

        return [TopicPartition(t, p) for t, p in partitions]

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.client.pause(*self._tps(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.client.resume(*self._tps(partitions))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        from kafka import TopicPartition as KTP

        self.client.seek(KTP(tp[0], tp[1]), offset)

    def commit(
        self,
        offsets: dict[TopicPartition, int],
        asynchronous: bool,
        timeout: float = 10.0,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        notes = metadata or {}
        data = {
            TopicPartition(t, p): OffsetAndMetadata(offset, notes.get((t, p), ""), -1)
            for (t, p), offset in offsets.items()
        }
        if asynchronous or self._in_listener:
            # kafka-python drops an asynchronous commit that fails (e.g. while
            # the coordinator is away) and says so only to this callback.
            def done(_offsets: Any, response: Any) -> None:
                if isinstance(response, BaseException):
                    self._failed.append(dict(offsets))

            self.client.commit_async(offsets=data, callback=done)
        else:
            self.client.commit(offsets=data, timeout_ms=int(timeout * 1000))

    def read_committed(
        self, partitions: Iterable[TopicPartition], timeout: float
    ) -> dict[TopicPartition, tuple[int, str]]:
        from kafka import TopicPartition as KTP

        out: dict[TopicPartition, tuple[int, str]] = {}
        for t, p in partitions:
            found = self.client.committed(KTP(t, p), metadata=True, timeout_ms=int(timeout * 1000))
            if found is not None and found.offset >= 0:
                out[(t, p)] = (int(found.offset), found.metadata or "")
        return out

    def failed_commits(self) -> list[dict[TopicPartition, int]]:
        failed = []
        while self._failed:
            failed.append(self._failed.popleft())
        return failed

    def unsubscribe(self) -> None:
        self.client.unsubscribe()
        self._topic = None


def _keep_headers(
    into: dict[tuple[str, int, int], dict[str, bytes]],
    topic: str,
    partition: int,
    offset: int,
    headers: Iterable[tuple[str, bytes | None]],
) -> None:
    # Only kq's own headers (retry state); the worker pops them per message.
    mine = {k: v for k, v in headers if k.startswith("kq-") and v is not None}
    if mine:
        into[(topic, partition, offset)] = mine


def _confluent_group(client: Any) -> str:
    # librdkafka's serialised group metadata: b"CGMDv2:" + int32 generation +
    # NUL-terminated group id + ...; the client exposes no other accessor.
    raw = bytes(client.consumer_group_metadata())
    if raw.startswith(b"CGMDv") and b":" in raw[:8]:
        body = raw[raw.index(b":") + 1 + 4 :]
        return body.split(b"\x00", 1)[0].decode("utf-8", "replace")
    return "unknown"


class _ConfluentConsumer:
    def __init__(self, client: Any) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka import TopicPartition as CTP

        self.client = client
        self._logger = CONSUMER
        self._hosts: str | None = None
        self._topic: str | None = None
        self._waiting_since: float | None = None  # the subscribed topic was missing
        self._last_look = 0.0
        self.headers: dict[tuple[str, int, int], dict[str, bytes]] = {}
        self.group = _confluent_group(client)
        # With enable.auto.offset.store on (librdkafka's default), every record
        # poll() returns is stored and auto-committed before its job has run.
        # The client hides its settings, but store_offsets() refuses in exactly
        # that mode, so probe it with a partition nobody owns.
        try:
            client.store_offsets(offsets=[CTP("__kq_probe__", 0, 0)])
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._INVALID_ARG:
                fail_value(
                    "confluent-kafka consumer must be created with "
                    "'enable.auto.offset.store': False (and preferably "
                    "'enable.auto.commit': False): otherwise it commits offsets "
                    "of jobs that have not finished; kq stores and commits them itself"
                )
        self.resolve_hosts()

    @property
    def hosts(self) -> str:
        # Never network I/O here: reprs (and so log lines) read it, also in
        # forked job processes where the client's threads do not exist.
        return self._hosts or "unknown"

    def max_poll_interval(self) -> float | None:
        return None  # confluent-kafka does not expose its configuration

    def resolve_hosts(self, timeout: float = 2.0) -> None:
        """Learn the brokers' addresses (confluent-kafka hides its configuration)."""
        if self._hosts is not None:
            return
        try:
            brokers = self.client.list_topics(timeout=timeout).brokers.values()
        except Exception:
            return
        self._hosts = ",".join(sorted(f"{b.host}:{b.port}" for b in brokers)) or None

    def subscribe(self, topic: str, handler: RebalanceHandler) -> None:
        def pairs(tps: Iterable[Any]) -> list[tuple[str, int]]:
            return [(tp.topic, tp.partition) for tp in tps]

        self.client.subscribe(
            [topic],
            on_assign=lambda _c, tps: handler.on_assigned(pairs(tps)),
            on_revoke=lambda _c, tps: handler.on_revoked(pairs(tps)),
            on_lost=lambda _c, tps: handler.on_lost(pairs(tps)),
        )
        self._topic = topic

    def subscribed_to(self, topic: str) -> bool:
        return self._topic == topic

    def poll(self, timeout: float, max_records: int) -> list[Message]:
        from confluent_kafka import KafkaError, KafkaException

        out: list[Message] = []
        if self._waiting_since is not None:
            self._look_for_topic()
        # consume(n, timeout) waits until it has n messages or the timeout
        # passed, which makes every job of a light load wait out the timeout.
        # Take what is there; if nothing, wait for the first message only.
        batch = self.client.consume(num_messages=max_records, timeout=0)
        if not batch:
            first = self.client.poll(timeout)
            if first is None:
                return []
            batch = [first]
            if max_records > 1:
                batch += self.client.consume(num_messages=max_records - 1, timeout=0)
        for m in batch:
            err = m.error()
            if err is not None:
                # A consumer that may not read its topic or use its group
                # would poll forever: stop with the broker's reason instead.
                if err.fatal() or err.code() in (
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    KafkaError.GROUP_AUTHORIZATION_FAILED,
                ):
                    raise KafkaException(err)
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and self._topic:
                    if self._waiting_since is None:
                        self._waiting_since = time.monotonic()
                        self._logger.warning(
                            "Topic %r does not exist (yet); the worker takes jobs within"
                            " seconds of its creation (kq topic create %s --partitions N)",
                            self._topic,
                            self._topic,
                        )
                elif err.code() != KafkaError._PARTITION_EOF:
                    self._logger.warning("Consumer error: %s", err)
                continue
            value = m.value()
            out.append(received(m.topic(), m.partition(), m.offset(), m.key(), value or b""))
            headers = m.headers()
            if headers:
                _keep_headers(self.headers, m.topic(), m.partition(), m.offset(), headers)
        return out

    def _look_for_topic(self) -> None:
        # librdkafka looks again for a subscribed topic that was missing only at
        # its periodic metadata refresh (5 minutes by default, and a full
        # metadata request made earlier, as resolve_hosts does, keeps it from
        # looking sooner): ask for the topic every 2 s until it is assigned.
        now = time.monotonic()
        if self.client.assignment() or self._topic is None:
            self._waiting_since = None
            return
        if now - self._last_look < 2.0:
            return
        self._last_look = now
        try:
            self.client.list_topics(topic=self._topic, timeout=1.0)
        except Exception as exc:
            self._logger.debug("Looking for topic %r failed: %s", self._topic, exc)

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.client.assignment()}

    def _tps(self, partitions: Iterable[TopicPartition], offsets: bool = False) -> list[Any]:
        from confluent_kafka import TopicPartition as CTP

        return [CTP(t, p) for t, p in partitions]

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        tps = self._tps(partitions)
        if tps:
            self.client.pause(tps)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        tps = self._tps(partitions)
        if tps:
            self.client.resume(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        from confluent_kafka import TopicPartition as CTP

        self.client.seek(CTP(tp[0], tp[1], offset))

    def commit(
        self,
        offsets: dict[TopicPartition, int],
        asynchronous: bool,
        timeout: float = 10.0,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as CTP

        notes = metadata or {}
        tps = [
            CTP(t, p, offset, notes[(t, p)]) if (t, p) in notes else CTP(t, p, offset)
            for (t, p), offset in offsets.items()
        ]
        if not tps:
            return
        # keeps an auto-committing consumer from committing anything else
        self.client.store_offsets(offsets=tps)
        result = self.client.commit(offsets=tps, asynchronous=asynchronous)
        for tp in result or ():
            if tp.error is not None:  # a synchronous commit's per-partition outcome
                raise KafkaException(tp.error)

    def read_committed(
        self, partitions: Iterable[TopicPartition], timeout: float
    ) -> dict[TopicPartition, tuple[int, str]]:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as CTP

        found = self.client.committed([CTP(t, p) for t, p in partitions], timeout=timeout)
        out: dict[TopicPartition, tuple[int, str]] = {}
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = (int(tp.offset), tp.metadata or "")
        return out

    def failed_commits(self) -> list[dict[TopicPartition, int]]:
        # librdkafka keeps an asynchronous commit made while the coordinator is
        # away and sends it once one is back (tests/test_commits.py).
        return []

    def unsubscribe(self) -> None:
        self.client.unsubscribe()
        self._topic = None
        # librdkafka leaves the group only while the application serves its
        # queue: without these polls the other members wait a session timeout.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.client.assignment():
            self.client.poll(0.05)
        self.client.poll(0.05)


def adapt_consumer(consumer: Any) -> ConsumerAdapter:
    """Wrap a kafka-python ``KafkaConsumer`` or a confluent-kafka ``Consumer``."""
    from confluent_kafka import Consumer as ConfluentConsumer
    from kafka import KafkaConsumer

    if isinstance(consumer, KafkaConsumer):
        return _KafkaPythonConsumer(consumer)
    if isinstance(consumer, ConfluentConsumer):
        return _ConfluentConsumer(consumer)
    fail_type("bad consumer instance")
