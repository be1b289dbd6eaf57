"""A room's record: its row (title, shop, state, pinned product) and its bans and mutes.

Why stored: a room set up by its streamer, and a viewer banned from it, must be so after a
restart and, in a cluster, on every node: a node loads a room's record before a join it serves
(server/rooms.py), and the merchant's numbers find a room's shop here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from server.domain.room import Room
from server.store.db import Db, Row, X, steps

Sanction = tuple[str, str, int | None]  # user, kind ('ban' or 'mute'), until (None: a ban)
LIFTS: Final = {"unban": "ban", "unmute": "mute"}
_ROW: Final = "SELECT id, title, shop, state, pinned FROM rooms"


@dataclass
class RoomRecord:
    id: str
    title: str
    shop: str
    state: str
    pinned: dict[str, Any] | None

    def apply(self, room: Room) -> None:
        room.title, room.shop, room.state, room.pinned = (self.title, self.shop, self.state,
                                                          self.pinned)
        room.owned = True  # a room has a row once a streamer created it or went live in it


class RoomStore(Protocol):
    shared: bool  # other nodes write it too: a room may have changed elsewhere

    async def save(self, room: Room) -> None: ...
    async def rooms(self) -> list[RoomRecord]: ...
    async def room(self, room_id: str) -> RoomRecord | None: ...


class SanctionStore(Protocol):
    async def save(self, ch: str, user: str, kind: str, until: int | None, by: str,
                   at: int, name: str = "") -> None:
        """Append a sanction (`ban`, `mute`) or its lifting (`unban`, `unmute`) to the record."""

    async def load(self, ch: str, now_ms: int) -> list[Sanction]:
        """The channel's bans and the mutes still running (neither lifted since)."""

    async def current(self, ch: str, now_ms: int) -> list[dict[str, Any]]:
        """`load`, with whom each names, who made it and when: what staff list."""

    async def save_staff(self, ch: str, user: str, role: str, at: int) -> None:
        """`user` joined or acted in `ch` as staff with `role` (their rank, known offline)."""

    async def staff(self, ch: str) -> dict[str, str]: ...


class SqlRoomStore:
    def __init__(self, db: Db) -> None:
        self.db = db
        self.shared = db.shared

    async def save(self, room: Room) -> None:
        row = (room.id, room.title, room.shop, room.state,
               None if room.pinned is None else orjson.dumps(room.pinned).decode())

        await self.db.write(steps(
            X("INSERT INTO rooms (id, title, shop, state, pinned) VALUES (?, ?, ?, ?, ?)"
              " ON CONFLICT (id) DO UPDATE SET title = excluded.title, shop = excluded.shop,"
              " state = excluded.state, pinned = excluded.pinned", *row)))

    async def rooms(self) -> list[RoomRecord]:
        return [_record(r) for r in await self.db.rows(_ROW + " ORDER BY id")]

    async def room(self, room_id: str) -> RoomRecord | None:
        rows = await self.db.rows(_ROW + " WHERE id = ?", room_id)
        return _record(rows[0]) if rows else None


class SqlSanctionStore:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def save(self, ch: str, user: str, kind: str, until: int | None, by: str,
                   at: int, name: str = "") -> None:
        await self.db.write(steps(
            X("INSERT INTO sanctions (ch, user_id, kind, until, by_user, at, name)"
              " VALUES (?, ?, ?, ?, ?, ?, ?)", ch, user, kind, until, by, at, name)))

    async def load(self, ch: str, now_ms: int) -> list[Sanction]:
        return [(s["user"], s["kind"], s["until"]) for s in await self.current(ch, now_ms)]

    async def current(self, ch: str, now_ms: int) -> list[dict[str, Any]]:
        """The record is a log: the last entry of each (user, ban/unban) and (user,
        mute/unmute) decides; a lifting keeps no name, so the sanction's is kept."""
        rows = await self.db.rows("SELECT user_id, kind, until, by_user, at, name FROM sanctions"
                                  " WHERE ch = ? ORDER BY id", ch)
        state: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            kind = r["kind"]
            if kind in LIFTS:
                state.pop((r["user_id"], LIFTS[kind]), None)
            else:
                state[(r["user_id"], kind)] = {"user": r["user_id"], "name": r["name"] or "",
                                               "kind": kind, "until": r["until"],
                                               "by": r["by_user"], "at": r["at"]}
        return [s for s in state.values()
                if s["kind"] == "ban" or (s["until"] is not None and s["until"] > now_ms)]

    async def save_staff(self, ch: str, user: str, role: str, at: int) -> None:
        await self.db.write(steps(
            X("INSERT INTO room_staff (ch, user_id, role, at) VALUES (?, ?, ?, ?)"
              " ON CONFLICT (ch, user_id) DO UPDATE SET role = excluded.role, at = excluded.at",
              ch, user, role, at)))

    async def staff(self, ch: str) -> dict[str, str]:
        rows = await self.db.rows("SELECT user_id, role FROM room_staff WHERE ch = ?", ch)
        return {r["user_id"]: r["role"] for r in rows}


def _record(r: Row) -> RoomRecord:
    return RoomRecord(r["id"], r["title"], r["shop"], r["state"],
                      orjson.loads(r["pinned"]) if r["pinned"] else None)
