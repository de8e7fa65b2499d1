"""One small interface over kafka-python's and confluent-kafka's producers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from kq._checks import fail_type
from kq._spread import Headers as Headers
from kq._spread import Outgoing as Outgoing
from kq._spread import Spreader, TopicMissing
from kq.errors import EnqueueError

_GRACE = 2.0
# Longest wait for a topic's partition list (once per topic and half-minute).
_LOOKUP = 5.0


# Outgoing: one message to produce, (topic, value, key, partition, timestamp_ms,
# headers). The queue's hot path builds these as plain tuples, which the garbage
# collector stops tracking after one pass; ``Record`` names the same fields.


class Record(NamedTuple):
    """One message to produce, with named fields (an ``Outgoing``)."""

    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    timestamp_ms: int
    headers: Headers = ()


class ProducerAdapter(Protocol):
    """What the queue needs from a Kafka producer."""

    client: Any

    @property
    def hosts(self) -> str: ...

    def send_all(self, records: Sequence[Outgoing], timeout: float) -> list[BaseException | None]:
        """Send records and wait for the broker's acknowledgement of each.

        Returns one entry per record: None when acknowledged, else the error.
        """
        ...

    def send_one(self, record: Outgoing, timeout: float) -> tuple[int, int]:
        """Send one record and wait; where it was written ``(partition, offset)``.

        Raises the client's error when it was not acknowledged; ``(-1, -1)``
        when a client that reports only failures wrote it.
        """
        ...


def _join_hosts(value: Any) -> str:
    if isinstance(value, str):
        return value
    return ",".join(str(v) for v in value)


class _KafkaPythonProducer:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.hosts = _join_hosts(client.config["bootstrap_servers"])
        self._spreader = Spreader(self._partitions)

    def _partitions(self, topic: str, timeout: float) -> list[int] | None:
        from kafka.errors import KafkaTimeoutError

        try:
            self.client._wait_on_metadata(topic, int(timeout * 1000))
        except KafkaTimeoutError:
            # Brokers known but the topic not among their metadata: it is missing.
            if self.client._metadata.brokers():
                raise TopicMissing(topic) from None
            return None
        except Exception:
            return None  # e.g. not authorized: the send says so, as without kq's placing
        return sorted(self.client._metadata.available_partitions_for_topic(topic) or ())

    def send_all(self, records: Sequence[Outgoing], timeout: float) -> list[BaseException | None]:
        deadline = time.monotonic() + timeout
        futures: list[Any] = []
        errors: list[BaseException | None] = [None] * len(records)
        records, missing = self._spreader.place(records, min(_LOOKUP, timeout))
        for index, (topic, value, key, partition, timestamp, headers) in enumerate(records):
            if topic in missing:
                futures.append(None)
                errors[index] = missing[topic]
                continue
            try:
                futures.append(
                    self.client.send(
                        topic,
                        value=value,
                        key=key,
                        partition=partition,
                        timestamp_ms=timestamp,
                        headers=list(headers) or None,
                    )
                )
            except Exception as exc:  # e.g. message too large, metadata timeout
                futures.append(None)
                errors[index] = exc
        # A flush that times out raises; each record's own future says below
        # what became of it.
        with contextlib.suppress(Exception):
            self.client.flush(timeout=max(deadline - time.monotonic(), 0.001))
        for index, future in enumerate(futures):
            if future is None:
                continue
            try:
                # A little past our deadline: the client's own delivery timeout
                # (the same) expires the record, so its outcome is final.
                future.get(timeout=max(deadline - time.monotonic(), 0.001) + _GRACE)
            except Exception as exc:
                errors[index] = exc
        return errors

    def send_one(self, record: Outgoing, timeout: float) -> tuple[int, int]:
        (placed,), missing = self._spreader.place([record], min(_LOOKUP, timeout))
        topic, value, key, partition, timestamp, headers = placed
        if topic in missing:
            raise missing[topic]
        future = self.client.send(
            topic,
            value=value,
            key=key,
            partition=partition,
            timestamp_ms=timestamp,
            headers=list(headers) or None,
        )
        metadata = future.get(timeout=timeout + _GRACE)
        return int(metadata.partition), int(metadata.offset)


class _ConfluentProducer:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._hosts: str | None = None
        # confluent's Producer is thread-safe, but our per-call bookkeeping is not
        self._lock = threading.Lock()
        self._spreader = Spreader(self._partitions)
        self.resolve_hosts()

    def send_one(self, record: Outgoing, timeout: float) -> tuple[int, int]:
        return _confluent_send_one(self, record, timeout)

    def _partitions(self, topic: str, timeout: float) -> list[int] | None:
        from confluent_kafka import KafkaError

        try:
            metadata = self.client.list_topics(topic, timeout=timeout)
        except Exception:
            return None  # the cluster did not answer: the client's own timeout decides
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            if found is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicMissing(topic)
            return None
        return sorted(p.id for p in found.partitions.values() if p.leader >= 0)

    @property
    def hosts(self) -> str:
        # Never network I/O here: reprs (and so log lines) read it, also in
        # forked job processes where the client's threads do not exist.
        return self._hosts or "unknown"

    def resolve_hosts(self, timeout: float = 2.0) -> None:
        """Learn the brokers' addresses (confluent-kafka hides its configuration)."""
        if self._hosts is not None:
            return
        try:
            brokers = self.client.list_topics(timeout=timeout).brokers.values()
        except Exception:
            return
        self._hosts = ",".join(sorted(f"{b.host}:{b.port}" for b in brokers)) or None

    def send_all(self, records: Sequence[Outgoing], timeout: float) -> list[BaseException | None]:
        deadline = time.monotonic() + timeout
        errors: list[BaseException | None] = [None] * len(records)
        reports: list[tuple[Any, Any]] = []  # (message, error or None) per delivery report
        failures = 0

        # One callback for the whole call, not a closure per record; reports
        # are matched to records only when something failed or timed out.
        def on_delivery(err: Any, msg: Any) -> None:
            nonlocal failures
            reports.append((msg, err))
            if err is not None:
                failures += 1

        refused: set[int] = set()  # records the client did not take
        records, missing = self._spreader.place(records, min(_LOOKUP, timeout))
        with self._lock:
            produce = self.client.produce
            for index, (topic, value, key, partition, timestamp, headers) in enumerate(records):
                if missing and topic in missing:
                    errors[index] = missing[topic]
                    refused.add(index)
                    continue
                while True:
                    try:
                        if partition is None and not headers:
                            produce(topic, value, key, on_delivery=on_delivery, timestamp=timestamp)
                        elif partition is None:
                            produce(
                                topic,
                                value,
                                key,
                                on_delivery=on_delivery,
                                timestamp=timestamp,
                                headers=list(headers),
                            )
                        else:
                            produce(
                                topic,
                                value,
                                key,
                                partition=partition,
                                on_delivery=on_delivery,
                                timestamp=timestamp,
                                headers=list(headers) if headers else None,
                            )
                        break
                    except BufferError as exc:
                        # local queue full: serve delivery reports to make room
                        if time.monotonic() >= deadline:
                            errors[index] = exc
                            refused.add(index)
                            break
                        self.client.poll(0.05)
                    except Exception as exc:  # e.g. message too large
                        errors[index] = exc
                        refused.add(index)
                        break
            produced = len(records) - len(refused)
            fatal: BaseException | None = None
            # Done when every record was reported, or when nothing is left in
            # the client: a producer made by kq reports only failures
            # (delivery.report.only.error), so an unreported record that left
            # the client was acknowledged. A little past the deadline the
            # client's message timeout (the same, for kq's producers) has
            # expired whatever is still queued, with an error report each.
            complete = False
            give_up = deadline + _GRACE
            while True:
                if len(reports) >= produced:
                    complete = True
                    break
                now = time.monotonic()
                if now >= give_up:
                    break
                try:
                    left = self.client.flush(min(give_up - now, 0.5))
                except Exception as exc:
                    # A fatal producer error (e.g. an idempotent producer refused
                    # by the cluster's ACLs) surfaces here, not in a report;
                    # confluent-kafka may wrap its KafkaException in a SystemError.
                    cause = exc.__cause__
                    fatal = cause if isinstance(exc, SystemError) and cause is not None else exc
                    break
                if left == 0:
                    complete = True
                    break
        if failures or not complete:
            # What the client reported while these records waited (see make_producer).
            last = getattr(self.client, "last_error", None)
            fatal_text = getattr(self.client, "fatal_error", None)
            note = ""
            if fatal is not None:
                note = f" (fatal client error: {_reason(fatal)})"
            elif fatal_text:
                note = f" (fatal client error: {fatal_text})"
            elif last and last[0] >= deadline - timeout:
                note = f" (client error: {last[1]})"
            taken = [i for i in range(len(records)) if i not in refused]
            _attribute(records, taken, reports, errors, timeout, fatal, complete, note)
        if any(_is_local_fatal(errors[index]) for index in refused):
            # A producer that turned fatal refuses every record with a bare
            # "Local: Fatal error": name the reason (its error callback, served
            # by poll, remembers it; see make_producer).
            fatal_text = getattr(self.client, "fatal_error", None) or _fatal_reason(self.client)
            for index in refused:
                if fatal_text and _is_local_fatal(errors[index]):
                    errors[index] = _with_reason(errors[index], fatal_text)
        return errors


def _confluent_send_one(adapter: Any, record: Outgoing, timeout: float) -> tuple[int, int]:
    from confluent_kafka import KafkaException

    (placed,), missing = adapter._spreader.place([record], min(_LOOKUP, timeout))
    topic, value, key, partition, timestamp, headers = placed
    if topic in missing:
        raise missing[topic]
    reports: list[tuple[Any, Any]] = []
    options: dict[str, Any] = {"timestamp": timestamp, "headers": list(headers) or None}
    if partition is not None:
        options["partition"] = partition
    with adapter._lock:
        adapter.client.produce(
            topic, value, key, on_delivery=lambda err, msg: reports.append((err, msg)), **options
        )
        deadline = time.monotonic() + timeout + _GRACE
        left = 1
        while not reports and left and time.monotonic() < deadline:
            left = adapter.client.flush(min(deadline - time.monotonic(), 0.5))
    if reports:
        error, message = reports[0]
        if error is not None:
            raise KafkaException(error)
        return int(message.partition()), int(message.offset())
    if left:
        raise TimeoutError(f"not acknowledged within {timeout} s")
    return -1, -1  # delivered; the producer reports only failures (delivery.report.only.error)


def _attribute(
    records: Sequence[Outgoing],
    produced: list[int],
    reports: list[tuple[Any, Any]],
    errors: list[BaseException | None],
    timeout: float,
    fatal: BaseException | None,
    complete: bool,
    note: str = "",
) -> None:
    """Match delivery reports to records by topic and value.

    Unreported records succeeded when the client finished with all
    (``complete``); otherwise they count as failed.
    """
    from confluent_kafka import KafkaError, KafkaException

    pending: dict[tuple[str, bytes], list[int]] = {}
    for index in produced:
        pending.setdefault((records[index][0], records[index][1]), []).append(index)
    for msg, err in reports:
        indexes = pending.get((msg.topic(), msg.value() or b""))
        if indexes:
            index = indexes.pop(0)
            # A local error (timed out, purged, ...) hides the client's reason.
            if err is not None and note and err.code() < 0:
                errors[index] = KafkaException(KafkaError(err.code(), f"{err.str()}{note}"))
            elif err is not None:
                errors[index] = KafkaException(err)
    if complete:
        return
    for indexes in pending.values():
        for index in indexes:
            errors[index] = fatal or TimeoutError(f"not acknowledged within {timeout} s{note}")


def _fatal_reason(client: Any) -> str | None:
    """Why a producer turned fatal: confluent-kafka raises it from ``poll`` (within a second)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            client.poll(0.1)
        except Exception as exc:
            cause = exc.__cause__
            return _reason(cause if isinstance(exc, SystemError) and cause is not None else exc)
    return None


def _is_local_fatal(error: BaseException | None) -> bool:
    from confluent_kafka import KafkaError, KafkaException

    first = error.args[0] if isinstance(error, KafkaException) and error.args else None
    return isinstance(first, KafkaError) and first.code() == KafkaError._FATAL


def _with_reason(error: BaseException | None, reason: str) -> BaseException:
    from confluent_kafka import KafkaError, KafkaException

    first: Any = error.args[0] if error is not None and error.args else None
    return KafkaException(KafkaError(first.code(), f"{first.str()} (fatal client error: {reason})"))


def _reason(error: BaseException) -> str:
    # A KafkaException's KafkaError says it best in its str()
    first: Any = error.args[0] if error.args else None
    return str(first.str()) if hasattr(first, "str") else str(error)


def adapt_producer(producer: Any) -> ProducerAdapter:
    """Wrap a kafka-python ``KafkaProducer`` or a confluent-kafka ``Producer``."""
    from confluent_kafka import Producer as ConfluentProducer
    from kafka import KafkaProducer

    if isinstance(producer, KafkaProducer):
        return _KafkaPythonProducer(producer)
    if isinstance(producer, ConfluentProducer):
        return _ConfluentProducer(producer)
    fail_type("bad producer instance")


def raise_for(topic: str, error: BaseException) -> None:
    """Raise the kq error for one failed record."""
    if isinstance(error, EnqueueError):
        raise error
    raise EnqueueError(topic, f"{type(error).__name__}: {error}", error) from error
