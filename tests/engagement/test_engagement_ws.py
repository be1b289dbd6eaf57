"""Engagement over real sockets: every op through a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from client_sdk import SoukError
from tests.conftest import Running, token


async def _setup_sale(srv: Running, *, stock: int = 100, price: int = 1000, limit: int = 5) -> str:
    async with srv.client("st", "streamer") as st:
        p = (await st.request("product_create", title="Serum", price=price, stock=stock + 10))["product"]
        sale = (await st.request("sale_create", room="r1", product=p["id"], price=price, stock=stock,
                                 duration_s=600, per_user_limit=limit))["sale"]
        return str(sale["id"])


async def _group(srv: Running, tier: str = "normal") -> str:
    async with srv.client("st", "streamer") as st:
        return str((await st.request("group_create", tier=tier, topic="skin", title="Skin fans"))["group"]["id"])


def _get(url: str, tok: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


async def http_json(srv: Running, path: str, tok: str) -> Any:
    """A real HTTP GET in a thread (the server runs on this test's loop)."""
    return await asyncio.to_thread(_get, srv.http + path, tok)


async def test_coupon_issue_mine_and_buy_applies_once(server: Running) -> None:
    sale = await _setup_sale(server)
    async with server.client("st", "streamer") as st, server.client("u1") as u1:
        await u1.join("r1")
        events = u1.events("user:u1", types=["coupon"])
        res = await st.request("coupon_issue", user="u1", kind="amount", value=300, min_spend=1000)
        assert res["issued"] == 1
        cid = res["coupons"][0]["id"]
        ev = await events.wait_for(lambda e: e["id"] == cid)
        assert ev["status"] == "issued"
        mine = (await u1.request("coupons_mine"))["coupons"]
        assert [c["id"] for c in mine] == [cid]
        order = await u1.buy(sale, 1, coupon=cid)
        assert order["discount"] == 300 and order["paid"] == 700 and order["coupon"] == cid
        await events.wait_for(lambda e: e.get("status") == "redeemed")
        with pytest.raises(SoukError) as e:
            await u1.buy(sale, 1, coupon=cid)
        assert e.value.code == "conflict"
        mine = (await u1.request("coupons_mine"))["coupons"]
        assert mine[0]["status"] == "redeemed"
        # the refused second buy took no stock: one order only
        assert len(await u1.orders_mine()) == 1


async def test_coupon_refusals(server: Running) -> None:
    sale = await _setup_sale(server, price=500)
    async with server.client("st", "streamer") as st, server.client("u1") as u1, server.client("u2") as u2:
        cid = (await st.request("coupon_issue", user="u1", value=100, min_spend=1000))["coupons"][0]["id"]
        with pytest.raises(SoukError) as e:  # someone else's coupon
            await u2.buy(sale, 1, coupon=cid)
        assert e.value.code == "not_found"
        with pytest.raises(SoukError) as e:  # below the minimum spend
            await u1.buy(sale, 1, coupon=cid)
        assert e.value.code == "invalid"
        order = await u1.buy(sale, 2, coupon=cid)  # 1000 reaches it
        assert order["discount"] == 100
        assert len(await u2.orders_mine()) == 0
        for bad in ({"value": 0}, {"value": 1.5}, {"kind": "percent", "value": 101}, {"kind": "x", "value": 1},
                    {"value": 10, "expires_at": 5}):
            with pytest.raises(SoukError) as e:
                await st.request("coupon_issue", user="u1", **bad)
            assert e.value.code == "invalid"
        with pytest.raises(SoukError) as e:
            await u1.request("coupon_issue", user="u1", value=100)
        assert e.value.code == "forbidden"


async def test_coupon_rush_500_attempts_one_coupon(server: Running) -> None:
    """500 concurrent buys with the same coupon (distinct keys, 25 connections): one wins."""
    sale = await _setup_sale(server, stock=1000, limit=1000)
    async with server.client("st", "streamer") as st:
        cid = (await st.request("coupon_issue", user="u1", value=100))["coupons"][0]["id"]
    clients = [server.client("u1") for _ in range(25)]
    for c in clients:
        await c.connect()
    try:
        async def attempt(i: int) -> str:
            try:
                await clients[i % 25].buy(sale, 1, key=f"k{i}", coupon=cid)
                return "ok"
            except SoukError as exc:
                return exc.code

        results = await asyncio.gather(*(attempt(i) for i in range(500)))
    finally:
        for c in clients:
            await c.close()
    assert results.count("ok") == 1, set(results)
    # every other attempt is refused for the coupon (or by the per-connection rate limit)
    assert set(results) <= {"ok", "conflict", "rate_limited"}, set(results)
    assert results.count("conflict") >= 250
    left = server.app.commerce.sales[sale].stock_left
    assert left == 999
    rows = (await server.app.stores.db.rows("SELECT COUNT(*) FROM coupon_redemptions"))[0][0]
    assert rows == 1


async def test_poll_create_vote_change_close(server: Running) -> None:
    g1 = await _group(server)
    async with server.client("st", "streamer") as st, server.client("m1", "member") as m1, \
            server.client("m2", "member") as m2, server.client("v1") as v1:
        for m in (m1, m2):
            await m.request("group_join", group=g1)
            await m.join(group=g1)
        events = m1.events(f"group:{g1}", types=["poll"])
        poll = (await st.request("poll_create", group=g1, question="A or B next month?", options=["A", "B"]))["poll"]
        assert poll["counts"] == [0, 0]
        r = (await m1.request("poll_vote", poll=poll["id"], option=0))["poll"]
        assert r["counts"] == [1, 0] and r["mine"] == 0
        r = (await m1.request("poll_vote", poll=poll["id"], option=1))["poll"]  # changed, not added
        assert r["counts"] == [0, 1]
        r = (await m2.request("poll_vote", poll=poll["id"], option=1))["poll"]
        assert r["counts"] == [0, 2] and r["voters"] == 2
        await events.wait_for(lambda e: e["counts"] == [0, 2])
        with pytest.raises(SoukError) as e:  # not a member, not joined
            await v1.request("poll_vote", poll=poll["id"], option=0)
        assert e.value.code == "forbidden"
        with pytest.raises(SoukError) as e:
            await m1.request("poll_vote", poll=poll["id"], option=2)
        assert e.value.code == "invalid"
        closed = (await st.request("poll_close", poll=poll["id"]))["poll"]
        assert closed["open"] is False and closed["counts"] == [0, 2]
        await events.wait_for(lambda e: e["open"] is False)
        with pytest.raises(SoukError) as e:
            await m2.request("poll_vote", poll=poll["id"], option=0)
        assert e.value.code == "not_found"
        with pytest.raises(SoukError) as e:
            await m1.request("poll_create", group=g1, question="x", options=["a", "b"])
        assert e.value.code == "forbidden"
        with pytest.raises(SoukError) as e:
            await st.request("poll_create", group=g1, question="x", options=["a"])
        assert e.value.code == "invalid"


async def test_room_poll_live_results(server: Running) -> None:
    async with server.client("st", "streamer") as st, server.client("v1") as v1:
        await v1.join("r1")
        poll = (await st.request("poll_create", room="r1", question="Which shade?", options=["light", "dark"]))["poll"]
        assert (await v1.request("poll_vote", poll=poll["id"], option=1))["poll"]["counts"] == [0, 1]


async def test_checkin_streak_points_redeem(server: Running) -> None:
    g1 = await _group(server)
    clock = {"t": 1_800_000_000_000}
    server.app.engagement.clock_ms = lambda: clock["t"]
    async with server.client("m1", "member") as m1, server.client("v1") as v1:
        await m1.request("group_join", group=g1)
        with pytest.raises(SoukError) as e:
            await v1.request("checkin", group=g1)
        assert e.value.code == "forbidden"
        total = 0
        for day in range(10):
            r = (await m1.request("checkin", group=g1))["checkin"]
            assert r["streak"] == day + 1
            total += r["points"]
            with pytest.raises(SoukError) as e:
                await m1.request("checkin", group=g1)
            assert e.value.code == "conflict"
            clock["t"] += 86_400_000
        assert total == sum(10 + 2 * (min(d, 7) - 1) for d in range(1, 11))
        clock["t"] += 2 * 86_400_000
        assert (await m1.request("checkin", group=g1))["checkin"]["streak"] == 1
        total += 10
        assert (await m1.request("points_mine"))["points"] == total
        with pytest.raises(SoukError) as e:
            await m1.request("points_redeem", points=150)
        assert e.value.code == "invalid"
        r = await m1.request("points_redeem", points=100)
        assert r["coupon"]["value"] == 100 and r["balance"] == total - 100
        with pytest.raises(SoukError) as e:
            await m1.request("points_redeem", points=10_000)
        assert e.value.code == "conflict"


async def test_invites_attribution_and_reward_once(server: Running) -> None:
    g1 = await _group(server)
    async with server.client("inv", "member") as inv:
        await inv.request("group_join", group=g1)
        code = (await inv.request("invite_code", group=g1))
        assert code["link"].endswith(code["code"])
        assert (await inv.request("invite_code"))["code"] == code["code"]
        got = inv.events("user:inv", types=["coupon"])
        # a self-invite does not count
        r = await inv.request("group_join", group=g1, invite=code["code"])
        assert r["invite"] == {"counted": False}
        for i in range(7):
            async with server.client(f"f{i}", "member") as f:
                r = await f.request("group_join", group=g1, invite=code["code"])
                assert r["invite"]["counted"] is True
                # a repeat join with the same code does not count again
                await f.request("group_leave", group=g1)
                r = await f.request("group_join", group=g1, invite=code["code"])
                assert r["invite"] == {"counted": False}
        await got.wait_for(lambda e: e["source"] == "invite")
        stats = await inv.request("invite_code")
        assert stats["invited"] == 7 and stats["rewards"] == 2
        coupons = [c for c in (await inv.request("coupons_mine"))["coupons"] if c["source"] == "invite"]
        assert len(coupons) == 2
        # the inviter is tagged on the invitee
        async with server.client("st", "streamer") as st:
            members = (await st.request("group_members", group=g1))["members"]
            f0 = next(m for m in members if m["user"] == "f0")
            assert f0["tags"]["invited_by"] == "inv"
        with pytest.raises(SoukError) as e:
            await inv.request("group_join", group=g1, invite="nope")
        assert e.value.code == "not_found"


async def test_showcase_post_approve_one_reward_per_order(server: Running) -> None:
    g1 = await _group(server)
    sale = await _setup_sale(server)
    async with server.client("st", "streamer") as st, server.client("m1", "member") as m1, \
            server.client("m2", "member") as m2:
        for m in (m1, m2):
            await m.request("group_join", group=g1)
        order = await m1.buy(sale, 1)
        with pytest.raises(SoukError) as e:  # not the buyer
            await m2.request("showcase_post", group=g1, order=order["id"], image_url="https://x/y.jpg", text="nice")
        assert e.value.code == "not_found"
        with pytest.raises(SoukError) as e:
            await m1.request("showcase_post", group=g1, order=order["id"], image_url="javascript:1", text="nice")
        assert e.value.code == "invalid"
        post = (await m1.request("showcase_post", group=g1, order=order["id"],
                                 image_url="https://img.example/p.jpg", text="Love it"))["post"]
        assert post["status"] == "pending"
        with pytest.raises(SoukError) as e:
            await m1.request("showcase_post", group=g1, order=order["id"], image_url="https://x/y.jpg", text="again")
        assert e.value.code == "conflict"
        with pytest.raises(SoukError) as e:
            await m1.request("showcase_approve", post=post["id"])
        assert e.value.code == "forbidden"
        results = await asyncio.gather(st.request("showcase_approve", post=post["id"]),
                                       st.request("showcase_approve", post=post["id"]), return_exceptions=True)
        assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
        assert [c["source"] for c in (await m1.request("coupons_mine"))["coupons"]] == ["showcase"]


async def test_layers_members_thresholds_and_layer_coupon(server: Running) -> None:
    g1 = await _group(server)
    sale = await _setup_sale(server, price=30_000, limit=10)
    async with server.client("st", "streamer") as st, server.client("big", "member") as big, \
            server.client("talk", "member") as talk, server.client("idle", "member") as idle:
        for m in (big, talk, idle):
            await m.request("group_join", group=g1)
        await big.buy(sale, 1)
        await talk.join(group=g1)
        for i in range(3):
            await talk.chat(group=g1, text=f"hello {i}")
        t = (await st.request("layer_thresholds", high_activity_engagement=3))["thresholds"]
        assert t["high_activity_engagement"] == 3
        rows = {r["user"]: r for r in (await st.request("members"))["members"]}
        assert rows["big"]["layer"] == "high_value" and "bought:" in rows["big"]["tags"][0]
        assert rows["talk"]["layer"] == "high_activity" and rows["talk"]["messages"] == 3
        assert rows["idle"]["layer"] == "dormant"
        assert [r["user"] for r in (await st.request("members", layer="dormant"))["members"]] == ["idle"]
        res = await st.request("coupon_issue", layer="high_value", value=1000)
        assert res["issued"] == 1 and res["coupons"][0]["user"] == "big"
        with pytest.raises(SoukError) as e:
            await st.request("members", layer="vip")
        assert e.value.code == "invalid"
        with pytest.raises(SoukError) as e:
            await talk.request("members")
        assert e.value.code == "forbidden"


async def test_metrics_endpoints_roles(server: Running) -> None:
    g1 = await _group(server)
    ok = await http_json(server, "/api/shop/metrics", token("st", "streamer"))
    assert ok["shop"] == "default"
    assert (await http_json(server, f"/api/groups/{g1}/metrics", token("st", "streamer")))["group"] == g1
    with pytest.raises(urllib.error.HTTPError) as e:
        await http_json(server, "/api/rooms/r1/metrics", token("v", "viewer"))
    assert e.value.code == 403


async def test_concurrent_invite_joins_reward_once_per_three(server: Running) -> None:
    """10 invitees join at once with one code (each twice, concurrently): 10 counted, 3 rewards."""
    g1 = await _group(server)
    async with server.client("inv", "member") as inv:
        await inv.request("group_join", group=g1)
        code = (await inv.request("invite_code"))["code"]
    friends = [server.client(f"c{i}", "member") for i in range(10)]
    for f in friends:
        await f.connect()
    try:
        results = await asyncio.gather(*(f.request("group_join", group=g1, invite=code) for f in friends * 2),
                                       return_exceptions=True)
    finally:
        for f in friends:
            await f.close()
    counted = [r["invite"]["counted"] for r in results if isinstance(r, dict)]
    assert counted.count(True) == 10
    rows = (await server.app.stores.db.rows("SELECT COUNT(*) FROM invite_rewards"))[0][0]
    assert rows == 3
    async with server.client("inv", "member") as inv:
        assert len([c for c in (await inv.request("coupons_mine"))["coupons"] if c["source"] == "invite"]) == 3


@pytest.mark.parametrize("op,fields", [
    ("poll_create", {"room": "r1", "question": 5, "options": ["a", "b"]}),
    ("poll_create", {"room": "r1", "group": "g", "question": "q", "options": ["a", "b"]}),
    ("poll_create", {"room": "r1", "question": "q", "options": "ab"}),
    ("poll_vote", {"poll": {"x": 1}, "option": 0}),
    ("poll_close", {"poll": "x" * 100}),
    ("checkin", {"group": None}),
    ("points_redeem", {"points": "100"}),
    ("showcase_post", {"group": "nope", "order": "o", "image_url": "https://x", "text": "t"}),
    ("showcase_approve", {"post": ["p"]}),
    ("coupon_issue", {"user": ["a"] * 101, "value": 1}),
    ("coupon_issue", {"user": "u", "layer": "dormant", "value": 1}),
    ("coupon_issue", {"layer": "gold", "value": 1}),
    ("members", {"limit": -1}),
    ("layer_thresholds", {"high_value_aov": -5}),
    ("layer_invite", {"layer": "dormant", "group": "nope"}),
    ("metrics_exclude", {"add": "bot"}),
    ("buy", {"sale": "s1", "qty": 1, "key": "k", "coupon": {"$ne": 1}}),
])
async def test_hostile_fields_are_refused_with_codes(server: Running, op: str, fields: dict[str, Any]) -> None:
    async with server.client("adm", "admin") as adm:
        with pytest.raises(SoukError) as e:
            await adm.request(op, **fields)
        assert e.value.code in ("invalid", "not_found", "forbidden", "conflict"), e.value


async def test_sale_targeted_at_a_layer(server: Running) -> None:
    g1 = await _group(server)
    big_sale = await _setup_sale(server, price=30_000)
    presale = await _setup_sale(server, price=5000)
    async with server.client("st", "streamer") as st, server.client("big", "member") as big, \
            server.client("idle", "member") as idle:
        for m in (big, idle):
            await m.request("group_join", group=g1)
        await big.buy(big_sale, 1)
        assert (await st.request("sale_target", sale=presale, layer="high_value"))["target"]["layer"] == "high_value"
        assert (await big.buy(presale, 1))["sale"] == presale
        with pytest.raises(SoukError) as e:
            await idle.buy(presale, 1)
        assert e.value.code == "forbidden"
        with pytest.raises(SoukError) as e:
            await st.request("sale_target", sale=presale, layer="vip")
        assert e.value.code == "invalid"
        with pytest.raises(SoukError) as e:
            await big.request("sale_target", sale=presale, layer="dormant")
        assert e.value.code == "forbidden"


async def test_poll_closes_by_itself_at_closes_at(server: Running) -> None:
    async with server.client("st", "streamer") as st, server.client("v1") as v1:
        await v1.join("r1")
        events = v1.events("room:r1", types=["poll"])
        closes_at = server.app.clock_ms() + 1200
        poll = (await st.request("poll_create", room="r1", question="Now?", options=["y", "n"], closes_at=closes_at))["poll"]
        await v1.request("poll_vote", poll=poll["id"], option=0)
        ev = await events.wait_for(lambda e: e["open"] is False, timeout=5)
        assert ev["counts"] == [1, 0]
        with pytest.raises(SoukError) as e:
            await v1.request("poll_vote", poll=poll["id"], option=1)
        assert e.value.code in ("ended", "not_found")
