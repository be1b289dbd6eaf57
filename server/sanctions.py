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


class Sanctions:
    """Records new bans and mutes."""

    def __init__(self, store: SanctionStore, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms

    async def record(self, ch: str, event: dict[str, Any]) -> None:
        """Write a `banned` or `muted` event's sanction (before it is announced)."""
        kind = "ban" if "until" not in event else "mute"
        await self.store.save(ch, str(event["user"]), kind, event.get("until"),
                              str(event.get("by", "")), self.clock_ms())
