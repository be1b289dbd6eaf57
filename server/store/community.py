"""Durable community state: groups, members, tags, questions and votes, mirrors, room links,
group messages, notices, connectors and dead letters.

Why here and not in the domain: the domain keeps the live state in memory (microsecond rules);
this store makes every change durable (`await` returns after the commit) and rebuilds the
domain objects on start. The writes two nodes of a cluster can race are guarded in SQL, the
same SQL on SQLite (where memory and record always agree, so the guards pass) and PostgreSQL:

- one vote per user and question (`question_votes`); the count is read back from the row;
- `questions.rev` is bumped by every update and carried in the change notices
  (server/cluster/notices.py), so a node applies a question's updates in order;
- answers and dismissals are `UPDATE ... WHERE status = 'open'`: the first wins, a late one
  raises `Stale` with the committed row; overdue flags are set once (`WHERE overdue_flagged
  = 0 RETURNING`), so one node's timer announces each;
- a join locks the group family (shop, tier, topic) and checks in SQL the member's earlier
  membership, the removals and the capacity; spill-over makes a new group only when no
  sibling has room. A refused join raises `Stale` and the adapter places the member again.

The reads of one entity (`load_question`, `load_group`, ...) are how a node catches up with
what another node committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import orjson

from client_sdk.protocol import Code
from server.domain.community import Directory, Group, Member, Tags
from server.domain.mirror import Copy, Mirror
from server.domain.qa import Question, QuestionBoard
from server.store.db import Body, Db, Lock, Many, Q, Row, X, in_list, steps

_QCOLS: Final = ("id, room, user_id, name, text, asked_at, votes, status, answer, answered_by,"
                 " answered_at, on_stream, overdue_flagged, rev")


class Stale(Exception):
    """A guarded write refused because another node changed the row first.

    `code`/`message` are what the client is told when the refusal is final; `question` is
    the row as committed, for the adapter to adopt."""

    def __init__(self, code: str, message: str, question: Question | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.question = question


class CommunityStore(Protocol):
    """What the Community adapter needs. Every write returns after it committed; the guarded
    ones (`add_member`, `upvote`, `close_question`) may raise `Stale`."""

    shared: bool  # other nodes write it too: what this node does not know may exist

    async def create_group(self, group: Group) -> None: ...
    async def add_member(self, group: Group, member: Member, created: Group | None,
                         tags: Tags | None, shop: str) -> None: ...
    async def remove_member(self, group_id: str, member: Member, now_ms: int,
                            removed: bool) -> None: ...
    async def merge_tags(self, shop: str, user: str,
                         merge: Callable[[Tags | None], Tags]) -> Tags: ...
    async def add_notice(self, group_id: str, kind: str, text: str, ts: int,
                         cap: tuple[int, int, int] | None = None,
                         fields: dict[str, Any] | None = None) -> bool: ...
    async def add_message(self, group_id: str, msg: dict[str, Any], *,
                          answered: Question | None = None) -> bool: ...
    async def set_answer_target(self, room: str, target_s: int) -> None: ...
    async def save_question(self, q: Question, copies: list[Copy] | None = None) -> None: ...
    async def upvote(self, q: Question, user: str) -> Question: ...
    async def close_question(self, q: Question) -> Question: ...
    async def flag_overdue(self, qs: list[Question]) -> list[Question]: ...
    async def save_links(self, room: str, group_ids: list[str]) -> None: ...
    async def save_connector(self, conn: dict[str, Any]) -> None: ...
    async def add_dead_letter(self, connector_id: str, room: str, item: dict[str, Any],
                              error: str, attempts: int, ts: int) -> int: ...
    async def recent_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]: ...
    async def dead_letters(self, connector_id: str | None = None) -> list[dict[str, Any]]: ...
    async def exits(self, group_id: str) -> int: ...
    async def load(self, directory: Directory, boards: dict[str, QuestionBoard], mirror: Mirror,
                   default_target_s: int) -> list[dict[str, Any]]: ...
    async def load_question(self, qid: str) -> tuple[Question, list[Copy]] | None: ...
    async def question_of_copy(self, copy_id: str) -> str | None: ...
    async def load_group(self, gid: str) -> Group | None: ...
    async def load_family(self, shop: str, tier: str, topic: str) -> list[Group]: ...
    async def load_links(self, room: str) -> list[str]: ...
    async def load_connector(self, cid: str) -> dict[str, Any] | None: ...
    async def load_tags(self, shop: str, user: str) -> Tags | None: ...
    async def load_target(self, room: str) -> int | None: ...


class SqlCommunityStore:
    """`CommunityStore` over a `Db`."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.shared = db.shared

    # -- groups ------------------------------------------------------------------------------
    async def create_group(self, group: Group) -> None:
        await self.db.write(lambda: _insert_group(group))

    async def add_member(self, group: Group, member: Member, created: Group | None,
                         tags: Tags | None, shop: str) -> None:
        """Commit a placement the domain chose, if it holds for the whole record: the user is
        in none of the family's groups, the group has room and did not remove them, and a new
        spill-over group is made only when every sibling is full; else `Stale`."""
        g, m = group, member

        def body() -> Body[None]:
            yield Lock(f"family|{g.shop}|{g.tier}|{g.topic.casefold()}")
            family = yield Q(
                "SELECT g.id, g.cap, (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id)"
                " AS n, EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id AND"
                " m.user_id = ?4) AS here, EXISTS (SELECT 1 FROM group_removed r WHERE"
                " r.group_id = g.id AND r.user_id = ?4) AS out FROM groups g"
                " WHERE g.shop = ?1 AND g.tier = ?2 AND lower(g.topic) = lower(?3)",
                g.shop, g.tier, g.topic, m.user)
            if any(r["here"] for r in family):
                raise Stale(Code.CONFLICT, "already a member of this family of groups")
            if created is not None:
                if any(r["n"] < r["cap"] and not r["out"] for r in family):
                    raise Stale(Code.CONFLICT, "a sibling group still has room")
                yield from _insert_group(created)
            else:
                row = next((r for r in family if r["id"] == g.id), None)
                if row is None:
                    raise Stale(Code.NOT_FOUND, "no such group")
                if row["out"]:
                    raise Stale(Code.FORBIDDEN, "you were removed from this group")
                if row["n"] >= row["cap"]:
                    raise Stale(Code.CONFLICT, "the group is full")
            yield X("INSERT INTO group_members (group_id, user_id, name, role, joined_at)"
                    " VALUES (?, ?, ?, ?, ?)", g.id, m.user, m.name, m.role, m.joined_at)
            if tags is not None:
                yield from _upsert_tags(shop, m.user, tags)

        await self.db.write(body)

    async def remove_member(self, group_id: str, member: Member, now_ms: int,
                            removed: bool) -> None:
        m = member

        await self.db.write(steps(
            X("DELETE FROM group_members WHERE group_id = ? AND user_id = ?", group_id, m.user),
            X("INSERT INTO group_exits (group_id, user_id, joined_at, left_at, removed)"
              " VALUES (?, ?, ?, ?, ?)", group_id, m.user, m.joined_at, now_ms, int(removed)),
            *([X("INSERT INTO group_removed (group_id, user_id, removed_at) VALUES (?, ?, ?)"
                 " ON CONFLICT DO NOTHING", group_id, m.user, now_ms)] if removed else [])))

    async def merge_tags(self, shop: str, user: str,
                         merge: Callable[[Tags | None], Tags]) -> Tags:
        """Read, merge (`merge` gets the stored tags) and write a member's tags under a lock
        on (shop, user): two nodes tagging one member at once both keep their additions."""

        def body() -> Body[Tags]:
            yield Lock(f"tags|{shop}|{user}")
            row = yield Q("SELECT * FROM member_tags WHERE shop = ? AND user_id = ?", shop, user)
            tags = merge(_tags(row[0]) if row else None)
            yield from _upsert_tags(shop, user, tags)
            return tags

        return await self.db.write(body)

    async def add_notice(self, group_id: str, kind: str, text: str, ts: int,
                         cap: tuple[int, int, int] | None = None,
                         fields: dict[str, Any] | None = None) -> bool:
        """Keep a notice (and `fields`, the event the group heard); with `cap` = (week start,
        end, cap), only while the group had fewer than `cap` notices that week, counted under
        a lock on the group (False: refused)."""
        heard = None if fields is None else _dumps(fields)

        def body() -> Body[bool]:
            if cap is not None:
                yield Lock(f"notice|{group_id}")
                used = yield Q("SELECT COUNT(*) AS n FROM group_notices WHERE group_id = ?"
                               " AND ts >= ? AND ts < ?", group_id, cap[0], cap[1])
                if used[0]["n"] >= cap[2]:
                    return False
            yield X("INSERT INTO group_notices (group_id, kind, text, ts, fields)"
                    " VALUES (?, ?, ?, ?, ?)", group_id, kind, text, ts, heard)
            return True

        return await self.db.write(body)

    async def add_message(self, group_id: str, msg: dict[str, Any], *,
                          answered: Question | None = None) -> bool:
        """Keep a group message and, in the same transaction, the answer it gives if the
        question is still open; whether the answer was kept (the first answer wins)."""

        def body() -> Body[int | None]:
            yield X("INSERT INTO group_messages (id, group_id, user_id, name, text, reply_to, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING", msg["id"],
                    group_id, msg["user"], msg["name"], msg["text"], msg.get("reply_to"), msg["ts"])
            return None if answered is None else (yield from _close(answered))

        rev = await self.db.write(body)
        if answered is None or rev is None:
            return False
        answered.rev = rev
        return True

    async def set_answer_target(self, room: str, target_s: int) -> None:
        await self.db.write(steps(
            X("INSERT INTO qa_rooms (room, target_s) VALUES (?, ?)"
              " ON CONFLICT (room) DO UPDATE SET target_s = excluded.target_s", room, target_s)))

    # -- questions ---------------------------------------------------------------------------
    async def save_question(self, q: Question, copies: list[Copy] | None = None) -> None:
        """Insert a new question with its copies; for a question already stored only the
        copies are added (its state changes through the guarded writes below, never by
        overwriting the row with a node's possibly older copy)."""
        row = (q.id, q.room, q.user, q.name, q.text, q.asked_at, q.votes, q.status, q.answer,
               _dumps(q.answered_by) if q.answered_by else None, q.answered_at,
               int(q.on_stream), int(q.overdue_flagged))
        voters = [(q.id, u) for u in sorted(q.voters)]
        made = [(x.id, x.room, x.question, x.group) for x in copies or ()]

        await self.db.write(steps(
            X(f"INSERT INTO questions ({_QCOLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
              " ?, ?, 0) ON CONFLICT (id) DO NOTHING", *row),
            Many("INSERT INTO question_votes (question, user_id) VALUES (?, ?)"
                 " ON CONFLICT DO NOTHING", voters),
            Many("INSERT INTO mirrors (id, room, question, group_id) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT DO NOTHING", made)))

    async def upvote(self, q: Question, user: str) -> Question:
        """One vote per user per question; the row as committed (its count)."""
        qid = q.id

        def body() -> Body[Question]:
            row = yield Q(f"SELECT {_QCOLS} FROM questions WHERE id = ? FOR UPDATE", qid)
            if not row:
                raise Stale(Code.NOT_FOUND, "no such question in this room")
            if row[0]["status"] != "open":
                raise Stale(Code.CONFLICT, f"question is {row[0]['status']}", _question(row[0]))
            if not (yield Q("INSERT INTO question_votes (question, user_id) VALUES (?, ?)"
                            " ON CONFLICT DO NOTHING RETURNING 1", qid, user)):
                raise Stale(Code.CONFLICT, "already upvoted", _question(row[0], {user}))
            row = yield Q(f"UPDATE questions SET votes = votes + 1, rev = rev + 1 WHERE id = ?"
                          f" RETURNING {_QCOLS}", qid)
            return _question(row[0], {user})

        return await self.db.write(body)

    async def close_question(self, q: Question) -> Question:
        """The first answer (or dismissal) wins; a later one is `Stale`."""

        def body() -> Body[int]:
            rev = yield from _close(q)
            if rev is None:
                row = yield Q(f"SELECT {_QCOLS} FROM questions WHERE id = ?", q.id)
                if not row:
                    raise Stale(Code.NOT_FOUND, "no such question in this room")
                raise Stale(Code.CONFLICT, f"question is already {row[0]['status']}",
                            _question(row[0]))
            return rev

        q.rev = await self.db.write(body)
        return q

    async def flag_overdue(self, qs: list[Question]) -> list[Question]:
        """Flag the questions no node flagged yet; returns those (the others were done)."""
        if not qs:
            return []
        ids = [q.id for q in qs]

        def body() -> Body[list[Row]]:
            rows: list[Row] = yield Q(
                f"UPDATE questions SET overdue_flagged = 1, rev = rev + 1 WHERE id IN"
                f" {in_list(len(ids))} AND overdue_flagged = 0 AND status = 'open'"
                " RETURNING id, rev", *ids)
            return rows

        revs = {r["id"]: r["rev"] for r in await self.db.write(body)}
        for q in qs:
            q.rev = revs.get(q.id, q.rev)
        return [q for q in qs if q.id in revs]

    async def save_links(self, room: str, group_ids: list[str]) -> None:
        rows = [(room, gid, pos) for pos, gid in enumerate(group_ids)]

        await self.db.write(steps(
            Many("INSERT INTO room_links (room, group_id, pos) VALUES (?, ?, ?)"
                 " ON CONFLICT DO NOTHING", rows)))

    # -- connectors --------------------------------------------------------------------------
    async def save_connector(self, conn: dict[str, Any]) -> None:
        row = (conn["id"], conn["shop"], conn["room"], conn["platform"], conn["url"],
               conn["secret"], _dumps(conn.get("config", {})), conn["created_at"])

        await self.db.write(steps(
            X("INSERT INTO connectors (id, shop, room, platform, url, secret, config,"
              " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", *row)))

    async def add_dead_letter(self, connector_id: str, room: str, item: dict[str, Any],
                              error: str, attempts: int, ts: int) -> int:
        def body() -> Body[int]:
            r = yield Q("INSERT INTO dead_letters (connector_id, room, item, error, attempts, ts)"
                        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id", connector_id, room,
                        _dumps(item), error, attempts, ts)
            return int(r[0]["id"])

        return await self.db.write(body)

    # -- reads -------------------------------------------------------------------------------
    async def recent_messages(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.db.rows("SELECT id, user_id, name, text, reply_to, ts FROM group_messages"
                                  " WHERE group_id = ? ORDER BY ts DESC, rowid DESC LIMIT ?",
                                  group_id, limit)
        return [{"id": r[0], "user": r[1], "name": r[2], "text": r[3], "reply_to": r[4],
                 "ts": r[5]} for r in reversed(rows)]

    async def dead_letters(self, connector_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, connector_id, room, item, error, attempts, ts FROM dead_letters"
        rows = await (self.db.rows(sql + " ORDER BY id") if connector_id is None else
                      self.db.rows(sql + " WHERE connector_id = ? ORDER BY id", connector_id))
        return [{"id": r[0], "connector": r[1], "room": r[2], "item": orjson.loads(r[3]),
                 "error": r[4], "attempts": r[5], "ts": r[6]} for r in rows]

    async def exits(self, group_id: str) -> int:
        rows = await self.db.rows("SELECT COUNT(*) AS n FROM group_exits WHERE group_id = ?",
                                  group_id)
        return int(rows[0]["n"])

    async def load(self, directory: Directory, boards: dict[str, QuestionBoard], mirror: Mirror,
                   default_target_s: int) -> list[dict[str, Any]]:
        """Rebuild the domain from the record (at start-up); returns the connectors."""

        def body() -> Body[list[dict[str, Any]]]:
            for r in (yield Q("SELECT * FROM groups ORDER BY created_at, id")):
                directory.groups[r["id"]] = _group(r)
            for r in (yield Q("SELECT group_id, user_id, name, role, joined_at FROM group_members")):
                if r[0] in directory.groups:
                    directory.groups[r[0]].members[r[1]] = Member(r[1], r[2], r[3], r[4])
            for r in (yield Q("SELECT group_id, user_id FROM group_removed")):
                if r[0] in directory.groups:
                    directory.groups[r[0]].removed.add(r[1])
            for r in (yield Q(f"SELECT {_NOTICE} FROM group_notices ORDER BY ts, id")):
                if r[0] in directory.groups:
                    _add_notice(directory.groups[r[0]], r)
            for r in (yield Q("SELECT * FROM member_tags")):
                directory.tags[(r["shop"], r["user_id"])] = _tags(r)
            targets = {r[0]: r[1] for r in (yield Q("SELECT room, target_s FROM qa_rooms"))}
            voters: dict[str, set[str]] = {}
            for r in (yield Q("SELECT question, user_id FROM question_votes")):
                voters.setdefault(r[0], set()).add(r[1])
            for r in (yield Q(f"SELECT {_QCOLS} FROM questions ORDER BY asked_at, id")):
                room = r["room"]
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=targets.get(room, default_target_s))
                boards[room].add(_question(r, voters.get(r["id"], set())))
            for room, target in targets.items():
                if room not in boards:
                    boards[room] = QuestionBoard(room, target_s=target)
            for r in (yield Q("SELECT room, group_id FROM room_links ORDER BY room, pos")):
                mirror.links.setdefault(r[0], []).append(r[1])
            for r in (yield Q("SELECT id, room, question, group_id FROM mirrors")):
                mirror.add_copy(Copy(r[0], r[3], r[1], r[2]))
            return [_connector(r) for r in (yield Q("SELECT * FROM connectors ORDER BY id"))]

        return await self.db.read(body)

    # -- one entity, for a node catching up --------------------------------------------------
    async def load_question(self, qid: str) -> tuple[Question, list[Copy]] | None:
        """A question with all its voters and copies, as committed."""

        def body() -> Body[tuple[Question, list[Copy]] | None]:
            row = yield Q(f"SELECT {_QCOLS} FROM questions WHERE id = ?", qid)
            if not row:
                return None
            voters = {r[0] for r in (yield Q("SELECT user_id FROM question_votes"
                                             " WHERE question = ?", qid))}
            copies = [Copy(r[0], r[3], r[1], r[2]) for r in (yield Q(
                "SELECT id, room, question, group_id FROM mirrors WHERE question = ?", qid))]
            return _question(row[0], voters), copies

        return await self.db.read(body)

    async def question_of_copy(self, copy_id: str) -> str | None:
        rows = await self.db.rows("SELECT question FROM mirrors WHERE id = ?", copy_id)
        return str(rows[0][0]) if rows else None

    async def load_group(self, gid: str) -> Group | None:
        """A group with its members, removals and notices, as committed."""

        def body() -> Body[Group | None]:
            row = yield Q("SELECT * FROM groups WHERE id = ?", gid)
            return (yield from _fill_group(_group(row[0]))) if row else None

        return await self.db.read(body)

    async def load_family(self, shop: str, tier: str, topic: str) -> list[Group]:
        def body() -> Body[list[Group]]:
            groups = [_group(r) for r in (yield Q("SELECT * FROM groups WHERE shop = ? AND tier = ?"
                                                  " AND lower(topic) = lower(?)", shop, tier, topic))]
            for g in groups:
                yield from _fill_group(g)
            return groups

        return await self.db.read(body)

    async def load_links(self, room: str) -> list[str]:
        rows = await self.db.rows("SELECT group_id FROM room_links WHERE room = ?"
                                  " ORDER BY pos, group_id", room)
        return [r[0] for r in rows]

    async def load_connector(self, cid: str) -> dict[str, Any] | None:
        rows = await self.db.rows("SELECT * FROM connectors WHERE id = ?", cid)
        return _connector(rows[0]) if rows else None

    async def load_tags(self, shop: str, user: str) -> Tags | None:
        rows = await self.db.rows("SELECT * FROM member_tags WHERE shop = ? AND user_id = ?",
                                  shop, user)
        return _tags(rows[0]) if rows else None

    async def load_target(self, room: str) -> int | None:
        rows = await self.db.rows("SELECT target_s FROM qa_rooms WHERE room = ?", room)
        return int(rows[0][0]) if rows else None


def _close(q: Question) -> Body[int | None]:
    """Answer or dismiss in SQL if the row is still open; the new rev, or None."""
    r = yield Q("UPDATE questions SET status = ?, answer = ?, answered_by = ?, answered_at = ?,"
                " on_stream = ?, rev = rev + 1 WHERE id = ? AND status = 'open' RETURNING rev",
                q.status, q.answer, _dumps(q.answered_by) if q.answered_by else None,
                q.answered_at, int(q.on_stream), q.id)
    return int(r[0]["rev"]) if r else None


def _insert_group(g: Group) -> Body[None]:
    yield X("INSERT INTO groups (id, shop, tier, topic, title, cap, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            g.id, g.shop, g.tier, g.topic, g.title, g.cap, g.created_at)


def _upsert_tags(shop: str, user: str, t: Tags) -> Body[None]:
    yield X("INSERT INTO member_tags (shop, user_id, bought, big_customer, source, invited_by)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (shop, user_id) DO UPDATE SET"
            " bought = excluded.bought, big_customer = excluded.big_customer,"
            " source = excluded.source, invited_by = excluded.invited_by",
            shop, user, _dumps(t.bought), int(t.big_customer), t.source, t.invited_by)


def _fill_group(g: Group) -> Body[Group]:
    for r in (yield Q("SELECT user_id, name, role, joined_at FROM group_members"
                      " WHERE group_id = ?", g.id)):
        g.members[r[0]] = Member(r[0], r[1], r[2], r[3])
    g.removed = {r[0] for r in (yield Q("SELECT user_id FROM group_removed WHERE group_id = ?",
                                        g.id))}
    g.notices_at, g.recent_notices = [], []
    for r in (yield Q(f"SELECT {_NOTICE} FROM group_notices WHERE group_id = ? ORDER BY ts, id",
                      g.id)):
        _add_notice(g, r)
    return g


_NOTICE: Final = "group_id, ts, kind, text, fields"


def _add_notice(g: Group, r: Row) -> None:
    g.notices_at.append(r["ts"])
    heard = orjson.loads(r["fields"]) if r["fields"] else {
        "kind": r["kind"], "text": r["text"], "group": g.id, "ts": r["ts"]}
    g.remember_notice(heard)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _question(r: Row, voters: set[str] | None = None) -> Question:
    return Question(id=r["id"], room=r["room"], user=r["user_id"], name=r["name"], text=r["text"],
                    asked_at=r["asked_at"], votes=r["votes"], voters=voters or set(),
                    status=r["status"], answer=r["answer"],
                    answered_by=orjson.loads(r["answered_by"]) if r["answered_by"] else None,
                    answered_at=r["answered_at"], on_stream=bool(r["on_stream"]),
                    overdue_flagged=bool(r["overdue_flagged"]), rev=r["rev"])


def _group(r: Row) -> Group:
    return Group(r["id"], r["shop"], r["tier"], r["topic"], r["cap"], r["created_at"], r["title"])


def _connector(r: Row) -> dict[str, Any]:
    return {"id": r["id"], "shop": r["shop"], "room": r["room"], "platform": r["platform"],
            "url": r["url"], "secret": r["secret"], "config": orjson.loads(r["config"]),
            "created_at": r["created_at"]}


def _tags(r: Row) -> Tags:
    return Tags(orjson.loads(r["bought"]), bool(r["big_customer"]), r["source"], r["invited_by"])
