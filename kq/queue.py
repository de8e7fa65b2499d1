"""The queue: turns function calls into jobs in a Kafka topic."""

from __future__ import annotations

import datetime
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import dill

from kq._admin import check_reachable
from kq._calls import SafeRepr
from kq._checks import (
    check_bytes_or_none,
    check_callable_or_none,
    check_int_or_none,
    check_logger,
    check_str,
    check_timeout,
    fail_type,
    fail_value,
    is_number,
)
from kq._logs import PRODUCER
from kq._producer import Outgoing, ProducerAdapter, adapt_producer, raise_for
from kq.clients import ClientName, login_settings, make_producer
from kq.errors import BatchEnqueueError, ClusterError, EnqueueError
from kq.job import Job
from kq.retry import RetryPolicy, encode_headers
from kq.schedule import (
    check_fits,
    check_wait,
    delay_topics,
    delayed_record,
    ensure_topics,
    topic_limit,
)
from kq.serialization import dumps as fast_dumps
from kq.serialization import loads as fast_loads
from kq.signing import DEFAULT_EXPIRES, Signer, check_expires

_new_job = object.__new__

# Job ids are random 128-bit values in uuid4's format. A private generator,
# seeded from os.urandom and re-seeded in forked children, gives them at a
# fraction of a system call each (and a user's random.seed() cannot repeat
# them); ids need to be unique, not secret.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_ID_MASK = ~((0xC000 << 48) | (0xF000 << 64))
_ID_BITS = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4


def _uuid4_hex(_bits: Callable[[int], int] = _ids.getrandbits) -> str:
    """A new random id, as ``uuid.uuid4().hex`` would give."""
    return "%032x" % (_bits(128) & _ID_MASK | _ID_BITS)


def _too_large(error: BaseException) -> bool:
    # confluent: KafkaError MSG_SIZE_TOO_LARGE; kafka-python: MessageSizeTooLargeError
    return "MSG_SIZE_TOO_LARGE" in str(error) or "MessageSizeTooLarge" in type(error).__name__


class EnqueueSpec:
    """Enqueues with defaults (timeout, key, partition) that a Job's own fields override."""

    __slots__ = ("_delay", "_eta", "_expires", "_key", "_partition", "_queue", "_retry", "_timeout")

    def __init__(
        self,
        queue: Queue,
        timeout: int | float,
        key: bytes | None,
        partition: int | None,
        retry: RetryPolicy | None = None,
        delay: int | float | None = None,
        eta: datetime.datetime | float | None = None,
        expires: float | None = None,
    ) -> None:
        if not is_number(timeout):
            fail_type("timeout must be an int or float")
        check_timeout(timeout)
        check_bytes_or_none(key, "key must be a bytes")
        check_int_or_none(partition, "partition must be an int")
        if retry is not None and not isinstance(retry, RetryPolicy):
            fail_type("retry must be a kq.RetryPolicy")
        check_wait(delay, eta)
        if expires is not None:
            check_expires(expires)
            if queue._signer is None:
                fail_value("expires applies to signed jobs: give the Queue a signing_key")
        self._queue = queue
        self._timeout = timeout
        self._key = key
        self._partition = partition
        self._retry = retry
        self._delay = delay
        self._eta = eta
        self._expires = queue._expires if expires is None else expires

    def _build(self, obj: Callable[..., Any] | Job, args: Any, kwargs: dict[str, Any]) -> Job:
        timestamp = int(time.time() * 1000)
        if isinstance(obj, Job):
            job_id = _uuid4_hex() if obj.id is None else obj.id
            check_str(job_id, "Job.id must be a str")
            if not callable(obj.func):
                fail_type("Job.func must be a callable")
            if obj.args is not None and not isinstance(obj.args, (list, tuple)):
                fail_type("Job.args must be a list or tuple")
            job_kwargs = {} if obj.kwargs is None else obj.kwargs
            if not isinstance(job_kwargs, dict):
                fail_type("Job.kwargs must be a dict")
            timeout = self._timeout if obj.timeout is None else obj.timeout
            check_timeout(timeout, "Job.timeout must be an int or float")
            key = self._key if obj.key is None else obj.key
            check_bytes_or_none(key, "Job.key must be a bytes")
            partition = self._partition if obj.partition is None else obj.partition
            check_int_or_none(partition, "Job.partition must be an int")
            built: Job = _new_job(Job)
            built.__dict__.update(
                id=job_id,
                timestamp=timestamp,
                topic=self._queue._topic,
                func=obj.func,
                args=tuple(obj.args or ()),
                kwargs=job_kwargs,
                timeout=timeout,
                key=key,
                partition=partition,
            )
            return built
        if not callable(obj):
            fail_type("first argument must be a callable")
        # The frozen dataclass __init__ (nine object.__setattr__ calls) is a
        # fifth of a batched enqueue; filling __dict__ in field order gives
        # the same object.
        job: Job = _new_job(Job)
        job.__dict__.update(
            id=_uuid4_hex(),
            timestamp=timestamp,
            topic=self._queue._topic,
            func=obj,
            args=args,
            kwargs=kwargs,
            timeout=self._timeout,
            key=self._key,
            partition=self._partition,
        )
        return job

    def _due_ms(self, now_ms: int) -> int | None:
        if self._delay is not None:
            return now_ms + int(self._delay * 1000)
        if isinstance(self._eta, datetime.datetime):
            return int(self._eta.timestamp() * 1000)
        if self._eta is not None:
            return int(self._eta * 1000)
        return None

    def _record(self, job: Job) -> Outgoing:
        queue = self._queue
        if queue._logger.isEnabledFor(logging.INFO):
            # KQ's line; a job whose repr() raises is enqueued all the same
            queue._logger.info("Enqueueing %s ...", SafeRepr(job))
        try:
            value = queue._encode(job)
        except Exception as exc:
            raise_for(queue._topic, exc)
        timestamp = job.timestamp or 0
        retry = self._retry or queue._retry
        signer = queue._signer
        if retry is None and signer is None and self._delay is None and self._eta is None:
            return (queue._topic, value, job.key, job.partition, timestamp, ())
        due = self._due_ms(timestamp)
        headers = encode_headers(1, timestamp, retry) if retry or due else ()
        if signer is not None:
            headers = signer.sign_job(
                queue._topic,
                job.key,
                value,
                headers,
                job_id=str(job.id),
                enqueued_ms=timestamp,
                due_ms=due,
                expires=self._expires,
            )
        if due is None or due <= timestamp:
            return (queue._topic, value, job.key, job.partition, timestamp, headers)
        queue._ensure_delay_topics()
        check_fits(queue._topic, queue._home_limit, job.key, value, headers)
        return delayed_record(
            queue._topic, value, job.key, dict(headers), due, timestamp, job.partition
        )

    def enqueue(self, func: Callable[..., Any] | Job, *args: Any, **kwargs: Any) -> Job:
        """Send a call (or a Job) to the topic; return the Job once the broker acknowledged it.

        Raises ``kq.EnqueueError`` naming the topic and cause when the job cannot
        be durably written within the queue's ``delivery_timeout``.
        """
        job = self._build(func, args, kwargs)
        record = self._record(job)
        queue = self._queue
        error = queue._adapter.send_all([record], queue.delivery_timeout)[0]
        if error is not None:
            raise_for(queue.topic, error)
        return job

    def batch(self, max_pending: int = 50_000) -> Batch:
        """A batch whose enqueues use these defaults; see ``Queue.batch``."""
        return Batch(self, max_pending)


class Batch:
    """Enqueues sent together and confirmed together: fast, and durable on exit.

    ``enqueue`` builds and serializes the job and returns it at once; every
    ``max_pending`` jobs, and on ``flush()`` or leaving the ``with`` block, the
    pending jobs go to Kafka and kq waits for the broker to acknowledge each.
    Jobs that could not be written are reported together in one
    ``kq.BatchEnqueueError`` (raised by ``flush`` or on exit), each with its cause.
    A batch keeps only its pending jobs and its failures, never the
    acknowledged ones, so its memory stays bounded however many jobs go through.
    """

    __slots__ = (
        "_acknowledged",
        "_failed",
        "_jobs",
        "_max_pending",
        "_plain",
        "_rebuild",
        "_records",
        "_spec",
    )

    def __init__(self, spec: EnqueueSpec, max_pending: int = 50_000) -> None:
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            fail_value("max_pending must be an int, 1 or greater")
        self._spec = spec
        self._max_pending = max_pending
        self._records: list[Outgoing] = []
        # Pending Job objects would each outlive a few garbage collections and
        # be promoted to the oldest generation, whose full passes then cost
        # more than building the jobs. With kq's own serializer a failed job
        # is rebuilt from the bytes it was sent as (same id and fields), so
        # only those bytes wait; with another serializer the Jobs wait too.
        self._rebuild: Callable[[bytes], Any] | None = (
            fast_loads if spec._queue._encode is fast_dumps else None
        )
        self._jobs: list[Job] = []
        self._acknowledged = 0
        self._failed: list[tuple[Job, BaseException]] = []
        self._plain = self._is_plain()

    def _is_plain(self) -> bool:
        # No headers to add and nothing to log: the record is the job's bytes.
        # Asked again at every send, so a changed log level shows within
        # max_pending jobs.
        spec, queue = self._spec, self._spec._queue
        return (
            spec._retry is None
            and queue._retry is None
            and queue._signer is None
            and spec._delay is None
            and spec._eta is None
            and not queue._logger.isEnabledFor(logging.INFO)
        )

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        # Also on an exception in the block: what was enqueued is sent, not dropped.
        self._send()
        if exc is None:
            self._raise_failures()
        elif self._failed:
            # The block's own exception goes on; the failed jobs ride along with it.
            failed, self._failed = self._failed, []
            queue = self._spec._queue
            report = BatchEnqueueError(queue._topic, failed, self._acknowledged)
            ids = ", ".join(str(job.id) for job, _cause in failed)
            PRODUCER.error("%s; failed job ids: %s", report, ids)
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(f"{report}; failed job ids: {ids}")

    def enqueue(self, func: Callable[..., Any] | Job, *args: Any, **kwargs: Any) -> Job:
        """Add a call (or a Job) to the batch, as ``Queue.enqueue`` builds it; return the Job."""
        spec = self._spec
        job = spec._build(func, args, kwargs)
        records = self._records
        if self._plain:
            # _record's first case, without its log call and checks per job
            queue = spec._queue
            try:
                value = queue._encode(job)
            except Exception as exc:
                raise_for(queue._topic, exc)
            records.append((queue._topic, value, job.key, job.partition, job.timestamp or 0, ()))
        else:
            records.append(spec._record(job))
        if self._rebuild is None:
            self._jobs.append(job)
        if len(records) >= self._max_pending:
            self._send()
        return job

    def flush(self) -> int:
        """Send what is pending and wait; return how many jobs of the batch are acknowledged.

        Raises ``kq.BatchEnqueueError`` if any job of the batch failed since the last raise.
        """
        self._send()
        self._raise_failures()
        return self._acknowledged

    @property
    def acknowledged_count(self) -> int:
        """How many jobs of this batch the broker has acknowledged so far."""
        return self._acknowledged

    def _send(self) -> None:
        if not self._records:
            return
        queue = self._spec._queue
        records, jobs = self._records, self._jobs
        self._records, self._jobs = [], []
        self._plain = self._is_plain()
        errors = queue._adapter.send_all(records, queue.delivery_timeout)
        if len(records) > 1:
            # The broker refuses a whole produce batch for one record over the
            # topic's max.message.bytes; such records were certainly not
            # written, so each is tried alone to report exactly the big ones.
            for index, error in enumerate(errors):
                if error is not None and _too_large(error):
                    errors[index] = queue._adapter.send_all(
                        [records[index]], queue.delivery_timeout
                    )[0]
        rebuild = self._rebuild
        failed: list[tuple[Job, BaseException]] = [
            (jobs[index] if rebuild is None else rebuild(records[index][1]), error)
            for index, error in enumerate(errors)
            if error is not None
        ]
        self._acknowledged += len(records) - len(failed)
        self._failed += failed

    def _raise_failures(self) -> None:
        if self._failed:
            failed, self._failed = self._failed, []
            raise BatchEnqueueError(self._spec._queue.topic, failed, self._acknowledged)


class Queue:
    """Enqueues function calls as jobs in a Kafka topic.

    ``producer`` is a kafka-python ``KafkaProducer`` or a confluent-kafka
    ``Producer``. ``enqueue`` returns only once the broker has acknowledged
    the job, or raises ``kq.EnqueueError`` within ``delivery_timeout`` seconds.
    """

    def __init__(
        self,
        topic: str,
        producer: Any,
        serializer: Callable[..., bytes] | None = None,
        timeout: int | float = 0,
        logger: logging.Logger | None = None,
        *,
        delivery_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        admin_config: dict[str, Any] | None = None,
        signing_key: bytes | str | None = None,
        expires: float | None = None,
    ) -> None:
        check_str(topic, "topic must be a str")
        self._signer = None if signing_key is None else Signer(signing_key)
        if expires is not None:
            check_expires(expires)
            if self._signer is None:
                fail_value("expires applies to signed jobs: give a signing_key")
        self._expires = DEFAULT_EXPIRES if expires is None else expires
        if retry is not None and not isinstance(retry, RetryPolicy):
            fail_type("retry must be a kq.RetryPolicy")
        self._retry = retry
        self._admin_config = dict(admin_config or {})
        self._delay_topics_ready = False
        self._home_limit: int | None = None
        self._adapter: ProducerAdapter = adapt_producer(producer)
        check_callable_or_none(serializer, "serializer must be a callable")
        check_timeout(timeout)
        check_logger(logger)
        if not is_number(delivery_timeout) or delivery_timeout <= 0:
            fail_type("delivery_timeout must be a positive int or float")
        self._topic = topic
        self._serializer: Callable[..., bytes] = serializer or dill.dumps
        # KQ's default, dill.dumps, is served by kq.serialization.dumps: the same
        # bytes for importable jobs at a tenth of the cost.
        self._encode = fast_dumps if self._serializer is dill.dumps else self._serializer
        self._timeout = timeout
        self._logger = logger or logging.getLogger("kq.queue")
        self._delivery_timeout = float(delivery_timeout)

    @classmethod
    def connect(cls, bootstrap_servers: str, topic: str, **options: Any) -> Queue:
        """A ready Queue from a bootstrap address (see ``kq.queue.connect_queue``)."""
        return connect_queue(bootstrap_servers, topic, **options)

    def __repr__(self) -> str:
        """Show hosts and topic."""
        return f"Queue(hosts={self.hosts}, topic={self._topic})"

    @property
    def hosts(self) -> str:
        """The producer's bootstrap servers."""
        return self._adapter.hosts

    @property
    def topic(self) -> str:
        """The topic jobs are sent to."""
        return self._topic

    @property
    def producer(self) -> Any:
        """The Kafka producer as given."""
        return self._adapter.client

    @property
    def serializer(self) -> Callable[..., bytes]:
        """Turns a Job into bytes (default ``dill.dumps``)."""
        return self._serializer

    @property
    def timeout(self) -> int | float:
        """Default job timeout in seconds (0: no limit)."""
        return self._timeout

    @property
    def logger(self) -> logging.Logger:
        """Where enqueues are logged."""
        return self._logger

    @property
    def delivery_timeout(self) -> float:
        """Seconds ``enqueue`` waits for the broker's acknowledgement before raising."""
        return self._delivery_timeout

    def enqueue(self, func: Callable[..., Any] | Job, *args: Any, **kwargs: Any) -> Job:
        """Enqueue a function call or a Job; see ``EnqueueSpec.enqueue``."""
        # A spec per call rather than one kept on self: a cycle would keep the
        # producer (and its connections) alive until the garbage collector runs.
        return EnqueueSpec(self, self._timeout, None, None).enqueue(func, *args, **kwargs)

    def batch(self, max_pending: int = 50_000) -> Batch:
        """A ``Batch``: enqueue many jobs fast, durably confirmed on ``flush`` or exit.

        ::

            with queue.batch() as batch:
                for n in range(100_000):
                    batch.enqueue(work, n)
            # here every job is acknowledged, or kq.BatchEnqueueError was raised
        """
        return Batch(EnqueueSpec(self, self._timeout, None, None), max_pending)

    def enqueue_many(self, jobs: Iterable[Callable[..., Any] | Job]) -> list[Job]:
        """Enqueue Jobs (or argument-less callables) together; return them once acknowledged.

        Each item is built as ``enqueue`` builds it. Raises ``kq.BatchEnqueueError``
        listing exactly the jobs that failed (``failed``) and the built jobs that
        were durably enqueued (``acknowledged``).
        """
        built: list[Job] = []
        try:
            with self.batch() as batch:
                for item in jobs:
                    built.append(batch.enqueue(item))
        except BatchEnqueueError as exc:
            # The caller has no Job objects of its own here: say which went through.
            failed = {job.id for job, _cause in exc.failed}
            exc.acknowledged = [job for job in built if job.id not in failed]
            raise
        return built

    def using(
        self,
        timeout: int | float | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        *,
        retry: RetryPolicy | None = None,
        delay: int | float | None = None,
        eta: datetime.datetime | float | None = None,
        expires: float | None = None,
    ) -> EnqueueSpec:
        """Return an object whose ``enqueue`` uses these defaults (a Job's own fields win).

        ``retry`` overrides the queue's retry policy for these jobs. ``delay``
        (seconds from now) or ``eta`` (an aware datetime, or Unix seconds)
        makes the jobs wait in the topic's delay tiers until they are due.
        ``expires`` (seconds, signed jobs only) overrides how long after they
        are due the jobs stay valid (``kq.signing``).
        """
        if timeout is not None and not is_number(timeout):
            fail_type("timeout must be an int or float")
        return EnqueueSpec(
            self,
            timeout or self._timeout,
            key,
            partition,
            retry=retry,
            delay=delay,
            eta=eta,
            expires=expires,
        )

    @property
    def retry(self) -> RetryPolicy | None:
        """The retry policy given to this queue's jobs (``None``: no retries)."""
        return self._retry

    def _ensure_delay_topics(self) -> None:
        if self._delay_topics_ready:
            return
        try:
            ensure_topics(
                self._adapter.hosts, delay_topics(self._topic), self._topic, self._admin_config
            )
        except Exception as exc:
            raise EnqueueError(self._topic, f"cannot create its delay topics: {exc}", exc) from exc
        self._home_limit = topic_limit(self._adapter.hosts, self._topic, self._admin_config)
        self._delay_topics_ready = True


def connect_queue(
    bootstrap_servers: str,
    topic: str,
    *,
    client: ClientName = "confluent",
    delivery_timeout: float = 30.0,
    producer_config: dict[str, Any] | None = None,
    connect_timeout: float = 10.0,
    **queue_options: Any,
) -> Queue:
    """A ready Queue from a bootstrap address, with a durable producer made by kq.

    The cluster must answer within ``connect_timeout`` (at most
    ``delivery_timeout``) seconds, or ``kq.EnqueueError`` names the address.
    """
    login = login_settings(producer_config, client)
    try:
        check_reachable(bootstrap_servers, login, min(connect_timeout, delivery_timeout))
    except ClusterError as exc:
        raise EnqueueError(topic, str(exc), exc) from exc
    try:
        producer = make_producer(
            bootstrap_servers,
            client=client,
            delivery_timeout=delivery_timeout,
            **(producer_config or {}),
        )
    except Exception as exc:
        # kafka-python connects in its constructor: an unreachable cluster or a
        # refused login is an enqueue that cannot happen, said as one error.
        raise EnqueueError(topic, f"cannot connect a producer: {exc!r}", exc) from exc
    # Creating the delay-tier topics logs in as the producer does.
    queue_options["admin_config"] = {
        **login,
        **(queue_options.get("admin_config") or {}),
    }
    return Queue(topic, producer, delivery_timeout=delivery_timeout, **queue_options)
