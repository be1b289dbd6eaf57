"""The SQL layer and the stores the feature suites do not cover, on both databases.

One suite, parametrised over a real SQLite file (group commit) and real PostgreSQL (a schema
of the test's own): a transaction body written once must give the same results on both, the
rooms and sanctions stores must round-trip, a migration must apply once and roll back whole,
and a room set up or a viewer banned through one node must be known to another that joins
later (PostgreSQL is shared by the nodes of a cluster; SQLite belongs to one process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.chatlog import ChatLog
from server.domain.room import Room
from server.rooms import Rooms
from server.sanctions import Sanctions
from server.store.chat import SqlChatStore
from server.store.db import Body, Db, Duplicate, Insert, Lock, Many, Next, Q, X, in_list
from server.store.rooms import SqlRoomStore, SqlSanctionStore
from server.store.schema import MIGRATIONS, Migration, migrate, version
from server.store.stores import open_db
from tests.conftest import scratch_database, scratch_schema


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "souk.sqlite3"
    return scratch_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
async def db(target: str | Path) -> AsyncIterator[Db]:
    opened = await open_db(target)
    yield opened
    await opened.close()


def nobody(ch: str, type: str, fields: dict[str, object], *, droppable: bool = False) -> None:
    """Events are not the subject here."""


# -- the SQL layer ------------------------------------------------------------------------------
async def test_one_body_runs_the_same_on_both(db: Db) -> None:
    def setup() -> Body[None]:
        yield X("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
        yield Many("INSERT INTO kv (k, v) VALUES (?, ?)", [("a", 1), ("b", 2)])
        yield Insert("kv", ("k", "v"), [(f"bulk{i}", i) for i in range(1200)])  # > one chunk

    await db.write(setup)

    def guarded(k: str, at_least: int) -> Body[list[int]]:
        yield Lock(f"kv|{k}")
        rows = yield Q("SELECT v FROM kv WHERE k = ? FOR UPDATE", k)
        taken = yield X("UPDATE kv SET v = v - ?1 WHERE k = ?2 AND v >= ?1", at_least, k)
        after = yield Q("UPDATE kv SET v = v + 10 WHERE k = ? RETURNING v", k)
        return [rows[0]["v"], taken, after[0]["v"]]

    assert await db.write(lambda: guarded("b", 2)) == [2, 1, 10]
    assert await db.write(lambda: guarded("a", 5)) == [1, 0, 11]  # the guard refused: 0 rows
    named = await db.rows("SELECT COUNT(*) AS n FROM kv WHERE k LIKE :p AND v >= :v",
                          {"p": "bulk%", "v": 600})
    assert named[0]["n"] == 600
    listed = await db.rows(f"SELECT k FROM kv WHERE k IN {in_list(3)} ORDER BY k", "a", "b", "zz")
    assert [r["k"] for r in listed] == ["a", "b"]


async def test_a_refused_row_is_a_duplicate_and_a_failed_body_leaves_nothing(db: Db) -> None:
    def setup() -> Body[None]:
        yield X("CREATE TABLE u (k TEXT PRIMARY KEY)")
        yield X("INSERT INTO u (k) VALUES ('x')")

    await db.write(setup)

    def insert_twice(catch: bool) -> Body[str]:
        yield X("INSERT INTO u (k) VALUES ('y')")
        try:
            yield X("INSERT INTO u (k) VALUES ('x')")
        except Duplicate:
            if catch:
                raise LookupError("known") from None
            raise
        return "unreachable"

    with pytest.raises(LookupError):
        await db.write(lambda: insert_twice(True))
    with pytest.raises(Duplicate):
        await db.write(lambda: insert_twice(False))
    assert [r["k"] for r in await db.rows("SELECT k FROM u ORDER BY k")] == ["x"]  # no 'y'


async def test_sequences_count_up_under_concurrent_writers(db: Db) -> None:
    def take() -> Body[int]:
        n: int = yield Next("poll_vote_rev")
        return n

    got = await asyncio.gather(*(db.write(take) for _ in range(50)))
    assert len(set(got)) == 50 and sorted(got) == list(range(min(got), min(got) + 50))


# -- migrations ---------------------------------------------------------------------------------
async def test_a_migration_applies_once_and_a_failing_one_not_at_all(db: Db) -> None:
    assert await version(db) == max(m.version for m in MIGRATIONS)
    nxt = max(m.version for m in MIGRATIONS) + 1
    added = Migration(nxt, "notes", ("CREATE TABLE notes (id {serial}, text TEXT NOT NULL)",
                                     "CREATE INDEX notes_text ON notes (text)"))
    assert await migrate(db, (*MIGRATIONS, added)) == [nxt]
    assert await migrate(db, (*MIGRATIONS, added)) == []

    def note() -> Body[int]:
        r = yield Q("INSERT INTO notes (text) VALUES ('hi') RETURNING id")
        return int(r[0]["id"])

    assert await db.write(note) < await db.write(note)  # {serial} numbers the rows
    broken = Migration(nxt + 1, "broken", ("CREATE TABLE half (id TEXT)",
                                           "CREATE TABLE half (id TEXT)"))
    with pytest.raises(Exception):  # noqa: B017 - whatever the database says
        await migrate(db, (*MIGRATIONS, added, broken))
    assert await version(db) == nxt
    assert await db.rows("SELECT 1 FROM notes") and not await db.rows(
        "SELECT 1 FROM schema_version WHERE version = ?", nxt + 1)


# -- rooms and sanctions ------------------------------------------------------------------------
async def test_rooms_and_sanctions_round_trip(db: Db) -> None:
    rooms, sanctions = SqlRoomStore(db), SqlSanctionStore(db)
    room = Room("r1", kind="room")
    room.title, room.shop, room.state = "茶 live", "shop1", "live"
    room.pinned = {"id": "p1", "title": "Tea", "price": 1000}
    await rooms.save(room)
    room.state, room.pinned = "ended", None
    await rooms.save(room)
    got = await rooms.room("r1")
    assert got is not None and (got.title, got.shop, got.state, got.pinned) == (
        "茶 live", "shop1", "ended", None)
    assert [r.id for r in await rooms.rooms()] == ["r1"] and await rooms.room("nope") is None

    await sanctions.save("room:r1", "troll", "ban", None, "m1", 1000)
    await sanctions.save("room:r1", "loud", "mute", 5000, "m1", 1000)
    await sanctions.save("room:r1", "loud", "mute", 9000, "m2", 2000)  # a longer mute replaces
    await sanctions.save("room:r1", "gone", "mute", 1500, "m1", 1000)
    assert sorted(await sanctions.load("room:r1", 3000)) == [("loud", "mute", 9000),
                                                            ("troll", "ban", None)]
    assert await sanctions.load("room:r2", 3000) == []
    # the record is a log: a lifting ends the sanction, a later one starts it again
    await sanctions.save("room:r1", "troll", "unban", None, "s1", 2500)
    await sanctions.save("room:r1", "loud", "unmute", None, "s1", 2500)
    assert await sanctions.load("room:r1", 3000) == []
    await sanctions.save("room:r1", "troll", "ban", None, "m2", 2600)
    assert await sanctions.load("room:r1", 3000) == [("troll", "ban", None)]
    # what staff list: whom (by the name kept with the sanction), who, when
    await sanctions.save("room:r1", "loud", "mute", 9000, "m1", 2700, name="小明")
    assert sorted((await sanctions.current("room:r1", 3000)), key=lambda x: x["user"]) == [
        {"user": "loud", "name": "小明", "kind": "mute", "until": 9000, "by": "m1", "at": 2700},
        {"user": "troll", "name": "", "kind": "ban", "until": None, "by": "m2", "at": 2600}]
    await sanctions.save("room:r1", "loud", "unmute", None, "s1", 2800)
    lifted = await db.rows("SELECT user_id, by_user, at FROM sanctions WHERE kind = 'unban'")
    assert [(r["user_id"], r["by_user"], r["at"]) for r in lifted] == [("troll", "s1", 2500)]
    # the room's staff, by their latest role
    await sanctions.save_staff("room:r1", "boss", "moderator", 1000)
    await sanctions.save_staff("room:r1", "boss", "streamer", 2000)
    assert await sanctions.staff("room:r1") == {"boss": "streamer"}
    assert await sanctions.staff("room:r2") == {}


async def test_a_room_and_a_ban_made_through_one_node_reach_another(target: str | Path) -> None:
    """Two processes on one database: alone (SQLite) the record is loaded once and the
    process sees its own changes; shared (PostgreSQL) a node that does not receive the
    room's events loads its record again before each join."""
    a_db, b_db = await open_db(target), await open_db(target)
    clock = lambda: 1_000  # noqa: E731
    a = Rooms(nobody, store=SqlRoomStore(a_db), sanctions=SqlSanctionStore(a_db), clock_ms=clock)
    b = Rooms(nobody, store=SqlRoomStore(b_db), sanctions=SqlSanctionStore(b_db), clock_ms=clock,
              receiving=lambda ch: False)
    try:
        await b.ensure("room:r1")  # B knows the room before anything happened
        room = a.room("r1")
        room.title, room.shop = "Made on A", "shop1"
        await a.save(room)
        await Sanctions(SqlSanctionStore(a_db), clock).record("room:r1", "banned",
                                                                          {"user": "troll",
                                                                           "by": "m1"})
        await b.ensure("room:r1")
        seen = b.get("room:r1")
        assert seen is not None and "troll" in seen.banned
        assert seen.title == ("Made on A" if a_db.shared else "")
    finally:
        await a_db.close()
        await b_db.close()


async def test_chat_and_likes_round_trip_with_cid_resends(db: Db) -> None:
    """The chat store runs the same statements on both: a resend of (channel, user, cid) in
    the same batch or a later one writes nothing and gets the first message back."""
    store = SqlChatStore(db)
    first = {"id": "m1", "user": "u1", "name": "A", "role": "viewer", "text": "hi", "at": 1, "cid": "c1"}
    again = {**first, "id": "m2", "text": "hi (resent)"}
    other = {"id": "m3", "user": "u2", "name": "B", "role": "viewer", "text": "yo", "at": 2, "cid": "c1"}
    assert await store.add_messages([("room:r", first), ("room:r", again), ("room:r", other)]) == [None, first, None]
    assert await store.add_messages([("room:r", {**again, "id": "m4"})]) == [first]
    assert [m["id"] for m in await store.recent("room:r", 50)] == ["m1", "m3"]
    await store.delete("room:r", user="u2")
    assert [m["id"] for m in await store.recent("room:r", 1)] == ["m1"]
    await store.add_likes([("room:r", 3)])
    await store.add_likes([("room:r", 4), ("room:s", 1)])
    assert (await store.likes("room:r"), await store.likes("room:s"), await store.likes("room:t")) == (7, 1, 0)


async def test_chat_retention_deletes_older_messages_a_chunk_at_a_time(db: Db) -> None:
    """The retention sweep on both databases: what was said before the horizon goes, in every
    channel, a bounded chunk per transaction; newer messages and the likes totals stay."""
    store = SqlChatStore(db)

    def said(i: int, at: int) -> dict[str, object]:
        return {"id": f"m{i}", "user": "u", "name": "A", "role": "viewer", "text": str(i), "at": at}

    await store.add_messages([(f"room:r{i % 3}", said(i, 1_000 + i)) for i in range(5_000)])
    await store.add_messages([("room:r0", said(9_000, 1_000))])  # old, written last
    await store.add_likes([("room:r0", 3)])
    assert await store.prune(1_010, 4) == 4  # at most `limit`
    assert await ChatLog(store).expire(5_500) == 4_500 + 1 - 4  # several chunks of 2,000
    kept = [m for ch in ("room:r0", "room:r1", "room:r2") for m in await store.recent(ch, 10_000)]
    assert sorted(int(m["text"]) for m in kept) == list(range(4_500, 5_000))
    assert await ChatLog(store).expire(5_500) == 0
    assert await store.likes("room:r0") == 3
