"""kill -9 of a real server process in the middle of a rush: no acknowledged order is lost,
no order exists that was not attempted, and stock_left + units_sold == stock after restart."""

from __future__ import annotations

import asyncio
import random
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import token


def api(http: str, path: str) -> Any:
    req = urllib.request.Request(http + path, headers={"Authorization": f"Bearer {token('boss', 'streamer')}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())


async def rush_and_kill(proc: Any, sale_id: str, n_buyers: int, kill_after: float) -> tuple[set[str], set[str]]:
    acked: set[str] = set()
    attempted: set[str] = set()
    buyers = [Client(proc.url, token(f"b{i}"), reconnect=False) for i in range(n_buyers)]
    await asyncio.gather(*(b.connect() for b in buyers))

    async def buyer(b: Client, i: int) -> None:
        for j in range(50):
            key = f"b{i}-{j}"
            attempted.add(key)
            try:
                order = await b.buy(sale_id, 1, key=key)
                acked.add(order["id"])
            except SoukError as e:
                if e.code in ("sold_out", "limit_reached"):
                    return
                if e.code == "connection_lost":
                    return
                raise
            except (TimeoutError, OSError):
                return

    tasks = [asyncio.create_task(buyer(b, i)) for i, b in enumerate(buyers)]
    await asyncio.sleep(kill_after)
    proc.kill9()
    await asyncio.gather(*tasks, return_exceptions=True)
    for b in buyers:
        b.reconnect = False
        await b.close()
    return acked, attempted


async def test_kill9_during_rush_loses_no_acknowledged_order(server_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    data = tmp_path / "crashdata"
    proc = server_process(data_dir=data)
    async with Client(proc.url, token("boss", "streamer")) as st:
        await st.request("product_create", id="crash-p", title="P", price=100, stock=5000)
        sale = (await st.request("sale_create", room="crash", product="crash-p", price=90, stock=3000,
                                 duration_s=3600, per_user_limit=1000))["sale"]
    all_acked: set[str] = set()
    all_attempted: set[str] = set()
    for round_ in range(3):
        acked, attempted = await rush_and_kill(proc, sale["id"], 20, rng.uniform(0.3, 1.2))
        assert acked, "the rush acknowledged nothing before the kill"
        all_acked |= acked
        all_attempted |= attempted
        proc = server_process(data_dir=data, port=proc.port)
        orders = (await asyncio.to_thread(api, proc.http, "/api/rooms/crash/orders?limit=5000"))["orders"]
        ids = {o["id"] for o in orders}
        assert all_acked <= ids, f"round {round_}: lost {len(all_acked - ids)} acknowledged orders"
        assert {o["key"] for o in orders} <= all_attempted
        assert len({(o["user"], o["key"]) for o in orders}) == len(orders)
        async with Client(proc.url, token("v")) as v:
            snap = await v.join("crash")
        s = next(x for x in snap["sales"] if x["id"] == sale["id"])
        units = sum(o["qty"] for o in orders if o["status"] == "confirmed")
        assert s["stock_left"] + units == s["stock"] == 3000
