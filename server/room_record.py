"""The rooms' record: each room's title, shop, state and pinned product, kept across restarts.

Why a module of its own: a Room (server/domain/room.py) lives in memory; what must survive a
restart is small and written rarely (room_create, room_state, pin), so it is one row per room
in the node's SQLite file, loaded into the Rooms before the first join. (Shared by the nodes
of a cluster once it moves into the store layer; see docs/architecture.md.)
"""

from __future__ import annotations

import sqlite3
from typing import Final

import orjson

from server.domain.room import Room
from server.rooms import Rooms
from server.store.sqlite import SqliteDatabase

ROOMS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    shop TEXT NOT NULL DEFAULT 'default',
    state TEXT NOT NULL DEFAULT 'idle',
    pinned TEXT
);
"""


class RoomRecord:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.add_schema(ROOMS_SCHEMA)

    async def save(self, room: Room) -> None:
        pinned = orjson.dumps(room.pinned).decode() if room.pinned is not None else None

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO rooms (id, title, shop, state, pinned) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET title=excluded.title, shop=excluded.shop, "
                "state=excluded.state, pinned=excluded.pinned",
                (room.id, room.title, room.shop, room.state, pinned),
            )

        await self.db.write(write)

    def load_into(self, rooms: Rooms) -> None:
        """Every recorded room into `rooms` (after the database started, before listening)."""
        rows = self.db.read_sync(lambda c: c.execute("SELECT * FROM rooms").fetchall())
        for row in rows:
            room = rooms.room(row["id"])
            room.title, room.shop, room.state = row["title"], row["shop"], row["state"]
            room.pinned = orjson.loads(row["pinned"]) if row["pinned"] else None
