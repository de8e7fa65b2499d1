"""The worker's side of retries, delays and dead letters.

A retry is written to a delay tier with the worker's consumer group in
``kq-group``: it comes back to the job topic, which every group on the topic
reads, and only that group runs it (``RetryRouter.foreign``). It keeps the
partition its failed attempt was read from. A signing worker signs its retries
and dead letters with its first key (``kq.signing``); one without keys drops
the signature of a signed job it writes, since its headers changed.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from typing import Any

from kq._calls import safe_repr
from kq._forwarder import Forwarder
from kq._logs import RETRIES
from kq._producer import ProducerAdapter, Record, adapt_producer
from kq.message import Message
from kq.retry import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST,
    H_GROUP,
    H_RETRY,
    H_SOURCE,
    H_STATUS,
    H_TRACEBACK,
    INVALID,
    Attempt,
    RetryPolicy,
)
from kq.schedule import (
    connection_settings,
    dead_letter_topic,
    delay_topics,
    delayed_record,
    ensure_topics,
    now_ms,
)
from kq.signing import SIGNATURE_HEADER, Signer, ttl_of, validity

_SEND_TRIES = 3


class RetryRouter:
    """Sends failed attempts to their retry (a delay tier) or to the dead-letter topic."""

    def __init__(
        self,
        topic: str,
        default_policy: RetryPolicy | None,
        dead_topic: str | None,
        scheduling: bool,
        config: Mapping[str, Any] | None,
        signer: Signer | None = None,
        keep_invalid: bool = False,
    ) -> None:
        self._topic = topic
        self._keep_invalid = keep_invalid
        self._signer = signer
        self._default = default_policy
        self._first = Attempt(1, None, default_policy)
        self.dead_topic = dead_topic or dead_letter_topic(topic)
        self._scheduling = scheduling
        # connecting and logging in only: settings meant for the worker's own
        # consumer (assignment strategy, group.instance.id, ...) would break these
        self._config = connection_settings(config)
        self._group = ""
        self._logger = RETRIES
        self._lock = threading.Lock()
        self._producer: ProducerAdapter | None = None
        self._bootstrap = ""
        self._topics_ready = False
        self._forwarder: Forwarder | None = None

    def start(self, bootstrap: str, group: str) -> None:
        """Start forwarding this topic's delayed jobs (when scheduling is on)."""
        self._bootstrap = bootstrap
        self._group = group
        if not self._scheduling:
            return
        if bootstrap in ("", "unknown"):
            self._logger.warning(
                "Brokers of %s unknown (unreachable at start): delayed jobs and retries"
                " wait until a worker starts with the cluster reachable",
                self._topic,
            )
            return
        if self._forwarder is None:
            self._forwarder = Forwarder(
                bootstrap,
                self._topic,
                self._lazy_producer(),
                self._config,
                dead_topic=self.dead_topic,
            )
        self._forwarder.start()

    def stop(self) -> None:
        """Stop the forwarder."""
        if self._forwarder is not None:
            self._forwarder.stop()

    @property
    def first(self) -> Attempt:
        """The attempt of a message whose headers are not read: a first one, default policy."""
        return self._first

    def foreign(self, headers: Mapping[str, bytes] | None) -> bool:
        """Whether the message is a retry of another consumer group (not to be run here)."""
        if not headers:
            return False
        owner = headers.get(H_GROUP)
        if owner is None or owner == self._group.encode():
            return False
        self._logger.debug(
            "Skipping a retry of group %r (this is %r)", owner.decode(errors="replace"), self._group
        )
        return True

    def attempt(self, headers: Mapping[str, bytes] | None) -> Attempt:
        """The attempt a delivered message is; bad kq headers count as a first attempt."""
        if not headers:
            return self._first  # shared: the common case costs no allocation
        try:
            return Attempt.from_headers(headers, self._default)
        except ValueError as exc:
            self._logger.error("Ignoring bad retry headers: %s", exc)
            return Attempt(1, None, self._default)

    def route(
        self,
        message: Message,
        headers: Mapping[str, bytes] | None,
        attempt: Attempt,
        status: str,
        job_timestamp: int | None,
        exception: BaseException | None,
        stacktrace: str | None,
    ) -> bool:
        """After a failed or timed-out attempt: schedule the retry or dead-letter the job.

        Returns False when that could not be written durably: the worker then
        writes it again (calling this again) and commits nothing past it.
        """
        policy = attempt.policy
        if policy is None:
            return True
        now = now_ms()
        first = attempt.first_enqueued_ms or job_timestamp or now
        base: dict[str, bytes] = dict(headers or {})
        base[H_FIRST] = str(first).encode()
        base[H_RETRY] = policy.to_header()
        base[H_GROUP] = self._group.encode()  # only this group runs the retry
        # where the job was first read: retries are new records, the dead letter names the original
        base.setdefault(H_SOURCE, f"{message.topic}/{message.partition}/{message.offset}".encode())
        if policy.retries(status, attempt.number):
            if not self._scheduling:
                self._logger.error(
                    "Cannot retry a job of %s: this worker runs with scheduling=False", self._topic
                )
                return True
            base[H_ATTEMPT] = str(attempt.number + 1).encode()
            due = now + int(policy.delay(attempt.number) * 1000)
            if self._signer is not None:
                base.update(validity(due, ttl_of(base)))
            record = delayed_record(
                self._topic,
                message.value,
                message.key,
                self._sealed(message, base),
                due,
                now,
                message.partition,
            )
            self._logger.info(
                "Attempt %s failed (%s); retry %s due in %.1fs",
                attempt.number,
                status,
                attempt.number + 1,
                (due - now) / 1000,
            )
            return self._send(record, delay=True) is not None
        base[H_ATTEMPT] = str(attempt.number).encode()
        base[H_STATUS] = status.encode()
        base[H_ERROR] = (safe_repr(exception) if exception is not None else status).encode()
        base[H_TRACEBACK] = (stacktrace or "").encode()
        return self._dead_letter(message, base, f"failed its last attempt ({attempt.number})")

    @property
    def keeps_invalid(self) -> bool:
        """Whether invalid messages are dead-lettered (``Worker(keep_invalid=...)``)."""
        return self._keep_invalid

    def invalid(
        self,
        message: Message,
        headers: Mapping[str, bytes] | None,
        reason: str,
        signed: bool,
    ) -> bool:
        """Keep an invalid message in the dead-letter topic: its bytes, key, headers, the reason.

        ``signed`` only for a message that passed the signature check: a worker
        that signed the letter of a record it refused would turn a forgery into
        a job the operator's ``requeue`` accepts. False when it could not be
        written (the worker writes it again, holding the partition, as for a
        failed attempt's dead letter).
        """
        base: dict[str, bytes] = dict(headers or {})
        base.setdefault(H_ATTEMPT, b"1")
        base[H_GROUP] = self._group.encode()  # requeued, it comes back to this group
        base[H_SOURCE] = f"{message.topic}/{message.partition}/{message.offset}".encode()
        base[H_STATUS] = INVALID.encode()
        base[H_ERROR] = reason.encode(errors="replace")
        base[H_TRACEBACK] = b""
        if not signed:
            base.pop(SIGNATURE_HEADER, None)
        return self._dead_letter(message, base, "was invalid", seal=signed)

    def _dead_letter(
        self, message: Message, headers: dict[str, bytes], what: str, seal: bool = True
    ) -> bool:
        sealed = self._sealed(message, headers) if seal else headers
        record = Record(
            self.dead_topic, message.value, message.key, None, now_ms(), tuple(sealed.items())
        )
        placed = self._send(record, delay=False)
        if placed is None:
            return False
        where = f"{placed[0]}:{placed[1]}" if placed[0] >= 0 else "(position not reported)"
        self._logger.error(
            "Job at %s/%s/%s %s; dead letter %s %s (kq dead-letters show %s %s)",
            message.topic,
            message.partition,
            message.offset,
            what,
            self.dead_topic,
            where,
            self._topic,
            where if placed[0] >= 0 else f"{message.topic}/{message.partition}/{message.offset}",
        )
        return True

    def _sealed(self, message: Message, headers: dict[str, bytes]) -> dict[str, bytes]:
        if self._signer is None:
            headers.pop(SIGNATURE_HEADER, None)  # no longer matches: refused unsigned or forged
            return headers
        return self._signer.seal(self._topic, message.key, message.value, headers)

    def _lazy_producer(self) -> ProducerAdapter:
        with self._lock:
            if self._producer is None:
                from kq.clients import make_producer

                # Dead letters are rare: a report per success gives their position.
                settings = {"delivery.report.only.error": False, **self._config}
                self._producer = adapt_producer(make_producer(self._bootstrap, **settings))
            return self._producer

    def _send(self, record: Record, delay: bool) -> tuple[int, int] | None:
        """Write ``record`` (three tries): where it landed (``(-1, -1)``: a retry), or None."""
        for attempt in range(_SEND_TRIES):
            error: BaseException | None = None
            try:
                if not self._topics_ready:
                    ensure_topics(
                        self._bootstrap,
                        [*delay_topics(self._topic), self.dead_topic],
                        self._topic,
                        self._config,
                    )
                    self._topics_ready = True
                if delay:
                    error = self._lazy_producer().send_all([record], 30.0)[0]
                    placed = (-1, -1)
                else:  # a dead letter: its position goes into the log line
                    placed = self._lazy_producer().send_one(record, 30.0)
            except Exception as exc:
                error = exc
            if error is None:
                return placed
            self._logger.warning(
                "Writing to %s failed (try %s of %s): %s",
                record.topic,
                attempt + 1,
                _SEND_TRIES,
                "".join(traceback.format_exception_only(type(error), error)).strip(),
            )
        # The worker writes it again itself, holding the partition meanwhile.
        self._logger.error(
            "Could not write the %s for a job of %s after %s tries",
            "retry" if delay else "dead letter",
            self._topic,
            _SEND_TRIES,
        )
        return None
