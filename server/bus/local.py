"""The embedded bus: per-channel sequence numbers and bounded history, in this process.

Every event gets the next `seq` of its channel and the server time `ts`, is kept in the
channel's history (for `resume`) and handed to the local hub for fan-out. The channel's
`epoch` is drawn at random when its history starts, so a client resuming with an epoch from
before a restart is told to resync instead of being handed the wrong events.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.bus.base import envelope, history_limit
from server.fanout import Event, Hub


@dataclass
class ChannelLog:
    epoch: str
    seq: int = 0
    history: deque[Event] = field(default_factory=deque)


class LocalBus:
    """Publish implementation for one process (see server/bus/base.py for the contract)."""

    def __init__(
        self,
        hub: Hub,
        clock_ms: Callable[[], int],
        *,
        history: int = 1000,
        user_history: int = 100,
    ) -> None:
        self.hub = hub
        self.clock_ms = clock_ms
        self.history = history
        self.user_history = user_history
        self.logs: dict[str, ChannelLog] = {}

    def log(self, ch: str) -> ChannelLog:
        log = self.logs.get(ch)
        if log is None:
            log = self.logs[ch] = ChannelLog(epoch=secrets.token_hex(4))
        return log

    def forget(self, ch: str) -> None:
        """Drop a channel's seq and history (its next event starts a new epoch)."""
        self.logs.pop(ch, None)

    def forget_idle(self, prefix: str, before_ms: int, subscribed: Callable[[str], bool]) -> int:
        """Drop the histories of `prefix` channels nobody follows whose last event is older
        than `before_ms`; returns how many."""
        idle = [ch for ch, log in self.logs.items()
                if ch.startswith(prefix) and not subscribed(ch)
                and (not log.history or log.history[-1]["ts"] < before_ms)]
        for ch in idle:
            del self.logs[ch]
        return len(idle)

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.publish(ch, type, fields, droppable=droppable)

    def publish(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> Event:
        log = self.log(ch)
        log.seq += 1
        event: Event = envelope(ch, type, fields, self.clock_ms())
        event["seq"] = log.seq
        log.history.append(event)
        limit = history_limit(ch, self.history, self.user_history)
        while len(log.history) > limit:
            log.history.popleft()
        self.hub.deliver(ch, event, droppable)
        return event

    def watch(self, ch: str) -> None:
        """A local subscriber appeared on `ch`: nothing to do, every event is local."""

    def unwatch(self, ch: str) -> None:
        """The last local subscriber of `ch` left: nothing to do."""

    async def start(self) -> None:
        """Nothing to connect to (same lifecycle as RedisBus)."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def head(self, ch: str) -> tuple[str, int]:
        """(epoch, last seq) of a channel: what a snapshot carries so the client can resume.
        Async like RedisBus.head, where it may wait for Redis."""
        log = self.log(ch)
        return log.epoch, log.seq

    async def since(self, ch: str, seq: int, epoch: str | None) -> list[Event] | None:
        """Events after `seq`, or None when they are no longer all in the history."""
        log = self.log(ch)
        if epoch is not None and epoch != log.epoch:
            return None
        if seq > log.seq or seq < 0:
            return None
        if seq == log.seq:
            return []
        if not log.history or log.history[0]["seq"] > seq + 1:
            return None
        first = log.history[0]["seq"]
        return list(log.history)[seq + 1 - first :]
