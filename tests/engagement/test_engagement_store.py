"""The engagement adapter over both stores: the embedded SQLite file and the cluster's
PostgreSQL (`--postgres`) must behave the same, and survive a restart the same way.

One suite, two backends (a database per module and a schema per test for PostgreSQL, so
parallel runs on this machine do not meet); then, PostgreSQL only, two adapters on one
database standing for two nodes racing on the SQL guards (no notices between them: the
store alone must hold). The publish callback is a collector; everything else is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.community import Community
from server.domain.checkin import DAY_MS
from server.domain.room import Room
from server.engagement import Engagement
from server.errors import SoukError
from server.insights import Insights
from server.store.db import Db
from server.store.stores import open_db, stores_on
from tests.conftest import scratch_database, scratch_schema

T0 = 1_764_000_000_000


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
        self.events.append((ch, type, fields))


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Backend:
    kind: str
    path: Path
    dsn: str | None = None


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database() as dsn:
        yield dsn


def _pg_backend(database: str, path: Path) -> Backend:
    return Backend("postgres", path, scratch_schema(database))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "souk.db")
    return _pg_backend(request.getfixturevalue("pg_database"), tmp_path / "souk.db")


class Node:
    """One process's engagement (with the community it reads), on the backend's database."""

    def __init__(self, backend: Backend, clock: Clock, path: Path | None = None) -> None:
        self.backend = backend
        self.clock = clock
        self.path = path or backend.path
        self.pub = Collector()

    async def start(self) -> Node:
        self.db: Db = await open_db(self.backend.dsn or self.path)
        self.stores = stores_on(self.db)
        self.community = Community(self.stores.community, self.pub, self.clock,
                                   overdue_check_s=3600)
        self.insights = Insights(self.stores.insights, self.clock)
        self.ops = Engagement(self.stores.engagement, self.insights, self.pub, self.clock)
        await self.community.start()
        await self.ops.start()
        await self.insights.start()
        return self

    async def stop(self) -> None:
        await self.insights.stop()
        await self.ops.stop()
        await self.community.stop()
        await self.db.close()

    async def count(self, sql: str, *args: Any) -> int:
        return int((await self.db.rows(sql, *args))[0][0])


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


async def test_checkin_points_and_redeem_survive_a_restart(backend: Backend, clock: Clock) -> None:
    n = await Node(backend, clock).start()
    try:
        first = await n.ops.checkin("shop", "g1", "u1")
        assert (first["streak"], first["points"], first["balance"]) == (1, 10, 10)
        with pytest.raises(SoukError) as err:
            await n.ops.checkin("shop", "g1", "u1")
        assert err.value.code == "conflict"
        clock.now += DAY_MS
        second = await n.ops.checkin("shop", "g1", "u1")
        assert (second["streak"], second["points"], second["balance"]) == (2, 12, 22)
        with pytest.raises(SoukError) as err:
            await n.ops.points_redeem("shop", "u1", 100)
        assert err.value.code == "conflict"
    finally:
        await n.stop()
    n = await Node(backend, clock).start()  # a restart on the same record
    try:
        assert await n.ops.points_balance("shop", "u1") == 22
        clock.now += DAY_MS
        third = await n.ops.checkin("shop", "g1", "u1")
        assert (third["streak"], third["balance"]) == (3, 36)
        await n.ops.checkin("shop", "g2", "u1")
        for _ in range(6):
            clock.now += DAY_MS
            await n.ops.checkin("shop", "g2", "u1")
        balance = await n.ops.points_balance("shop", "u1")
        assert balance >= 100
        got = await n.ops.points_redeem("shop", "u1", 100)
        assert got["balance"] == balance - 100 and got["coupon"]["value"] == 100
        assert [c["source"] for c in await n.ops.coupons_mine("u1")] == ["points"]
    finally:
        await n.stop()


async def test_poll_votes_change_and_survive_a_restart(backend: Backend, clock: Clock) -> None:
    n = await Node(backend, clock).start()
    try:
        poll = await n.ops.poll_create("shop", "group", "g1", "s1",
                                       {"question": "Which tea?", "options": ["green", "black"]})
        p = await n.ops.find_poll(poll["id"])
        for i in range(5):
            await n.ops.poll_vote(p, f"u{i}", i % 2)
        await n.ops.poll_vote(p, "u0", 1)  # changed: counted once, for its latest choice
        assert p.tally() == [2, 3]
    finally:
        await n.stop()
    n = await Node(backend, clock).start()
    try:
        p = await n.ops.find_poll(poll["id"])
        assert p.tally() == [2, 3] and p.votes["u0"] == 1
        await n.ops.poll_close(p)
        with pytest.raises(SoukError) as err:
            await n.ops.find_poll(poll["id"])
        assert err.value.code == "not_found"
    finally:
        await n.stop()
    n = await Node(backend, clock).start()
    try:
        assert poll["id"] not in n.ops.polls  # a closed poll is not loaded again
    finally:
        await n.stop()


async def test_invites_reward_once_per_threshold_and_posts_once(backend: Backend, clock: Clock) -> None:
    n = await Node(backend, clock).start()
    try:
        code = await n.ops.invite_code("shop", "inv")
        assert await n.ops.invite_code("shop", "inv") == code  # one code per member per shop
        assert await n.ops.find_code(code) == ("shop", "inv")
        assert (await n.ops.joined("shop", "inv", "g1", "inv", False)) == {"counted": False}  # self
        results = [await n.ops.joined("shop", f"f{i}", "g1", "inv", False) for i in range(7)]
        assert [r["counted"] for r in results] == [True] * 7
        assert sum(r["rewards"] for r in results) == 2  # 3 and 6 invitees
        again = await n.ops.joined("shop", "f0", "g2", "inv", False)  # a repeat join
        assert again == {"counted": False}
        stats = await n.ops.invite_stats("shop", "inv")
        assert (stats["invited"], stats["rewards"]) == (7, 2)

        order = {"id": "o1", "user": "buyer", "status": "confirmed"}
        post = await n.ops.showcase_post("shop", "g1", "buyer", order,
                                         {"order": "o1", "image_url": "https://x.test/a.jpg", "text": "Lovely"})
        with pytest.raises(SoukError) as err:
            await n.ops.showcase_post("shop", "g1", "buyer", order,
                                      {"order": "o1", "image_url": "https://x.test/b.jpg", "text": "Again"})
        assert err.value.code == "conflict"
        approved = await n.ops.showcase_approve("shop", post["id"])
        assert approved["post"]["status"] == "approved"
        with pytest.raises(SoukError) as err:
            await n.ops.showcase_approve("shop", post["id"])
        assert err.value.code == "conflict"
    finally:
        await n.stop()
    n = await Node(backend, clock).start()
    try:
        stats = await n.ops.invite_stats("shop", "inv")
        assert (stats["invited"], stats["rewards"]) == (7, 2)
        sources = sorted(c["source"] for c in await n.ops.coupons_mine("inv"))
        assert sources == ["invite", "invite"]
        assert [c["source"] for c in await n.ops.coupons_mine("buyer")] == ["showcase"]
    finally:
        await n.stop()


# -- two nodes on one PostgreSQL: the SQL guards alone (no notices between the adapters) ----
async def test_two_nodes_race_on_the_sql_guards(pg_database: str, tmp_path: Path, clock: Clock) -> None:
    backend = _pg_backend(pg_database, tmp_path / "a.db")
    a = await Node(backend, clock, tmp_path / "a.db").start()
    b = await Node(backend, clock, tmp_path / "b.db").start()
    try:
        # one check-in a day, whichever node takes it
        got = await asyncio.gather(a.ops.checkin("shop", "g1", "u1"), b.ops.checkin("shop", "g1", "u1"),
                                   return_exceptions=True)
        assert sorted(type(x).__name__ for x in got) == ["SoukError", "dict"]
        assert [x.code for x in got if isinstance(x, SoukError)] == ["conflict"]
        # earned on A, seen and spent on B; raced from both: spent once
        for day in range(1, 10):
            clock.now = T0 + day * DAY_MS
            await (a, b)[day % 2].ops.checkin("shop", f"g{day % 3}", "u1")
        assert await b.ops.points_balance("shop", "u1") == await a.ops.points_balance("shop", "u1") >= 100
        before = await a.ops.points_balance("shop", "u1")
        assert 100 <= before < 200  # enough for one coupon, not two
        got = await asyncio.gather(a.ops.points_redeem("shop", "u1", 100), b.ops.points_redeem("shop", "u1", 100),
                                   return_exceptions=True)
        assert [x.code for x in got if isinstance(x, SoukError)] == ["conflict"]
        assert await b.ops.points_balance("shop", "u1") == before - 100

        # invitees of one inviter joined through both nodes at once: each reward once
        results = await asyncio.gather(*((a, b)[i % 2].ops.joined("shop", f"f{i}", "g1", "inv", False)
                                         for i in range(9)))
        assert sum(r["rewards"] for r in results) == 3
        assert await a.count("SELECT COUNT(*) FROM invite_rewards WHERE inviter = 'inv'") == 3
        assert await a.count("SELECT COUNT(*) FROM coupons WHERE user_id = 'inv'") == 3

        # a poll made on A is found and voted on B; a second close from A announces nothing
        poll = await a.ops.poll_create("shop", "room", "r1", "s1", {"question": "Q?", "options": ["x", "y"]})
        pb = await b.ops.find_poll(poll["id"])
        await b.ops.poll_vote(pb, "v1", 1)
        pa = await a.ops.find_poll(poll["id"])
        await a.ops.poll_vote(pa, "v2", 0)
        await b.ops.poll_close(pb)
        a.pub.events.clear()
        await a.ops.poll_close(pa)
        assert [e for e in a.pub.events if e[1] == "poll"] == []
        assert await a.count("SELECT COUNT(*) FROM poll_votes WHERE poll = ?", poll["id"]) == 2
    finally:
        await a.stop()
        await b.stop()


async def test_the_numbers_read_the_same_from_both_stores(backend: Backend, clock: Clock) -> None:
    """Group, room, shop and member numbers from the records each backend keeps."""
    n = await Node(backend, clock).start()
    try:
        c, ops, insights = n.community, n.ops, n.insights
        gid = (await c.group_create("shop", {"tier": "normal", "topic": "tea"}))["id"]
        for i in range(4):
            await c.group_join({"id": f"u{i}", "name": f"U{i}", "role": "member"}, gid, shop="shop")
        await c.group_join({"id": "host", "name": "Host", "role": "streamer"}, gid, shop="shop")
        for i in range(3):
            await c.on_group_chat(gid, {"id": "u0", "name": "U0", "role": "member"},
                                  {"id": f"m{i}", "text": f"hi {i}"})
        poll = await ops.poll_create("shop", "group", gid, "host", {"question": "Q?", "options": ["a", "b"]})
        await ops.poll_vote(await ops.find_poll(poll["id"]), "u1", 0)
        await ops.checkin("shop", gid, "u2")
        await c.group_leave("u3", gid)
        room = Room("r1", kind="room")  # the room's shop: its stored row
        room.shop = "shop"
        await n.stores.rooms.save(room)
        insights.viewer_joined("r1", "v1", "viewer")
        insights.viewer_joined("r1", "v2", "viewer")
        insights.viewer_joined("r1", "host", "streamer")  # staff: never counted
        insights.activity("r1", "v1", "viewer", "chat")
        insights.activity("r1", "v2", "viewer", "like", 4)
        insights.sample_presence()
        await insights.set_excluded("shop", ["v2"], [])
        await ops.coupon_issue("shop", {"value": 100}, ["u0", "u1"], ("group", gid))
        await insights.flush()

        g = await insights.store.for_group(gid, clock.now)
        assert g is not None
        assert (g["members"], g["messages"], g["joins"], g["exits"]) == (3, 3, 4, 1)
        assert g["active_members_7d"] == 3  # posted (u0), voted (u1), checked in (u2)
        assert g["interaction_rate"] == pytest.approx(1 / 3, abs=1e-3)  # one vote, no replies, 3 messages
        assert sum(len(w["actions"]) for w in g["weeks"]) >= 2  # the poll and the coupons
        r = await insights.store.for_room("r1")
        assert (r["viewers"]["unique"], r["messages"], r["likes"]) == (1, 1, 0)  # v2 excluded
        assert r["viewers"]["peak"] == 2  # the presence sample was taken before the exclusion
        s = await insights.store.for_shop("shop")
        assert s["coupons"] == {"issued": 2, "redeemed": 0, "discounts": 0}
        assert [x["members"] for x in s["groups"]] == [3]
        members = {m["user"]: m for m in await ops.members("shop")}
        assert set(members) == {"u0", "u1", "u2"}
        assert (members["u0"]["messages"], members["u1"]["votes"], members["u2"]["checkins"]) == (3, 1, 1)
        one = await insights.store.one_member("shop", "u0", clock.now, ops.thresholds_of("shop"))
        assert one["layer"] == members["u0"]["layer"]
    finally:
        await n.stop()
