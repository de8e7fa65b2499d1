"""A worker's offset commits, and exact resume: what they say beyond the offset.

``Committer.commit`` commits, per owned partition, the offset below which every
job finished, with the offsets that finished above it in the commit's metadata
(``kq._resume``'s format). ``Committer.finished_before`` is the other half: when
a partition is (re)assigned, the metadata its last commit carries is read once,
before the partition's first message runs, and the worker takes the messages
it names as finished without running them: no job, no callback, no log
line on ``kq.worker`` (the worker that ran them reported them), and they do not
count in what ``Worker.start`` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kq._consumer import ConsumerAdapter, TopicPartition
from kq._logs import CONSUMER
from kq._offsets import OffsetTracker
from kq._resume import Finished, decode, encode, intervals
from kq.message import Message

# How long a stopping worker keeps trying to commit what finished while the
# group rebalances or its coordinator moves (a rebalance takes a few seconds).
FINAL_COMMIT_WAIT = 15.0

# How long reading the committed offsets of newly assigned partitions may take.
_READ_TIMEOUT = 10.0


def is_fatal(exc: BaseException) -> bool:
    """Client errors a worker cannot outlive (authorization, fatal librdkafka state)."""
    text = f"{type(exc).__name__} {exc}"
    return "Authorization" in text or "AUTHORIZATION" in text or "_FATAL" in text


class Committer:
    """Commits a worker's finished offsets (with exact-resume metadata) and skips
    what a previous owner finished."""

    def __init__(
        self,
        consumer: ConsumerAdapter,
        tracker: OffsetTracker,
        observe: Callable[..., Any] | None,
        exact_resume: bool,
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._observe = observe
        self.exact_resume = exact_resume
        self.enabled = True  # False: start(commit_offsets=False)
        self._unread: set[TopicPartition] = set()  # assigned; metadata not read yet
        self._finished: dict[TopicPartition, Finished] = {}  # read, and not yet passed
        self._cut: set[TopicPartition] = set()  # partitions whose metadata was cut short

    # -- committing ----------------------------------------------------------------

    def commit(
        self,
        asynchronous: bool,
        partitions: set[TopicPartition] | None = None,
        again: bool | None = None,
        quiet: bool = False,
    ) -> bool:
        """Commit what finished; False if a synchronous commit failed."""
        if not self.enabled:
            return True
        tracker = self._tracker
        # Asynchronous commits the client could not deliver (the coordinator
        # was away, a rebalance was running) are offered again now.
        for failed in self._consumer.failed_commits():
            tracker.commit_failed(failed)
        # On revoke the partitions are given: kafka-python has already taken
        # them out of assignment() when it calls the listener.
        owned = self._consumer.assignment() if partitions is None else partitions
        # A synchronous commit (on revoke, at the end) sends everything finished
        # again, in case an earlier asynchronous one failed (e.g. mid-rebalance).
        offsets = tracker.committable(owned, again=(not asynchronous) if again is None else again)
        if not offsets:
            return True
        metadata = self._metadata(offsets) if self.exact_resume else None
        try:
            self._consumer.commit(offsets, asynchronous=asynchronous, metadata=metadata)
        except Exception as exc:
            if not quiet:
                CONSUMER.warning("Offset commit failed (jobs may run again): %s", exc)
            return False
        tracker.mark_committed(offsets)
        if self._finished:
            for tp, offset in offsets.items():
                known = self._finished.get(tp)
                if known is not None and offset >= known.end:
                    del self._finished[tp]  # committed past everything it names
        if self._observe is not None:
            self._observe("committed", offsets)
        return True

    def _metadata(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, str]:
        out: dict[TopicPartition, str] = {}
        for tp, offset in offsets.items():
            spans = intervals(self._tracker.finished_above(tp))
            previous = self._finished.get(tp)
            part = self._tracker.generation(tp)
            if previous is not None and part is not None:
                # what the previous owner finished beyond what this one fetched so far
                spans += previous.after(part.top)
            if not spans:
                continue
            text, left_out = encode(offset, spans)
            if text:
                out[tp] = text
            if left_out and tp not in self._cut:
                self._cut.add(tp)
                CONSUMER.warning(
                    "Partition %s/%s: %s finished jobs wait behind offset %s, more than its"
                    " commit's metadata holds (%s characters); the last %s of them would run"
                    " again if this worker died now",
                    tp[0],
                    tp[1],
                    sum(e - s for s, e in spans),
                    offset,
                    len(text),
                    left_out,
                )
            elif not left_out:
                self._cut.discard(tp)
        return out

    def final_commit(self, pause_all: Callable[[], None]) -> None:
        """Commit everything finished before leaving, across a rebalance or coordinator change.

        A commit refused because the group is rebalancing (another member
        left or joined) or because the coordinator moved succeeds once the
        client has caught up, which only polling lets it do: poll (paused,
        so nothing new is fetched; whatever comes is neither run nor
        committed) and try again, for a bounded time.
        """
        deadline = time.monotonic() + FINAL_COMMIT_WAIT
        pause_all()
        while not self.commit(asynchronous=False, quiet=True):
            if time.monotonic() >= deadline:
                self.commit(asynchronous=False)  # logs why it still fails
                return
            try:
                self._consumer.poll(0.2, 1)
            except Exception as exc:
                if is_fatal(exc):
                    CONSUMER.warning("Offset commit failed (jobs may run again): %s", exc)
                    return

    # -- exact resume: reading ---------------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions (re)assigned: read their commit's metadata before their first job."""
        if self.exact_resume:
            self._unread.update(partitions)

    def forget(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Partitions revoked or lost (or all, at the end)."""
        if partitions is None:
            self._unread.clear()
            self._finished.clear()
            self._cut.clear()
            return
        for tp in partitions:
            self._unread.discard(tp)
            self._finished.pop(tp, None)
            self._cut.discard(tp)

    def finished_before(self, messages: list[Message]) -> dict[TopicPartition, Finished]:
        """What previous owners finished, for the partitions of these (fetched) messages.

        The worker starts such messages in the tracker in offset order with the
        others and then counts them finished, without running them: a commit can
        never pass an earlier message that was not started.
        """
        if self._unread:
            fetched = {(m.topic, m.partition) for m in messages} & self._unread
            if fetched:
                self._read(fetched)
        return self._finished

    def _read(self, partitions: set[TopicPartition]) -> None:
        self._unread -= partitions
        try:
            found = self._consumer.read_committed(partitions, _READ_TIMEOUT)
        except Exception as exc:
            CONSUMER.warning(
                "Could not read the last commit of %s: jobs that already finished after"
                " its offset run again (%s)",
                sorted(partitions),
                exc,
            )
            return
        for tp, (offset, text) in sorted(found.items()):
            known = decode(text, offset)
            if known is None:
                if text:
                    CONSUMER.info(
                        "Partition %s/%s: the metadata of its committed offset %s is not kq's"
                        " (ignored)",
                        tp[0],
                        tp[1],
                        offset,
                    )
                continue
            self._finished[tp] = known
            CONSUMER.info(
                "Partition %s/%s resumes at offset %s: %s jobs after it finished before"
                " (up to offset %s) and are not run again",
                tp[0],
                tp[1],
                offset,
                known.count,
                known.end - 1,
            )
