"""The worker: takes jobs from a Kafka topic, runs them, reports and commits."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import dill

from kq._calls import call_repr
from kq._checks import (
    check_callable_or_none,
    check_logger,
    check_str,
    fail_type,
    fail_value,
)
from kq._consumer import TopicPartition, adapt_consumer
from kq._isolate import Result, run_inline, run_isolated
from kq._lanes import Lanes
from kq._logs import CONSUMER, RUNTIME
from kq._loop import EventLoopThread
from kq._offsets import OffsetTracker
from kq._retrying import RetryRouter
from kq.clients import ClientName, login_settings, make_consumer
from kq.job import Job
from kq.message import Message
from kq.retry import Attempt, RetryPolicy, reset_current, set_current
from kq.serialization import loads as fast_loads
from kq.signing import SIGNATURE_HEADER, Verifier

Callback = Callable[[str, Message, "Job | None", Any, "BaseException | None", "str | None"], Any]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# How long a worker at its in-flight cap waits for jobs to finish before it
# pauses its partitions (and keeps polling, paused, to stay in the group).
_PAUSE_AFTER = 1.0


def _is_fatal(exc: BaseException) -> bool:
    """Client errors a worker cannot outlive (authorization, fatal librdkafka state)."""
    text = f"{type(exc).__name__} {exc}"
    return "Authorization" in text or "AUTHORIZATION" in text or "_FATAL" in text


class InvalidJob(Exception):
    """Why a message is not a runnable job."""


def _check_job(obj: Any) -> Job:
    if not isinstance(obj, Job):
        raise InvalidJob(f"expected a kq.Job, got {type(obj).__module__}.{type(obj).__qualname__}")
    if obj.id is not None and not isinstance(obj.id, str):
        raise InvalidJob("Job.id must be a str")
    if not callable(obj.func):
        raise InvalidJob("Job.func must be a callable")
    if obj.args is not None and not isinstance(obj.args, (list, tuple)):
        raise InvalidJob("Job.args must be a list or tuple")
    if obj.kwargs is not None and not isinstance(obj.kwargs, dict):
        raise InvalidJob("Job.kwargs must be a dict")
    if obj.timeout is not None and (
        not isinstance(obj.timeout, (int, float))
        or isinstance(obj.timeout, bool)
        or not obj.timeout >= 0  # also NaN
    ):
        raise InvalidJob("Job.timeout must be an int or float, 0 or greater")
    return obj


class Worker:
    """Fetches jobs from a Kafka topic in a consumer group and runs them.

    ``consumer`` is a kafka-python ``KafkaConsumer`` or a confluent-kafka
    ``Consumer`` with a group id. Offsets are committed only after a job has
    finished and the callback has run (at least once). ``concurrency`` runs up
    to that many jobs at once, never two of the same message key together.
    """

    def __init__(
        self,
        topic: str,
        consumer: Any,
        callback: Callback | None = None,
        deserializer: Callable[[bytes], Any] | None = None,
        logger: logging.Logger | None = None,
        *,
        concurrency: int = 1,
        max_in_flight: int = 1000,
        shutdown_timeout: float | None = 30.0,
        commit_interval: float = 1.0,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str | None = None,
        scheduling: bool = True,
        scheduler_config: dict[str, Any] | None = None,
        observer: Any = None,
        signing_keys: bytes | str | Sequence[bytes | str] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        check_str(topic, "topic must be a str")
        check_logger(logger)
        self._logger = logger or logging.getLogger("kq.worker")
        self._consumer = adapt_consumer(consumer)
        check_callable_or_none(callback, "callback must be a callable")
        check_callable_or_none(deserializer, "deserializer must be a callable")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            fail_value("concurrency must be an int, 1 or greater")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            fail_value("max_in_flight must be an int, 1 or greater")
        if retry is not None and not isinstance(retry, RetryPolicy):
            fail_type("retry must be a kq.RetryPolicy")
        if dead_letter_topic is not None:
            check_str(dead_letter_topic, "dead_letter_topic must be a str")
        if max_message_bytes is not None and (
            not isinstance(max_message_bytes, int) or max_message_bytes < 1
        ):
            fail_value("max_message_bytes must be None or an int, 1 or greater")
        self._verifier = None if signing_keys is None else Verifier(signing_keys)
        self._max_bytes = max_message_bytes
        self._limits = self._verifier is not None or max_message_bytes is not None
        self._topic = topic
        self._callback = callback
        self._observer = observer
        self._router = RetryRouter(
            topic, retry, dead_letter_topic, bool(scheduling), scheduler_config
        )
        self._deserializer: Callable[[bytes], Any] = deserializer or dill.loads
        # KQ's default, dill.loads, is served by kq.serialization.loads: the same
        # objects, plain pickle first (twice as fast), dill where needed.
        self._decode = fast_loads if self._deserializer is dill.loads else self._deserializer
        self._concurrency = concurrency
        self._max_in_flight = max(max_in_flight, concurrency)
        self._shutdown_timeout = shutdown_timeout
        self._commit_interval = commit_interval
        self._callback_lock = threading.Lock()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._completions: queue.SimpleQueue[tuple[Message, bool]] = queue.SimpleQueue()
        self._tracker = OffsetTracker()
        self._lanes = Lanes(concurrency, self._process, self._on_finished)
        self._loop_thread = EventLoopThread()
        self._processed = 0
        self._paused = False
        self._commit_offsets = True

    @classmethod
    def connect(
        cls,
        bootstrap_servers: str,
        topic: str,
        group: str = "kq",
        *,
        client: ClientName = "confluent",
        consumer_config: dict[str, Any] | None = None,
        **options: Any,
    ) -> Worker:
        """A ready Worker from a bootstrap address, with a consumer configured by kq."""
        consumer = make_consumer(bootstrap_servers, group, client=client, **(consumer_config or {}))
        # The worker's retry and delay-tier clients log in as its consumer does.
        options["scheduler_config"] = {
            **login_settings(consumer_config, client),
            **(options.get("scheduler_config") or {}),
        }
        return cls(topic, consumer, **options)

    def __repr__(self) -> str:
        """Show hosts, topic and group."""
        return f"Worker(hosts={self.hosts}, topic={self._topic}, group={self.group})"

    @property
    def hosts(self) -> str:
        """The consumer's bootstrap servers."""
        return self._consumer.hosts

    @property
    def topic(self) -> str:
        """The topic jobs are taken from."""
        return self._topic

    @property
    def group(self) -> str:
        """The consumer group id."""
        return self._consumer.group

    @property
    def consumer(self) -> Any:
        """The Kafka consumer as given."""
        return self._consumer.client

    @property
    def deserializer(self) -> Callable[[bytes], Any]:
        """Turns message bytes into a Job."""
        return self._deserializer

    @property
    def callback(self) -> Callback | None:
        """Called once per processed message, or None."""
        return self._callback

    @property
    def concurrency(self) -> int:
        """How many jobs may run at once."""
        return self._concurrency

    # -- running one message (on a job thread) -------------------------------

    @property
    def in_flight(self) -> int:
        """Jobs fetched and not yet finished (at most ``max_in_flight``)."""
        return self._tracker.in_flight()

    @property
    def max_in_flight(self) -> int:
        """The cap on jobs fetched and not yet finished; fetching pauses at it."""
        return self._max_in_flight

    def _run_callback(
        self,
        status: str,
        message: Message,
        job: Job | None,
        result: Any,
        exception: BaseException | None,
        stacktrace: str | None,
    ) -> None:
        if self._callback is None:
            return
        try:
            self._logger.info("Executing callback ...")
            with self._callback_lock:
                self._callback(status, message, job, result, exception, stacktrace)
        except Exception as exc:
            self._logger.exception("Callback raised an exception: %s", exc)

    def _process(self, message: Message) -> bool:
        """Run one message's job and its callback; False if it must run again."""
        headers = self._consumer.headers.pop(
            (message.topic, message.partition, message.offset), None
        )
        if self._router.foreign(headers):
            return True  # another group's retry: committed here, run there
        attempt = self._router.attempt(headers)
        token = set_current(attempt)
        try:
            return self._process_attempt(message, headers, attempt)
        finally:
            reset_current(token)

    def _check_limits(self, message: Message, headers: dict[str, bytes] | None) -> None:
        # Before anything is deserialized: size first, then the signature.
        if self._max_bytes is not None and len(message.value) > self._max_bytes:
            raise InvalidJob(
                f"message of {len(message.value)} bytes exceeds max_message_bytes={self._max_bytes}"
            )
        if self._verifier is not None:
            signature = (headers or {}).get(SIGNATURE_HEADER)
            problem = self._verifier.problem(message.topic, message.key, message.value, signature)
            if problem:
                raise InvalidJob(problem)

    def _observe(self, method: str, *args: Any) -> None:
        hook = getattr(self._observer, method, None)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:
            RUNTIME.warning("Observer %s raised: %r", method, exc)

    def _process_attempt(
        self, message: Message, headers: dict[str, bytes] | None, attempt: Attempt
    ) -> bool:
        # Asked once per job: three INFO lines per no-op job are a measurable
        # share of it even when INFO is off.
        info = self._logger.isEnabledFor(logging.INFO)
        if info:
            self._logger.info(
                "Processing Message(topic=%s, partition=%s, offset=%s) ...",
                message.topic,
                message.partition,
                message.offset,
            )
        try:
            if self._limits:
                self._check_limits(message, headers)
            job = _check_job(self._decode(message.value))
            # repr of the arguments is the costliest step of a no-op job: only when logged
            if info:
                description = call_repr(job.func, job.args or (), job.kwargs or {})  # type: ignore[arg-type]
                self._logger.info("Executing job %s: %s", job.id, description)
        except (Exception, SystemExit) as exc:
            self._logger.error("Job was invalid: %s", exc)
            if self._observer is not None:
                self._observe("job_finished", "invalid", 0.0)
            self._run_callback("invalid", message, None, None, None, None)
            return True
        result: Result
        started = time.perf_counter() if self._observer is not None else 0.0
        if job.timeout:
            result = run_isolated(job, float(job.timeout), self._abort)
        else:
            result = run_inline(job, self._loop_thread, self._abort)
        if self._observer is not None and result.status != "aborted":
            self._observe("job_finished", result.status, time.perf_counter() - started)
        if result.status == "aborted":
            RUNTIME.warning("Job %s was stopped by a hard shutdown; it will run again", job.id)
            return False
        if result.status == "success":
            if info:
                self._logger.info("Job %s returned: %s", job.id, result.value)
            self._run_callback("success", message, job, result.value, None, None)
            return True
        if result.status == "timeout":
            self._logger.error("Job %s timed out after %s seconds", job.id, job.timeout)
        else:
            self._logger.error(
                "Job %s raised an exception: %r\n%s", job.id, result.exception, result.stacktrace
            )
        # The retry (or dead letter) is durably written before the callback runs
        # and before the offset can be committed.
        routed = self._router.route(
            message,
            headers,
            attempt,
            result.status,
            job.timestamp,
            result.exception,
            result.stacktrace,
        )
        if result.status == "timeout":
            self._run_callback("timeout", message, job, None, None, None)
        else:
            self._run_callback("failure", message, job, None, result.exception, result.stacktrace)
        return routed

    def _on_finished(self, message: Message, completed: bool) -> None:
        self._completions.put((message, completed))

    # -- the Kafka loop (on the thread that called start) --------------------

    def _drain(self, wait: float = 0.0) -> None:
        """Take finished jobs off the completion queue, waiting up to ``wait`` for the first."""
        get = self._completions.get
        finished = self._tracker.finished
        try:
            message, completed = get(timeout=wait) if wait > 0 else get(block=False)
            while True:
                if completed:
                    finished((message.topic, message.partition), message.offset)
                    self._processed += 1
                message, completed = get(block=False)
        except queue.Empty:
            return

    def _commit(
        self,
        asynchronous: bool,
        partitions: set[TopicPartition] | None = None,
        again: bool | None = None,
    ) -> None:
        if not self._commit_offsets:
            return
        # On revoke the partitions are given: kafka-python has already taken
        # them out of assignment() when it calls the listener.
        owned = self._consumer.assignment() if partitions is None else partitions
        # A synchronous commit (on revoke, at the end) sends everything finished
        # again, in case an earlier asynchronous one failed (e.g. mid-rebalance).
        offsets = self._tracker.committable(
            owned, again=(not asynchronous) if again is None else again
        )
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, asynchronous=asynchronous)
        except Exception as exc:
            CONSUMER.warning("Offset commit failed (jobs may run again): %s", exc)
            return
        self._tracker.mark_committed(offsets)
        if self._observer is not None:
            self._observe("committed", offsets)

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        """Rebalance: new partitions; paused too if the worker is at its cap."""
        if partitions:
            CONSUMER.info("Partitions assigned: %s", partitions)
        self._observe("rebalanced", "assigned", partitions)
        if self._paused and partitions:
            self._consumer.pause(partitions)

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        """Rebalance: commit what finished before the partitions go."""
        if partitions:
            CONSUMER.info("Partitions revoked: %s", partitions)
        self._observe("rebalanced", "revoked", partitions)
        self._lanes.discard(partitions)
        if not self._lanes.wait_idle(partitions, self._revoke_wait(), self._abort):
            CONSUMER.warning(
                "Jobs of revoked partitions still running; their offsets will not be committed"
            )
        self._drain()
        self._commit(asynchronous=False, partitions=set(partitions))
        self._tracker.drop(partitions)
        self._drop_headers(partitions)

    def _revoke_wait(self) -> float:
        # The group waits for this member's rejoin only up to its max.poll.interval
        # (the rebalance timeout): waiting longer for running jobs would get the
        # worker thrown out, so wait half of it at most (300 s is the default).
        limit = (self._consumer.max_poll_interval() or 300.0) / 2
        if self._shutdown_timeout is None:
            return limit
        return min(limit, self._shutdown_timeout)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Rebalance: partitions already owned by others; commit nothing for them."""
        if partitions:
            CONSUMER.warning("Partitions lost: %s", partitions)
        self._observe("rebalanced", "lost", partitions)
        self._lanes.discard(partitions)
        self._drain()
        self._tracker.drop(partitions)
        self._drop_headers(partitions)

    def _drop_headers(self, partitions: list[TopicPartition]) -> None:
        gone = set(partitions)
        headers = self._consumer.headers
        for coordinates in [c for c in headers if (c[0], c[1]) in gone]:
            headers.pop(coordinates, None)

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        partitions = self._consumer.assignment()
        if paused:
            self._consumer.pause(partitions)
        else:
            self._consumer.resume(partitions)
        self._paused = paused

    def _dispatch(self, messages: list[Message], room: int) -> None:
        taken = messages[:room]
        for m in taken:
            self._tracker.started((m.topic, m.partition), m.offset)
        self._lanes.submit(taken)
        if len(messages) > room:
            # fetched past the cap (a rebalance inside poll can do that): give them back
            first: dict[TopicPartition, int] = {}
            for m in messages[room:]:
                tp = (m.topic, m.partition)
                first[tp] = min(first.get(tp, m.offset), m.offset)
            for tp, offset in first.items():
                self._seek(tp, offset)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        client = self._consumer.client
        try:
            from confluent_kafka import Consumer as ConfluentConsumer

            if isinstance(client, ConfluentConsumer):
                from confluent_kafka import TopicPartition as CTP

                client.seek(CTP(tp[0], tp[1], offset))
            else:
                from kafka import TopicPartition as KTP

                client.seek(KTP(tp[0], tp[1]), offset)
        except Exception as exc:
            CONSUMER.warning("Could not rewind %s to %s: %s", tp, offset, exc)

    def _handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping.is_set():
            RUNTIME.warning("Second signal %s: stopping at once", signum)
            self._abort.set()
            return
        RUNTIME.info("Signal %s: finishing running jobs, then stopping", signum)
        self._stopping.set()

    def stop(self, immediately: bool = False) -> None:
        """Ask a running ``start`` to return: after running jobs, or at once."""
        if immediately:
            self._abort.set()
        self._stopping.set()

    def start(self, max_messages: int | None = None, commit_offsets: bool = True) -> int:
        """Process messages until ``max_messages`` (or a stop); return how many were processed.

        With ``commit_offsets`` the group's offsets are committed as jobs finish;
        a final commit is made before returning.
        """
        if max_messages is not None and (not isinstance(max_messages, int) or max_messages < 0):
            fail_value("max_messages must be None or an int, 0 or greater")
        self._consumer.resolve_hosts()
        self._router.start(self.hosts, self.group)
        self._logger.info("Starting %s ...", self)
        self._stopping.clear()
        self._abort.clear()
        self._commit_offsets = bool(commit_offsets)
        self._processed = 0
        neutralise = getattr(self._consumer, "neutralise_auto_commit", None)
        if neutralise is not None:
            neutralise()
        previous = self._install_signal_handlers()
        try:
            if not self._consumer.subscribed_to(self._topic):
                self._consumer.subscribe(self._topic, self)
            self._loop(max_messages)
        finally:
            self._finish()
            self._restore_signal_handlers(previous)
        return self._processed

    def _loop(self, max_messages: int | None) -> None:
        last_commit = time.monotonic()
        commits = 0
        full_since: float | None = None
        while True:
            self._drain()
            now = time.monotonic()
            if now - last_commit >= self._commit_interval:
                # every 10th round re-sends what may have been lost meanwhile
                commits += 1
                self._commit(asynchronous=True, again=commits % 10 == 0)
                last_commit = now
            if self._stopping.is_set() or self._abort.is_set():
                return
            if max_messages is not None and self._processed >= max_messages:
                return
            in_flight = self._tracker.in_flight()
            room = self._max_in_flight - in_flight
            if max_messages is not None:
                room = min(room, max_messages - self._processed - in_flight)
            if room > 0:
                full_since = None
                self._set_paused(False)
            elif not self._paused:
                # At the cap, wait a little for jobs to finish before pausing:
                # pausing drops the client's prefetched messages, and resuming
                # costs a fetch round trip, so fast jobs must not cycle through
                # it. Not polling for this long is safe: heartbeats run on the
                # clients' own threads and max.poll.interval is far longer.
                full_since = full_since or now
                if now - full_since < _PAUSE_AFTER:
                    self._drain(wait=0.05)
                    continue
                self._set_paused(True)
            try:
                messages = self._consumer.poll(0.05 if in_flight else 0.2, max(room, 1))
            except Exception as exc:
                # e.g. kafka-python's connection errors while a broker restarts:
                # the client reconnects by itself; the worker must not die of it.
                if _is_fatal(exc):
                    raise
                CONSUMER.warning("Polling failed (retrying): %r", exc)
                time.sleep(0.5)
                continue
            if messages:
                self._dispatch(messages, max(room, 0))

    def _finish(self) -> None:
        self._lanes.discard()
        if self._abort.is_set():
            timeout: float | None = 0.5
        else:
            timeout = self._shutdown_timeout
        # A second signal (or stop(immediately=True)) during this wait ends it.
        if not self._lanes.wait_idle(timeout=timeout, interrupt=self._abort):
            if self._abort.is_set():
                RUNTIME.warning("Stopping at once; running jobs will run again")
            else:
                self._abort.set()
                RUNTIME.warning("Running jobs did not finish in time; they will run again")
            self._lanes.wait_idle(timeout=1.0)
        self._drain()
        self._commit(asynchronous=False)
        self._set_paused(False)
        # Also after max_messages: a member that no longer polls would keep its
        # partitions (cooperative assignment hands them back to it) until its
        # max.poll.interval expired. The next start() subscribes again.
        try:
            self._consumer.unsubscribe()
        except Exception as exc:
            CONSUMER.warning("Leaving the group failed: %s", exc)
        self._lanes.close()
        self._loop_thread.close()
        self._router.stop()

    def _install_signal_handlers(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None  # only the main thread may set handlers; use stop() instead
        previous: dict[int, Any] = {}
        for sig in _SIGNALS:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle_signal)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any] | None) -> None:
        if previous is None:
            return
        for sig, handler in previous.items():
            signal.signal(sig, handler)
