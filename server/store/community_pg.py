"""Community state in PostgreSQL, shared by every node of a cluster (`--postgres`).

Why: in a cluster a question asked on node A must be upvoted and answered on node B, a group
created on A joined from B. Each node keeps its in-memory domain objects as a working copy
(the hot paths stay in memory), and this store is the one record they all write. The same
tables as the SQLite store (server/store/community_store.py), in PostgreSQL's dialect, plus
what several writers need:

- `question_votes (question, user_id)` primary key: one vote per user per question whatever
  node counted it; the vote count is read back from the row (`votes = votes + 1 RETURNING`).
- `questions.rev`: bumped by every update, returned to the adapter and carried in the change
  notices (server/community_sync.py), so a node applies a question's updates in order.
- answers and dismissals are `UPDATE ... WHERE status = 'open'`: the first one wins, a late
  one raises `Stale` with the committed row.
- joins take a transaction-scoped advisory lock on the group family (shop, tier, topic) and
  check capacity, an earlier membership and the removal list in SQL; spill-over creates a
  new group only if no sibling still has room. A refused join raises `Stale`; the adapter
  reloads the family and places the member again.
- overdue flags are `UPDATE ... WHERE overdue_flagged = 0 RETURNING`: whichever node's timer
  fires first flags (and announces) a question; the others find nothing to do.

Besides the `CommunityStore` writes, it has the reads a node needs to catch up on one entity
(`load_question`, `load_group`, `load_family`, `load_links`, `load_connector`, `load_tags`,
`load_target`), used on a change notice and lazily when a node is asked about something it
does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import asyncpg
import orjson

from server.domain.community import Directory, Group, Member, Tags
from server.domain.mirror import Copy, Mirror
from server.domain.qa import Question, QuestionBoard
from server.store.community_store import Stale, dead_letter_row
from server.store.pgstore import PgStore

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS groups (
        id TEXT PRIMARY KEY, shop TEXT NOT NULL, tier TEXT NOT NULL, topic TEXT NOT NULL,
        title TEXT, cap INTEGER NOT NULL CHECK (cap >= 2), created_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS groups_family ON groups (shop, tier, lower(topic))",
    """CREATE TABLE IF NOT EXISTS group_members (
        group_id TEXT NOT NULL REFERENCES groups (id), user_id TEXT NOT NULL,
        name TEXT NOT NULL, role TEXT NOT NULL, joined_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS group_removed (
        group_id TEXT NOT NULL, user_id TEXT NOT NULL, removed_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS group_exits (
        group_id TEXT NOT NULL, user_id TEXT NOT NULL, joined_at BIGINT NOT NULL,
        left_at BIGINT NOT NULL, removed INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS member_tags (
        shop TEXT NOT NULL, user_id TEXT NOT NULL, bought TEXT NOT NULL,
        big_customer INTEGER NOT NULL, source TEXT, invited_by TEXT,
        PRIMARY KEY (shop, user_id))""",
    """CREATE TABLE IF NOT EXISTS group_notices (
        id BIGSERIAL PRIMARY KEY, group_id TEXT NOT NULL, kind TEXT NOT NULL,
        text TEXT NOT NULL, ts BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS group_notices_by_group ON group_notices (group_id, ts)",
    """CREATE TABLE IF NOT EXISTS group_messages (
        n BIGSERIAL, id TEXT PRIMARY KEY, group_id TEXT NOT NULL, user_id TEXT NOT NULL,
        name TEXT NOT NULL, text TEXT NOT NULL, reply_to TEXT, ts BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS group_messages_by_group ON group_messages (group_id, ts)",
    "CREATE TABLE IF NOT EXISTS qa_rooms (room TEXT PRIMARY KEY, target_s INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS questions (
        id TEXT PRIMARY KEY, room TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        text TEXT NOT NULL, asked_at BIGINT NOT NULL, votes INTEGER NOT NULL,
        status TEXT NOT NULL, answer TEXT, answered_by TEXT, answered_at BIGINT,
        on_stream INTEGER NOT NULL, overdue_flagged INTEGER NOT NULL,
        rev BIGINT NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS questions_by_room ON questions (room, asked_at)",
    """CREATE TABLE IF NOT EXISTS question_votes (
        question TEXT NOT NULL REFERENCES questions (id), user_id TEXT NOT NULL,
        PRIMARY KEY (question, user_id))""",
    """CREATE TABLE IF NOT EXISTS room_links (
        room TEXT NOT NULL, group_id TEXT NOT NULL, pos INTEGER NOT NULL,
        PRIMARY KEY (room, group_id))""",
    """CREATE TABLE IF NOT EXISTS mirrors (
        id TEXT PRIMARY KEY, room TEXT NOT NULL, question TEXT NOT NULL,
        group_id TEXT NOT NULL, UNIQUE (room, question, group_id))""",
    "CREATE INDEX IF NOT EXISTS mirrors_by_group ON mirrors (group_id)",
    """CREATE TABLE IF NOT EXISTS connectors (
        id TEXT PRIMARY KEY, shop TEXT NOT NULL, room TEXT NOT NULL, platform TEXT NOT NULL,
        url TEXT NOT NULL, secret TEXT NOT NULL, config TEXT NOT NULL,
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id BIGSERIAL PRIMARY KEY, connector_id TEXT NOT NULL, room TEXT NOT NULL,
        item TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,
        ts BIGINT NOT NULL)""",
)

MIGRATE_LOCK: Final = 7306202612  # one node creates the tables at a time
_QCOLS: Final = (
    "id, room, user_id, name, text, asked_at, votes, status, answer, answered_by, "
    "answered_at, on_stream, overdue_flagged, rev"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _question(r: asyncpg.Record, voters: set[str] | None = None) -> Question:
    return Question(
        id=r["id"],
        room=r["room"],
        user=r["user_id"],
        name=r["name"],
        text=r["text"],
        asked_at=r["asked_at"],
        votes=r["votes"],
        voters=voters if voters is not None else set(),
        status=r["status"],
        answer=r["answer"],
        answered_by=orjson.loads(r["answered_by"]) if r["answered_by"] else None,
        answered_at=r["answered_at"],
        on_stream=bool(r["on_stream"]),
        overdue_flagged=bool(r["overdue_flagged"]),
        rev=r["rev"],
    )


def _group(r: asyncpg.Record) -> Group:
    return Group(r["id"], r["shop"], r["tier"], r["topic"], r["cap"], r["created_at"], r["title"])


def _connector(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "shop": r["shop"],
        "room": r["room"],
        "platform": r["platform"],
        "url": r["url"],
        "secret": r["secret"],
        "config": orjson.loads(r["config"]),
        "created_at": r["created_at"],
    }


def _tags(r: asyncpg.Record) -> Tags:
    return Tags(orjson.loads(r["bought"]), bool(r["big_customer"]), r["source"], r["invited_by"])


async def _upsert_tags(c: asyncpg.Connection, shop: str, user: str, t: Tags) -> None:
    await c.execute(
        "INSERT INTO member_tags VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (shop, user_id) DO "
        "UPDATE SET bought=excluded.bought, big_customer=excluded.big_customer, "
        "source=excluded.source, invited_by=excluded.invited_by",
        shop, user, _dumps(t.bought), int(t.big_customer), t.source, t.invited_by,
    )


async def _insert_group(c: asyncpg.Connection, g: Group) -> None:
    await c.execute(
        "INSERT INTO groups VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (id) DO NOTHING",
        g.id, g.shop, g.tier, g.topic, g.title, g.cap, g.created_at,
    )


class PgCommunityStore(PgStore):
    """`CommunityStore` over an asyncpg pool (given, or opened from a DSN by `start`)."""

    SCHEMA = SCHEMA
    MIGRATE_LOCK = MIGRATE_LOCK

    # -- groups -----------------------------------------------------------------------
    async def create_group(self, group: Group) -> None:
        async with self.pool.acquire() as c:
            await _insert_group(c, group)

    async def add_member(
        self, group: Group, member: Member, created: Group | None, tags: Tags | None, shop: str
    ) -> None:
        """Commit a placement the domain chose, if it still holds for the whole cluster.

        Under a lock on the family (shop, tier, topic): the user is in none of its groups,
        the group has room and did not remove them, and a new spill-over group is made only
        when every sibling is full. Otherwise `Stale`: the adapter reloads and places again.
        """
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                f"family|{group.shop}|{group.tier}|{group.topic.casefold()}",
            )
            family = await c.fetch(
                "SELECT g.id, g.cap, (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id)"
                " AS n, EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id AND "
                "m.user_id = $4) AS here, EXISTS (SELECT 1 FROM group_removed r WHERE "
                "r.group_id = g.id AND r.user_id = $4) AS out FROM groups g "
                "WHERE g.shop = $1 AND g.tier = $2 AND lower(g.topic) = lower($3)",
                group.shop, group.tier, group.topic, member.user,
            )
            if any(r["here"] for r in family):
                raise Stale("conflict", "already a member of this family of groups")
            if created is not None:
                if any(r["n"] < r["cap"] and not r["out"] for r in family):
                    raise Stale("conflict", "a sibling group still has room")
                await _insert_group(c, created)
            else:
                row = next((r for r in family if r["id"] == group.id), None)
                if row is None:
                    raise Stale("not_found", "no such group")
                if row["out"]:
                    raise Stale("forbidden", "you were removed from this group")
                if row["n"] >= row["cap"]:
                    raise Stale("conflict", "the group is full")
            await c.execute(
                "INSERT INTO group_members VALUES ($1,$2,$3,$4,$5)",
                group.id, member.user, member.name, member.role, member.joined_at,
            )
            if tags is not None:
                await _upsert_tags(c, shop, member.user, tags)

    async def remove_member(
        self, group_id: str, member: Member, now_ms: int, removed: bool
    ) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "DELETE FROM group_members WHERE group_id=$1 AND user_id=$2", group_id, member.user
            )
            await c.execute(
                "INSERT INTO group_exits VALUES ($1,$2,$3,$4,$5)",
                group_id, member.user, member.joined_at, now_ms, int(removed),
            )
            if removed:
                await c.execute(
                    "INSERT INTO group_removed VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                    group_id, member.user, now_ms,
                )

    async def save_tags(self, shop: str, user: str, tags: Tags) -> None:
        async with self.pool.acquire() as c:
            await _upsert_tags(c, shop, user, tags)

    async def add_notice(self, group_id: str, kind: str, text: str, ts: int,
                         cap: tuple[int, int, int] | None = None) -> bool:
        """Keep a notice; with `cap` = (week start, end, cap), only while the group had fewer
        than `cap` notices that week, counted under a lock on the group, so two nodes posting
        the last allowed notice at once cannot both pass (False: refused)."""
        async with self.pool.acquire() as c, c.transaction():
            if cap is not None:
                await c.execute("SELECT pg_advisory_xact_lock(hashtext('notice:' || $1))",
                                group_id)
                used = await c.fetchval(
                    "SELECT COUNT(*) FROM group_notices WHERE group_id=$1 AND ts>=$2 AND ts<$3",
                    group_id, cap[0], cap[1],
                )
                if used >= cap[2]:
                    return False
            await c.execute(
                "INSERT INTO group_notices (group_id, kind, text, ts) VALUES ($1,$2,$3,$4)",
                group_id, kind, text, ts,
            )
            return True

    async def add_message(
        self, group_id: str, msg: dict[str, Any], *, answered: Question | None = None
    ) -> bool:
        """Keep a group message and, in the same transaction, the answer it gives if the
        question is still open; returns whether the answer was kept (first answer wins)."""
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "INSERT INTO group_messages (id, group_id, user_id, name, text, reply_to, ts) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (id) DO NOTHING",
                msg["id"], group_id, msg["user"], msg["name"], msg["text"], msg.get("reply_to"),
                msg["ts"],
            )
            if answered is None:
                return False
            rev = await self._close(c, answered)
            if rev is None:
                return False
            answered.rev = rev
            return True

    async def set_answer_target(self, room: str, target_s: int) -> None:
        async with self.pool.acquire() as c:
            await c.execute(
                "INSERT INTO qa_rooms VALUES ($1,$2) ON CONFLICT (room) DO UPDATE "
                "SET target_s=excluded.target_s",
                room, target_s,
            )

    # -- questions --------------------------------------------------------------------
    async def save_question(self, q: Question, copies: list[Copy] | None = None) -> None:
        """Insert a new question with its copies; for a question already stored only the
        copies are added (its state changes through the guarded writes below, never by
        overwriting the row with a node's possibly older copy)."""
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                f"INSERT INTO questions ({_QCOLS}) VALUES "
                "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,0) ON CONFLICT (id) DO NOTHING",
                q.id, q.room, q.user, q.name, q.text, q.asked_at, q.votes, q.status, q.answer,
                _dumps(q.answered_by) if q.answered_by else None, q.answered_at,
                int(q.on_stream), int(q.overdue_flagged),
            )
            if q.voters:
                await c.executemany(
                    "INSERT INTO question_votes VALUES ($1,$2) ON CONFLICT DO NOTHING",
                    [(q.id, u) for u in sorted(q.voters)],
                )
            if copies:
                await c.executemany(
                    "INSERT INTO mirrors VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
                    [(x.id, x.room, x.question, x.group) for x in copies],
                )

    async def upvote(self, q: Question, user: str) -> Question:
        """One vote per user per question across the cluster; returns the committed row."""
        async with self.pool.acquire() as c, c.transaction():
            row = await c.fetchrow(f"SELECT {_QCOLS} FROM questions WHERE id=$1 FOR UPDATE", q.id)
            if row is None:
                raise Stale("not_found", "no such question in this room")
            if row["status"] != "open":
                raise Stale("conflict", f"question is {row['status']}", _question(row))
            inserted = await c.fetchval(
                "INSERT INTO question_votes VALUES ($1,$2) ON CONFLICT DO NOTHING RETURNING 1",
                q.id, user,
            )
            if inserted is None:
                raise Stale("conflict", "already upvoted", _question(row, {user}))
            row = await c.fetchrow(
                f"UPDATE questions SET votes=votes+1, rev=rev+1 WHERE id=$1 RETURNING {_QCOLS}",
                q.id,
            )
            return _question(row, {user})

    async def _close(self, c: asyncpg.Connection, q: Question) -> int | None:
        """Answer or dismiss in SQL if the row is still open; the new rev, or None."""
        rev: int | None = await c.fetchval(
            "UPDATE questions SET status=$2, answer=$3, answered_by=$4, answered_at=$5, "
            "on_stream=$6, rev=rev+1 WHERE id=$1 AND status='open' RETURNING rev",
            q.id, q.status, q.answer, _dumps(q.answered_by) if q.answered_by else None,
            q.answered_at, int(q.on_stream),
        )
        return rev

    async def close_question(self, q: Question) -> Question:
        """The first answer (or dismissal) wins across the cluster; a later one is `Stale`."""
        async with self.pool.acquire() as c, c.transaction():
            rev = await self._close(c, q)
            if rev is None:
                row = await c.fetchrow(f"SELECT {_QCOLS} FROM questions WHERE id=$1", q.id)
                if row is None:
                    raise Stale("not_found", "no such question in this room")
                raise Stale("conflict", f"question is already {row['status']}", _question(row))
            q.rev = rev
            return q

    async def flag_overdue(self, qs: list[Question]) -> list[Question]:
        """Flag the questions no node flagged yet; returns those (the others were done)."""
        if not qs:
            return []
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "UPDATE questions SET overdue_flagged=1, rev=rev+1 WHERE id = ANY($1::text[]) "
                "AND overdue_flagged=0 AND status='open' RETURNING id, rev",
                [q.id for q in qs],
            )
        revs = {r["id"]: r["rev"] for r in rows}
        out = []
        for q in qs:
            if q.id in revs:
                q.rev = revs[q.id]
                out.append(q)
        return out

    async def save_links(self, room: str, group_ids: list[str]) -> None:
        async with self.pool.acquire() as c:
            await c.executemany(
                "INSERT INTO room_links VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                [(room, gid, pos) for pos, gid in enumerate(group_ids)],
            )

    # -- connectors -------------------------------------------------------------------
    async def save_connector(self, conn: dict[str, Any]) -> None:
        async with self.pool.acquire() as c:
            await c.execute(
                "INSERT INTO connectors VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                conn["id"], conn["shop"], conn["room"], conn["platform"], conn["url"],
                conn["secret"], _dumps(conn.get("config", {})), conn["created_at"],
            )

    async def add_dead_letter(
        self, connector_id: str, room: str, item: dict[str, Any], error: str, attempts: int, ts: int
    ) -> int:
        async with self.pool.acquire() as c:
            return int(
                await c.fetchval(
                    "INSERT INTO dead_letters (connector_id, room, item, error, attempts, ts) "
                    "VALUES ($1,$2,$3,$4,$5,$6) RETURNING id",
                    connector_id, room, _dumps(item), error, attempts, ts,
                )
            )

    # -- reads ------------------------------------------------------------------------
    async def recent_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT id, user_id, name, text, reply_to, ts FROM group_messages "
                "WHERE group_id=$1 ORDER BY ts DESC, n DESC LIMIT $2",
                group_id, limit,
            )
        return [
            {"id": r[0], "user": r[1], "name": r[2], "text": r[3], "reply_to": r[4], "ts": r[5]}
            for r in reversed(rows)
        ]

    async def dead_letters(self, connector_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, connector_id, room, item, error, attempts, ts FROM dead_letters"
        args: list[Any] = []
        if connector_id is not None:
            sql += " WHERE connector_id=$1"
            args.append(connector_id)
        async with self.pool.acquire() as c:
            rows = await c.fetch(sql + " ORDER BY id", *args)
        return [dead_letter_row(r) for r in rows]

    async def exits(self, group_id: str) -> int:
        async with self.pool.acquire() as c:
            return int(
                await c.fetchval("SELECT COUNT(*) FROM group_exits WHERE group_id=$1", group_id)
            )

    # -- one entity, for a node catching up -----------------------------------------------
    async def load_question(self, qid: str) -> tuple[Question, list[Copy]] | None:
        """A question with all its voters and copies, as committed."""
        async with self.pool.acquire() as c:
            row = await c.fetchrow(f"SELECT {_QCOLS} FROM questions WHERE id=$1", qid)
            if row is None:
                return None
            voters = {
                r[0]
                for r in await c.fetch("SELECT user_id FROM question_votes WHERE question=$1", qid)
            }
            copies = [
                Copy(r[0], r[3], r[1], r[2])
                for r in await c.fetch(
                    "SELECT id, room, question, group_id FROM mirrors WHERE question=$1", qid
                )
            ]
        return _question(row, voters), copies

    async def question_of_copy(self, copy_id: str) -> str | None:
        async with self.pool.acquire() as c:
            qid: str | None = await c.fetchval("SELECT question FROM mirrors WHERE id=$1", copy_id)
            return qid

    async def load_group(self, gid: str) -> Group | None:
        """A group with its members, removals and recent notices, as committed."""
        async with self.pool.acquire() as c:
            row = await c.fetchrow("SELECT * FROM groups WHERE id=$1", gid)
            if row is None:
                return None
            return await self._fill_group(c, _group(row))

    async def load_family(self, shop: str, tier: str, topic: str) -> list[Group]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT * FROM groups WHERE shop=$1 AND tier=$2 AND lower(topic)=lower($3)",
                shop, tier, topic,
            )
            return [await self._fill_group(c, _group(r)) for r in rows]

    @staticmethod
    async def _fill_group(c: asyncpg.Connection, g: Group) -> Group:
        for r in await c.fetch(
            "SELECT user_id, name, role, joined_at FROM group_members WHERE group_id=$1", g.id
        ):
            g.members[r[0]] = Member(r[0], r[1], r[2], r[3])
        g.removed = {
            r[0] for r in await c.fetch("SELECT user_id FROM group_removed WHERE group_id=$1", g.id)
        }
        g.notices_at = [
            r[0]
            for r in await c.fetch(
                "SELECT ts FROM group_notices WHERE group_id=$1 ORDER BY ts", g.id
            )
        ]
        return g

    async def load_links(self, room: str) -> list[str]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT group_id FROM room_links WHERE room=$1 ORDER BY pos, group_id", room
            )
        return [r[0] for r in rows]

    async def load_connector(self, cid: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow("SELECT * FROM connectors WHERE id=$1", cid)
        return _connector(row) if row is not None else None

    async def merge_tags(self, shop: str, user: str,
                         merge: Callable[[Tags | None], Tags]) -> Tags:
        """Read, merge (`merge` gets the stored tags) and write a member's tags under a lock
        on (shop, user): two nodes tagging one member at once both keep their additions."""
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('tags:' || $1 || '|' || $2))",
                            shop, user)
            row = await c.fetchrow(
                "SELECT * FROM member_tags WHERE shop=$1 AND user_id=$2", shop, user
            )
            tags = merge(_tags(row) if row is not None else None)
            await _upsert_tags(c, shop, user, tags)
            return tags

    async def load_tags(self, shop: str, user: str) -> Tags | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                "SELECT * FROM member_tags WHERE shop=$1 AND user_id=$2", shop, user
            )
        return _tags(row) if row is not None else None

    async def load_target(self, room: str) -> int | None:
        async with self.pool.acquire() as c:
            target: int | None = await c.fetchval(
                "SELECT target_s FROM qa_rooms WHERE room=$1", room
            )
            return target

    # -- start-up ---------------------------------------------------------------------
    async def load(
        self,
        directory: Directory,
        boards: dict[str, QuestionBoard],
        mirror: Mirror,
        default_target_s: int,
    ) -> list[dict[str, Any]]:
        """Rebuild the domain from PostgreSQL (at start-up); returns the connectors."""
        async with self.pool.acquire() as c, c.transaction(isolation="repeatable_read"):
            for r in await c.fetch("SELECT * FROM groups ORDER BY created_at, id"):
                directory.groups[r["id"]] = _group(r)
            for r in await c.fetch(
                "SELECT group_id, user_id, name, role, joined_at FROM group_members"
            ):
                if r[0] in directory.groups:
                    directory.groups[r[0]].members[r[1]] = Member(r[1], r[2], r[3], r[4])
            for r in await c.fetch("SELECT group_id, user_id FROM group_removed"):
                if r[0] in directory.groups:
                    directory.groups[r[0]].removed.add(r[1])
            for r in await c.fetch("SELECT group_id, ts FROM group_notices ORDER BY ts"):
                if r[0] in directory.groups:
                    directory.groups[r[0]].notices_at.append(r[1])
            for r in await c.fetch("SELECT * FROM member_tags"):
                directory.tags[(r["shop"], r["user_id"])] = _tags(r)
            targets = {r[0]: r[1] for r in await c.fetch("SELECT room, target_s FROM qa_rooms")}
            voters: dict[str, set[str]] = {}
            for r in await c.fetch("SELECT question, user_id FROM question_votes"):
                voters.setdefault(r[0], set()).add(r[1])
            for r in await c.fetch(f"SELECT {_QCOLS} FROM questions ORDER BY asked_at, id"):
                room = r["room"]
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=targets.get(room, default_target_s))
                boards[room].add(_question(r, voters.get(r["id"], set())))
            for room, target in targets.items():
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=target)
            for r in await c.fetch("SELECT room, group_id FROM room_links ORDER BY room, pos"):
                mirror.links.setdefault(r[0], []).append(r[1])
            for r in await c.fetch("SELECT id, room, question, group_id FROM mirrors"):
                mirror.add_copy(Copy(r[0], r[3], r[1], r[2]))
            return [_connector(r) for r in await c.fetch("SELECT * FROM connectors ORDER BY id")]
