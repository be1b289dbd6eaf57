"""Databases made by the first release open, upgrade in place and stay usable.

The fixtures (tests/fixtures/release1/) were made by that release's own code: an embedded data
directory, and a cluster's PostgreSQL database with one node's data directory (whose SQLite
file held the cluster's rooms then). Each is restored as a deployed server would have it, then
opened by today's `open_stores`: every row must be there in today's shape (a question's voters
out of its JSON column, a user's points balance from the points log, the cluster's rooms in
PostgreSQL), new writes must work on top (orders, votes from the new sequence, check-ins,
questions, bans), a second start must find nothing to migrate, and nodes starting together
on one old database must apply each migration once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from client_sdk.errors import SoukError as ClientError
from server.app import App
from server.commerce import Commerce
from server.community import Community
from server.config import Config
from server.domain.room import Room
from server.engagement import Engagement
from server.insights import Insights
from server.rooms import Rooms
from server.store.schema import MIGRATIONS, migrate, version
from server.store.stores import Stores, open_stores
from tests.conftest import REDIS_URL, Running, make_config, scratch_database, token

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release1"
T0 = 1_764_000_000_000  # the fixtures' clock
LATEST = max(m.version for m in MIGRATIONS)


def restore_sqlite(dump: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript((FIXTURES / dump).read_text())
    finally:
        conn.close()


async def restore_postgres(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)  # the dump empties this session's search_path: its own
    try:
        await conn.execute((FIXTURES / "postgres.sql").read_text())
    finally:
        await conn.close()


@dataclass
class Old:
    """A database of the first release, restored, and the configuration that opens it."""

    cfg: Config
    redis: Redis | None


@pytest.fixture(params=["sqlite", "postgres"])
async def old(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Old]:
    cfg = make_config(tmp_path)
    if request.param == "sqlite":
        restore_sqlite("sqlite.sql", cfg.db_path)
        yield Old(cfg, None)
        return
    dsn = request.getfixturevalue("database")
    await restore_postgres(dsn)
    restore_sqlite("cluster_node_sqlite.sql", cfg.db_path)
    cfg.postgres, cfg.redis = dsn, REDIS_URL
    cfg.redis_prefix = request.getfixturevalue("prefix")
    redis = Redis.from_url(REDIS_URL)
    yield Old(cfg, redis)
    await redis.aclose()


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def nobody(ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
    """Events are not the subject here."""


async def count(stores: Stores, sql: str, *args: Any) -> int:
    return int((await stores.db.rows(sql, *args))[0][0])


async def test_every_row_of_the_first_release_is_there_and_usable(old: Old) -> None:
    stores = open_stores(old.cfg, old.redis)
    await stores.start()
    clock = Clock(T0 + 60_000)
    commerce = Commerce(stores.ledger, nobody, clock)
    community = Community(stores.community, nobody, clock, overdue_check_s=3600)
    insights = Insights(stores.insights, clock)
    ops = Engagement(stores.engagement, insights, nobody, clock)
    rooms = Rooms(nobody, store=stores.rooms, sanctions=stores.sanctions, clock_ms=clock)
    try:
        assert await version(stores.db) == LATEST
        for feature in (community, commerce, ops, insights):
            await feature.start()
        await rooms.load()

        # commerce: products, sales with their orders, team buys with their teams
        assert {p: commerce.product(p)["stock"] for p in ("p-tea", "p-cup")} == {  # type: ignore[index]
            "p-tea": 75, "p-cup": 39}
        assert len(commerce.sales) == 3 and len(commerce.offers) == 1
        sold = {r["sale"]: r["n"] for r in await stores.db.rows(
            "SELECT sale, SUM(qty) AS n FROM orders WHERE sale IS NOT NULL GROUP BY sale")}
        for sale in commerce.sales.values():  # no unit lost or made up
            assert sale.stock_left + sold.get(sale.id, 0) == sale.stock
        live = next(s for s in commerce.sales.values() if s.stock == 20)
        assert (live.stock_left, sold[live.id]) == (17, 3)
        offer = next(iter(commerce.offers.values()))
        assert offer.stock_left == 6
        assert sorted(str(t.status) for t in offer.teams.values()) == ["confirmed", "open"]
        assert len(await stores.ledger.orders_of_room("r1")) == 6

        # community: groups, members, removals, questions with their voters, answers, tags
        assert len(community.directory.groups) == 4
        assert sum(len(g.members) for g in community.directory.groups.values()) == 7
        assert sum(len(g.removed) for g in community.directory.groups.values()) == 1
        board = community.boards["r1"]
        assert board.target_s == 120
        by_text = {q.text: q for q in board.questions.values()}
        organic = by_text["Is the tea organic?"]
        assert (organic.votes, organic.voters) == (2, {"u1", "u3"})
        assert by_text["When does it ship?"].status == "answered"
        assert by_text["Old question"].overdue_flagged
        assert community.directory.tags[("shop1", "u2")].big_customer
        assert len(community.connectors) == 1
        assert len(await stores.community.dead_letters()) == 1

        # engagement: coupons (one spent), the open poll and its votes, points, invites, posts
        assert len(ops.coupons.coupons) == 5
        assert sum(1 for c in ops.coupons.coupons.values() if c.redeemed) == 1
        (poll,) = ops.polls.values()
        assert poll.votes == {"u1": 1, "u2": 0}
        for r in await stores.db.rows("SELECT shop, user_id, SUM(delta) AS s FROM points_log"
                                      " GROUP BY shop, user_id"):
            assert ops.balance(r["shop"], r["user_id"]) == r["s"] > 0
        assert (await ops.invite_stats("shop1", "u1"))["invited"] == 3
        assert [p["status"] for p in ops.posts.values()] == ["approved"]
        assert insights.excluded == {"shop1": {"tester"}}

        # rooms and their sanctions (a cluster's rooms moved from the node's SQLite file)
        room = rooms.get("room:r1")
        assert room is not None and (room.title, room.shop, room.state) == ("Tea live 茶", "shop1", "live")
        assert room.pinned is not None and room.pinned["id"] == "p-tea"
        await rooms.ensure("room:r1")
        assert "troll" in room.banned and room.muted_until["noisy"] > clock.now

        if old.cfg.postgres:  # the node's file gave up its rooms, once
            with sqlite3.connect(old.cfg.db_path) as node:
                tables = {r[0] for r in node.execute("SELECT name FROM sqlite_master")}
            assert {"rooms_moved_to_postgres", "rooms"} <= tables
            assert await count(stores, "SELECT COUNT(*) FROM information_schema.tables"
                               " WHERE table_name = 'room_shops'") == 0

        # the numbers read the upgraded tables
        numbers = await stores.insights.for_room("r1")
        assert numbers["orders"] == 5 and numbers["viewers"]["unique"] == 2

        # and everything takes new writes
        order = await commerce.buy("u20", live.id, 1, "k-new", "New buyer")
        assert order["status"] == "confirmed" and live.stock_left == 16
        up = await community.upvote("r1", {"id": "u9", "name": "U9", "role": "viewer"}, organic.id)
        assert up["votes"] == 3
        asked = await community.ask("r1", {"id": "u9", "name": "U9", "role": "viewer"}, "Gift box?")
        assert asked["status"] == "open"
        voted = await ops.poll_vote(poll, "u9", 1)
        assert voted["counts"] == [1, 2] and ops.vote_revs[(poll.id, "u9")] >= 1
        clock.now = T0 + 20 * 86_400_000
        before = ops.balance("shop1", "u2")
        assert (await ops.checkin("shop1", next(iter(community.directory.groups)), "u2"))["balance"] > before
        fresh = Room("r9", kind="room")
        fresh.title, fresh.shop = "New room", "shop1"
        await rooms.save(fresh)
        assert (await stores.rooms.room("r9")) is not None
    finally:
        for feature in (insights, ops, community, commerce):
            await feature.stop()
        await stores.close()

    again = open_stores(old.cfg, old.redis)  # a restart: nothing left to migrate
    await again.start()
    try:
        assert await migrate(again.db) == []
        assert await count(again, "SELECT COUNT(*) FROM schema_version") == len(MIGRATIONS)
        assert await count(again, "SELECT COUNT(*) FROM orders") == 7
        assert await count(again, "SELECT COUNT(*) FROM question_votes") == 3
        if old.cfg.postgres:  # the node's rooms were copied once
            with sqlite3.connect(old.cfg.db_path) as node:
                assert node.execute("SELECT COUNT(*) FROM rooms_moved_to_postgres").fetchone()[0] == 1
    finally:
        await again.close()


async def test_the_server_starts_on_the_old_data_and_serves_it(old: Old) -> None:
    """A real server on the upgraded data: the room as its streamer left it, the ban held."""
    app = App(old.cfg)
    await app.start()
    server = Running(app, f"ws://127.0.0.1:{app.cfg.port}/ws", f"http://127.0.0.1:{app.cfg.port}")
    try:
        async with server.client("v1") as viewer, server.client("troll") as troll:
            snap = await viewer.join("r1")
            assert (snap["title"], snap["state"], snap["pinned"]["id"]) == ("Tea live 茶", "live", "p-tea")
            with pytest.raises(ClientError) as refused:
                await troll.join("r1")
            assert refused.value.code == "banned"

        def get(path: str) -> Any:
            req = urllib.request.Request(server.http + path, headers={
                "Authorization": f"Bearer {token('boss', 'streamer', shop='shop1')}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return orjson.loads(r.read())

        orders = (await asyncio.to_thread(get, "/api/rooms/r1/orders"))["orders"]
        assert len(orders) == 6 and sum(o["qty"] for o in orders) == 7
        assert (await asyncio.to_thread(get, "/api/rooms/r1/metrics"))["orders"] == 5
    finally:
        await app.stop()


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    with scratch_database() as old_dsn, scratch_database() as new_dsn:
        yield old_dsn, new_dsn


async def test_nodes_starting_together_migrate_once(two_databases: tuple[str, str],
                                                    tmp_path: Path, prefix: str) -> None:
    """Three nodes start at once on a first-release database and on an empty one: every
    migration is applied once (under the lock), and all of them come up."""
    old_dsn, new_dsn = two_databases
    await restore_postgres(old_dsn)
    redis = Redis.from_url(REDIS_URL)
    try:
        for dsn in (old_dsn, new_dsn):
            nodes = [open_stores(make_config(tmp_path / f"n{i}", postgres=dsn, redis=REDIS_URL,
                                             redis_prefix=prefix), redis) for i in range(3)]
            await asyncio.gather(*(n.start() for n in nodes))
            try:
                rows = await nodes[0].db.rows("SELECT version FROM schema_version ORDER BY version")
                assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]
                assert await count(nodes[1], "SELECT COUNT(*) FROM products") == (2 if dsn == old_dsn else 0)
            finally:
                for n in nodes:
                    await n.close()
    finally:
        await redis.aclose()
