"""Commerce on the cluster backend: PostgreSQL ledger + Redis stock gate, real servers.

A database named for this test session is created on 127.0.0.1:5432 (and dropped at the
end); each test gets its own schema. Each "node" is a Commerce with its own connection pool
and Redis client, as separate server processes would have; the kill -9 test runs a node in
a real child process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from server.commerce import Commerce
from server.errors import SoukError
from server.store.gate import StockGate
from server.store.ledger import SqlLedger
from server.store.postgres import PgDatabase
from server.store.schema import migrate

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(60)]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"souk_test_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG + "/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    yield f"{PG}/{name}"
    asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@dataclass
class Cluster:
    dsn: str
    schema: str
    prefix: str
    nodes: list[Node]

    async def node(self) -> Node:
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4,
                                         server_settings={"search_path": self.schema})
        redis = Redis.from_url(REDIS_URL)
        db = PgDatabase(pool)
        await migrate(db)
        ledger = SqlLedger(db, StockGate(redis, self.prefix))
        commerce = Commerce(ledger, lambda *a, **k: None)
        await commerce.start()
        n = Node(pool, redis, ledger, commerce)
        self.nodes.append(n)
        return n

    async def forget_redis(self) -> None:
        """Redis lost everything of this cluster (restart without persistence, flush)."""
        r = Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=self.prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@dataclass
class Node:
    pool: asyncpg.Pool
    redis: Redis
    ledger: SqlLedger
    commerce: Commerce

    async def close(self) -> None:
        await self.commerce.stop()
        await self.pool.close()
        await self.redis.aclose()


@pytest.fixture
async def cluster(pg_database: str) -> AsyncIterator[Cluster]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_database)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    c = Cluster(pg_database, schema, f"souk-test-{uuid.uuid4().hex[:10]}:", [])
    try:
        yield c
    finally:
        for n in c.nodes:
            await n.close()
        await c.forget_redis()
        conn = await asyncpg.connect(pg_database)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def make_sale(n: Node, stock: int, limit: int = 1) -> str:
    product = await n.commerce.product_create("shop1", {"title": "Tea", "price": 1000,
                                                         "stock": 10_000})
    sale = await n.commerce.sale_create("r1", {"product": product["id"], "price": 500,
                                               "stock": stock, "duration_s": 60,
                                               "per_user_limit": limit})
    return str(sale["id"])


async def rush(nodes: list[Node], sale: str, buyers: range, qty: int = 1,
               tag: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Buyers in waves of 20 arriving at once, spread over the nodes; returns (orders acked,
    refusal codes)."""
    async def one(i: int) -> dict[str, Any] | str:
        try:
            return await nodes[i % len(nodes)].commerce.buy(f"u{i}", sale, qty, f"k{tag}{i}")
        except SoukError as exc:
            return exc.code

    out: list[dict[str, Any] | str] = []
    for w in range(0, len(buyers), 20):
        out += await asyncio.gather(*(one(i) for i in buyers[w:w + 20]))
    return [o for o in out if isinstance(o, dict)], [o for o in out if isinstance(o, str)]


async def durable(n: Node, sale: str) -> tuple[int, int, int]:
    """(orders, units in orders, stock_left) as PostgreSQL has them."""
    async with n.pool.acquire() as conn:
        count, units = await conn.fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(qty), 0) FROM orders WHERE sale = $1", sale)
        left = await conn.fetchval("SELECT stock_left FROM sales WHERE id = $1", sale)
    return int(count), int(units), int(left)


async def test_rush_through_two_nodes_never_oversells(cluster: Cluster) -> None:
    a = await cluster.node()
    sale = await make_sale(a, stock=50)
    b = await cluster.node()  # learns the sale from PostgreSQL at start-up
    assert sale in b.commerce.sales
    acked, refused = await rush([a, b], sale, range(400))
    assert len(acked) == 50
    assert len(refused) == 350 and set(refused) <= {"sold_out", "ended"}
    assert len({o["user"] for o in acked}) == 50
    assert await durable(a, sale) == (50, 50, 0)
    # both nodes sold: the gate, not luck, kept the total
    by_node = {0: 0, 1: 0}
    for o in acked:
        by_node[int(o["user"][1:]) % 2] += 1
    assert by_node[0] > 0 and by_node[1] > 0


async def test_a_product_id_taken_on_another_node_is_a_conflict(cluster: Cluster) -> None:
    """Node B does not know the product A made: the database's key refuses the second one,
    and B answers `conflict` (not a failed write) and still knows nothing wrong."""
    a, b = await cluster.node(), await cluster.node()
    await a.commerce.product_create("shop1", {"id": "p-one", "title": "Tea", "price": 1000,
                                              "stock": 5})
    with pytest.raises(SoukError) as refused:
        await b.commerce.product_create("shop1", {"id": "p-one", "title": "Other", "price": 9,
                                                  "stock": 1})
    assert refused.value.code == "conflict"
    assert (await b.commerce.find_product("p-one"))["title"] == "Tea"  # type: ignore[index]


async def test_per_user_limit_and_keys_hold_across_nodes(cluster: Cluster) -> None:
    a = await cluster.node()
    sale = await make_sale(a, stock=100, limit=2)
    b = await cluster.node()
    first = await a.commerce.buy("alice", sale, 1, "k1")
    # same user, other node, other key: the limit counts both nodes
    await b.commerce.buy("alice", sale, 1, "k2")
    with pytest.raises(SoukError) as exc:
        await b.commerce.buy("alice", sale, 1, "k3")
    assert exc.value.code in ("limit_reached", "ended")
    with pytest.raises(SoukError):
        await a.commerce.buy("alice", sale, 1, "k4")
    # the same key on the same node is the same order
    again = await a.commerce.buy("alice", sale, 1, "k1")
    assert again["id"] == first["id"]
    assert (await durable(a, sale))[:2] == (2, 2)


async def test_redis_loss_mid_sale_neither_oversells_nor_loses_orders(cluster: Cluster) -> None:
    a = await cluster.node()
    sale = await make_sale(a, stock=60)
    b = await cluster.node()
    acked1, _ = await rush([a, b], sale, range(0, 40))
    assert len(acked1) == 40
    await cluster.forget_redis()  # Redis restarted empty mid-sale
    acked2, refused2 = await rush([a, b], sale, range(40, 200))
    assert len(acked2) == 20 and len(refused2) == 140
    assert a.ledger.rebuilds + b.ledger.rebuilds >= 1  # the gate came back from PostgreSQL
    assert await durable(a, sale) == (60, 60, 0)
    async with a.pool.acquire() as conn:
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders WHERE sale = $1", sale)}
    assert {o["id"] for o in acked1 + acked2} == ids


async def test_restart_keeps_orders_and_rebuilds_the_gate(cluster: Cluster) -> None:
    a = await cluster.node()
    sale = await make_sale(a, stock=10)
    order = await a.commerce.buy("bob", sale, 1, "kb")
    await a.close()
    cluster.nodes.remove(a)
    await cluster.forget_redis()
    a2 = await cluster.node()  # start-up: the gate is built from PostgreSQL
    assert a2.ledger.rebuilds == 1
    assert (await a2.commerce.buy("bob", sale, 1, "kb"))["id"] == order["id"]
    mine = await a2.commerce.orders_mine("bob")
    assert [o["id"] for o in mine] == [order["id"]]
    acked, _ = await rush([a2], sale, range(100))
    assert len(acked) == 9
    assert await durable(a2, sale) == (10, 10, 0)
    page1 = await a2.ledger.orders_of_room("r1", limit=4)
    page2 = await a2.ledger.orders_of_room("r1", limit=100, after=page1[-1]["id"])
    assert page1[0]["id"] == order["id"] and len(page1) + len(page2) == 10


CHILD = """
import asyncio, sys, asyncpg, uvloop
from redis.asyncio import Redis
from server.commerce import Commerce
from server.errors import SoukError
from server.store.gate import StockGate
from server.store.ledger import SqlLedger
from server.store.postgres import PgDatabase
from server.store.schema import migrate

REDIS = "redis://127.0.0.1:6379/0"

async def main(dsn, schema, prefix, sale, start, count):
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4,
                                     server_settings={"search_path": schema})
    db = PgDatabase(pool)
    await migrate(db)
    commerce = Commerce(SqlLedger(db, StockGate(Redis.from_url(REDIS), prefix)),
                        lambda *a, **k: None)
    await commerce.start()
    async def one(i):
        try:
            o = await commerce.buy(f"c{i}", sale, 1, f"kc{i}")
            sys.stdout.write(o["id"] + "\\n"); sys.stdout.flush()
        except SoukError:
            pass
    for base in range(start, start + count, 20):
        await asyncio.gather(*(one(i) for i in range(base, base + 20)))
        await asyncio.sleep(0.01)
    await asyncio.sleep(30)

uvloop.run(main(*sys.argv[1:5], int(sys.argv[5]), int(sys.argv[6])))
"""


async def test_kill_9_loses_no_acknowledged_order(cluster: Cluster) -> None:
    a = await cluster.node()
    sale = await make_sale(a, stock=300)
    child = subprocess.Popen(  # noqa: ASYNC220 - started once; reading is off the loop
        [sys.executable, "-c", CHILD, cluster.dsn, cluster.schema, cluster.prefix, sale,
         "0", "1000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout is not None
    acked: list[str] = []
    loop = asyncio.get_running_loop()
    while len(acked) < 120:  # kill it mid-rush, with orders in flight
        line = await loop.run_in_executor(None, child.stdout.readline)
        assert line, "the child died on its own"
        acked.append(line.decode().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    async with a.pool.acquire() as conn:
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders WHERE sale = $1", sale)}
    assert set(acked) <= ids  # every acknowledged order is durable
    count, units, left = await durable(a, sale)
    assert units + left == 300  # and the stock balances
    # the survivors sell on: the gate still matches PostgreSQL, the rest of the stock sells
    more, _ = await rush([a], sale, range(2000, 2600))
    count2, units2, left2 = await durable(a, sale)
    assert left2 == 0 and units2 == 300 and count2 == count + len(more)
