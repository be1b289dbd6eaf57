"""A flash sale through real cluster nodes: `souk serve --redis ... --postgres ...` processes
on 127.0.0.1, buyers over websockets on both, PostgreSQL as the record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import ServerProcess, token

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(90)]


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


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"souk-test-{uuid.uuid4().hex[:12]}:"
    yield p
    r = Redis.from_url(REDIS_URL)
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


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
