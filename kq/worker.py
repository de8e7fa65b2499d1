"""The worker: takes jobs from a Kafka topic, runs them, reports and commits."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import dill

from kq import _signals
from kq._admin import check_reachable
from kq._checks import (
    check_callable_or_none,
    check_logger,
    check_str,
    fail_type,
    fail_value,
)
from kq._commits import Committer, is_fatal
from kq._consumer import TopicPartition, adapt_consumer
from kq._fetched import give_back, without_revoked
from kq._lanes import Lanes
from kq._logs import CONSUMER, RUNTIME
from kq._loop import EventLoopThread
from kq._offsets import Generation, OffsetTracker
from kq._pauses import HeadOfLine, Pauses
from kq._retrying import RetryRouter
from kq._runner import Callback, InvalidJob, MessageRunner, notify
from kq.clients import ClientName, login_settings, make_consumer
from kq.message import Message
from kq.retry import RetryPolicy
from kq.serialization import loads as fast_loads
from kq.signing import Verifier

__all__ = ["Callback", "InvalidJob", "Worker"]

# How long a worker at its in-flight cap waits for jobs to finish before it
# pauses its partitions (and keeps polling, paused, to stay in the group).
_PAUSE_AFTER = 1.0

# At the cap, how long the loop lets jobs end after one did, before it counts them.
_GATHER = 0.001

# What the job threads carry with each message: its offsets' generation and
# kq's headers of the record (taken from the consumer at dispatch).
_Tag = tuple[Generation, dict[str, bytes] | None]

# How often finished jobs' offsets are committed (asynchronously). After a
# SIGKILL the next worker reruns what finished since the last commit, so the
# reruns shrink with the interval, while the drain rate measured the same from
# 1 s down to 0.1 s (the README's field benchmark, commit_interval table); a
# worker with nothing newly finished sends no commit. The one default: Worker's
# and so `kq worker`'s, which passes none of its own.
COMMIT_INTERVAL = 0.1


class Worker:
    """Fetches jobs from a Kafka topic in a consumer group and runs them.

    ``consumer`` is a kafka-python ``KafkaConsumer`` or a confluent-kafka
    ``Consumer`` with a group id. Offsets are committed only after a job has
    finished and the callback has run (at least once). ``concurrency`` runs up
    to that many jobs at once, never two of the same message key together.
    ``head_of_line_limit`` pauses a partition once that many of its jobs
    finished behind one still running; ``exact_resume`` records those in the
    commit, so a worker taking the partition over does not run them again.
    ``keep_invalid`` writes messages that are not runnable jobs (a function
    the worker cannot import, say) to the dead-letter topic before they are
    committed; by default when ``retry`` or ``dead_letter_topic`` is set.
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
        commit_interval: float = COMMIT_INTERVAL,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str | None = None,
        scheduling: bool = True,
        scheduler_config: dict[str, Any] | None = None,
        observer: Any = None,
        signing_keys: bytes | str | Sequence[bytes | str] | None = None,
        max_message_bytes: int | None = None,
        head_of_line_limit: int = 10_000,
        exact_resume: bool = True,
        keep_invalid: bool | None = None,
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
        if (
            not isinstance(head_of_line_limit, int)
            or isinstance(head_of_line_limit, bool)
            or head_of_line_limit < 1
        ):
            fail_value("head_of_line_limit must be an int, 1 or greater")
        if retry is not None and not isinstance(retry, RetryPolicy):
            fail_type("retry must be a kq.RetryPolicy")
        if dead_letter_topic is not None:
            check_str(dead_letter_topic, "dead_letter_topic must be a str")
        if max_message_bytes is not None and (
            not isinstance(max_message_bytes, int) or max_message_bytes < 1
        ):
            fail_value("max_message_bytes must be None or an int, 1 or greater")
        self._topic = topic
        self._callback = callback
        self._observer = observer
        verifier = None if signing_keys is None else Verifier(signing_keys)
        # what the worker writes (retries, dead letters) it signs with its first key
        self._router = RetryRouter(
            topic,
            retry,
            dead_letter_topic,
            bool(scheduling),
            scheduler_config,
            None if verifier is None else verifier.signer(),
            # Invalid messages (an import that fails: deploy skew) are kept as
            # dead letters whenever the worker has retries or a dead-letter
            # topic; with KQ's plain settings only if asked (no new topic, no
            # new rights needed for a KQ deployment).
            keep_invalid=(
                bool(keep_invalid)
                if keep_invalid is not None
                else (retry is not None or dead_letter_topic is not None)
            ),
        )
        self._deserializer: Callable[[bytes], Any] = deserializer or dill.loads
        self._concurrency = concurrency
        self._max_in_flight = max(max_in_flight, concurrency)
        # fetching resumes once this much room is free again (a quarter of the cap)
        self._refill = max(1, min(self._max_in_flight // 4, 250))
        self._shutdown_timeout = shutdown_timeout
        self._commit_interval = commit_interval
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._completions: queue.SimpleQueue[tuple[Message, _Tag, bool | None]] = (
            queue.SimpleQueue()
        )
        self._tracker = OffsetTracker()
        self._loop_thread = EventLoopThread()
        self._processed = 0
        # Owned per the rebalance callbacks (job threads read it: only ever
        # updated in place), and paused at the cap or held by a failing retry write.
        self._owned: set[TopicPartition] = set()
        self._pauses = Pauses(self._consumer, self._observe)
        self._head = HeadOfLine(head_of_line_limit, self._pauses)
        self._committer = Committer(
            self._consumer, self._tracker, self._observe, bool(exact_resume)
        )
        self._revoked_since_dispatch = False
        self._runner = MessageRunner(
            logger=self._logger,
            callback=callback,
            observer=observer,
            router=self._router,
            # KQ's default, dill.loads, is served by kq.serialization.loads: the
            # same objects, plain pickle first (twice as fast), dill where needed.
            decode=fast_loads if self._deserializer is dill.loads else self._deserializer,
            verifier=verifier,
            max_bytes=max_message_bytes,
            abort=self._abort,
            loop=self._loop_thread,
            owns=self._owned.__contains__,
            hold=self._pauses.hold,
        )
        self._lanes = Lanes(concurrency, self._runner.process, self._on_finished)

    @classmethod
    def connect(
        cls,
        bootstrap_servers: str,
        topic: str,
        group: str = "kq",
        *,
        client: ClientName = "confluent",
        consumer_config: dict[str, Any] | None = None,
        connect_timeout: float = 10.0,
        **options: Any,
    ) -> Worker:
        """A ready Worker from a bootstrap address, with a consumer configured by kq.

        The cluster must answer within ``connect_timeout`` seconds, or
        ``kq.ClusterError`` names the address.
        """
        check_reachable(bootstrap_servers, login_settings(consumer_config, client), connect_timeout)
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

    @property
    def in_flight(self) -> int:
        """Jobs fetched and not yet finished (at most ``max_in_flight``)."""
        return self._tracker.in_flight()

    @property
    def max_in_flight(self) -> int:
        """The cap on jobs fetched and not yet finished; fetching pauses at it."""
        return self._max_in_flight

    @property
    def head_of_line_limit(self) -> int:
        """Finished jobs a partition may hold behind an unfinished one before it pauses."""
        return self._head.limit

    @property
    def exact_resume(self) -> bool:
        """Whether commits record the jobs finished above the committed offset (and are read)."""
        return self._committer.exact_resume

    def _observe(self, method: str, *args: Any) -> None:
        notify(self._observer, method, *args)

    # -- finished jobs and commits ---------------------------------------------

    def _on_finished(self, message: Message, tag: _Tag, outcome: bool | None) -> None:
        # on a job thread, before its message stops counting as busy
        self._completions.put((message, tag, outcome))

    def _drain(self, wait: float = 0.0) -> int:
        """Take finished jobs off the completion queue, waiting up to ``wait`` for the first;
        how many."""
        get = self._completions.get
        tracker = self._tracker
        limit = self._head.limit
        count = 0
        try:
            message, tag, outcome = get(timeout=wait) if wait > 0 else get(block=False)
            while True:
                count += 1
                part = tag[0]
                if outcome is False:  # must run again: never committed past
                    tracker.abandoned(part, message.offset)
                else:
                    tracker.finished(part, message.offset)
                    if outcome:  # None: a copy of it ran and completed, this one did not run
                        self._processed += 1
                    if len(part.done) >= limit:
                        self._head.reached(part)
                message, tag, outcome = get(block=False)
        except queue.Empty:
            return count

    def _commit(
        self,
        asynchronous: bool,
        partitions: set[TopicPartition] | None = None,
        again: bool | None = None,
    ) -> bool:
        return self._committer.commit(asynchronous, partitions, again)

    # -- rebalances (inside poll) ---------------------------------------------

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        """Rebalance: new partitions; paused too if the worker is at its cap."""
        if partitions:
            CONSUMER.info("Partitions assigned: %s", partitions)
        self._observe("rebalanced", "assigned", partitions)
        self._owned.update(partitions)
        self._pauses.forget(partitions)
        self._committer.assigned(partitions)
        if partitions and self._pauses.at_cap:
            self._consumer.pause(partitions)
            # and again from the loop: with confluent-kafka a pause made before
            # the client applied the incremental assignment may not stick
            self._pauses.dirty = True

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        """Rebalance: wait (bounded) for running jobs, commit what finished, let go."""
        wait = self.begin_revoke(partitions)
        self._lanes.wait_idle(partitions, wait, self._abort)
        self.end_revoke(partitions)

    def begin_revoke(self, partitions: list[TopicPartition]) -> float:
        """Take no more work of these partitions; seconds their running jobs may be waited for."""
        if partitions:
            CONSUMER.info("Partitions revoked: %s", partitions)
        self._observe("rebalanced", "revoked", partitions)
        self._let_go(partitions)
        return self._revoke_wait()

    def revoke_waiting(self, partitions: list[TopicPartition]) -> bool:
        """Whether jobs of these partitions still run (and a revoke may wait for them)."""
        return not self._abort.is_set() and self._lanes.busy(partitions)

    def end_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what finished in these partitions; forget them."""
        if self._lanes.busy(partitions):
            CONSUMER.warning(
                "Jobs of revoked partitions %s still running; their offsets will not be"
                " committed, and their new owner may run them again meanwhile",
                sorted(partitions),
            )
        self._drain()
        self._commit(asynchronous=False, partitions=set(partitions))
        self._tracker.drop(partitions)

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
        self._let_go(partitions)
        self._drain()
        self._tracker.drop(partitions)

    def _let_go(self, partitions: list[TopicPartition]) -> None:
        self._owned.difference_update(partitions)
        self._pauses.forget(partitions)
        self._committer.forget(partitions)
        # a batch being fetched may still hold their messages
        self._revoked_since_dispatch = True
        for message, tag in self._lanes.discard(partitions):
            self._tracker.abandoned(tag[0], message.offset)

    # -- handing fetched messages to the job threads --------------------------------

    def _dispatch(self, messages: list[Message], room: int) -> None:
        if self._revoked_since_dispatch:
            self._revoked_since_dispatch = False
            messages = without_revoked(self._consumer, messages)
        known = self._committer.finished_before(messages)
        taken = messages[:room]
        if len(messages) > room:
            # fetched past the cap (a rebalance inside poll can do that): give them back
            taken += give_back(self._consumer, messages[room:])
        store = self._consumer.headers
        started = self._tracker.started
        entries: list[tuple[Message, _Tag]] = []
        if not known:
            for m in taken:
                headers = store.pop((m.topic, m.partition, m.offset), None) if store else None
                entries.append((m, (started((m.topic, m.partition), m.offset), headers)))
            self._lanes.submit(entries)
            return
        skipped: list[tuple[Generation, int]] = []
        for m in taken:
            tp = (m.topic, m.partition)
            part = started(tp, m.offset)
            headers = store.pop((m.topic, m.partition, m.offset), None) if store else None
            finished = known.get(tp)
            if finished is not None and m.offset in finished:
                skipped.append((part, m.offset))  # a previous owner ran it
            else:
                entries.append((m, (part, headers)))
        self._lanes.submit(entries)
        # counted finished only now that every message before them was started
        for part, offset in skipped:
            self._tracker.finished(part, offset)
            if len(part.done) >= self._head.limit:
                self._head.reached(part)

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
        self._committer.enabled = bool(commit_offsets)
        self._processed = 0
        neutralise = getattr(self._consumer, "neutralise_auto_commit", None)
        if neutralise is not None:
            neutralise()
        previous = _signals.install(self._handle_signal)
        try:
            if not self._consumer.subscribed_to(self._topic):
                self._consumer.subscribe(self._topic, self)
            self._loop(max_messages)
        finally:
            self._finish()
            _signals.restore(previous)
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
            # Nearly full counts as full: fetching a few messages each time
            # room appears would hand them to the job threads (waking them) a
            # few at a time, and wake this thread for each job that ends.
            free = self._max_in_flight - in_flight
            if free >= self._refill or 0 < room < free or not in_flight:
                full_since = None
                self._pauses.set_at_cap(False)
            elif not self._pauses.at_cap:
                # At the cap, wait a little for jobs to finish before pausing:
                # pausing drops the client's prefetched messages, and resuming
                # costs a fetch round trip, so fast jobs must not cycle through
                # it. Not polling for this long is safe: heartbeats run on the
                # clients' own threads and max.poll.interval is far longer.
                full_since = full_since or now
                if now - full_since < _PAUSE_AFTER:
                    if self._drain(wait=0.05):
                        time.sleep(_GATHER)  # let more jobs end before the next look
                    continue
                self._pauses.set_at_cap(True)
            if self._head.active:
                self._head.check()
            if self._pauses.dirty:
                self._pauses.apply()
            try:
                messages = self._consumer.poll(0.05 if in_flight else 0.2, max(room, 1))
            except Exception as exc:
                # e.g. kafka-python's connection errors while a broker restarts:
                # the client reconnects by itself; the worker must not die of it.
                if is_fatal(exc):
                    raise
                CONSUMER.warning("Polling failed (retrying): %r", exc)
                time.sleep(0.5)
                continue
            if messages:
                self._dispatch(messages, max(room, 0))

    def _finish(self) -> None:
        for message, tag in self._lanes.discard():
            self._tracker.abandoned(tag[0], message.offset)
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
        self._committer.final_commit(lambda: self._pauses.set_at_cap(True))
        try:
            self._pauses.set_at_cap(False)
        except Exception as exc:
            CONSUMER.warning("Could not resume partitions: %s", exc)
        # Also after max_messages: a member that no longer polls would keep its
        # partitions (cooperative assignment hands them back to it) until its
        # max.poll.interval expired. The next start() subscribes again.
        try:
            self._consumer.unsubscribe()
        except Exception as exc:
            CONSUMER.warning("Leaving the group failed: %s", exc)
        # Every generation ends here: a job still running (hard stop) can
        # never count in what the next start() commits.
        self._tracker.drop()
        self._owned.clear()
        self._committer.forget()
        self._head.reset()
        self._pauses.reset()
        self._consumer.headers.clear()
        self._lanes.close()
        self._loop_thread.close()
        self._router.stop()
