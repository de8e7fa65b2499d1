"""Exact resume: which offsets after a committed one already finished, kept in the commit.

A worker commits, per partition, the offset below which every job finished;
jobs that finished after a still-running one wait above it. Their offsets go
into the same commit's metadata (a string Kafka stores with the offset), so a
worker that takes the partition over (after a crash, a rebalance, a restart)
skips them instead of running them again: the idea of Confluent's Parallel
Consumer. This module is the format's one definition; the consumer adapters
only carry the string.

The metadata is ``kq1:<offset>:<kind><payload>``:

- ``offset``: the committed offset, in decimal. The rest is believed only
  when it matches the offset committed with it (a reset or replay that moved
  the offset, or another client's commit, makes it void);
- ``kind`` ``r``: the payload is unsigned LEB128 varints, the lengths of
  alternating runs from ``offset`` on: not finished, finished, not finished, …;
- ``kind`` ``b``: the payload is a bitset, bit *i* (least significant bit of
  each byte first) set when ``offset + i`` finished;
- ``payload``: standard base64 (padded).

Offsets past what the payload covers are not claimed. The whole string stays
within ``METADATA_MAX`` characters, Kafka's default ``offset.metadata.max.bytes``;
when the finished offsets do not all fit, the encoding keeps what fits from
the start (those later ones would run again) and says how many it left out.
Anything else (no metadata, KQ 2.2.1's empty string, another consumer's text,
a malformed string, one longer than kq writes) decodes to None: nothing is skipped.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Iterable, Sequence

__all__ = ["METADATA_MAX", "Finished", "decode", "encode", "intervals"]

METADATA_MAX = 4096
"""Kafka's default ``offset.metadata.max.bytes``: a longer string fails the commit."""

_PREFIX = "kq1:"
_MAX_SPAN = 1 << 40  # a claim reaching further than this is not kq's

Interval = tuple[int, int]
"""Finished offsets ``start`` (included) to ``end`` (excluded)."""


def intervals(offsets: Iterable[int]) -> list[Interval]:
    """Sorted, merged intervals of a set of offsets."""
    out: list[Interval] = []
    start = end = -1
    for offset in sorted(offsets):
        if offset == end:
            end += 1
        elif offset > end:
            if end > start:
                out.append((start, end))
            start, end = offset, offset + 1
    if end > start:
        out.append((start, end))
    return out


class Finished:
    """Offsets a commit's metadata says finished: sorted, disjoint intervals."""

    __slots__ = ("_ends", "_starts", "base", "count")

    def __init__(self, base: int, spans: Sequence[Interval]) -> None:
        self.base = base
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]
        self.count = sum(e - s for s, e in spans)

    def __contains__(self, offset: int) -> bool:
        index = bisect.bisect_right(self._starts, offset) - 1
        return index >= 0 and offset < self._ends[index]

    @property
    def end(self) -> int:
        """One past the last finished offset."""
        return self._ends[-1] if self._ends else self.base

    def after(self, offset: int) -> list[Interval]:
        """The finished intervals above ``offset`` (cut at it)."""
        index = bisect.bisect_right(self._ends, offset + 1) if self._ends else 0
        out: list[Interval] = []
        for start, end in zip(self._starts[index:], self._ends[index:]):
            start = max(start, offset + 1)
            if start < end:
                out.append((start, end))
        return out


# -- encoding --------------------------------------------------------------------


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _runs(base: int, spans: Sequence[Interval], budget: int) -> tuple[bytes, int]:
    """Run lengths within ``budget`` bytes; and how many finished offsets they cover."""
    out = bytearray()
    covered = 0
    position = base
    for start, end in spans:
        size = len(out)
        _varint(start - position, out)
        _varint(end - start, out)
        if len(out) > budget:
            del out[size:]
            break
        covered += end - start
        position = end
    return bytes(out), covered


def _bits(base: int, spans: Sequence[Interval], budget: int) -> tuple[bytes, int]:
    """A bitset within ``budget`` bytes; and how many finished offsets it covers."""
    limit = base + budget * 8
    value = 0
    covered = 0
    top = base
    for start, end in spans:
        end = min(end, limit)
        if start >= end:
            break
        value |= ((1 << (end - start)) - 1) << (start - base)
        covered += end - start
        top = end
    return value.to_bytes((top - base + 7) // 8, "little"), covered


def encode(base: int, spans: Sequence[Interval]) -> tuple[str, int]:
    """The metadata for committing ``base`` with these finished intervals above it.

    Returns the string ("" when there is nothing to say) and how many finished
    offsets did not fit (0 normally).
    """
    spans = [(max(s, base), e) for s, e in spans if e > base and e > s]
    if not spans:
        return "", 0
    total = sum(e - s for s, e in spans)
    header = f"{_PREFIX}{base}:"
    budget = (METADATA_MAX - len(header) - 1) // 4 * 3  # raw bytes base64 can carry
    runs, runs_covered = _runs(base, spans, budget)
    bits_size = (spans[-1][1] - base + 7) // 8
    if runs_covered == total and len(runs) <= bits_size:
        kind, payload, covered = "r", runs, runs_covered
    else:
        bits, bits_covered = _bits(base, spans, min(budget, bits_size))
        if bits_covered > runs_covered or (bits_covered == runs_covered and len(bits) < len(runs)):
            kind, payload, covered = "b", bits, bits_covered
        else:
            kind, payload, covered = "r", runs, runs_covered
    if covered == 0:
        return "", total
    return f"{header}{kind}{base64.b64encode(payload).decode('ascii')}", total - covered


# -- decoding --------------------------------------------------------------------


def _read_runs(base: int, payload: bytes) -> list[Interval] | None:
    values: list[int] = []
    value = shift = 0
    for byte in payload:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                return None
            continue
        values.append(value)
        value = shift = 0
    if shift or len(values) % 2:
        return None  # a varint or a run pair cut short
    spans: list[Interval] = []
    position = base
    for index in range(0, len(values), 2):
        start = position + values[index]
        position = start + values[index + 1]
        if position - base > _MAX_SPAN:
            return None
        if position > start:
            spans.append((start, position))
    return spans


def _read_bits(base: int, payload: bytes) -> list[Interval]:
    value = int.from_bytes(payload, "little")
    spans: list[Interval] = []
    start: int | None = None
    for bit in range(len(payload) * 8):
        if (value >> bit) & 1:
            if start is None:
                start = bit
        elif start is not None:
            spans.append((base + start, base + bit))
            start = None
    if start is not None:
        spans.append((base + start, base + len(payload) * 8))
    return spans


def decode(text: object, committed: int) -> Finished | None:
    """What ``text``, committed with offset ``committed``, says finished; None if nothing.

    Never raises: metadata that is not kq's (or not for this offset) is None.
    """
    if not isinstance(text, str) or not text.startswith(_PREFIX) or len(text) > METADATA_MAX:
        return None
    offset, _, rest = text[len(_PREFIX) :].partition(":")
    if not offset.isdecimal() or not offset.isascii() or int(offset) != committed or not rest:
        return None
    kind, encoded = rest[0], rest[1:]
    try:
        payload = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if kind == "r":
        spans = _read_runs(committed, payload)
    elif kind == "b":
        spans = _read_bits(committed, payload)
    else:
        return None
    if not spans:
        return None
    return Finished(committed, spans)
