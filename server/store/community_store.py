"""Durable community state: the `CommunityStore` protocol and its SQLite implementation
(groups, members, tags, questions, mirrors, room links, group messages, notices, connectors
and dead letters, in the shared SQLite file).

Why here and not in the domain: the domain keeps the live state in memory (microsecond rules);
this module makes every change durable (`await` returns after the group commit) and rebuilds
the domain objects on start, so membership, tags, messages and questions survive a restart.
Table names are distinct from the commerce tables that share the file.

Two implementations: `SqliteCommunityStore` (embedded, one node: the in-memory domain is the
only writer, so every write simply succeeds) and `PgCommunityStore` (server/store/
community_pg.py, cluster mode: several nodes write the same rows, so the writes that can race
are guarded in SQL and may refuse with `Stale`, after which the adapter refreshes its copy).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

import orjson

from server.domain.community import Directory, Group, Member, Tags
from server.domain.mirror import Copy, Mirror
from server.domain.qa import Question, QuestionBoard
from server.store.sqlite import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY, shop TEXT NOT NULL, tier TEXT NOT NULL, topic TEXT NOT NULL,
    title TEXT, cap INTEGER NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL REFERENCES groups(id), user_id TEXT NOT NULL, name TEXT NOT NULL,
    role TEXT NOT NULL, joined_at INTEGER NOT NULL, PRIMARY KEY (group_id, user_id)
);
CREATE TABLE IF NOT EXISTS group_removed (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, removed_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE TABLE IF NOT EXISTS group_exits (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, joined_at INTEGER NOT NULL,
    left_at INTEGER NOT NULL, removed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS member_tags (
    shop TEXT NOT NULL, user_id TEXT NOT NULL, bought TEXT NOT NULL, big_customer INTEGER NOT NULL,
    source TEXT, invited_by TEXT, PRIMARY KEY (shop, user_id)
);
CREATE TABLE IF NOT EXISTS group_notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, kind TEXT NOT NULL,
    text TEXT NOT NULL, ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS group_notices_by_group ON group_notices (group_id, ts);
CREATE TABLE IF NOT EXISTS group_messages (
    id TEXT PRIMARY KEY, group_id TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
    text TEXT NOT NULL, reply_to TEXT, ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS group_messages_by_group ON group_messages (group_id, ts);
CREATE TABLE IF NOT EXISTS qa_rooms (room TEXT PRIMARY KEY, target_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS questions (
    id TEXT PRIMARY KEY, room TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
    text TEXT NOT NULL, asked_at INTEGER NOT NULL, votes INTEGER NOT NULL, voters TEXT NOT NULL,
    status TEXT NOT NULL, answer TEXT, answered_by TEXT, answered_at INTEGER,
    on_stream INTEGER NOT NULL, overdue_flagged INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS questions_by_room ON questions (room, asked_at);
CREATE TABLE IF NOT EXISTS room_links (
    room TEXT NOT NULL, group_id TEXT NOT NULL, pos INTEGER NOT NULL, PRIMARY KEY (room, group_id)
);
CREATE TABLE IF NOT EXISTS mirrors (
    id TEXT PRIMARY KEY, room TEXT NOT NULL, question TEXT NOT NULL, group_id TEXT NOT NULL,
    UNIQUE (room, question, group_id)
);
CREATE TABLE IF NOT EXISTS connectors (
    id TEXT PRIMARY KEY, shop TEXT NOT NULL, room TEXT NOT NULL, platform TEXT NOT NULL,
    url TEXT NOT NULL, secret TEXT NOT NULL, config TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, connector_id TEXT NOT NULL, room TEXT NOT NULL,
    item TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, ts INTEGER NOT NULL
);
"""


def dead_letter_row(r: Any) -> dict[str, Any]:
    """A dead letter as the API shows it, from a row of either backend (same column order)."""
    return {"id": r[0], "connector": r[1], "room": r[2], "item": orjson.loads(r[3]),
            "error": r[4], "attempts": r[5], "ts": r[6]}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _upsert_question(conn: sqlite3.Connection, q: Question) -> None:
    conn.execute(
        "INSERT INTO questions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
        "votes=excluded.votes, voters=excluded.voters, status=excluded.status, "
        "answer=excluded.answer, answered_by=excluded.answered_by, "
        "answered_at=excluded.answered_at, on_stream=excluded.on_stream, "
        "overdue_flagged=excluded.overdue_flagged",
        (
            q.id,
            q.room,
            q.user,
            q.name,
            q.text,
            q.asked_at,
            q.votes,
            _dumps(sorted(q.voters)),
            q.status,
            q.answer,
            _dumps(q.answered_by) if q.answered_by else None,
            q.answered_at,
            int(q.on_stream),
            int(q.overdue_flagged),
        ),
    )


def _insert_group(conn: sqlite3.Connection, g: Group) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO groups VALUES (?,?,?,?,?,?,?)",
        (g.id, g.shop, g.tier, g.topic, g.title, g.cap, g.created_at),
    )


def _upsert_tags(conn: sqlite3.Connection, shop: str, user: str, t: Tags) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO member_tags VALUES (?,?,?,?,?,?)",
        (shop, user, _dumps(t.bought), int(t.big_customer), t.source, t.invited_by),
    )


class Stale(Exception):
    """A guarded write refused because another node changed the row first (cluster mode).

    `code`/`message` are what the client is told when the refusal is final (e.g. `conflict`,
    "already upvoted"); `question` is the row as committed, for the adapter to adopt.
    The SQLite store never raises it: one node is the only writer.
    """

    def __init__(self, code: str, message: str, question: Question | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.question = question


class CommunityStore(Protocol):
    """What the Community adapter needs from a durable store (SQLite or PostgreSQL).

    Every write returns after it committed. The question writes that two nodes can race
    (`upvote`, `close_question`, `add_message` with an answer, `flag_overdue`) and
    `add_member` (capacity, spill-over) may raise `Stale` in the PostgreSQL store.
    """

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def create_group(self, group: Group) -> None: ...
    async def add_member(
        self, group: Group, member: Member, created: Group | None, tags: Tags | None, shop: str
    ) -> None: ...
    async def remove_member(
        self, group_id: str, member: Member, now_ms: int, removed: bool
    ) -> None: ...
    async def save_tags(self, shop: str, user: str, tags: Tags) -> None: ...
    async def add_notice(self, group_id: str, kind: str, text: str, ts: int,
                         cap: tuple[int, int, int] | None = None) -> bool: ...
    async def add_message(
        self, group_id: str, msg: dict[str, Any], *, answered: Question | None = None
    ) -> bool: ...
    async def set_answer_target(self, room: str, target_s: int) -> None: ...
    async def save_question(self, q: Question, copies: list[Copy] | None = None) -> None: ...
    async def upvote(self, q: Question, user: str) -> Question: ...
    async def close_question(self, q: Question) -> Question: ...
    async def flag_overdue(self, qs: list[Question]) -> list[Question]: ...
    async def save_links(self, room: str, group_ids: list[str]) -> None: ...
    async def save_connector(self, conn: dict[str, Any]) -> None: ...
    async def add_dead_letter(
        self, connector_id: str, room: str, item: dict[str, Any], error: str, attempts: int, ts: int
    ) -> int: ...
    async def recent_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]: ...
    async def dead_letters(self, connector_id: str | None = None) -> list[dict[str, Any]]: ...
    async def exits(self, group_id: str) -> int: ...
    async def load(
        self,
        directory: Directory,
        boards: dict[str, QuestionBoard],
        mirror: Mirror,
        default_target_s: int,
    ) -> list[dict[str, Any]]: ...


class SqliteCommunityStore:
    """Durable writes (each one group-committed) and the load that rebuilds the domain."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.add_schema(SCHEMA)

    async def start(self) -> None:
        """Create the tables (the app's database may already be running)."""
        if self.db._thread is None:
            self.db.start()
        else:
            await self.db.write(_create_tables)

    async def close(self) -> None:
        """Nothing: the database belongs to the app."""

    # -- writes -----------------------------------------------------------------------
    async def create_group(self, group: Group) -> None:
        await self.db.write(lambda c: _insert_group(c, group))

    async def add_member(
        self, group: Group, member: Member, created: Group | None, tags: Tags | None, shop: str
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if created is not None:
                _insert_group(c, created)
            c.execute(
                "INSERT OR REPLACE INTO group_members VALUES (?,?,?,?,?)",
                (group.id, member.user, member.name, member.role, member.joined_at),
            )
            if tags is not None:
                _upsert_tags(c, shop, member.user, tags)

        await self.db.write(fn)

    async def remove_member(
        self, group_id: str, member: Member, now_ms: int, removed: bool
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM group_members WHERE group_id=? AND user_id=?", (group_id, member.user)
            )
            c.execute(
                "INSERT INTO group_exits VALUES (?,?,?,?,?)",
                (group_id, member.user, member.joined_at, now_ms, int(removed)),
            )
            if removed:
                c.execute(
                    "INSERT OR REPLACE INTO group_removed VALUES (?,?,?)",
                    (group_id, member.user, now_ms),
                )

        await self.db.write(fn)

    async def save_tags(self, shop: str, user: str, tags: Tags) -> None:
        await self.db.write(lambda c: _upsert_tags(c, shop, user, tags))

    async def add_notice(self, group_id: str, kind: str, text: str, ts: int,
                         cap: tuple[int, int, int] | None = None) -> bool:
        """Keep a notice; with `cap` = (week start, end, cap), only while the group had fewer
        than `cap` notices in that week (False: refused). One writer: the count is exact."""

        def run(c: sqlite3.Connection) -> bool:
            if cap is not None:
                (used,) = c.execute(
                    "SELECT COUNT(*) FROM group_notices WHERE group_id=? AND ts>=? AND ts<?",
                    (group_id, cap[0], cap[1]),
                ).fetchone()
                if used >= cap[2]:
                    return False
            c.execute("INSERT INTO group_notices (group_id, kind, text, ts) VALUES (?,?,?,?)",
                      (group_id, kind, text, ts))
            return True

        return await self.db.write(run)

    async def add_message(
        self, group_id: str, msg: dict[str, Any], *, answered: Question | None = None
    ) -> bool:
        """Keep a group message and, in the same transaction, the question it answered.

        Returns whether the answer was kept (always, here: this node is the only writer).
        """

        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO group_messages VALUES (?,?,?,?,?,?,?)",
                (
                    msg["id"],
                    group_id,
                    msg["user"],
                    msg["name"],
                    msg["text"],
                    msg.get("reply_to"),
                    msg["ts"],
                ),
            )
            if answered is not None:
                _upsert_question(c, answered)

        await self.db.write(fn)
        return answered is not None

    async def set_answer_target(self, room: str, target_s: int) -> None:
        await self.db.write(
            lambda c: c.execute("INSERT OR REPLACE INTO qa_rooms VALUES (?,?)", (room, target_s))
        )

    async def save_question(self, q: Question, copies: list[Copy] | None = None) -> None:
        """Upsert a question and, in the same transaction, the copies just made of it."""

        def fn(c: sqlite3.Connection) -> None:
            _upsert_question(c, q)
            for copy in copies or ():
                c.execute(
                    "INSERT OR IGNORE INTO mirrors VALUES (?,?,?,?)",
                    (copy.id, copy.room, copy.question, copy.group),
                )

        await self.db.write(fn)

    async def save_questions(self, qs: list[Question]) -> None:
        def fn(c: sqlite3.Connection) -> None:
            for q in qs:
                _upsert_question(c, q)

        await self.db.write(fn)

    async def upvote(self, q: Question, user: str) -> Question:
        """The vote the domain just counted (the domain is the only writer here)."""
        await self.save_question(q)
        return q

    async def close_question(self, q: Question) -> Question:
        """An answer or a dismissal the domain just applied."""
        await self.save_question(q)
        return q

    async def flag_overdue(self, qs: list[Question]) -> list[Question]:
        """Keep the overdue flags; returns the questions flagged (all of them, here)."""
        if qs:
            await self.save_questions(qs)
        return qs

    async def save_links(self, room: str, group_ids: list[str]) -> None:
        def fn(c: sqlite3.Connection) -> None:
            for pos, gid in enumerate(group_ids):
                c.execute("INSERT OR IGNORE INTO room_links VALUES (?,?,?)", (room, gid, pos))

        await self.db.write(fn)

    async def save_connector(self, conn: dict[str, Any]) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO connectors VALUES (?,?,?,?,?,?,?,?)",
                (
                    conn["id"],
                    conn["shop"],
                    conn["room"],
                    conn["platform"],
                    conn["url"],
                    conn["secret"],
                    _dumps(conn.get("config", {})),
                    conn["created_at"],
                ),
            )
        )

    async def add_dead_letter(
        self, connector_id: str, room: str, item: dict[str, Any], error: str, attempts: int, ts: int
    ) -> int:
        def fn(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO dead_letters (connector_id, room, item, error, attempts, ts) "
                "VALUES (?,?,?,?,?,?)",
                (connector_id, room, _dumps(item), error, attempts, ts),
            )
            return int(cur.lastrowid or 0)

        return await self.db.write(fn)

    # -- reads ------------------------------------------------------------------------
    async def recent_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        def fn(c: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = c.execute(
                "SELECT id, user_id, name, text, reply_to, ts FROM group_messages "
                "WHERE group_id=? ORDER BY ts DESC, rowid DESC LIMIT ?",
                (group_id, limit),
            ).fetchall()
            return [
                {"id": r[0], "user": r[1], "name": r[2], "text": r[3], "reply_to": r[4], "ts": r[5]}
                for r in reversed(rows)
            ]

        return await self.db.read(fn)

    async def dead_letters(self, connector_id: str | None = None) -> list[dict[str, Any]]:
        def fn(c: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = "SELECT id, connector_id, room, item, error, attempts, ts FROM dead_letters"
            args: tuple[Any, ...] = ()
            if connector_id is not None:
                sql += " WHERE connector_id=?"
                args = (connector_id,)
            return [
                dead_letter_row(r) for r in c.execute(sql + " ORDER BY id", args).fetchall()
            ]

        return await self.db.read(fn)

    async def exits(self, group_id: str) -> int:
        return await self.db.read(
            lambda c: int(
                c.execute(
                    "SELECT COUNT(*) FROM group_exits WHERE group_id=?", (group_id,)
                ).fetchone()[0]
            )
        )

    async def load(
        self,
        directory: Directory,
        boards: dict[str, QuestionBoard],
        mirror: Mirror,
        default_target_s: int,
    ) -> list[dict[str, Any]]:
        """Rebuild the domain from the file (blocking, at start-up); returns the connectors."""

        def fn(c: sqlite3.Connection) -> list[dict[str, Any]]:
            for r in c.execute(
                "SELECT id, shop, tier, topic, title, cap, created_at FROM groups ORDER BY created_at"
            ):
                directory.groups[r[0]] = Group(r[0], r[1], r[2], r[3], r[5], r[6], r[4])
            for r in c.execute(
                "SELECT group_id, user_id, name, role, joined_at FROM group_members"
            ):
                if r[0] in directory.groups:
                    directory.groups[r[0]].members[r[1]] = Member(r[1], r[2], r[3], r[4])
            for r in c.execute("SELECT group_id, user_id FROM group_removed"):
                if r[0] in directory.groups:
                    directory.groups[r[0]].removed.add(r[1])
            horizon_rows = c.execute("SELECT group_id, ts FROM group_notices ORDER BY ts")
            for r in horizon_rows:
                if r[0] in directory.groups:
                    directory.groups[r[0]].notices_at.append(r[1])
            for r in c.execute(
                "SELECT shop, user_id, bought, big_customer, source, invited_by FROM member_tags"
            ):
                directory.tags[(r[0], r[1])] = Tags(orjson.loads(r[2]), bool(r[3]), r[4], r[5])
            targets = dict(c.execute("SELECT room, target_s FROM qa_rooms").fetchall())
            for r in c.execute(
                "SELECT id, room, user_id, name, text, asked_at, votes, voters, status, answer, "
                "answered_by, answered_at, on_stream, overdue_flagged FROM questions ORDER BY asked_at"
            ):
                room = r[1]
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=targets.get(room, default_target_s))
                q = Question(
                    id=r[0],
                    room=room,
                    user=r[2],
                    name=r[3],
                    text=r[4],
                    asked_at=r[5],
                    votes=r[6],
                    voters=set(orjson.loads(r[7])),
                    status=r[8],
                    answer=r[9],
                    answered_by=orjson.loads(r[10]) if r[10] else None,
                    answered_at=r[11],
                    on_stream=bool(r[12]),
                    overdue_flagged=bool(r[13]),
                )
                boards[room].add(q)
            for room, target in targets.items():
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=target)
            for r in c.execute("SELECT room, group_id FROM room_links ORDER BY room, pos"):
                mirror.links.setdefault(r[0], []).append(r[1])
            for r in c.execute("SELECT id, room, question, group_id FROM mirrors"):
                mirror.add_copy(Copy(r[0], r[3], r[1], r[2]))
            return [
                {
                    "id": r[0],
                    "shop": r[1],
                    "room": r[2],
                    "platform": r[3],
                    "url": r[4],
                    "secret": r[5],
                    "config": orjson.loads(r[6]),
                    "created_at": r[7],
                }
                for r in c.execute(
                    "SELECT id, shop, room, platform, url, secret, config, created_at FROM connectors"
                )
            ]

        return self.db.read_sync(fn)


def _create_tables(conn: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
