"""Commerce over real sockets: a rush, team buys, the sales panel and the orders API."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from collections import Counter
from typing import Any

import orjson
import pytest

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import Running, token


async def streamer_with_sale(server: Running, room: str, stock: int, limit: int = 1, **extra: Any) -> tuple[Client, dict[str, Any]]:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.join(room)
    await st.request("product_create", id=f"{room}-p", title="Serum", price=12900, stock=stock * 2)
    sale = (await st.request("sale_create", room=room, product=f"{room}-p", price=9900, stock=stock,
                             duration_s=60, per_user_limit=limit, **extra))["sale"]
    return st, sale


async def test_500_buyers_rush_50_units(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(ops_per_s=100.0, ops_burst=100.0)
    st, sale = await streamer_with_sale(srv, "rush", 50)
    assert sale["phase"] == "live" and sale["stock_left"] == 50
    watcher = srv.client("watcher")
    await watcher.connect()
    await watcher.join("rush")
    stock_events = watcher.events("room:rush", types=["sale"])
    buyers = [srv.client(f"b{i}") for i in range(500)]
    await asyncio.gather(*(b.connect() for b in buyers))

    async def attempt(b: Client) -> str:
        try:
            await b.buy(sale["id"], 1, key=f"k-{b.user['id']}")  # type: ignore[index]
            return "ok"
        except SoukError as e:
            return e.code

    results = Counter(await asyncio.gather(*(attempt(b) for b in buyers)))
    assert results == {"ok": 50, "sold_out": 450}
    last = await stock_events.wait_for(lambda e: e["stock_left"] == 0, timeout=5)
    assert last["phase"] == "sold_out"
    stats = (await st.request("sales_stats", room="rush"))["stats"]
    assert stats["units"] == 50 and stats["revenue"] == 50 * 9900
    # the same key again returns the same order, never a second one
    winner = None
    for b in buyers:
        if await b.orders_mine():
            winner = b
            break
    assert winner is not None
    again = await winner.buy(sale["id"], 1, key=f"k-{winner.user['id']}")  # type: ignore[index]
    assert [o["id"] for o in await winner.orders_mine()] == [again["id"]]
    await asyncio.gather(*(b.close() for b in buyers))
    await watcher.close()
    await st.close()


async def test_order_reaches_private_channel_and_limits(server: Running) -> None:
    st, sale = await streamer_with_sale(server, "lim", 10, limit=2)
    async with server.client("buyer") as b:
        mine = b.events("user:buyer", types=["order"])
        order = await b.buy(sale["id"], 2)
        assert order["qty"] == 2 and order["status"] == "confirmed"
        assert (await mine.next(5))["id"] == order["id"]
        with pytest.raises(SoukError) as err:
            await b.buy(sale["id"], 1)
        assert err.value.code == "limit_reached"
        with pytest.raises(SoukError) as err:
            await b.buy("s-nope", 1)
        assert err.value.code == "not_found"
        with pytest.raises(SoukError) as err:
            await b.request("buy", sale=sale["id"], qty=1.5, key="x")
        assert err.value.code == "invalid"
    await st.request("sale_cancel", room="lim", sale=sale["id"])
    async with server.client("late") as b:
        with pytest.raises(SoukError) as err:
            await b.buy(sale["id"], 1)
        assert err.value.code == "ended"
    later, sale2 = await streamer_with_sale(server, "sched", 5, starts_at=int(time.time() * 1000) + 60_000)
    async with server.client("early") as b:
        with pytest.raises(SoukError) as err:
            await b.buy(sale2["id"], 1)
        assert err.value.code == "not_live"
    await st.close()
    await later.close()


async def test_team_fills_and_confirms_and_one_expires(server: Running) -> None:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.join("tb")
    await st.request("product_create", id="tb-p", title="Mask", price=5900, stock=100)
    offer = (await st.request("teambuy_create", room="tb", product="tb-p", price=3900, size=3, window_s=60))["teambuy"]
    short = (await st.request("teambuy_create", room="tb", product="tb-p", price=3900, size=2, window_s=1))["teambuy"]
    clients = [server.client(f"t{i}") for i in range(4)]
    for c in clients:
        await c.connect()
        await c.join("tb")
    teams = clients[0].events("room:tb", types=["team"])
    leader = (await clients[0].request("team_open", offer=offer["id"], key="k0"))["team"]
    joined = (await clients[1].request("team_join", offer=offer["id"], key="k1"))["team"]
    assert joined["id"] == leader["id"]  # matched into the open team
    with pytest.raises(SoukError) as err:
        await clients[1].team_join(offer["id"], leader["id"])
    assert err.value.code == "already_in_team"
    full = await clients[2].request("team_join", offer=offer["id"], team=leader["id"], key="k2")
    assert full["team"]["status"] == "confirmed" and len(full["team"]["members"]) == 3
    await teams.wait_for(lambda e: e["id"] == leader["id"] and e["status"] == "confirmed", 5)
    orders = await clients[2].orders_mine()
    assert orders[0]["status"] == "confirmed"
    # a team that does not fill in time fails and its member is told
    mine = clients[3].events("user:t3", types=["order"])
    await clients[3].request("team_open", offer=short["id"], key="k3")
    failed = await mine.wait_for(lambda e: e["status"] == "failed", 5)
    assert failed["offer"] == short["id"]
    for c in (*clients, st):
        await c.close()


async def test_orders_and_sales_api(server: Running) -> None:
    st, sale = await streamer_with_sale(server, "api", 5)
    async with server.client("buyer") as b:
        order = await b.buy(sale["id"], 1)

    def get(path: str, tok: str) -> tuple[int, Any]:
        req = urllib.request.Request(server.http + path, headers={"Authorization": f"Bearer {tok}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None

    status, doc = await asyncio.to_thread(get, "/api/rooms/api/orders", token("boss", "streamer"))
    assert status == 200 and [o["id"] for o in doc["orders"]] == [order["id"]]
    status, doc = await asyncio.to_thread(get, "/api/rooms/api/sales", token("boss", "streamer"))
    assert status == 200 and doc["units"] == 1
    status, _ = await asyncio.to_thread(get, "/api/rooms/api/orders", token("nosy", "viewer"))
    assert status == 403
    await st.close()


async def test_a_rush_gives_at_most_two_purchase_events_a_second_counting_every_order(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(ops_per_s=200.0, ops_burst=200.0)
    st, sale = await streamer_with_sale(srv, "proof", 400, limit=5)
    watcher = srv.client("watcher")
    await watcher.connect()
    await watcher.join("proof")
    proof = watcher.events("room:proof", types=["purchase"])
    buyers = [srv.client(f"pb{i}", name=f"小{i}") for i in range(40)]
    await asyncio.gather(*(b.connect() for b in buyers))
    t0 = time.monotonic()
    orders = await asyncio.gather(*(b.buy(sale["id"], 1) for b in buyers for _ in range(5)))
    rush_s = time.monotonic() - t0
    assert len(orders) == 200
    got: list[dict[str, Any]] = []
    while sum(e["count"] for e in got) < 200:
        got.append(await proof.next(5))
    assert sum(e["count"] for e in got) == 200  # every order counted once, none twice
    stamps = [e["ts"] for e in got]
    assert all(b - a >= 495 for a, b in itertools.pairwise(stamps)), stamps  # at most 2 a second
    assert len(got) <= rush_s * 2 + 2
    for e in got:
        assert 1 <= len(e["items"]) <= 3
        for item in e["items"]:
            assert item["name"].startswith("小") and item["name"].endswith("*") and len(item["name"]) == 2
            assert (item["product"], item["qty"]) == ("Serum", 1)
    # a team that fills is two confirmed orders: they are told too
    offer = (await st.request("teambuy_create", room="proof", product="proof-p", price=3900, size=2,
                              window_s=60))["teambuy"]
    team = await buyers[0].team_open(offer["id"])
    await buyers[1].team_join(offer["id"], team["id"])
    told = await proof.next(5)
    assert told["count"] == 2 and [i["name"] for i in told["items"]] == ["小*", "小*"]
    for c in (*buyers, watcher, st):
        await c.close()


async def test_teams_mine_after_a_reload_and_masked_member_names(server: Running) -> None:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.request("product_create", id="mine-p", title="Tote bag", price=5900, stock=100)
    offer = (await st.request("teambuy_create", room="mine", product="mine-p", price=3900, size=2,
                              window_s=60))["teambuy"]
    lee, wu, other = server.client("lee", name="Lee Ming"), server.client("wu", name="吴芳"), server.client("zz")
    for c in (lee, wu, other):
        await c.connect()
    full = await lee.team_open(offer["id"])
    await wu.team_join(offer["id"], full["id"])
    still_open = (await st.request("teambuy_create", room="mine", product="mine-p", price=3900, size=3,
                                   window_s=60))["teambuy"]
    waiting = await lee.team_open(still_open["id"])
    async with server.client("lee", name="Lee Ming") as reloaded:  # the same buyer, a new page
        teams = {t["id"]: t for t in await reloaded.teams_mine()}
    assert set(teams) == {full["id"], waiting["id"]}
    done = teams[full["id"]]
    assert (done["status"], done["count"], done["size"], done["title"]) == ("confirmed", 2, 2, "Tote bag")
    assert [m["name"] for m in done["members"]] == ["L*", "吴*"]  # never the whole name
    assert done["remaining_ms"] == 0
    assert teams[waiting["id"]]["status"] == "open" and 0 < teams[waiting["id"]]["remaining_ms"] <= 60_000
    assert await other.teams_mine() == []  # only the caller's own teams
    for c in (lee, wu, other, st):
        await c.close()
