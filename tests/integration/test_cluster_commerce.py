"""Commerce through real cluster nodes: `souk serve --redis ... --postgres ...` processes on
127.0.0.1, buyers over websockets on both, PostgreSQL as the record: a rush, a sale or team
created on one node and sold on the other, refusals that say why, key replays across nodes,
announcements made once per cluster, and team slots raced from both nodes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from client_sdk import Client
from client_sdk.client import EventStream
from client_sdk.errors import SoukError
from tests.conftest import REDIS_URL, ServerProcess, token

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(90)]


def client(url: str, sub: str, role: str = "viewer") -> Client:
    return Client(url, token(sub, role), reconnect=False)


async def test_flash_sale_rushed_through_two_nodes(server_process: Callable[..., ServerProcess],
                                                   database: str, prefix: str,
                                                   tmp_path: Path) -> None:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    a = server_process(*flags, data_dir=tmp_path / "a")
    async with client(a.url, "s1", "streamer") as st:
        product = (await st.request("product_create", title="Tea", price=1000, stock=100))["product"]
        sale = (await st.request("sale_create", room="fs", product=product["id"], price=500,
                                 stock=30, duration_s=120, per_user_limit=1))["sale"]
    b = server_process(*flags, data_dir=tmp_path / "b")  # learns the sale from PostgreSQL
    buyers = [client((a, b)[i % 2].url, f"u{i}") for i in range(80)]
    for c in buyers:
        await c.connect()

    async def buy(c: Client, i: int) -> str:
        try:
            order = await c.buy(sale["id"], 1, f"key-{i}")
            return str(order["id"])
        except SoukError as exc:
            return "refused:" + exc.code

    try:
        results: list[str] = []
        for w in range(0, len(buyers), 10):  # waves of 10 arriving at once, 5 per node
            results += await asyncio.gather(*(buy(buyers[i], i) for i in range(w, w + 10)))
    finally:
        for c in buyers:
            await c.close()
    acked = [r for r in results if not r.startswith("refused:")]
    assert len(acked) == 30, results
    assert {r for r in results if r.startswith("refused:")} <= {"refused:sold_out", "refused:ended"}
    conn = await asyncpg.connect(database)
    try:
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders WHERE sale = $1", sale["id"])}
        left = await conn.fetchval("SELECT stock_left FROM sales WHERE id = $1", sale["id"])
    finally:
        await conn.close()
    assert ids == set(acked) and left == 0
    # both nodes sold
    assert any(r in ids for i, r in enumerate(results) if i % 2 == 0)
    assert any(r in ids for i, r in enumerate(results) if i % 2 == 1)
    # kill -9 of a node loses nothing acknowledged: the record is PostgreSQL's
    a.kill9()
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM orders WHERE sale = $1", sale["id"]) == 30
    finally:
        await conn.close()


# -- commerce across nodes: what one node creates, every node sells -------------------------
@pytest.fixture
def two_nodes(server_process: Callable[..., ServerProcess], database: str, prefix: str,
              tmp_path: Path) -> tuple[ServerProcess, ServerProcess]:
    """Two `souk serve --redis --postgres` processes, both started before anything exists."""
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    return (server_process(*flags, data_dir=tmp_path / "a"),
            server_process(*flags, data_dir=tmp_path / "b"))


async def refusal(call: Awaitable[object]) -> str:
    try:
        await call
    except SoukError as exc:
        return exc.code
    raise AssertionError("not refused")


async def settled(url: str, room: str, sale: str, phase: str) -> None:
    """Wait until the node at `url` itself has the sale in `phase` (its join snapshot)."""
    async with client(url, f"probe-{uuid.uuid4().hex[:8]}") as probe:
        for _ in range(300):
            snap = await probe.join(room)
            if any(s["id"] == sale and s["phase"] == phase for s in snap["sales"]):
                return
            await probe.leave(room)
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never showed sale {sale} {phase}")


async def barrier(st: Client, room: str, streams: list[EventStream], text: str) -> None:
    """A chat sent after everything under test: once every viewer has it, any duplicate
    published before it has arrived too (one channel, one order)."""
    await st.chat(room, text)
    for s in streams:
        await s.wait_for(lambda e: e.get("type") == "chat" and e.get("text") == text, 30)


async def test_sale_created_on_a_is_bought_on_b_and_refusals_say_why(
        two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st, client(b.url, "v1") as viewer, \
            client(a.url, "u1") as u1a, client(b.url, "u1") as u1b, \
            client(a.url, "u2") as u2a, client(b.url, "u2") as u2b, \
            client(a.url, "u3") as u3a, client(b.url, "u4") as u4b:
        product = (await st.request("product_create", title="Tea", price=1000, stock=100))["product"]
        sale = (await st.request("sale_create", room="xa", product=product["id"], price=500,
                                 stock=3, duration_s=120, per_user_limit=1))["sale"]
        later = (await st.request("sale_create", room="xa", product=product["id"], price=500,
                                  stock=3, duration_s=60, per_user_limit=1,
                                  starts_at=int(time.time() * 1000) + 600_000))["sale"]
        snap = await viewer.join("xa")  # node b lists the sales a created after b started
        assert {s["id"] for s in snap["sales"]} == {sale["id"], later["id"]}
        mine = await u1b.buy(sale["id"], 1, "k1")  # bought on b
        assert mine["sale"] == sale["id"] and mine["status"] == "confirmed"
        # the gate's reasons reach the buyer as they are
        assert await refusal(u1a.buy(sale["id"], 1, "k1-again")) == "limit_reached"
        assert await refusal(u1b.buy(later["id"], 1, "k")) == "not_live"
        first = await u2a.buy(sale["id"], 1, "k2")
        again = await u2b.buy(sale["id"], 1, "k2")  # the same key replayed on the other node
        assert again["id"] == first["id"] and again["created_at"] == first["created_at"]
        assert await refusal(u2b.buy(sale["id"], 2, "k2")) in ("conflict", "limit_reached")
        # a coupon nobody issued (looked up in PostgreSQL too): refused, the unit not taken
        assert await refusal(u3a.buy(sale["id"], 1, "k3", coupon="c1")) == "not_found"
        await u3a.buy(sale["id"], 1, "k3")  # the last unit, sold on a
        assert await refusal(u4b.buy(sale["id"], 1, "k4")) == "sold_out"
        assert [o["id"] for o in await u2b.orders_mine()] == [first["id"]]


async def test_phase_announcements_reach_a_viewer_once(
        two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st, client(a.url, "va") as va, \
            client(b.url, "vb") as vb:
        for c in (st, va, vb):
            await c.join("xo")
        streams = [c.events("room:xo", types=["sale"]) for c in (va, vb)]
        chats = [c.events("room:xo", types=["chat"]) for c in (va, vb)]
        product = (await st.request("product_create", title="Tea", price=1000, stock=100))["product"]
        rush = (await st.request("sale_create", room="xo", product=product["id"], price=500,
                                 stock=6, duration_s=120, per_user_limit=1))["sale"]
        short = (await st.request("sale_create", room="xo", product=product["id"], price=500,
                                  stock=5, duration_s=2, per_user_limit=1))["sale"]
        buyers = [client((a, b)[i % 2].url, f"b{i}") for i in range(12)]
        for c in buyers:
            await c.connect()
        try:
            results = await asyncio.gather(*(c.buy(rush["id"], 1, f"k{i}")
                                             for i, c in enumerate(buyers)),
                                           return_exceptions=True)
            await buyers[0].buy(short["id"], 1, "k")
        finally:
            for c in buyers:
                await c.close()
        assert sum(isinstance(r, dict) for r in results) == 6
        assert {r.code for r in results if isinstance(r, SoukError)} == {"sold_out"}
        for node in (a, b):  # both nodes applied both phases: neither announces any more
            await settled(node.url, "xo", rush["id"], "sold_out")
            await settled(node.url, "xo", short["id"], "ended")
        await barrier(st, "xo", chats, "after the sale")
        for s in streams:
            events: list[dict[str, Any]] = []
            while not s.queue.empty():
                events.append(s.queue.get_nowait())  # type: ignore[arg-type]
            phases = [(e["id"], e["phase"]) for e in events if e.get("type") == "sale"]
            assert phases.count((rush["id"], "sold_out")) == 1, phases
            assert phases.count((short["id"], "ended")) == 1, phases


async def test_team_opened_on_a_filled_from_b_confirms_everyone_once(
        two_nodes: tuple[ServerProcess, ServerProcess], database: str) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st, client(a.url, "lead") as lead, \
            client(b.url, "m1") as m1, client(b.url, "m2") as m2, client(b.url, "vb") as vb:
        await st.join("xt")
        await vb.join("xt")
        room = vb.events("room:xt", types=["team"])
        chats = vb.events("room:xt", types=["chat"])
        told = {c.user["id"]: c.events(f"user:{c.user['id']}", types=["order"])  # type: ignore[index]
                for c in (lead, m1, m2)}
        product = (await st.request("product_create", title="Rice", price=900, stock=100))["product"]
        offer = (await st.request("teambuy_create", room="xt", product=product["id"], price=600,
                                  size=3, window_s=120))["teambuy"]
        team = await lead.team_open(offer["id"], "k")  # opened on a
        joined = await m1.team_join(offer["id"], team["id"], "k")  # joined on b by id
        assert joined["id"] == team["id"] and joined["count"] == 2
        full = await m2.team_join(offer["id"], None, "k")  # matched on b: closest to full
        assert full["id"] == team["id"] and full["status"] == "confirmed" and full["count"] == 3
        for stream in told.values():  # each hears it on its own channel (its own order)
            await stream.wait_for(lambda e: e.get("status") == "confirmed", 30)
        await barrier(st, "xt", [chats], "after the team")
        for user, stream in told.items():
            statuses = ["confirmed"]
            while not stream.queue.empty():
                statuses.append(stream.queue.get_nowait()["status"])  # type: ignore[index]
            assert statuses.count("confirmed") == 1, (user, statuses)
        finals = []
        while not room.queue.empty():
            ev = room.queue.get_nowait()
            if ev is not None and ev.get("type") == "team" and ev.get("status") == "confirmed":
                finals.append(ev)
        assert len(finals) == 1 and finals[0]["count"] == 3
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch('SELECT "user", status FROM orders WHERE team = $1 ORDER BY "user"',
                                team["id"])
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("lead", "confirmed"), ("m1", "confirmed"),
                                        ("m2", "confirmed")]


async def test_last_slots_raced_from_both_nodes_take_exactly_size_members(
        two_nodes: tuple[ServerProcess, ServerProcess], database: str) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st:
        product = (await st.request("product_create", title="Rice", price=900, stock=100))["product"]
        offer = (await st.request("teambuy_create", room="xr", product=product["id"], price=600,
                                  size=3, window_s=120))["teambuy"]
    teams = []
    for t in range(3):
        async with client((a, b)[t % 2].url, f"lead{t}") as lead:
            teams.append((await lead.team_open(offer["id"], "k"))["id"])
    racers = [client((a, b)[i % 2].url, f"r{i}") for i in range(12)]
    for c in racers:
        await c.connect()
    try:  # 4 racers per team, 2 on each node, for the 2 slots left; all at once
        results = await asyncio.gather(*(c.team_join(offer["id"], teams[i // 4], "k")
                                         for i, c in enumerate(racers)), return_exceptions=True)
    finally:
        for c in racers:
            await c.close()
    joined = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if not isinstance(r, dict)]
    assert len(joined) == 6, results
    assert all(isinstance(r, SoukError) and r.code == "team_full" for r in refused), refused
    conn = await asyncpg.connect(database)
    try:
        for team in teams:
            status = await conn.fetchval("SELECT status FROM teams WHERE id = $1", team)
            members = await conn.fetch("SELECT status FROM orders WHERE team = $1", team)
            assert status == "confirmed" and [m["status"] for m in members] == ["confirmed"] * 3
    finally:
        await conn.close()


async def test_team_that_runs_out_of_time_fails_once_per_cluster(
        two_nodes: tuple[ServerProcess, ServerProcess], database: str) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st, client(a.url, "lead") as lead, \
            client(b.url, "m1") as m1, client(b.url, "vb") as vb, client(a.url, "va") as va:
        for c in (st, vb, va):
            await c.join("xf")
        teams = [c.events("room:xf", types=["team"]) for c in (va, vb)]
        chats = [c.events("room:xf", types=["chat"]) for c in (va, vb)]
        told = {c.user["id"]: c.events(f"user:{c.user['id']}", types=["order"])  # type: ignore[index]
                for c in (lead, m1)}
        product = (await st.request("product_create", title="Rice", price=900, stock=100))["product"]
        offer = (await st.request("teambuy_create", room="xf", product=product["id"], price=600,
                                  size=3, window_s=3, stock=6))["teambuy"]
        team = await lead.team_open(offer["id"], "k")  # on a; both nodes arm its deadline
        await m1.team_join(offer["id"], team["id"], "k")  # on b
        for s in teams:
            await s.wait_for(lambda e: e.get("id") == team["id"] and e["status"] == "failed", 30)
        for node in (a, b):  # both nodes' deadlines passed: neither has the team open
            async with client(node.url, f"probe-{uuid.uuid4().hex[:8]}") as probe:
                for _ in range(300):
                    [tb] = (await probe.join("xf"))["teambuys"]
                    if not tb["teams"]:
                        break
                    await probe.leave("xf")
                    await asyncio.sleep(0.05)
                assert tb["teams"] == []
        await barrier(st, "xf", chats, "after the deadline")
        for s in teams:
            assert s.queue.empty()  # the one `failed` was the only final word
        for user, stream in told.items():
            statuses = []
            while not stream.queue.empty():
                statuses.append(stream.queue.get_nowait()["status"])  # type: ignore[index]
            assert statuses.count("failed") == 1, (user, statuses)
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT status FROM teams WHERE id = $1", team["id"]) == "failed"
        assert await conn.fetchval("SELECT stock_left FROM teambuys WHERE id = $1",
                                   offer["id"]) == 6  # the hold came back once
    finally:
        await conn.close()


async def test_team_keys_replayed_on_another_node_answer_the_first_order(
        two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_nodes
    async with client(a.url, "s1", "streamer") as st, client(a.url, "solo") as solo_a, \
            client(a.url, "mate") as mate_a, client(b.url, "solo") as solo_b, \
            client(b.url, "mate") as mate_b:
        product = (await st.request("product_create", title="Rice", price=900, stock=100))["product"]
        offer = (await st.request("teambuy_create", room="xk", product=product["id"], price=600,
                                  size=2, window_s=120))["teambuy"]
        opened = await solo_a.request("team_open", offer=offer["id"], key="ko")
        team = opened["team"]["id"]
        filled = await mate_a.request("team_join", offer=offer["id"], team=team, key="kj")
        assert filled["team"]["status"] == "confirmed"
        # node b never saw this offer; the team is settled, so b only finds it in PostgreSQL
        again = await mate_b.request("team_join", offer=offer["id"], team=team, key="kj")
        assert again["order"]["id"] == filled["order"]["id"]
        assert again["order"]["status"] == "confirmed" and again["team"]["count"] == 2
        reopened = await solo_b.request("team_open", offer=offer["id"], key="ko")
        assert reopened["order"]["id"] == opened["order"]["id"]
        assert reopened["team"]["id"] == team and reopened["order"]["status"] == "confirmed"
        # a new key is a new team, as on one node
        fresh = await solo_b.request("team_open", offer=offer["id"], key="ko2")
        assert fresh["team"]["id"] != team and fresh["order"]["status"] == "pending"
