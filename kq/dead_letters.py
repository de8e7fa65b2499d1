"""Reading and re-enqueueing dead-lettered jobs.

After its last failed attempt a job with a retry policy is written, unchanged,
to ``<topic>.kq-dead`` with what went wrong in headers. Kafka cannot delete
single records, so the dead-letter topic is a log: ``list`` reads it (from a
given offset on), ``requeue`` sends a job back to its topic for a fresh set of
attempts and appends a marker record (empty value, ``kq-requeued`` header) to
the letter's partition, so that a letter is requeued once unless asked again.

A requeue goes to the job topic this ``DeadLetters`` was made for, or to the
topic its caller names: never to a topic a letter's headers name (whoever wrote
the letter would otherwise choose where the operator's credentials write).
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kq._letter_view import JobSummary, summarize
from kq._logs import RETRIES
from kq._producer import Record, adapt_producer, raise_for
from kq.retry import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST,
    H_REQUEUED,
    H_REQUEUED_TO,
    H_SOURCE,
    H_STATUS,
    H_TRACEBACK,
    INVALID,
    UNDELIVERABLE,
)
from kq.schedule import dead_letter_topic
from kq.serialization import loads
from kq.signing import SIGNATURE_HEADER, Verifier, ttl_of, validity

__all__ = ["DeadLetter", "DeadLetters"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered job, as found in the dead-letter topic.

    Everything here is untrusted unless ``signature == "valid"``: whoever can
    write to the dead-letter topic (or to the job topic, whose failed jobs land
    here) chose the value and the headers. Reading a letter never deserializes
    it; ``describe()`` tells what the job claims to be, as data. A header that
    cannot be read is named in ``problems`` (the field keeps a neutral value).
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    """The job's record value exactly as first enqueued."""
    source_topic: str
    """Where the job was when it failed, as the letter claims (``""`` when ``kq-source`` is
    missing or malformed); shown to operators, never used as a destination."""
    source_partition: int
    source_offset: int
    status: str
    """The outcome of the last attempt: ``failure`` or ``timeout``; ``undeliverable`` for a
    delayed job the forwarder could not deliver home; ``invalid`` for a message the
    worker could not read as a job (a module it could not import, say)."""
    error: str
    traceback: str
    attempts: int | None
    """Attempts made (``None`` when ``kq-attempt`` is malformed)."""
    first_enqueued_ms: int | None
    headers: Mapping[str, bytes] = field(repr=False, default_factory=dict)
    problems: tuple[str, ...] = ()
    """Malformed headers, one text each; empty for a well-formed letter."""
    signature: str = "unchecked"
    """``valid``, ``unchecked`` (no ``signing_keys`` given) or why the signature is refused."""
    requeued_to: str = ""
    """Where the letter was last requeued (a marker in its partition says so); ``""``: never."""
    requeued_ms: int | None = None
    """When it was last requeued (epoch milliseconds)."""

    def describe(self) -> JobSummary:
        """The job's format, id and call read from its bytes as data (nothing is run)."""
        return summarize(self.value)

    def job(self, deserializer: Callable[[bytes], Any] = loads) -> Any:
        """The job object, deserialized: an explicit opt-in that can run code.

        With the default (dill-compatible ``loads``) unpickling runs whatever
        code the bytes name, and anyone who could write to the dead-letter or
        job topic chose those bytes. Call it only for a letter whose
        ``signature`` is ``"valid"``, or pass a deserializer that cannot run
        code (``kq.json_jobs.JsonJobLoader(allow=[...])``). ``describe()`` is
        the safe way to look at a letter.
        """
        return deserializer(self.value)


_Marker = tuple[int, str, int]  # letter offset, destination, time


def _marker(partition: int, headers: Any, timestamp: int) -> _Marker | None:
    """The requeue a record marks in ``partition`` (a marker has no ``kq-status``), or None."""
    h = {k: v for k, v in (headers or []) if v is not None}
    raw = h.get(H_REQUEUED)
    if raw is None or H_STATUS in h:
        return None
    part, _, offset = raw.partition(b":")
    if not part.isdigit() or not offset.isdigit() or int(part) != partition or len(offset) > 19:
        return None
    return int(offset), h.get(H_REQUEUED_TO, b"").decode(errors="replace"), timestamp


_STATUSES = frozenset({"failure", "timeout", UNDELIVERABLE, INVALID})
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _text(headers: Mapping[str, bytes], name: str, default: str, problems: list[str]) -> str:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return raw.decode()
    except UnicodeDecodeError:
        problems.append(f"{name} is not UTF-8")
        return raw.decode(errors="replace")


def _number(headers: Mapping[str, bytes], name: str, problems: list[str]) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    if raw.isdigit() and len(raw) < 20:
        return int(raw)
    problems.append(f"malformed {name} header {raw[:40]!r}")
    return None


def _source(raw: bytes | None, problems: list[str]) -> tuple[str, int, int]:
    if raw is None:
        return "", -1, -1
    topic, _, offset = raw.rpartition(b"/")
    topic, _, partition = topic.rpartition(b"/")
    name = topic.decode(errors="replace")
    if partition == offset == b"-" and _TOPIC_NAME.fullmatch(name):
        return name, -1, -1  # the forwarder's letters: the job topic, no record of it
    if (
        not _TOPIC_NAME.fullmatch(name)
        or not partition.isdigit()
        or not offset.isdigit()
        or max(len(partition), len(offset)) > 19
    ):
        problems.append(f"malformed {H_SOURCE} header {raw[:80]!r}")
        return "", -1, -1
    return name, int(partition), int(offset)


def _letter(
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    headers: Any,
    signature: str = "unchecked",
) -> DeadLetter:
    h = {k: v for k, v in (headers or []) if v is not None}
    problems: list[str] = []
    src_topic, src_partition, src_offset = _source(h.get(H_SOURCE), problems)
    status = _text(h, H_STATUS, "failure", problems)
    if status not in _STATUSES:
        problems.append(f"unknown {H_STATUS} {status[:40]!r}")
    attempts = _number(h, H_ATTEMPT, problems) if H_ATTEMPT in h else 1
    if attempts == 0:
        problems.append(f"malformed {H_ATTEMPT} header b'0'")
        attempts = None
    return DeadLetter(
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        source_topic=src_topic,
        source_partition=src_partition,
        source_offset=src_offset,
        status=status,
        error=_text(h, H_ERROR, "", problems),
        traceback=_text(h, H_TRACEBACK, "", problems),
        attempts=attempts,
        first_enqueued_ms=_number(h, H_FIRST, problems),
        headers=h,
        problems=tuple(problems),
        signature=signature,
    )


def _watermarks(consumer: Any, partition: Any, timeout: float) -> tuple[int, int]:
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException:
            # a topic just created may not have its leaders yet
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class DeadLetters:
    """The dead letters of one job topic: list, inspect and re-enqueue them.

    With ``signing_keys`` (the workers' secrets) each letter's signature is
    checked for the job topic, ``requeue`` refuses letters whose signature is
    not valid and signs what it sends with the first key (attempt 1, a new
    expiry). Without them, a signed letter is refused: requeued unsigned (or
    with its old signature, which no longer matches) the workers would refuse it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        dead_letter_topic_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        delivery_timeout: float = 30.0,
        signing_keys: bytes | str | Sequence[bytes | str] | None = None,
    ) -> None:
        self._verifier = None if signing_keys is None else Verifier(signing_keys)
        self._signer = None if self._verifier is None else self._verifier.signer()
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.dead_topic = dead_letter_topic_name or dead_letter_topic(topic)
        self._config = dict(config or {})
        self._delivery_timeout = delivery_timeout
        self._producer: Any = None

    def list(
        self, limit: int = 100, since: Mapping[int, int] | None = None, timeout: float = 10.0
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first per partition.

        ``since`` maps partitions to the first offset wanted (default: the
        beginning). Reads what the topic held when called, then returns.
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"kq-dead-letters-{uuid.uuid4().hex}",  # never committed
                "enable.auto.commit": False,
                **self._config,
            }
        )
        try:
            metadata = consumer.list_topics(self.dead_topic, timeout=timeout)
            info = metadata.topics.get(self.dead_topic)
            if info is None or info.error is not None or not info.partitions:
                return []
            ends: dict[int, int] = {}
            starts: list[Any] = []
            for p in sorted(info.partitions):
                low, high = _watermarks(consumer, TopicPartition(self.dead_topic, p), timeout)
                first = max((since or {}).get(p, low), low)
                if first < high:
                    ends[p] = high
                    starts.append(
                        TopicPartition(self.dead_topic, p, first if first > 0 else OFFSET_BEGINNING)
                    )
            if not starts:
                return []
            consumer.assign(starts)
            out: list[DeadLetter] = []
            marks: dict[tuple[int, int], tuple[str, int]] = {}
            deadline = time.monotonic() + timeout
            # Read to the end even past ``limit``: a letter's requeue marker comes after it.
            while ends and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=500, timeout=0.5):
                    partition, offset = m.partition(), m.offset()
                    if m.error() is not None or partition not in ends or offset is None:
                        continue
                    value = m.value() or b""
                    mark = _marker(partition, m.headers(), m.timestamp()[1]) if not value else None
                    if mark is not None:
                        marks[(partition, mark[0])] = mark[1:]
                    elif len(out) < limit:
                        out.append(self._read(partition, offset, m.key(), value, m.headers()))
                    if offset + 1 >= ends[partition]:
                        del ends[partition]
            return [
                dataclasses.replace(x, requeued_to=done[0], requeued_ms=done[1])
                if (done := marks.get((x.partition, x.offset))) is not None
                else x
                for x in out
            ]
        finally:
            consumer.close()

    def _read(
        self, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any
    ) -> DeadLetter:
        signature = "unchecked"
        if self._verifier is not None:
            found = {k: v for k, v in headers or [] if v is not None}
            signature = self._verifier.problem(self.topic, key, value, found) or "valid"
        return _letter(partition, offset, key, value, headers, signature)

    def refusal(self, letter: DeadLetter) -> str:
        """Why ``requeue`` refuses ``letter`` (malformed, not validly signed, or signed while
        no ``signing_keys`` were given to sign it again), or ``""``."""
        reasons = list(letter.problems)
        if self._verifier is not None and letter.signature != "valid":
            reasons.append(letter.signature)
        if self._verifier is None and SIGNATURE_HEADER in letter.headers:
            reasons.append(
                "signed letter: give the workers' signing keys to sign it again (the workers"
                " would refuse it with its old signature)"
            )
        return "; ".join(reasons)

    def get(self, partition: int, offset: int, timeout: float = 10.0) -> DeadLetter:
        """The dead letter at ``partition``/``offset``; ``LookupError`` if there is none."""
        for letter in self.list(limit=1, since={partition: offset}, timeout=timeout):
            if letter.partition == partition and letter.offset == offset:
                return letter
        raise LookupError(f"no dead letter at {self.dead_topic}/{partition}/{offset}")

    def find(
        self, topic: str, partition: int, offset: int, timeout: float = 10.0
    ) -> builtins.list[DeadLetter]:
        """The letters of the job that was at ``topic``/``partition``/``offset`` (its source).

        The position a worker logs (``Processing Message(topic=..., ...)``).
        Reads the whole dead-letter topic; oldest first.
        """
        return [
            x
            for x in self.list(limit=1_000_000, timeout=timeout)
            if (x.source_topic, x.source_partition, x.source_offset) == (topic, partition, offset)
        ]

    def requeue(
        self,
        letter: DeadLetter,
        topic: str | None = None,
        *,
        force: bool = False,
        again: bool = False,
    ) -> None:
        """Send the job back (to this job topic, or ``topic``) for a fresh set of attempts.

        Durable on return; raises ``kq.EnqueueError`` otherwise. A letter that
        ``refusal`` names a reason for is refused with ``ValueError`` unless
        ``force`` (a forced signed letter without ``signing_keys`` goes unsigned);
        so is a letter already requeued (``letter.requeued_to``) unless ``again``.
        Then a marker records the requeue in the letter's partition.
        """
        where = f"dead letter {self.dead_topic}/{letter.partition}/{letter.offset}"
        refusal = self.refusal(letter)
        if refusal and not force:
            raise ValueError(f"{where} not requeued: {refusal}")
        if letter.requeued_to and not again:
            raise ValueError(
                f"{where} was already requeued to {letter.requeued_to}; requeue it again"
                " only on purpose (again=True, --again)"
            )
        target = topic or self.topic
        now = int(time.time() * 1000)
        headers = {
            k: v
            for k, v in letter.headers.items()
            if k not in (H_ERROR, H_TRACEBACK, H_SOURCE, H_STATUS, H_ATTEMPT, SIGNATURE_HEADER)
        }
        headers[H_ATTEMPT] = b"1"
        if self._signer is not None:
            headers.update(validity(now, ttl_of(headers)))
            headers = self._signer.seal(target, letter.key, letter.value, headers)
        record = Record(target, letter.value, letter.key, None, now, tuple(headers.items()))
        if self._producer is None:
            from kq.clients import make_producer

            self._producer = adapt_producer(make_producer(self.bootstrap_servers, **self._config))
        error = self._producer.send_all([record], self._delivery_timeout)[0]
        if error is not None:
            raise_for(target, error)
        marker = Record(
            self.dead_topic,
            b"",
            letter.key,
            letter.partition,
            now,
            ((H_REQUEUED, f"{letter.partition}:{letter.offset}".encode()),
             (H_REQUEUED_TO, target.encode())),
        )  # fmt: skip
        error = self._producer.send_all([marker], self._delivery_timeout)[0]
        if error is not None:
            # The job is back in its topic (raising would invite a second requeue).
            RETRIES.warning(
                "%s was requeued to %s, but its requeue marker could not be written (%s):"
                " it will still be listed as not requeued",
                where,
                target,
                error,
            )
