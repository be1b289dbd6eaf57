"""One lucky draw in a real two-node cluster (`--redis --postgres`, two `souk serve`
processes): entered from both nodes, the same users on both at once, it is drawn once, both
rooms see the same result, and the prizes exist once in the shared database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg

from client_sdk import Client
from tests.conftest import REDIS_URL, ServerProcess, token


async def test_a_draw_entered_on_two_nodes_is_drawn_once(server_process: Callable[..., ServerProcess],
                                                         database: str, prefix: str, tmp_path: Path) -> None:
    flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", database)
    a = server_process(*flags, data_dir=tmp_path / "a")
    b = server_process(*flags, data_dir=tmp_path / "b")
    async with Client(a.url, token("boss", "streamer")) as st:
        await st.join("cl")
        await st.request("product_create", id="bag", title="Bag", price=900, stock=20)
        d = (await st.request("draw_create", room="cl", title="福袋", prize={"product": "bag"},
                              winners=3, duration_s=6))["draw"]
    watchers = [Client(n.url, token(f"w{n.port}"), reconnect=False) for n in (a, b)]
    streams = []
    for w in watchers:
        await w.connect()
        streams.append(w.events("room:cl", ["draw"]))
        await w.join("cl")

    async def enter(node: ServerProcess, user: str) -> bool:
        async with Client(node.url, token(user), reconnect=False) as c:
            await c.join("cl")
            return bool((await c.draw_enter(d["id"]))["entered"])

    users = [f"u{i}" for i in range(40)]
    results = await asyncio.gather(
        *(enter(a if i % 2 else b, u) for i, u in enumerate(users)),
        *(enter(b if i % 2 else a, u) for i, u in enumerate(users[:10])))  # same users, other node
    assert all(results)
    seen_b = await streams[1].wait_for(lambda e: e["id"] == d["id"] and e["entrants"] == 40, timeout=10)
    assert seen_b["phase"] == "open"  # node B's room counts node A's entries too
    done = [await s.wait_for(lambda e: e["id"] == d["id"] and e["phase"] == "done", timeout=20)
            for s in streams]
    assert done[0]["winners"] == done[1]["winners"] and len(done[0]["winners"]) == 3
    assert done[0]["seed"] == done[1]["seed"] and done[0]["entrants"] == 40
    conn = await asyncpg.connect(database)
    try:
        prizes = await conn.fetch('SELECT "user" FROM orders WHERE draw = $1', d["id"])
        entries = await conn.fetchval("SELECT COUNT(*) FROM draw_entries WHERE draw = $1", d["id"])
        stock = await conn.fetchval("SELECT stock FROM products WHERE id = 'bag'")
    finally:
        await conn.close()
    assert sorted(r["user"] for r in prizes) == sorted(w["user"] for w in done[0]["winners"])
    assert entries == 40 and stock == 17
    async with Client(b.url, token("u1")) as c:  # the other node knows the result too
        await c.join("cl")
        listed = next(x for x in await c.draws("cl") if x["id"] == d["id"])
        assert listed["phase"] == "done" and listed["entered"]
    for w in watchers:
        await w.close()
