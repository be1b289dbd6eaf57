"""Cross-feature reactions, end to end over real websockets: what commerce decides reaches
the community and the merchant's numbers through typed domain events (server/reactions.py).

A sale that goes live and a team-buy offer send a notice to the room's linked groups (once
each, however many stock pushes follow), a confirmed order tags the buyer with the product, a
sale is an action in the merchant's log, and chat and likes count in the room's numbers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from server.domain.events import DomainEvent
from tests.conftest import Running, token
from tests.integration.test_http import aget


async def until(check: Any, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_sales_offers_and_orders_reach_the_groups_tags_and_log(server: Running) -> None:
    st = server.client("host", "streamer")
    await st.connect()
    await st.join("live")
    gid = (await st.request("group_create", tier="core", topic="tea"))["group"]["id"]
    await st.request("link_groups", room="live", groups=[gid])
    fan = server.client("fan", "member", groups=[])
    await fan.connect()
    await fan.request("group_join", group=gid)
    await fan.join(group=gid)
    await fan.join("live")
    notices = fan.events(f"group:{gid}", types=["notice"])

    product = (await st.request("product_create", title="Oolong 100 g", price=3900, stock=50))["product"]
    sale = (await st.request("sale_create", room="live", product=product["id"], price=2900,
                             stock=10, duration_s=60, per_user_limit=5))["sale"]
    notice = await notices.next(5)
    assert notice["kind"] == "sale" and notice["sale"] == sale["id"] and "Oolong" in notice["text"]

    offer = (await st.request("teambuy_create", room="live", product=product["id"], price=2500,
                              size=2, window_s=600, stock=4))["teambuy"]
    notice = await notices.next(5)
    assert notice["kind"] == "teambuy" and notice["offer"] == offer["id"]

    for _ in range(3):  # each buy moves the stock; the room hears it, the groups do not again
        order = await fan.buy(sale["id"])
        assert order["status"] == "confirmed"
    await asyncio.sleep(0.5)
    assert notices.queue.empty(), "a sale is announced to the groups once"

    async def fan_tags() -> list[str]:
        members = (await st.request("group_members", group=gid))["members"]
        return next(m["tags"]["bought"] for m in members if m["user"] == "fan")

    assert await until(fan_tags) == [product["id"]]

    await server.app.insights.flush()
    actions = await server.app.stores.db.rows(
        "SELECT kind, detail FROM merchant_actions WHERE scope = 'room' AND target = 'live'")
    assert [(a["kind"], a["detail"]) for a in actions] == [("sale", "Oolong 100 g")]
    for c in (st, fan):
        await c.close()


async def test_chat_and_likes_count_in_the_room_numbers(server: Running) -> None:
    async with server.client("v1") as v:
        await v.join("numbers")
        await v.chat("numbers", "hello")
        await v.chat("numbers", "how much?")
        await v.like("numbers", 3)
    status, _, body = await aget(f"{server.http}/api/rooms/numbers/metrics",
                                 {"Authorization": f"Bearer {token('boss', 'admin')}"})
    assert status == 200, body
    numbers = orjson.loads(body)
    assert numbers["messages"] == 2 and numbers["likes"] == 3


async def test_every_domain_event_has_a_reaction(server: Running) -> None:
    """An event nobody reacts to is a decision that goes nowhere: the wiring covers them all."""
    kinds = DomainEvent.__args__  # type: ignore[attr-defined]
    assert len(kinds) >= 9  # the union was read (not empty)
    missing = [k.__name__ for k in kinds if server.app.events.subscribed(k) == 0]
    assert missing == []
