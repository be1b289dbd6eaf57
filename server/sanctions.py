"""Bans and mutes that outlive the process and reach every node of a cluster.

Why: a Room (server/domain/room.py) keeps its banned users and mutes in memory. Without a
record, a banned viewer was welcome again after a restart, and in a cluster a node that did
not watch the room when the ban happened (and so never saw the `banned` event, or saw it too
long ago for the history replay) let the viewer in. So every ban and mute is written here
before it is announced, and a room's record is loaded into the node's Room before anyone joins
it on that node (`Rooms.ensure`, server/rooms.py).

With `--redis` but no `--postgres`, each node's SQLite holds the sanctions made on it: a ban
reaches the other nodes by its event only (docs/scaleout.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.store.rooms import SanctionStore

_KINDS = {"banned": "ban", "muted": "mute", "unbanned": "unban", "unmuted": "unmute"}


class Sanctions:
    """Records bans and mutes, their liftings (who lifted what and when), and the staff seen
    in each room or group (so that an offline streamer's rank still protects them)."""

    def __init__(self, store: SanctionStore, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms

    async def record(self, ch: str, type_: str, event: dict[str, Any], name: str = "") -> None:
        """Write a `banned`, `muted`, `unbanned` or `unmuted` event (before it is announced),
        with the name of whom it names (staff list sanctions by name, never by id)."""
        await self.store.save(ch, str(event["user"]), _KINDS[type_], event.get("until"),
                              str(event.get("by", "")), self.clock_ms(), name)

    async def current(self, ch: str) -> list[dict[str, Any]]:
        """The channel's bans and running mutes: {user, name, kind, until, by, at}."""
        return await self.store.current(ch, self.clock_ms())

    async def staff_seen(self, ch: str, user: str, role: str) -> None:
        await self.store.save_staff(ch, user, role, self.clock_ms())
