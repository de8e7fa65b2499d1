"""Fetched messages the worker does not run now: those of revoked partitions, those past its cap."""

from __future__ import annotations

from kq._consumer import ConsumerAdapter, TopicPartition
from kq._logs import CONSUMER
from kq.message import Message


def without_revoked(consumer: ConsumerAdapter, messages: list[Message]) -> list[Message]:
    """The messages of partitions still assigned (the others' headers are dropped).

    A partition revoked inside a poll (confluent-kafka's batch can hold its
    records): its new owner runs them, not this worker.
    """
    assigned = consumer.assignment()
    gone = [m for m in messages if (m.topic, m.partition) not in assigned]
    if not gone:
        return messages
    for m in gone:
        consumer.headers.pop((m.topic, m.partition, m.offset), None)
    return [m for m in messages if (m.topic, m.partition) in assigned]


def give_back(consumer: ConsumerAdapter, rest: list[Message]) -> list[Message]:
    """Rewind the partitions of messages fetched past the cap; those that must run anyway.

    A message whose partition cannot be rewound is run beyond the cap rather
    than let a later commit of its partition pass it unrun.
    """
    first: dict[TopicPartition, int] = {}
    for m in rest:
        tp = (m.topic, m.partition)
        first[tp] = min(first.get(tp, m.offset), m.offset)
    kept = {tp for tp, offset in first.items() if not _seek(consumer, tp, offset)}
    run: list[Message] = []
    for m in rest:
        if (m.topic, m.partition) in kept:
            run.append(m)
        else:
            consumer.headers.pop((m.topic, m.partition, m.offset), None)
    return run


def _seek(consumer: ConsumerAdapter, tp: TopicPartition, offset: int) -> bool:
    try:
        consumer.seek(tp, offset)
    except Exception as exc:
        CONSUMER.warning(
            "Could not rewind %s to %s (its fetched jobs run beyond max_in_flight): %s",
            tp,
            offset,
            exc,
        )
        return False
    return True
