"""Community over a real store: the community flows and what survives a restart.

One suite, two backends (the embedded and the cluster store must behave the same): a real
SQLite file with group commit, and real PostgreSQL (a database per test session, a schema per
test, so parallel runs on this machine do not meet). The publish callback is a collector (the
websocket fan-out is the gateway's); everything else is real: the store, the adapter, the
domain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.community import Community
from server.errors import SoukError
from server.store.community import SqlCommunityStore
from server.store.db import Body, Db, X
from server.store.stores import open_db
from tests.conftest import scratch_database, scratch_schema

T0 = 1_764_000_000_000  # a Monday? irrelevant except for the welfare week, set explicitly below

STREAMER = {"id": "s1", "name": "Host", "role": "streamer"}
ADMIN = {"id": "a1", "name": "Admin", "role": "admin"}


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any], bool]] = []

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.events.append((ch, type, fields, droppable))

    def on(self, ch: str, type: str | None = None) -> list[dict[str, Any]]:
        return [f for c, t, f, _ in self.events if c == ch and (type is None or t == type)]

    def clear(self) -> None:
        self.events.clear()


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def member(n: int) -> dict[str, str]:
    return {"id": f"u{n}", "name": f"Member {n}", "role": "member"}


@dataclass
class Backend:
    """Where a test's community lives; opening it twice is a restart on the same data."""

    kind: str
    path: Path  # the SQLite file (in cluster mode it still holds the app's other tables)
    dsn: str | None = None  # PostgreSQL, with the test's own schema as search_path


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "souk.db")
    database: str = request.getfixturevalue("pg_database")
    return Backend("postgres", tmp_path / "souk.db", scratch_schema(database))


async def open_community(
    backend: Backend, clock: Clock, pub: Collector, **kw: Any
) -> tuple[Db, Community]:
    db = await open_db(backend.dsn if backend.dsn is not None else backend.path)
    c = Community(SqlCommunityStore(db), pub, clock, overdue_check_s=3600, **kw)
    await c.start()
    return db, c


async def close(db: Db, c: Community) -> None:
    await c.stop()
    await db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


async def linked_setup(c: Community) -> dict[str, str]:
    core = await c.group_create("shop", {"tier": "core", "topic": "tea"})
    norm = await c.group_create("shop", {"tier": "normal", "topic": "tea"})
    welf = await c.group_create("shop", {"tier": "welfare", "topic": "tea"})
    await c.link_groups("r1", [core["id"], norm["id"], welf["id"]], shop="shop")
    await c.group_join(member(1), core["id"])
    await c.group_join(member(2), norm["id"])
    return {"core": core["id"], "norm": norm["id"], "welf": welf["id"]}


async def test_question_mirrors_and_group_answer_flows_back_without_echo(
    backend: Backend, clock: Clock
) -> None:
    pub = Collector()
    db, c = await open_community(backend, clock, pub)
    try:
        g = await linked_setup(c)
        pub.clear()
        q = await c.ask(
            "r1", {"id": "v1", "name": "Viewer", "role": "viewer"}, "is the tea organic?"
        )
        assert [e["id"] for e in pub.on("room:r1", "question")] == [q["id"]]
        core_copy = pub.on(f"group:{g['core']}", "question")
        norm_copy = pub.on(f"group:{g['norm']}", "question")
        assert len(core_copy) == 1 and len(norm_copy) == 1
        assert core_copy[0]["origin"] == {"room": "r1", "question": q["id"]}
        assert core_copy[0]["id"] != q["id"] != norm_copy[0]["id"]
        assert pub.on(f"group:{g['welf']}") == []

        # a member of the core group replies to the mirrored question
        pub.clear()
        clock.now += 42_000
        msg = {"id": "chat-1", "text": "Yes, certified organic", "reply_to": core_copy[0]["id"]}
        await c.on_group_chat(g["core"], member(1), msg)
        room_ev = pub.on("room:r1", "question")
        assert len(room_ev) == 1 and room_ev[0]["status"] == "answered"
        assert room_ev[0]["answer"] == "Yes, certified organic"
        assert room_ev[0]["answered_by"]["name"] == "Member 1"
        assert room_ev[0]["answered_by"]["group"] == g["core"]
        other = pub.on(f"group:{g['norm']}", "question")
        assert (
            len(other) == 1
            and other[0]["status"] == "answered"
            and other[0]["id"] == norm_copy[0]["id"]
        )
        assert pub.on(f"group:{g['core']}") == []  # no echo to where the answer came from

        # the same chat delivered twice (retry/replay) does nothing more
        pub.clear()
        await c.on_group_chat(g["core"], member(1), msg)
        assert pub.events == []
        assert await c.mirror_again("r1", q["id"]) == 0
        assert pub.events == []

        # the group snapshot shows the copy answered
        snap = c.group_snapshot(g["core"])
        assert snap["questions"][0]["status"] == "answered" and snap["members"] == 1
        # the room snapshot has it as answered (no open question left)
        assert [x["status"] for x in c.room_snapshot("r1")["questions"]] == ["answered"]
        stats = await c.room_stats("r1")
        assert stats["answer_time_p50_ms"] == 42_000 and stats["answered_in_groups"] == 1
    finally:
        await close(db, c)


async def test_streamer_answer_updates_every_copy_and_upvotes_flow(
    backend: Backend, clock: Clock
) -> None:
    pub = Collector()
    db, c = await open_community(backend, clock, pub)
    try:
        g = await linked_setup(c)
        q = await c.ask("r1", {"id": "v1", "name": "V", "role": "viewer"}, "ship to Macau?")
        await c.upvote("r1", {"id": "v2", "name": "W", "role": "viewer"}, q["id"])
        votes = pub.on(f"group:{g['norm']}", "question")[-1]
        assert votes["votes"] == 1
        with pytest.raises(SoukError) as err:
            await c.answer("r1", {"id": "v2", "name": "W", "role": "viewer"}, q["id"], "yes")
        assert err.value.code == "forbidden"
        pub.clear()
        await c.answer("r1", STREAMER, q["id"], "", on_stream=True)
        chans = sorted(ch for ch, t, _, _ in pub.events if t == "question")
        assert chans == sorted(["room:r1", f"group:{g['core']}", f"group:{g['norm']}"])
        assert all(f["status"] == "answered" and f["on_stream"] for _, _, f, _ in pub.events)
        # a late group reply to an answered question stays a chat message
        pub.clear()
        copy_id = c.group_snapshot(g["norm"])["questions"][0]["id"]
        await c.on_group_chat(
            g["norm"], member(2), {"id": "chat-9", "text": "me too", "reply_to": copy_id}
        )
        assert pub.events == []
    finally:
        await close(db, c)


async def test_restart_keeps_groups_members_tags_questions_mirrors(
    backend: Backend, clock: Clock
) -> None:
    path = backend
    pub = Collector()
    db, c = await open_community(path, clock, pub)
    g = await linked_setup(c)
    await c.group_join(member(3), g["norm"], source="live", invited_by="u2")
    await c.tag_purchase("shop", "u3", "tea-42", big=True)
    q = await c.ask("r1", member(3), "open question?")
    answered = await c.ask("r1", member(3), "answered question?")
    await c.answer("r1", STREAMER, answered["id"], "yes")
    await c.on_group_chat(g["core"], member(1), {"id": "m-1", "text": "hello group", "ts": T0})
    for _ in range(3):
        await c.notice(ADMIN, "coupon", "10% off", group=g["welf"])
    await c.set_answer_target("r1", 120)
    copies_before = {gid: c.group_snapshot(gid)["questions"] for gid in (g["core"], g["norm"])}
    await close(db, c)

    pub2 = Collector()
    db2, c2 = await open_community(path, clock, pub2)
    try:
        assert c2.is_member("u1", g["core"]) and c2.is_member("u3", g["norm"])
        members = {m["user"]: m for m in c2.group_members(g["norm"])}
        assert members["u3"]["tags"] == {
            "bought": ["tea-42"],
            "big_customer": True,
            "source": "live",
            "invited_by": "u2",
        }
        # the open question first, then the answered ones
        room_qs = c2.room_snapshot("r1")["questions"]
        assert room_qs[0]["id"] == q["id"] and room_qs[0]["status"] == "open"
        assert all(x["status"] == "answered" for x in room_qs[1:])
        for gid, before in copies_before.items():
            assert c2.group_snapshot(gid)["questions"] == before
        assert (await c2.recent_group_messages(g["core"]))[0]["text"] == "hello group"
        # mirroring is still idempotent after the restart: no second copy
        assert await c2.mirror_again("r1", q["id"]) == 0
        # the welfare cap remembers this week's notices
        with pytest.raises(SoukError) as err:
            await c2.notice(ADMIN, "coupon", "more", group=g["welf"])
        assert err.value.code == "cap_reached"
        # links survived: a new question is mirrored
        await c2.ask("r1", member(9), "after restart?")
        assert len(pub2.on(f"group:{g['core']}", "question")) == 1
        stats = await c2.room_stats("r1")
        assert stats["answer_target_s"] == 120
        assert stats["questions_asked"] == 3 and stats["questions_answered"] == 1
    finally:
        await close(db2, c2)


async def test_spill_over_through_the_adapter_inherits_links(backend: Backend, clock: Clock) -> None:
    pub = Collector()
    db, c = await open_community(backend, clock, pub)
    try:
        grp = await c.group_create("shop", {"tier": "normal", "topic": "tea", "cap": 2})
        await c.link_groups("r1", [grp["id"]])
        landed = [await c.group_join(member(i), grp["id"]) for i in range(3)]
        assert [x["spilled"] for x in landed] == [False, False, True]
        new_id = landed[2]["id"]
        assert landed[2]["created"] and landed[2]["cap"] == 2
        assert pub.on(f"group:{new_id}", "member_joined")[0]["user"] == "u2"
        assert new_id in (await c.room_stats("r1"))["linked_groups"]
        await c.ask("r1", member(9), "spilled members see questions?")
        assert len(pub.on(f"group:{new_id}", "question")) == 1
        # placement by tier+topic into a full family opens a third group, linked as well
        filled = await c.group_join(member(6), tier="normal", topic="TEA", shop="shop")
        assert filled["id"] == new_id and not filled["created"]  # the spill group had room
        placed = await c.group_join(member(7), tier="normal", topic="TEA", shop="shop")
        assert placed["created"] and placed["id"] not in (grp["id"], new_id)
        assert placed["id"] in (await c.room_stats("r1"))["linked_groups"]
        with pytest.raises(SoukError) as err:
            await c.group_join({"id": "v", "name": "V", "role": "viewer"}, grp["id"])
        assert err.value.code == "forbidden"
        await c.group_leave("u0", grp["id"])
        assert not c.is_member("u0", grp["id"])
        assert pub.on(f"group:{grp['id']}", "member_left")[0]["user"] == "u0"
    finally:
        await close(db, c)


async def test_filter_overdue_and_sale_notices(backend: Backend, clock: Clock) -> None:
    pub = Collector()
    db, c = await open_community(backend, clock, pub, answer_target_s=60)
    try:
        g = await linked_setup(c)
        with pytest.raises(SoukError) as err:
            await c.ask("r1", member(1), "cheaper at taobao.com")
        assert err.value.code == "filtered"
        with pytest.raises(SoukError):
            c.check_group_chat(g["core"], member(1), "加微信 abc12345")
        with pytest.raises(SoukError):
            c.check_group_chat(g["welf"], member(1), "hello")  # not a member, and welfare
        c.check_group_chat(g["core"], STREAMER, "shop at https://our.shop")
        q = await c.ask("r1", member(1), "when does it ship?")
        clock.now += 61_000
        assert await c.check_overdue() == 1
        assert await c.check_overdue() == 0
        flag = pub.on("staff:r1", "question_overdue")
        assert flag[0]["question"]["id"] == q["id"] and flag[0]["target_s"] == 60
        assert (await c.room_stats("r1"))["overdue_open"] == 1

        for i in range(3):
            await c.notice(ADMIN, "coupon", f"coupon {i}", group=g["welf"])
        res = await c.on_sale_started(
            "r1", {"id": "sale1", "title": "Oolong", "price": 1999, "currency": "CNY"}
        )
        assert sorted(res["sent"]) == sorted([g["core"], g["norm"]])
        assert res["skipped"] == [{"group": g["welf"], "code": "cap_reached"}]
        notice = pub.on(f"group:{g['core']}", "notice")[0]
        assert (
            notice["kind"] == "sale" and "19.99 CNY" in notice["text"] and notice["sale"] == "sale1"
        )
        with pytest.raises(SoukError) as cap:
            await c.notice(ADMIN, "sale", "one more", group=g["welf"])
        assert cap.value.code == "cap_reached"
        with pytest.raises(SoukError) as forb:
            await c.notice(member(1), "sale", "spam", group=g["core"])
        assert forb.value.code == "forbidden"
    finally:
        await close(db, c)


async def test_offence_ladder_removes_and_removal_survives_restart(
    backend: Backend, clock: Clock
) -> None:
    path = backend
    pub = Collector()
    db, c = await open_community(path, clock, pub)
    grp = await c.group_create("shop", {"tier": "normal", "topic": "tea"})
    await c.group_join(member(1), grp["id"])
    scope = f"group:{grp['id']}"
    assert (await c.offence(scope, "u1"))["action"] == "warn"
    assert (await c.offence(scope, "u1")) == {"action": "mute", "seconds": 600, "offences": 2}
    assert c.is_member("u1", grp["id"])
    assert (await c.offence(scope, "u1"))["action"] == "remove"
    assert not c.is_member("u1", grp["id"])
    assert pub.on(f"group:{grp['id']}", "member_left")[-1] == {
        "user": "u1",
        "members": 0,
        "removed": True,
    }
    with pytest.raises(SoukError):
        await c.group_remove(member(2), "u1", grp["id"])  # members cannot remove
    await close(db, c)
    db2, c2 = await open_community(path, clock, Collector())
    try:
        with pytest.raises(SoukError) as err:
            await c2.group_join(member(1), grp["id"])
        assert err.value.code == "forbidden"
        assert await c2.store.exits(grp["id"]) == 1
    finally:
        await close(db2, c2)


async def test_group_message_not_kept_can_be_kept_on_a_retry(backend: Backend, clock: Clock) -> None:
    """The store refuses a group message (a real database error: its table is gone for a
    moment); the same message delivered again once the store is back is kept."""
    pub = Collector()
    db, c = await open_community(backend, clock, pub)

    async def rename(old: str, new: str) -> None:
        def body() -> Body[None]:
            yield X(f"ALTER TABLE {old} RENAME TO {new}")

        await db.write(body)

    try:
        g = await linked_setup(c)
        msg = {"id": "chat-r", "text": "hello", "reply_to": None}
        await rename("group_messages", "group_messages_away")
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
            await c.on_group_chat(g["core"], member(1), msg)
        await rename("group_messages_away", "group_messages")
        await c.on_group_chat(g["core"], member(1), msg)
        assert [m["id"] for m in await c.recent_group_messages(g["core"])] == ["chat-r"]
    finally:
        await close(db, c)
