"""Keep this node's Room state in step with what other nodes of the cluster did.

Why: a Room (server/domain/room.py) lives in each node's memory, and ops change the Room of
the node that served them. Without this, a viewer joining on node B would not see in its
snapshot the chat, the pinned product or the room state set on node A, and — worse — a user
banned or muted on node A could go on talking through node B. The bus already brings every
event of a watched channel to every node (server/bus/redis.py); here the events another node
published are applied to the local Room, the same way the op that made them changed the
Room on its own node. Applied: chat, message_deleted, pinned, state, room (title, shop),
muted, banned.

Only channels this node watches receive events; when it starts watching one, the bus replays
the recent history through `apply` first, so the first snapshot on this node already has
the room's recent chat.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from server.domain.room import Room

Event = dict[str, Any]


def node_unique_ids(room: Room) -> None:
    """In a cluster each node numbers chat messages; start each node's numbering at a random
    point so ids from two nodes do not collide (delete_message names one)."""
    room.next_msg = secrets.randbelow(2**40) * 1000 + 1


class RoomReplica:
    """Applies other nodes' room events to this node's Rooms."""

    def __init__(self, rooms: Callable[[str], Room | None],
                 expel: Callable[[str, str], None]) -> None:
        self.rooms = rooms
        self.expel = expel
        self.applied = 0

    def apply(self, ch: str, event: Event) -> None:
        room = self.rooms(ch)
        if room is None:
            return
        kind = event.get("type")
        if kind == "chat":
            msg = {k: event.get(k) for k in ("id", "user", "name", "role", "text", "reply_to", "at")}
            if any(m.get("id") == msg["id"] and m.get("user") == msg["user"] for m in room.chat):
                return
            room.chat.append(msg)
            while len(room.chat) > room.history_limit:
                room.chat.popleft()
        elif kind == "message_deleted":
            for m in list(room.chat):
                if m.get("id") == event.get("id"):
                    room.chat.remove(m)
        elif kind == "pinned":
            product = event.get("product")
            room.pinned = product if isinstance(product, dict) or product is None else None
        elif kind == "state" and isinstance(event.get("state"), str):
            room.state = event["state"]
        elif kind == "room" and isinstance(event.get("title"), str):
            room.title = event["title"]
            if isinstance(event.get("shop"), str):
                room.shop = event["shop"]
                room.owned = True
        elif kind == "muted" and isinstance(event.get("user"), str):
            until = event.get("until")
            if isinstance(until, int):
                room.muted_until[event["user"]] = until
        elif kind == "unbanned" and isinstance(event.get("user"), str):
            room.banned.discard(event["user"])
        elif kind == "unmuted" and isinstance(event.get("user"), str):
            room.muted_until.pop(event["user"], None)
        elif kind == "banned" and isinstance(event.get("user"), str):
            user = event["user"]
            room.banned.add(user)
            room.presence.pop(user, None)
            room.chat = type(room.chat)(m for m in room.chat if m.get("user") != user)
            self.expel(user, ch)
        else:
            return
        self.applied += 1
