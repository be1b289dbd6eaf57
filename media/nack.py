"""Answering viewers' NACKs locally, from what we already sent them.

A viewer's NACK names sequence numbers of *its* stream (rewritten per viewer), so each viewer
keeps a small ring mapping its outgoing sequence numbers to the shared source packets (a
reference, not a copy: the packet bytes live once per stream). A NACK is answered from this
ring and never forwarded to the publisher: one lossy viewer must not cost the publisher's
uplink, and the publisher's own losses are repaired by aiortc's receiver NACKs upstream.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

HISTORY = 512  # packets; aiortc keeps 128, Chromium NACKs for up to ~1 s of video


class SentHistory(Generic[T]):
    """Ring of the last ``size`` packets sent to one viewer, keyed by outgoing seq."""

    __slots__ = ("_items", "_seqs", "_size", "_timestamps")

    def __init__(self, size: int = HISTORY) -> None:
        if size <= 0 or size > 0x8000:
            raise ValueError("history size must be in 1..32768")
        self._size = size
        self._seqs: list[int] = [-1] * size
        self._items: list[T | None] = [None] * size
        self._timestamps: list[int] = [0] * size

    def record(self, seq: int, item: T, timestamp: int) -> None:
        """Remember that ``item`` went out as ``seq`` with RTP timestamp ``timestamp``."""
        slot = seq % self._size
        self._seqs[slot] = seq
        self._items[slot] = item
        self._timestamps[slot] = timestamp

    def lookup(self, seq: int) -> tuple[T, int] | None:
        """(item, timestamp) sent with ``seq``, or None if it left the ring or never went."""
        if not 0 <= seq <= 0xFFFF:
            return None
        slot = seq % self._size
        item = self._items[slot]
        if self._seqs[slot] != seq or item is None:
            return None
        return item, self._timestamps[slot]

    def clear(self) -> None:
        self._seqs = [-1] * self._size
        self._items = [None] * self._size
        self._timestamps = [0] * self._size
