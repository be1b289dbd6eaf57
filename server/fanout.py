"""Per-channel fan-out with tick coalescing, encode-once frames and per-connection bounds.

Why this shape (measured, docs/scaleout.md): the kernel write per recipient is the floor (~13-16 µs on
loopback); encoding is cheap but must not be repeated per viewer, and N events in one frame
cost about one write. So each channel collects the events published during a tick and sends
them as one frame per encoding: at once when the channel was idle (the first event of a burst
goes out on the next loop iteration), at most `tick_s` later when it is busy.

A connection whose outbound buffer passes `soft_limit` gets only events that must not be
dropped (orders, sale phases, moderation); it sees a gap in `seq` for the rest and resumes.
Past `hard_limit` it is closed (4408): a slow viewer never delays or bloats the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Frame
from server.wsframe import frame_bytes

Event = dict[str, Any]


class Subscriber(Protocol):
    """What the hub needs from a connection (server/session.py implements it)."""

    subprotocol: str
    dropped: int

    def buffered(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def overflow(self) -> None: ...


@dataclass(eq=False)
class _Channel:
    name: str
    subscribers: dict[str, set[Subscriber]] = field(
        default_factory=lambda: {SUBPROTOCOL_MSGPACK: set(), SUBPROTOCOL_JSON: set()}
    )
    pending: list[tuple[Event, bool]] = field(default_factory=list)
    handle: asyncio.Handle | asyncio.TimerHandle | None = None
    last_flush: float = 0.0

    def empty(self) -> bool:
        return not any(self.subscribers.values())


@dataclass
class FanoutStats:
    frames: int = 0
    writes: int = 0
    dropped: int = 0
    overflows: int = 0
    events: int = 0


def batch_frame(items: list[Event]) -> Frame:
    """One event travels as itself; several as a batch (replies never travel in a batch)."""
    if len(items) == 1:
        return items[0]
    return {"op": "batch", "items": items}


class Hub:
    """Local subscribers per channel; the bus delivers published events here."""

    def __init__(
        self,
        *,
        tick_s: float = 0.010,
        soft_limit: int = 256 * 1024,
        hard_limit: int = 2 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tick_s = tick_s
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.clock = clock
        self.channels: dict[str, _Channel] = {}
        self.stats = FanoutStats()

    # ---- subscriptions --------------------------------------------------------------
    def subscribe(self, ch: str, sub: Subscriber) -> None:
        chan = self.channels.get(ch)
        if chan is None:
            chan = self.channels[ch] = _Channel(ch)
        chan.subscribers[sub.subprotocol].add(sub)

    def unsubscribe(self, ch: str, sub: Subscriber) -> None:
        chan = self.channels.get(ch)
        if chan is None:
            return
        chan.subscribers[sub.subprotocol].discard(sub)
        if chan.empty() and not chan.pending:
            if chan.handle is not None:
                chan.handle.cancel()
            del self.channels[ch]

    def has_subscribers(self, ch: str) -> bool:
        chan = self.channels.get(ch)
        return chan is not None and not chan.empty()

    def subscriber_count(self, ch: str) -> int:
        chan = self.channels.get(ch)
        return 0 if chan is None else sum(len(s) for s in chan.subscribers.values())

    # ---- delivery -------------------------------------------------------------------
    def deliver(self, ch: str, event: Event, droppable: bool = False) -> None:
        """Queue an event for the channel's next flush (it already carries seq and ts)."""
        chan = self.channels.get(ch)
        if chan is None or chan.empty():
            return  # nobody here; the bus history still holds it for resume
        self.stats.events += 1
        chan.pending.append((event, droppable))
        if chan.handle is None:
            loop = asyncio.get_running_loop()
            due = chan.last_flush + self.tick_s
            now = self.clock()
            if now >= due:
                chan.handle = loop.call_soon(self._flush, chan)
            else:
                chan.handle = loop.call_later(due - now, self._flush, chan)

    def flush(self, ch: str) -> None:
        """Send what is pending now: before a join snapshot or a resume, so that nothing the
        new subscriber gets from history or the snapshot arrives a second time."""
        chan = self.channels.get(ch)
        if chan is not None and chan.pending:
            if chan.handle is not None:
                chan.handle.cancel()
            self._flush(chan)

    def _flush(self, chan: _Channel) -> None:
        chan.handle = None
        chan.last_flush = self.clock()
        items = chan.pending
        if not items:
            return
        chan.pending = []
        events = [e for e, _ in items]
        overflowed: list[Subscriber] = []
        for subprotocol, subs in chan.subscribers.items():
            if not subs:
                continue
            data = frame_bytes(batch_frame(events), subprotocol)
            critical: bytes | None = None
            self.stats.frames += 1
            soft, hard = self.soft_limit, self.hard_limit
            for sub in subs:
                size = sub.buffered()
                if size < soft:
                    sub.write(data)
                elif size < hard:
                    if critical is None:
                        keep = [e for e, droppable in items if not droppable]
                        critical = frame_bytes(batch_frame(keep), subprotocol) if keep else b""
                    if critical:
                        sub.write(critical)
                    sub.dropped += 1
                    self.stats.dropped += 1
                else:
                    overflowed.append(sub)
            self.stats.writes += len(subs)
        for sub in overflowed:
            self.stats.overflows += 1
            sub.overflow()
        if chan.empty():
            self.channels.pop(chan.name, None)
