"""A spent coupon stays spent across kill -9: the redemption is durable with its order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from client_sdk import Client, SoukError
from tests.conftest import token


@pytest.mark.slow
async def test_coupon_spent_before_kill9_stays_spent(server_process: Callable[..., Any]) -> None:
    proc = server_process()
    async with Client(proc.url, token("st", "streamer"), reconnect=False) as st:
        p = (await st.request("product_create", title="Mask", price=800, stock=100))["product"]
        sale = (await st.request("sale_create", room="r1", product=p["id"], price=800, stock=50,
                                 duration_s=600, per_user_limit=10))["sale"]["id"]
        cid = (await st.request("coupon_issue", user="u1", value=200))["coupons"][0]["id"]
        spare = (await st.request("coupon_issue", user="u1", value=100))["coupons"][0]["id"]
    async with Client(proc.url, token("u1"), reconnect=False) as u1:
        order = await u1.buy(sale, 1, key="first", coupon=cid)
        assert order["discount"] == 200
    proc.kill9()
    proc.start()
    async with Client(proc.url, token("u1"), reconnect=False) as u1:
        with pytest.raises(SoukError) as e:
            await u1.buy(sale, 1, key="second", coupon=cid)
        assert e.value.code == "conflict"
        status = {c["id"]: c["status"] for c in (await u1.request("coupons_mine"))["coupons"]}
        assert status == {cid: "redeemed", spare: "issued"}
        assert (await u1.buy(sale, 1, key="third", coupon=spare))["discount"] == 100
        await asyncio.sleep(0)
