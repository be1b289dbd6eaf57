"""Bans and mutes that outlive the process and reach every node of a cluster.

Why: a Room (server/domain/room.py) keeps its banned users and mutes in memory. Without a
record, a banned viewer was welcome again after a restart, and in a cluster a node that did
not watch the room when the ban happened (and so never saw the `banned` event, or saw it too
long ago for the 200-event replay) let the viewer in. Here every ban and mute is written
before it is announced (SQLite embedded, PostgreSQL with `--postgres`), and a room's record is
loaded into the node's Room before anyone joins it on that node:

- embedded: once per room per process (the process sees every later ban itself);
- cluster: whenever the node does not currently receive the room's channel. While it does,
  other nodes' `banned`/`muted` events keep the Room current (server/replica.py); when it
  stops (the bus unsubscribes after the last viewer left) the next join loads again.

With `--redis` but no `--postgres`, each node's SQLite holds the sanctions made on it: a ban
reaches the other nodes by its event only (documented in docs/scaleout.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final, Protocol

from server.rooms import Rooms
from server.store.pgstore import PgStore
from server.store.sqlite import SqliteDatabase

SCHEMA: Final = """CREATE TABLE IF NOT EXISTS sanctions (
    ch TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ban', 'mute')),
    until BIGINT,
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (ch, user_id, kind))"""

_UPSERT: Final = ("INSERT INTO sanctions (ch, user_id, kind, until, by_user, at) VALUES ({}) "
                  "ON CONFLICT (ch, user_id, kind) DO UPDATE SET until = excluded.until, "
                  "by_user = excluded.by_user, at = excluded.at")
_LOAD: Final = ("SELECT user_id, kind, until FROM sanctions WHERE ch = {} "
                "AND (kind = 'ban' OR until > {})")

Row = tuple[str, str, int | None]  # user, kind, until (None: a ban)


class SanctionStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def save(self, ch: str, user: str, kind: str, until: int | None, by: str,
                   at: int) -> None: ...
    async def load(self, ch: str, now_ms: int) -> list[Row]: ...


class SqliteSanctions:
    """The embedded record: the node's SQLite file, written with its group commit."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.add_schema(SCHEMA)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save(self, ch: str, user: str, kind: str, until: int | None, by: str,
                   at: int) -> None:
        sql = _UPSERT.format("?, ?, ?, ?, ?, ?")
        await self.db.write(lambda c: c.execute(sql, (ch, user, kind, until, by, at)))

    async def load(self, ch: str, now_ms: int) -> list[Row]:
        sql = _LOAD.format("?", "?")

        def run(c: sqlite3.Connection) -> list[Row]:
            return [(r[0], r[1], r[2]) for r in c.execute(sql, (ch, now_ms)).fetchall()]

        return await self.db.read(run)


class PgSanctions(PgStore):
    """The cluster's record in PostgreSQL (a small pool of its own)."""

    SCHEMA = (SCHEMA,)
    MIGRATE_LOCK = 7306202614  # one node creates the table at a time
    POOL_SIZE = 2

    async def save(self, ch: str, user: str, kind: str, until: int | None, by: str,
                   at: int) -> None:
        assert self.pool is not None, "start() first"
        await self.pool.execute(_UPSERT.format("$1, $2, $3, $4, $5, $6"),
                                ch, user, kind, until, by, at)

    async def load(self, ch: str, now_ms: int) -> list[Row]:
        assert self.pool is not None, "start() first"
        rows = await self.pool.fetch(_LOAD.format("$1", "$2"), ch, now_ms)
        return [(r["user_id"], r["kind"], r["until"]) for r in rows]


class Sanctions:
    """Loads a room's record into its Room before a join; records new bans and mutes."""

    def __init__(self, store: SanctionStore, rooms: Rooms, clock_ms: Callable[[], int],
                 receiving: Callable[[str], bool] | None = None) -> None:
        """`receiving(ch)`: in a cluster, whether this node currently gets the channel's
        events (then the Room is current); None: one process sees everything."""
        self.store = store
        self.rooms = rooms
        self.clock_ms = clock_ms
        self.receiving = receiving
        self._loaded: set[str] = set()
        self.loads = 0

    async def ensure(self, ch: str) -> None:
        """Make the Room of `ch` know every ban and current mute before a join passes."""
        kind, _, key = ch.partition(":")
        if kind not in ("room", "group"):
            return
        if ch in self._loaded and (self.receiving is None or self.receiving(ch)):
            return
        rows = await self.store.load(ch, self.clock_ms())
        self.loads += 1
        room = self.rooms.room(key) if kind == "room" else self.rooms.group(key)
        for user, what, until in rows:
            if what == "ban":
                room.banned.add(user)
            elif until is not None and until > room.muted_until.get(user, 0):
                room.muted_until[user] = until
        self._loaded.add(ch)

    async def record(self, ch: str, event: dict[str, Any]) -> None:
        """Write a `banned` or `muted` event's sanction (before it is announced)."""
        kind = "ban" if "until" not in event else "mute"
        await self.store.save(ch, str(event["user"]), kind, event.get("until"),
                              str(event.get("by", "")), self.clock_ms())
