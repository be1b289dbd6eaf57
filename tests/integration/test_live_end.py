"""Ending the live: the room's running sales end and its open teams fail (their holds go
back), each written before the room is told, so a kill -9 right after the `ok` keeps it; then
nothing sells in the room until the streamer goes live again. Real `souk serve` children."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import token


async def test_ending_the_live_ends_sales_and_fails_open_teams_durably(server_process: Any, tmp_path: Path) -> None:
    data = tmp_path / "enddata"
    proc = server_process(data_dir=data)
    async with Client(proc.url, token("boss", "streamer", rooms=["fin"]), reconnect=False) as boss, \
            Client(proc.url, token("fan", rooms=["fin"]), reconnect=False) as fan:
        await boss.request("product_create", id="fin-p", title="Tea", price=1000, stock=100)
        sale = (await boss.request("sale_create", room="fin", product="fin-p", price=800, stock=10,
                                   duration_s=600, per_user_limit=2))["sale"]
        offer = (await boss.request("teambuy_create", room="fin", product="fin-p", price=700, size=3,
                                    window_s=600, stock=6))["teambuy"]
        await fan.join("fin")
        events = fan.events("room:fin", types=["sale", "team", "state"])
        order = await fan.buy(sale["id"], 1)
        team = await fan.team_open(offer["id"])
        await boss.request("room_state", room="fin", state="live")
        await boss.request("room_state", room="fin", state="ended")
        ended = await events.wait_for(lambda e: e["type"] == "sale" and e["phase"] == "ended", 5)
        assert ended["id"] == sale["id"] and ended["stock_left"] == 9
        failed = await events.wait_for(lambda e: e["type"] == "team" and e["status"] == "failed", 5)
        assert failed["id"] == team["id"]
        # refused after the end, with the codes the pages know
        with pytest.raises(SoukError) as err:
            await fan.buy(sale["id"], 1)
        assert err.value.code == "ended"
        with pytest.raises(SoukError) as err:
            await fan.team_open(offer["id"])
        assert err.value.code == "ended"
    proc.kill9()

    proc = server_process(data_dir=data, port=proc.port)
    async with Client(proc.url, token("fan", rooms=["fin"]), reconnect=False) as fan:
        snap = await fan.join("fin")
        assert snap["state"] == "ended"
        assert [(s["id"], s["phase"]) for s in snap["sales"]] == [(sale["id"], "ended")]
        assert snap["teambuys"][0]["stock_left"] == 6  # the failed team's hold went back
        orders = {o["id"]: o for o in await fan.orders_mine()}
        assert orders[order["id"]]["status"] != "failed"  # what was bought stays bought
        assert [o["status"] for o in orders.values() if o.get("team") == team["id"]] == ["failed"]
        with pytest.raises(SoukError) as err:
            await fan.team_open(offer["id"])
        assert err.value.code == "ended"
