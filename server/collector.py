"""Frees what nobody created: empty rooms that only a `join` (or a `resume`) brought into
being, and the bus histories of channels nobody follows any more.

Why: a room exists from its first join (the protocol says so; clients and load tests rely on
it), so a token that may enter every room could otherwise grow the process by a Room, its
presence, its staff channel and its history for each made-up id, for good. A room is kept
while anyone follows it, and for ever once a streamer created it or went live in it (its row),
pinned something in it, or a sale, an offer, a question or a draw names it (`busy`). Anything
else, once empty for `grace_s`, is forgotten with its histories; a later join makes it anew
(with a new epoch: a client resuming from before gets a `resync`); its kept chat and likes
total stay stored and come back with it (a chat a viewer saw is never dropped here, and likes
not yet saved keep the room until they are). A `user:` channel's
history is dropped when nobody has followed it and nothing was published on it for `grace_s`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

from client_sdk.protocol import staff_channel
from server.rooms import Rooms

log = logging.getLogger("souk.collector")


class Collector:
    def __init__(self, rooms: Rooms, *, subscribed: Callable[[str], bool],
                 forget_channel: Callable[[str], None],
                 forget_idle: Callable[[str, int, Callable[[str], bool]], int],
                 busy: Callable[[], Collection[str]], clock_ms: Callable[[], int], grace_s: float,
                 forget_rows: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        self.rooms = rooms
        self.subscribed = subscribed
        self.forget_channel = forget_channel
        self.forget_idle = forget_idle
        self.busy = busy
        self.clock_ms = clock_ms
        self.grace_ms = int(grace_s * 1000)
        self.forget_rows = forget_rows
        self.empty_since: dict[str, int] = {}
        self.collected = 0  # rooms freed since start (for tests and logs)

    def interval_s(self) -> float:
        return max(0.05, min(self.grace_ms / 2000, 10.0))

    async def sweep(self) -> list[str]:
        """One pass: returns the rooms freed."""
        now = self.clock_ms()
        freed: list[str] = []
        seen = self.empty_since
        busy = self.busy()
        for ch, room in list(self.rooms.by_channel.items()):
            if (room.kind != "room" or room.owned or room.state != "idle" or room.pinned
                    or room.viewers or room.likes != room.likes_saved  # saved first (500 ms)
                    or self.subscribed(ch)
                    or self.subscribed(staff_channel(room.id)) or room.id in busy):
                seen.pop(ch, None)
                continue
            since = seen.setdefault(ch, now)
            if now - since >= self.grace_ms:
                del seen[ch]
                self.rooms.forget(ch)
                self.forget_channel(ch)
                self.forget_channel(staff_channel(room.id))
                freed.append(room.id)
        for ch in [c for c in seen if c not in self.rooms.by_channel]:
            del seen[ch]
        self.forget_idle("user:", now - self.grace_ms, self.subscribed)
        if freed:
            self.collected += len(freed)
            log.debug("freed %d empty rooms", len(freed))
            if self.forget_rows is not None:
                await self.forget_rows(freed)
        return freed
