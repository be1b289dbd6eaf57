"""The commerce ledger for a cluster: orders committed in PostgreSQL, flash-sale stock gated
atomically in Redis.

Why this shape (issue 9, RESEARCH.md "Flash sales"): several nodes sell the same sale, and
each node's in-memory FlashSale only knows its own buyers. So before an order is written,
one Redis Lua script (`StockGate`) decides for the whole cluster, atomically: the sale is
live, enough stock is left, the buyer stays within the per-user limit, and the (user, key)
was never used. PostgreSQL then commits the order with the same guards in SQL (unique
(user, sale, key), a conditional `UPDATE ... WHERE stock_left >= qty`, `CHECK (stock_left >=
0)`): the final word, so even a gate rebuilt from stale numbers cannot oversell. An order is
acknowledged only after PostgreSQL commits (the adapter awaits `add_orders`).

Redis is never the source of truth: the gate of a sale is (re)built from PostgreSQL on
start-up (`load`) and whenever the gate finds its keys gone (Redis restarted or flushed).
The rebuild is one script that writes only when the keys are still missing, so nodes that
rebuild at once agree.

Implements `server.store.base.CommerceStore`, so `Commerce(PostgresLedger(...), publish)`
runs unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis

from server.domain import order as order_status
from server.domain.catalog import Product
from server.domain.flashsale import FlashSale, Phase
from server.domain.order import Order
from server.domain.teambuy import Team, TeamBuyOffer, TeamStatus
from server.store.base import CouponConflict, KnownKey, LedgerState, StockConflict
from server.store.ledger import offer_from, product_from, sale_from, team_from

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS products (
        id TEXT PRIMARY KEY,
        shop TEXT NOT NULL,
        title TEXT NOT NULL,
        price BIGINT NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        stock BIGINT NOT NULL CHECK (stock >= 0),
        image TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sales (
        id TEXT PRIMARY KEY,
        room TEXT NOT NULL,
        product TEXT NOT NULL REFERENCES products (id),
        price BIGINT NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        stock BIGINT NOT NULL CHECK (stock > 0),
        stock_left BIGINT NOT NULL CHECK (stock_left >= 0 AND stock_left <= stock),
        per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0),
        starts_at BIGINT NOT NULL,
        ends_at BIGINT NOT NULL,
        phase TEXT NOT NULL,
        returned BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sales_room ON sales (room)",
    """CREATE TABLE IF NOT EXISTS teambuys (
        id TEXT PRIMARY KEY,
        room TEXT NOT NULL,
        product TEXT NOT NULL REFERENCES products (id),
        price BIGINT NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 2),
        window_s INTEGER NOT NULL CHECK (window_s > 0),
        stock BIGINT,
        stock_left BIGINT CHECK (stock_left IS NULL OR stock_left >= 0),
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS teams (
        id TEXT PRIMARY KEY,
        offer TEXT NOT NULL REFERENCES teambuys (id),
        room TEXT NOT NULL,
        leader TEXT NOT NULL,
        size INTEGER NOT NULL,
        opened_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        status TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS orders (
        n BIGSERIAL,
        id TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        room TEXT NOT NULL,
        product TEXT NOT NULL,
        sale TEXT REFERENCES sales (id),
        offer TEXT REFERENCES teambuys (id),
        team TEXT REFERENCES teams (id),
        qty INTEGER NOT NULL CHECK (qty >= 1),
        price BIGINT NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        key TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        CHECK ((sale IS NULL) <> (team IS NULL)))""",
    'CREATE UNIQUE INDEX IF NOT EXISTS orders_sale_key ON orders ("user", sale, key) WHERE sale IS NOT NULL',
    'CREATE UNIQUE INDEX IF NOT EXISTS orders_offer_key ON orders ("user", offer, key) WHERE offer IS NOT NULL',
    'CREATE INDEX IF NOT EXISTS orders_user ON orders ("user", created_at)',
    "CREATE INDEX IF NOT EXISTS orders_sale ON orders (sale)",
    "CREATE INDEX IF NOT EXISTS orders_team ON orders (team)",
    # operations (issue 10): one row per spent coupon, written in the order's transaction;
    # the primary key spends a coupon once for the whole cluster
    """CREATE TABLE IF NOT EXISTS coupon_redemptions (
        coupon TEXT PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        discount BIGINT NOT NULL CHECK (discount >= 0),
        ts BIGINT NOT NULL)""",
)

_COLS: Final = ('id, "user", name, room, product, sale, offer, team, qty, price, currency, key,'
                " status, created_at")
_ARGS: Final = ", ".join(f"${i}" for i in range(1, 15))

# KEYS: stock, users, keys, meta.  ARGV: user, key, qty, now_ms.
GATE_TAKE_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0} end
local uk = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[3], uk) == 1 then return {'dup', 0} end
local m = redis.call('HMGET', KEYS[4], 'starts_at', 'ends_at', 'limit', 'closed')
local now, qty = tonumber(ARGV[4]), tonumber(ARGV[3])
if m[4] == '1' or now >= tonumber(m[2]) then return {'ended', 0} end
if now < tonumber(m[1]) then return {'not_live', 0} end
local left = tonumber(redis.call('GET', KEYS[1]))
if left < qty then return {'sold_out', left} end
local had = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if had + qty > tonumber(m[3]) then return {'limit', had} end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], uk, qty)
return {'ok', left - qty}
"""

# KEYS: stock, users, keys.  ARGV: user, key, qty.  (only when the gate still holds the key)
GATE_GIVE_LUA: Final = """
local uk = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HDEL', KEYS[3], uk) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[3])
  redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[3]))
end
return 1
"""

# KEYS: stock, users, keys, meta.  ARGV: stock_left, starts_at, ends_at, limit, closed, ttl_s,
# then user, units pairs count, pairs..., then user|key, qty pairs.
GATE_BUILD_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[4], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4],
           'closed', ARGV[5])
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[1], ARGV[1])
for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ARGV[6]) end
return 1
"""


# the gate's refusals as the protocol codes the buyer hears (client_sdk.protocol.Code)
GATE_CODES: Final = {"sold_out": "sold_out", "limit": "limit_reached", "not_live": "not_live",
                     "ended": "ended"}


class StockGate:
    """The cluster-wide atomic check of a flash-sale buy, in Redis."""

    def __init__(self, redis: Redis, prefix: str = "souk:", ttl_s: int = 7 * 86400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._take = redis.register_script(GATE_TAKE_LUA)
        self._give = redis.register_script(GATE_GIVE_LUA)
        self._build = redis.register_script(GATE_BUILD_LUA)

    def keys(self, sale: str) -> list[str]:
        tag = f"{self.prefix}{{sale:{sale}}}"
        return [tag + ":stock", tag + ":users", tag + ":keys", tag + ":meta"]

    async def take(self, sale: str, user: str, key: str, qty: int, now_ms: int) -> tuple[str, int]:
        verdict, n = await self._take(keys=self.keys(sale), args=[user, key, qty, now_ms])
        return (verdict.decode() if isinstance(verdict, bytes) else str(verdict)), int(n)

    async def take_many(self, orders: list[Order]) -> list[tuple[str, int]]:
        """The verdict for each order (`ok`, `sold_out`, `limit`, `dup`, `ended`, `not_live`,
        `missing`), checked at the time the buyer made it (`created_at`), with the units
        left after it (`ok`) or at the refusal (`sold_out`)."""
        pipe = self.redis.pipeline(transaction=False)
        for o in orders:
            assert o.sale is not None
            # with a pipeline as client, awaiting only queues the call
            await self._take(keys=self.keys(o.sale), args=[o.user, o.key, o.qty, o.created_at],
                             client=pipe)
        out = await pipe.execute()
        return [(v.decode() if isinstance(v, bytes) else str(v), int(n)) for v, n in out]

    async def give(self, sale: str, user: str, key: str, qty: int) -> None:
        await self._give(keys=self.keys(sale)[:3], args=[user, key, qty])

    async def close(self, sale: str) -> None:
        await self.redis.hset(self.keys(sale)[3], "closed", "1")

    async def claim(self, what: str) -> bool:
        """SET NX: the first node to ask wins `what` (e.g. announcing a sale's phase)."""
        return bool(await self.redis.set(f"{self.prefix}claim:{what}", b"1", nx=True,
                                         ex=self.ttl_s))

    async def build(self, sale: dict[str, Any], units: dict[str, int],
                    keys: dict[str, int]) -> bool:
        """Write the gate of one sale from PostgreSQL's numbers, unless it exists already."""
        closed = "1" if sale["phase"] in ("ended", "cancelled") else "0"
        args: list[Any] = [sale["stock_left"], sale["starts_at"], sale["ends_at"],
                           sale["per_user_limit"], closed, self.ttl_s, len(units)]
        for u, n in units.items():
            args += [u, n]
        for k, n in keys.items():
            args += [k, n]
        return bool(await self._build(keys=self.keys(sale["id"]), args=args))


class PostgresLedger:
    """`CommerceStore` over an asyncpg pool, with an optional Redis `StockGate` in front of
    flash-sale orders (required when more than one node sells)."""

    def __init__(self, pool: asyncpg.Pool | str, gate: StockGate | None = None) -> None:
        # a DSN: the pool is opened by migrate() (Commerce.start), inside the running loop
        self._dsn = pool if isinstance(pool, str) else None
        self.pool: asyncpg.Pool = None if isinstance(pool, str) else pool
        self.gate = gate
        self._waiting: list[tuple[list[Order], asyncio.Future[list[Exception | None]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.rebuilds = 0  # how many sale gates this node rebuilt from PostgreSQL
        self._left: dict[str, int] = {}  # sale -> units left as the gate last reported
        self.shared = gate is not None  # with a gate, several nodes sell (issue 9)

    # -- schema and recovery ---------------------------------------------------------------
    async def migrate(self) -> None:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=8)
        async with self.pool.acquire() as conn, conn.transaction():
            # one node migrates at a time (CREATE ... IF NOT EXISTS races otherwise)
            await conn.execute("SELECT pg_advisory_xact_lock(7306202611)")
            for sql in SCHEMA:
                await conn.execute(sql)

    async def close(self) -> None:
        """Close the pool if this ledger opened it (it was given a DSN)."""
        if self._dsn is not None and self.pool is not None:
            await self.pool.close()

    async def load(self) -> LedgerState:
        state = LedgerState()
        async with self.pool.acquire() as conn:
            for r in await conn.fetch("SELECT * FROM products ORDER BY created_at, id"):
                state.products.append(Product(
                    id=r["id"], shop=r["shop"], title=r["title"], price=r["price"],
                    currency=r["currency"], stock=r["stock"], image=r["image"],
                    created_at=r["created_at"]))
            sales: dict[str, FlashSale] = {}
            for r in await conn.fetch("SELECT * FROM sales ORDER BY created_at, id"):
                sales[r["id"]] = FlashSale(
                    id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                    currency=r["currency"], stock=r["stock"], stock_left=r["stock_left"],
                    starts_at=r["starts_at"], ends_at=r["ends_at"],
                    per_user_limit=r["per_user_limit"], created_at=r["created_at"],
                    phase=Phase(r["phase"]), returned=r["returned"])
            for r in await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE sale IS NOT NULL ORDER BY n"):
                sales[r["sale"]].restore(_order_from(r))
            state.sales = list(sales.values())
            offers: dict[str, TeamBuyOffer] = {}
            for r in await conn.fetch("SELECT * FROM teambuys ORDER BY created_at, id"):
                offers[r["id"]] = TeamBuyOffer(
                    id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                    currency=r["currency"], size=r["size"], window_s=r["window_s"],
                    created_at=r["created_at"], stock=r["stock"], stock_left=r["stock_left"])
            teams: dict[str, Team] = {}
            for r in await conn.fetch("SELECT * FROM teams ORDER BY opened_at, id"):
                teams[r["id"]] = Team(
                    id=r["id"], offer=r["offer"], room=r["room"], leader=r["leader"],
                    size=r["size"], opened_at=r["opened_at"], expires_at=r["expires_at"],
                    status=TeamStatus(r["status"]))
            for r in await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE team IS NOT NULL ORDER BY n"):
                teams[r["team"]].members.append(_order_from(r))
            for team in teams.values():
                offers[team.offer].restore(team)
            state.offers = list(offers.values())
        if self.gate is not None:
            for sale in state.sales:
                if sale.phase not in (Phase.ENDED, Phase.CANCELLED):
                    await self.rebuild_gate(sale.id)
        return state

    async def rebuild_gate(self, sale_id: str) -> bool:
        """Stock, per-user units and keys of one sale from PostgreSQL into Redis (only if
        Redis lost them: the script writes nothing when the gate exists)."""
        assert self.gate is not None
        async with self.pool.acquire() as conn:
            sale = await conn.fetchrow("SELECT * FROM sales WHERE id = $1", sale_id)
            if sale is None:
                return False
            rows = await conn.fetch(
                'SELECT "user", key, qty FROM orders WHERE sale = $1', sale_id)
        units: dict[str, int] = {}
        keys: dict[str, int] = {}
        for r in rows:
            units[r["user"]] = units.get(r["user"], 0) + r["qty"]
            keys[f"{r['user']}|{r['key']}"] = r["qty"]
        built = await self.gate.build(dict(sale), units, keys)
        self.rebuilds += int(built)
        return built

    # -- products and sales ----------------------------------------------------------------
    async def add_product(self, product: Product) -> None:
        p = product
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO products VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                p.id, p.shop, p.title, p.price, p.currency, p.stock, p.image, p.created_at)

    async def add_sale(self, sale: FlashSale) -> None:
        s = sale
        row = (s.id, s.room, s.product, s.price, s.currency, s.stock, s.stock_left,
               s.per_user_limit, s.starts_at, s.ends_at, str(s.phase), s.returned, s.created_at)
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.execute(
                "UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1",
                s.stock, s.product)
            if done != "UPDATE 1":
                raise StockConflict(f"product {s.product} lacks {s.stock} units")
            await conn.execute(
                "INSERT INTO sales (id, room, product, price, currency, stock, stock_left,"
                " per_user_limit, starts_at, ends_at, phase, returned, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", *row)
        if self.gate is not None:
            await self.rebuild_gate(s.id)

    async def add_orders(self, orders: list[Order]) -> list[Exception | None]:
        """Group commit: while one transaction is in flight, later calls queue up and go
        together in the next one. Every transaction of a rush updates the same sale row, so
        concurrent transactions would only wait on its lock one after another; one writer
        with big groups turns that wait into throughput."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Exception | None]] = loop.create_future()
        self._waiting.append((orders, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            every = [o for orders, _ in group for o in orders]
            try:
                results = await self._write_orders(every)
            except Exception as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            at = 0
            for orders, fut in group:
                if not fut.done():
                    fut.set_result(results[at:at + len(orders)])
                at += len(orders)

    async def _write_orders(self, orders: list[Order]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(orders)
        passed = list(range(len(orders)))
        if self.gate is not None:
            passed = await self._through_gate(orders, results)
        if not passed:
            return results
        rows = [_order_row(orders[i]) for i in passed]
        refused: list[int] = []
        async with self.pool.acquire() as conn, conn.transaction():
            accepted: list[int] = []
            by_sale: dict[str | None, list[int]] = {}
            for j, i in enumerate(passed):
                o = orders[i]
                if o.coupon is not None and not await _redeem(conn, o):
                    refused.append(i)  # spent already (on any node): this order alone
                    results[i] = CouponConflict(f"coupon {o.coupon} already redeemed")
                    continue
                by_sale.setdefault(o.sale, []).append(j)
            for sale, js in by_sale.items():
                if await _take(conn, sale, sum(orders[passed[j]].qty for j in js)):
                    accepted.extend(js)
                    continue
                for j in js:  # not all fit: each alone, in arrival order
                    if await _take(conn, sale, orders[passed[j]].qty):
                        accepted.append(j)
                    else:
                        refused.append(passed[j])
                        if orders[passed[j]].coupon is not None:  # no order, no redemption
                            await conn.execute("DELETE FROM coupon_redemptions WHERE order_id = $1",
                                               orders[passed[j]].id)
                        phase = await conn.fetchval("SELECT phase FROM sales WHERE id = $1", sale)
                        results[passed[j]] = StockConflict(
                            f"sale {sale} is closed or short",
                            "ended" if phase in ("ended", "cancelled") else "sold_out")
            accepted.sort()
            if accepted:
                await conn.executemany(f"INSERT INTO orders ({_COLS}) VALUES ({_ARGS})",
                                       [rows[j] for j in accepted])
        if self.gate is not None:  # PostgreSQL said no: the gate gives the units back
            for i in refused:
                o = orders[i]
                assert o.sale is not None
                await self.gate.give(o.sale, o.user, o.key, o.qty)
        return results

    async def _through_gate(self, orders: list[Order],
                            results: list[Exception | None]) -> list[int]:
        """One pipelined round trip for the whole batch; a sale whose gate Redis lost is
        rebuilt from PostgreSQL and its orders asked again. A refusal keeps the gate's reason
        (the buyer hears `sold_out` or `limit_reached`, not a generic `ended`), and the units
        the gate reports left become this node's view of the sale (`stock_left`)."""
        assert self.gate is not None
        idx = [i for i, o in enumerate(orders) if o.sale is not None]
        passed = [i for i, o in enumerate(orders) if o.sale is None]
        verdicts = await self.gate.take_many([orders[i] for i in idx])
        for i, (verdict, left) in zip(idx, verdicts, strict=True):
            o = orders[i]
            assert o.sale is not None
            if verdict == "missing":
                await self.rebuild_gate(o.sale)
                verdict, left = (await self.gate.take_many([o]))[0]
            if verdict in ("ok", "sold_out"):
                self._left[o.sale] = left
            if verdict == "ok":
                passed.append(i)
            elif verdict == "dup":
                results[i] = KnownKey(f"sale {o.sale}: key {o.key} of {o.user} has an order")
            else:
                results[i] = StockConflict(f"sale {o.sale}: {verdict}",
                                           GATE_CODES.get(verdict, "ended"))
        passed.sort()
        return passed

    async def close_sale(self, sale_id: str, phase: str) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            r = await conn.fetchrow(
                "SELECT product, stock_left, phase FROM sales WHERE id = $1 FOR UPDATE", sale_id)
            if r is None or r["phase"] in ("ended", "cancelled"):
                left = 0
            else:
                left = int(r["stock_left"])
                await conn.execute("UPDATE sales SET phase = $1, returned = $2 WHERE id = $3",
                                   phase, left, sale_id)
                await conn.execute("UPDATE products SET stock = stock + $1 WHERE id = $2",
                                   left, r["product"])
        if self.gate is not None:
            await self.gate.close(sale_id)
        return left

    # -- team buys -------------------------------------------------------------------------
    async def add_offer(self, offer: TeamBuyOffer) -> None:
        o = offer
        async with self.pool.acquire() as conn, conn.transaction():
            if o.stock is not None:
                done = await conn.execute(
                    "UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1",
                    o.stock, o.product)
                if done != "UPDATE 1":
                    raise StockConflict(f"product {o.product} lacks {o.stock} units")
            await conn.execute(
                "INSERT INTO teambuys VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                o.id, o.room, o.product, o.price, o.currency, o.size, o.window_s, o.stock,
                o.stock_left, o.created_at)

    async def open_team(self, team: Team, order: Order) -> None:
        """The offer's stock is taken only if there is enough (`sold_out` otherwise), and a
        buyer already in an open team of the offer (opened or joined on any node) is
        refused: this node's memory only knows its own buyers."""
        t = team
        async with self.pool.acquire() as conn, conn.transaction():
            await _one_team_per_buyer(conn, t.offer, order.user)
            done = await conn.execute(
                "UPDATE teambuys SET stock_left = stock_left - $1"
                " WHERE id = $2 AND (stock_left IS NULL OR stock_left >= $1)", t.size, t.offer)
            if done != "UPDATE 1":
                raise StockConflict(f"offer {t.offer} has no stock for another team", "sold_out")
            await conn.execute("INSERT INTO teams VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                               t.id, t.offer, t.room, t.leader, t.size, t.opened_at,
                               t.expires_at, "open")
            await _insert_team_order(conn, order)

    async def join_team(self, order: Order) -> bool:
        """The team row is locked first, then its members are counted in a statement of
        their own (read committed: it sees every join committed before the lock was
        granted), so joins racing for the last slots from several nodes never take more
        members than the size; a team past its deadline or failed is refused."""
        async with self.pool.acquire() as conn, conn.transaction():
            assert order.offer is not None
            await _one_team_per_buyer(conn, order.offer, order.user)
            r = await conn.fetchrow(
                "SELECT status, size, expires_at FROM teams WHERE id = $1 FOR UPDATE", order.team)
            if r is None or r["status"] == "failed" or order.created_at >= r["expires_at"]:
                raise StockConflict(f"team {order.team} is not open", "ended")
            n = await conn.fetchval("SELECT COUNT(*) FROM orders WHERE team = $1", order.team)
            if r["status"] != "open" or n >= r["size"]:
                raise StockConflict(f"team {order.team} is full", "team_full")
            await _insert_team_order(conn, order)
            if n + 1 < r["size"]:
                return False
            await conn.execute("UPDATE teams SET status = 'confirmed' WHERE id = $1", order.team)
            await conn.execute("UPDATE orders SET status = $1 WHERE team = $2",
                               order_status.CONFIRMED, order.team)
            return True

    async def fail_team(self, team_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            r = await conn.fetchrow(
                "SELECT offer, size, status FROM teams WHERE id = $1 FOR UPDATE", team_id)
            if r is None or r["status"] != "open":
                return False
            await conn.execute("UPDATE teams SET status = 'failed' WHERE id = $1", team_id)
            await conn.execute("UPDATE orders SET status = $1 WHERE team = $2",
                               order_status.FAILED, team_id)
            await conn.execute(
                "UPDATE teambuys SET stock_left = stock_left + $1"
                " WHERE id = $2 AND stock_left IS NOT NULL", r["size"], r["offer"])
            return True

    # -- reading one thing back ------------------------------------------------------------
    async def product(self, product_id: str) -> Product | None:
        r = await self.pool.fetchrow("SELECT * FROM products WHERE id = $1", product_id)
        return None if r is None else product_from(r)

    async def sale(self, sale_id: str) -> FlashSale | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow("SELECT * FROM sales WHERE id = $1", sale_id)
            if r is None:
                return None
            sale = sale_from(r)
            for o in await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE sale = $1 ORDER BY n", sale_id):
                sale.restore(_order_from(o))
        return sale

    async def offer(self, offer_id: str) -> TeamBuyOffer | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow("SELECT * FROM teambuys WHERE id = $1", offer_id)
            if r is None:
                return None
            offer = offer_from(r)
            teams = {t["id"]: team_from(t) for t in await conn.fetch(
                "SELECT * FROM teams WHERE offer = $1 AND status = 'open' ORDER BY opened_at, id",
                offer_id)}
            for o in await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE team = ANY($1::text[]) ORDER BY n",
                    list(teams)):
                teams[o["team"]].members.append(_order_from(o))
        for team in teams.values():
            offer.restore(team)
        return offer

    async def team(self, team_id: str) -> Team | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow("SELECT * FROM teams WHERE id = $1", team_id)
            if r is None:
                return None
            team = team_from(r)
            team.durable = True
            team.members = [_order_from(o) for o in await conn.fetch(
                f"SELECT {_COLS} FROM orders WHERE team = $1 ORDER BY n", team_id)]
        return team

    async def sale_order(self, user: str, sale_id: str, key: str) -> Order | None:
        r = await self.pool.fetchrow(
            f'SELECT {_COLS} FROM orders WHERE "user" = $1 AND sale = $2 AND key = $3',
            user, sale_id, key)
        return None if r is None else _order_from(r)

    async def team_order(self, user: str, offer_id: str, key: str) -> Order | None:
        r = await self.pool.fetchrow(
            f'SELECT {_COLS} FROM orders WHERE "user" = $1 AND offer = $2 AND key = $3',
            user, offer_id, key)
        return None if r is None else _order_from(r)

    async def room_items(self, room: str) -> tuple[list[str], list[str]]:
        async with self.pool.acquire() as conn:
            sales = await conn.fetch(
                "SELECT id FROM sales WHERE room = $1 ORDER BY created_at, id", room)
            offers = await conn.fetch(
                "SELECT id FROM teambuys WHERE room = $1 ORDER BY created_at, id", room)
        return [r["id"] for r in sales], [r["id"] for r in offers]

    def stock_left(self, sale_id: str) -> int | None:
        if self.gate is None:
            return None  # no gate: one node sells, its memory is the whole truth
        return self._left.get(sale_id)

    async def claim(self, what: str) -> bool:
        return True if self.gate is None else await self.gate.claim(what)

    # -- queries ---------------------------------------------------------------------------
    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT {_COLS} FROM orders WHERE "user" = $1'
                " ORDER BY created_at DESC, n DESC LIMIT $2", user, limit)
        return [_order_from(r).to_dict() for r in rows]

    async def order(self, order_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(f"SELECT {_COLS} FROM orders WHERE id = $1", order_id)
        return None if r is None else _order_from(r).to_dict()

    async def orders_of_room(self, room: str, limit: int = 1000,
                             after: str | None = None) -> list[dict[str, Any]]:
        """A room's orders, oldest first (commit order), paged by the last order id seen."""
        async with self.pool.acquire() as conn:
            if after is None:
                rows = await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE room = $1 ORDER BY n LIMIT $2", room, limit)
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLS} FROM orders WHERE room = $1 AND n >"
                    " (SELECT n FROM orders WHERE id = $2) ORDER BY n LIMIT $3", room, after, limit)
        return [_order_from(r).to_dict() for r in rows]

    async def sales_stats(self, room: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT o.product, o.currency, p.title, COUNT(*) AS orders, SUM(o.qty) AS units,"
                " SUM(o.qty * o.price) AS revenue FROM orders o"
                " LEFT JOIN products p ON p.id = o.product"
                " WHERE o.room = $1 AND o.status = 'confirmed'"
                " GROUP BY o.product, o.currency, p.title ORDER BY revenue DESC", room)
        products = [{"product": r["product"], "title": r["title"] or "", "currency": r["currency"],
                     "orders": int(r["orders"]), "units": int(r["units"]),
                     "revenue": int(r["revenue"])} for r in rows]
        return {"room": room, "products": products,
                "orders": sum(p["orders"] for p in products),
                "units": sum(p["units"] for p in products),
                "revenue": sum(p["revenue"] for p in products)}


async def _take(conn: asyncpg.Connection, sale: str | None, qty: int) -> bool:
    """Decrement a sale's stock_left if it is open and has that many: the durable guard."""
    done = await conn.execute(
        "UPDATE sales SET stock_left = stock_left - $1,"
        " phase = CASE WHEN stock_left = $1 THEN 'sold_out' ELSE phase END"
        " WHERE id = $2 AND stock_left >= $1 AND phase NOT IN ('ended', 'cancelled')",
        qty, sale)
    return bool(done == "UPDATE 1")


async def _redeem(conn: asyncpg.Connection, o: Order) -> bool:
    """The coupon's redemption row, in the order's transaction: False if it was spent."""
    done = await conn.execute(
        "INSERT INTO coupon_redemptions VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        o.coupon, o.id, o.user, o.discount, o.created_at)
    return bool(done == "INSERT 0 1")


async def _one_team_per_buyer(conn: asyncpg.Connection, offer: str, user: str) -> None:
    """A buyer is in at most one open team of an offer, whichever node served them: the
    (offer, user) lock serialises that buyer's opens and joins across the cluster."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", offer, user)
    team = await conn.fetchval(
        'SELECT t.id FROM orders o JOIN teams t ON t.id = o.team WHERE o.offer = $1'
        ' AND o."user" = $2 AND t.status = \'open\' LIMIT 1', offer, user)
    if team is not None:
        raise StockConflict(f"{user} is already in open team {team}", "already_in_team")


async def _insert_team_order(conn: asyncpg.Connection, order: Order) -> None:
    """A team order; a (user, offer, key) used before (on another node) is that order."""
    try:
        await conn.execute(f"INSERT INTO orders ({_COLS}) VALUES ({_ARGS})", *_order_row(order))
    except asyncpg.UniqueViolationError:
        raise KnownKey(f"key {order.key} of {order.user} made an order") from None


def _order_row(o: Order) -> tuple[Any, ...]:
    return (o.id, o.user, o.name, o.room, o.product, o.sale, o.offer, o.team, o.qty, o.price,
            o.currency, o.key, o.status, o.created_at)


def _order_from(r: Any) -> Order:
    return Order(id=r["id"], user=r["user"], name=r["name"], room=r["room"],
                 product=r["product"], sale=r["sale"], offer=r["offer"], team=r["team"],
                 qty=r["qty"], price=r["price"], currency=r["currency"], key=r["key"],
                 status=r["status"], created_at=r["created_at"])
