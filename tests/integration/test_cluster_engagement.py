"""Engagement (docs/engagement.md) across real cluster nodes.

Two `souk serve --redis ... --postgres ...` processes on 127.0.0.1 (a PostgreSQL database and
a Redis prefix per test), real websocket clients on both, real HTTP for the numbers. What a
cluster must not do: spend a coupon once per node, count a poll vote twice or let the nodes
disagree on the tally, take two check-ins a day, spend points twice, or show a merchant
numbers that miss another node's activity.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import ServerProcess, token

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(120)]


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"souk_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG + "/postgres")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    yield f"{PG}/{name}"
    conn = await asyncpg.connect(PG + "/postgres")
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Wait for a condition (the machine is shared and busy: generous, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def two_nodes(server_process: Callable[..., ServerProcess], database: str, prefix: str,
              tmp_path: Path) -> tuple[ServerProcess, ServerProcess]:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    return (server_process(*flags, data_dir=tmp_path / "a"),
            server_process(*flags, data_dir=tmp_path / "b"))


def client(node: ServerProcess, sub: str, role: str = "viewer") -> Client:
    return Client(node.url, token(sub, role), reconnect=False)


def _get(url: str, tok: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


async def numbers(node: ServerProcess, path: str) -> Any:
    """A real HTTP GET of the merchant's numbers (in a thread: urllib blocks)."""
    return await asyncio.to_thread(_get, node.http + path, token("s1", "streamer"))


async def attempt(c: Client, op: str, **fields: Any) -> str:
    try:
        await c.request(op, **fields)
        return "ok"
    except SoukError as exc:
        return exc.code


async def test_coupons_across_nodes_and_the_numbers(server_process: Callable[..., ServerProcess],
                                                     database: str, prefix: str, tmp_path: Path) -> None:
    a, b = two_nodes(server_process, database, prefix, tmp_path)
    st_a, u1_b, v_a = client(a, "s1", "streamer"), client(b, "u1"), client(a, "v1")
    racers = [(client(a, f"r{i}"), client(b, f"r{i}")) for i in range(6)]
    everyone = [st_a, u1_b, v_a, *(c for pair in racers for c in pair)]
    for c in everyone:
        await c.connect()
    db = await asyncpg.connect(database)
    try:
        product = (await st_a.request("product_create", title="Tea", price=1000, stock=100))["product"]
        sale = (await st_a.request("sale_create", room="live", product=product["id"], price=1000,
                                   stock=20, duration_s=300, per_user_limit=5))["sale"]["id"]

        # a coupon issued on A is spent with a buy on B (B learns it from PostgreSQL)
        cid = (await st_a.request("coupon_issue", user="u1", value=300))["coupons"][0]["id"]
        order = await u1_b.buy(sale, 1, coupon=cid)
        assert (order["coupon"], order["discount"], order["paid"]) == (cid, 300, 700)
        row = await db.fetchrow("SELECT order_id, discount FROM coupon_redemptions WHERE coupon = $1", cid)
        assert (row["order_id"], row["discount"]) == (order["id"], 300)
        async with client(a, "u1") as u1_a:  # A's book knows it is spent, and refuses it
            mine = await until(lambda: _spent(u1_a, cid), what="A's copy of the spent coupon")
            assert mine["order"] == order["id"]
            with pytest.raises(SoukError) as err:
                await u1_a.buy(sale, 1, coupon=cid)
            assert err.value.code == "conflict"

        # the same coupon raced from both nodes: redeemed exactly once, the other is `conflict`
        coupons = {}
        for i, (ra, _) in enumerate(racers):
            coupons[i] = (await st_a.request("coupon_issue", user=f"r{i}", value=100))["coupons"][0]["id"]
            await ra.request("coupons_mine")
        results = await asyncio.gather(*(
            _buy(c, sale, coupons[i], f"k{i}-{side}")
            for i, pair in enumerate(racers) for side, c in enumerate(pair)))
        for i in range(len(racers)):
            assert sorted(results[2 * i: 2 * i + 2]) == ["conflict", "ok"], results
        spent = await db.fetch("SELECT r.coupon, o.id, o.\"user\" FROM coupon_redemptions r"
                               " JOIN orders o ON o.id = r.order_id WHERE r.coupon = ANY($1::text[])",
                               list(coupons.values()))
        assert sorted(r["coupon"] for r in spent) == sorted(coupons.values())  # one order each
        assert all(r["user"] == f"r{i}" for i in coupons for r in spent if r["coupon"] == coupons[i])
        sold = await db.fetchval("SELECT COALESCE(SUM(qty), 0) FROM orders WHERE sale = $1", sale)
        left = await db.fetchval("SELECT stock_left FROM sales WHERE id = $1", sale)
        assert sold == 1 + len(racers) and left == 20 - sold  # the losers took no stock

        # the numbers fetched from B count what happened on A: chat, views and orders
        await v_a.join("live")
        for n in range(3):
            await v_a.chat("live", f"hello {n}")
        await v_a.request("like", room="live", count=5)

        async def room_counted() -> Any:
            m = await numbers(b, "/api/rooms/live/metrics")
            return m if m["messages"] == 3 and m["viewers"]["unique"] >= 1 else None

        m = await until(room_counted, what="A's chat in B's numbers")
        assert m["orders"] == sold and m["units"] == sold
        assert m["discounts"] == 300 + 100 * len(racers)
        assert m["revenue"] == 1000 * sold - m["discounts"]
        assert m["likes"] == 5 and m["interacting"] >= 1
        assert [s["sale"] for s in m["sales"]] == [sale]
        shop = await numbers(b, "/api/shop/metrics")
        assert shop["orders"] == sold and shop["revenue"] == m["revenue"]
        assert shop["coupons"] == {"issued": 1 + len(racers), "redeemed": 1 + len(racers),
                                   "discounts": m["discounts"]}
        assert await numbers(a, "/api/shop/metrics") == shop  # every node answers the same
        page = await asyncio.to_thread(_page, b.http + "/dashboard?room=live")
        assert "data-metric" in page  # the dashboard is served by a cluster node too
    finally:
        await db.close()
        for c in everyone:
            await c.close()


async def _spent(c: Client, cid: str) -> dict[str, Any] | None:
    mine = {x["id"]: x for x in (await c.request("coupons_mine"))["coupons"]}
    return mine[cid] if cid in mine and mine[cid]["status"] == "redeemed" else None


async def _buy(c: Client, sale: str, coupon: str, key: str) -> str:
    try:
        await c.buy(sale, 1, key, coupon=coupon)
        return "ok"
    except SoukError as exc:
        return exc.code


async def test_polls_checkins_and_points_across_nodes(server_process: Callable[..., ServerProcess],
                                                       database: str, prefix: str, tmp_path: Path) -> None:
    a, b = two_nodes(server_process, database, prefix, tmp_path)
    st_a = client(a, "s1", "streamer")
    voters = [client((a, b)[i % 2], f"m{i}", "member") for i in range(8)]
    m0_b = client(b, "m0", "member")  # m0's second connection, on the other node
    everyone = [st_a, *voters, m0_b]
    for c in everyone:
        await c.connect()
    db = await asyncpg.connect(database)
    try:
        gid = (await st_a.request("group_create", tier="normal", topic="tea", cap=50))["group"]["id"]
        for c in voters:
            await c.request("group_join", group=gid)
            await c.join(group=gid)
        await m0_b.join(group=gid)

        # a poll created on A is voted on from both nodes; m0 changes its vote on both at once
        poll = (await st_a.request("poll_create", group=gid, question="Green or black?",
                                   options=["green", "black", "oolong"]))["poll"]["id"]
        assert set(await asyncio.gather(*(
            attempt(c, "poll_vote", poll=poll, option=i % 3) for i, c in enumerate(voters)))) == {"ok"}
        assert set(await asyncio.gather(attempt(voters[0], "poll_vote", poll=poll, option=1),
                                        attempt(m0_b, "poll_vote", poll=poll, option=2))) == {"ok"}

        async def record() -> list[int]:
            counts = [0, 0, 0]
            for r in await db.fetch("SELECT option FROM poll_votes WHERE poll = $1", poll):
                counts[r["option"]] += 1
            return counts

        truth = await record()
        assert sum(truth) == len(voters)  # one vote per member, whichever node counted it
        final = await db.fetchval("SELECT option FROM poll_votes WHERE poll = $1 AND user_id = 'm0'", poll)

        async def tallies_agree() -> bool:
            seen = []
            for c, option in ((voters[0], final), (m0_b, final), (voters[1], 1), (voters[2], 2)):
                # voting one's current choice again changes nothing and answers the node's tally
                seen.append((await c.request("poll_vote", poll=poll, option=option))["poll"]["counts"])
            return all(s == truth for s in seen)

        await until(tallies_agree, what="both nodes' tallies equal PostgreSQL's")

        # closed on B: A refuses a vote
        await client_request(b, "s1", "streamer", "poll_close", poll=poll)
        # refused by A's copy once the notice is in, by PostgreSQL's guard before it
        assert await attempt(voters[2], "poll_vote", poll=poll, option=0) in ("ended", "not_found")
        assert await record() == truth

        # a check-in on A, the same member again on B the same day: refused
        m2_a, m2_b = voters[2], client(b, "m2", "member")
        await m2_b.connect()
        everyone.append(m2_b)
        first = (await m2_a.request("checkin", group=gid))["checkin"]
        assert (first["streak"], first["points"], first["balance"]) == (1, 10, 10)
        # (B may need a moment to learn m2's membership made on A: `forbidden` until then)
        assert await until(lambda: _not_forbidden(m2_b, "checkin", group=gid)) == "conflict"
        assert await db.fetchval("SELECT COUNT(*) FROM checkins WHERE user_id = 'm2'") == 1

        # points earned on both nodes (one check-in in each of 10 groups) are one balance
        groups = [(await st_a.request("group_create", tier="normal", topic=f"t{i}", cap=50))["group"]["id"]
                  for i in range(9)]
        for i, g in enumerate(groups):
            c = (m2_a, m2_b)[i % 2]
            await c.request("group_join", group=g)
            await c.request("checkin", group=g)
        for c in (m2_a, m2_b):
            assert (await c.request("points_mine"))["points"] == 100

        # redeemed from both nodes at once: spent once, the other is refused
        results = await asyncio.gather(attempt(m2_a, "points_redeem", points=100),
                                       attempt(m2_b, "points_redeem", points=100))
        assert sorted(results) == ["conflict", "ok"], results
        assert await db.fetchval("SELECT balance FROM points_balance WHERE user_id = 'm2'") == 0
        assert await db.fetchval("SELECT COUNT(*) FROM coupons WHERE user_id = 'm2' AND source = 'points'") == 1
        for c in (m2_a, m2_b):
            assert (await c.request("points_mine"))["points"] == 0

        # the group's numbers from either node: members joined and votes cast on both
        g = await numbers(b, f"/api/groups/{gid}/metrics")
        assert (g["members"], g["joins"], g["active_members_7d"]) == (8, 8, 8)
        assert g["interaction_rate"] == 0  # votes, but no messages to rate them against
        assert await numbers(a, f"/api/groups/{gid}/metrics") == g
    finally:
        await db.close()
        for c in everyone:
            await c.close()


async def _not_forbidden(c: Client, op: str, **fields: Any) -> str | None:
    code = await attempt(c, op, **fields)
    return None if code == "forbidden" else code


async def client_request(node: ServerProcess, sub: str, role: str, op: str, **fields: Any) -> Any:
    async with client(node, sub, role) as c:
        return await c.request(op, **fields)
