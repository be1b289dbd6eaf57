"""Commerce over each real backend: durability, idempotency across restarts, recovery of
deadlines, the rush (500 buyers on 50 units), team buys, pushes and hostile input.

One suite, parametrised over the embedded ledger (a SQLite file) and the cluster ledger
(PostgreSQL on 127.0.0.1:5432 with the Redis stock gate on 127.0.0.1:6379): both
implementations of CommerceStore must behave the same, so every test runs on both."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from server.commerce import Commerce, wall_ms
from server.domain.order import Order
from server.errors import SoukError
from server.store.db import Body, X
from server.store.gate import StockGate
from server.store.ledger import SqlLedger
from server.store.postgres import PgDatabase
from server.store.schema import migrate
from server.store.sqlite import SqliteDatabase


@dataclass
class Events:
    items: list[tuple[str, str, dict[str, Any], bool]] = field(default_factory=list)

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.items.append((ch, type, dict(fields), droppable))

    def of(self, ch: str, type_: str) -> list[tuple[dict[str, Any], bool]]:
        return [(f, d) for c, t, f, d in self.items if c == ch and t == type_]


PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Node:
    """One 'process': its Commerce, its own store connections and what it published."""

    backend: Backend
    commerce: Commerce
    events: Events
    close_store: Callable[[], Awaitable[None]]
    db: SqliteDatabase | None = None  # the embedded backend's database (its commit stats)

    async def close(self) -> None:
        await self.commerce.stop()
        await self.close_store()


class Faults:
    """Real database errors on the next `orders` order batches / `joins` team joins: the
    embedded backend raises inside its writer thread, PostgreSQL in a real statement."""

    orders = 0
    joins = 0


class FlakyLedger(SqlLedger):
    async def add_orders(self, orders: list[Order]) -> list[Exception | None]:
        if Faults.orders:
            Faults.orders -= 1
            await self.db.write(_failing)
        return await super().add_orders(orders)

    async def join_team(self, order: Order) -> bool:
        if Faults.joins:
            Faults.joins -= 1
            await self.db.write(_failing)
        return await super().join_team(order)


def _failing() -> Body[None]:
    """A statement each database refuses for real (SQLite in its writer thread)."""
    yield X("UPDATE no_such_table SET x = 1")


class Backend:
    """Where the ledger lives: a SQLite file, or a PostgreSQL schema + a Redis key prefix of
    this test alone (other engineers run the same suite on this machine at the same time).
    `boot` starts a node on it, as many times as a test restarts; `rows` reads the record."""

    def __init__(self, kind: str, path: Path, dsn: str = "", schema: str = "",
                 prefix: str = "") -> None:
        self.kind, self.path, self.dsn, self.schema, self.prefix = kind, path, dsn, schema, prefix

    async def boot(self, clock: Callable[[], int] = wall_ms, *, flaky: bool = False) -> Node:
        events = Events()
        kind = FlakyLedger if flaky else SqlLedger
        if self.kind == "sqlite":
            db = SqliteDatabase(self.path)
            await db.start()
            await migrate(db)
            commerce = Commerce(kind(db), events, clock)
            await commerce.start()
            return Node(self, commerce, events, db.close, db)
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4,
                                         server_settings={"search_path": self.schema})
        redis = Redis.from_url(REDIS_URL)
        pg = PgDatabase(pool)
        await migrate(pg)
        commerce = Commerce(kind(pg, StockGate(redis, self.prefix)), events, clock)
        await commerce.start()

        async def close() -> None:
            await pool.close()
            await redis.aclose()

        return Node(self, commerce, events, close)

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            conn.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in conn.execute(sql).fetchall()]
            finally:
                conn.close()
        pg = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            return [dict(r) for r in await pg.fetch(sql)]
        finally:
            await pg.close()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """One database for this module's PostgreSQL runs (each test has its own schema)."""
    name = f"souk_test_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG + "/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def once(sql: str) -> None:  # first asked from inside a test's running loop: a thread
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run(sql)).result()

    once(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    once(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every test runs against the embedded ledger and the cluster one (PostgreSQL + the
    Redis stock gate): the two implementations of CommerceStore must behave the same."""
    Faults.orders = Faults.joins = 0
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "souk.db")
        return
    dsn = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    prefix = f"souk-test-{uuid.uuid4().hex[:10]}:"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    try:
        yield Backend("postgres", tmp_path / "unused.db", dsn, schema, prefix)
    finally:
        Faults.orders = Faults.joins = 0
        r = Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def node(backend: Backend) -> AsyncIterator[Node]:
    n = await backend.boot()
    yield n
    await n.close()


async def sale_of(n: Node, stock: int = 50, limit: int = 1, **extra: Any) -> dict[str, Any]:
    product = await n.commerce.product_create(
        "shop1", {"title": "Tea", "price": 1000, "stock": 1000}
    )
    fields = {"product": product["id"], "price": 500, "stock": stock, "duration_s": 60}
    fields.update(per_user_limit=limit, **extra)
    return await n.commerce.sale_create("r1", fields)


async def eventually(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait for a timer-driven effect without betting on exact timing (the machine is shared)."""
    for _ in range(int(within_s * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)
    assert cond(), f"not true within {within_s} s"


def last_sale_phase(n: Node) -> str:
    events = n.events.of("room:r1", "sale")
    return str(events[-1][0]["phase"]) if events else ""


async def ledger_rows(backend: Backend, sql: str) -> list[dict[str, Any]]:
    return await backend.rows(sql)


async def assert_books_balance(backend: Backend) -> None:
    """For every sale: stock_left + units sold == stock, and never below zero."""
    rows = await ledger_rows(
        backend,
        "SELECT s.id, s.stock, s.stock_left, COALESCE(SUM(o.qty), 0) AS sold FROM sales s"
        " LEFT JOIN orders o ON o.sale = s.id GROUP BY s.id, s.stock, s.stock_left",
    )
    for r in rows:
        assert r["stock_left"] >= 0
        assert r["stock_left"] + r["sold"] == r["stock"], dict(r)


async def attempt(n: Node, user: str, sale: str, key: str, qty: int = 1) -> dict[str, Any] | str:
    try:
        return await n.commerce.buy(user, sale, qty, key)
    except SoukError as err:
        return err.code


# -- the rush ------------------------------------------------------------------------------
async def test_500_concurrent_buyers_on_50_units(node: Node) -> None:
    sale = await sale_of(node, stock=50)
    results = await asyncio.gather(
        *(attempt(node, f"u{i}", sale["id"], f"k{i}") for i in range(500))
    )
    orders = [r for r in results if isinstance(r, dict)]
    refusals = [r for r in results if not isinstance(r, dict)]
    assert len(results) == 500  # every caller answered
    assert len(orders) == 50 and sum(o["qty"] for o in orders) == 50
    assert set(refusals) == {"sold_out"}
    assert len({o["id"] for o in orders}) == 50
    rows = await ledger_rows(node.backend, "SELECT COUNT(*) AS n, SUM(qty) AS u FROM orders")
    assert (rows[0]["n"], rows[0]["u"]) == (50, 50)
    await assert_books_balance(node.backend)
    # viewers see stock reach 0 once, as a non-droppable phase change
    sale_events = node.events.of("room:r1", "sale")
    zero = [(f, d) for f, d in sale_events if f["stock_left"] == 0]
    assert len(zero) == 1 and zero[0][0]["phase"] == "sold_out" and zero[0][1] is False
    # each buyer told on its own channel
    told = [c for c, t, _, _ in node.events.items if t == "order"]
    assert sorted(told) == sorted(f"user:{o['user']}" for o in orders)
    if node.db is not None:  # the embedded ledger: group commit, far fewer commits
        assert node.db.stats.commits < 50
    stats = await node.commerce.sales_stats("r1")
    assert (stats["orders"], stats["units"], stats["revenue"]) == (50, 50, 50 * 500)


async def test_per_user_limit_and_qty_all_or_nothing(node: Node) -> None:
    sale = await sale_of(node, stock=5, limit=3)
    assert (await node.commerce.buy("a", sale["id"], 2, "k1"))["qty"] == 2
    assert await attempt(node, "a", sale["id"], "k2", 2) == "limit_reached"
    assert await attempt(node, "b", sale["id"], "k1", 4) == "limit_reached"
    assert (await node.commerce.buy("b", sale["id"], 3, "k1"))["qty"] == 3
    assert await attempt(node, "c", sale["id"], "k1") == "sold_out"
    await assert_books_balance(node.backend)


# -- durability and idempotency across restarts --------------------------------------------
async def test_orders_and_idempotency_survive_restart(backend: Backend) -> None:
    n = await backend.boot()
    sale = await sale_of(n, stock=10, limit=2)
    first = await n.commerce.buy("alice", sale["id"], 1, "key-1")
    again = await n.commerce.buy("alice", sale["id"], 1, "key-1")
    assert again["id"] == first["id"]
    await n.close()

    n = await backend.boot()
    try:
        replay = await n.commerce.buy("alice", sale["id"], 1, "key-1")
        assert replay["id"] == first["id"]
        mine = await n.commerce.orders_mine("alice")
        assert [o["id"] for o in mine] == [first["id"]]
        assert mine[0]["sale"] == sale["id"] and mine[0]["status"] == "confirmed"
        snap = n.commerce.room_snapshot("r1")["sales"][0]
        assert snap["stock_left"] == 9 and snap["phase"] == "live"
        # the per-user limit remembers the order from before the restart
        await n.commerce.buy("alice", sale["id"], 1, "key-2")
        assert await attempt(n, "alice", sale["id"], "key-3") == "limit_reached"
    finally:
        await n.close()
    rows = await ledger_rows(backend, "SELECT COUNT(*) AS n FROM orders")
    assert rows[0]["n"] == 2
    await assert_books_balance(backend)


async def test_concurrent_replays_of_one_key_make_one_order(node: Node) -> None:
    sale = await sale_of(node, stock=10, limit=5)
    results = await asyncio.gather(
        *(node.commerce.buy("a", sale["id"], 1, "same") for _ in range(20))
    )
    assert len({r["id"] for r in results}) == 1
    assert (await ledger_rows(node.backend, "SELECT COUNT(*) AS n FROM orders"))[0]["n"] == 1


# -- recovery of deadlines -----------------------------------------------------------------
async def test_sale_that_ended_while_down_is_ended_and_stock_returned(backend: Backend) -> None:
    n = await backend.boot()
    sale = await sale_of(n, stock=50, limit=5)
    await n.commerce.buy("a", sale["id"], 5, "k")
    product = sale["product"]
    assert n.commerce.product(product)["stock"] == 950  # type: ignore[index]
    await n.close()

    later = await backend.boot(clock=lambda: wall_ms() + 61_000)
    try:
        s = later.commerce.sales[sale["id"]]
        assert s.phase == "ended"
        assert later.commerce.product(product)["stock"] == 995  # type: ignore[index]
        assert await attempt(later, "b", sale["id"], "k") == "ended"
    finally:
        await later.close()
    rows = await ledger_rows(backend, "SELECT phase, stock_left, returned FROM sales")
    assert tuple(rows[0].values()) == ("ended", 45, 45)
    assert (await ledger_rows(backend, "SELECT stock FROM products"))[0]["stock"] == 995
    await assert_books_balance(backend)


async def test_scheduled_sale_goes_live_and_ends_on_timers(node: Node) -> None:
    starts_at = wall_ms() + 500
    sale = await sale_of(node, stock=5, starts_at=starts_at, duration_s=1)
    assert sale["phase"] == "scheduled"
    assert await attempt(node, "a", sale["id"], "k") == "not_live"
    await eventually(lambda: last_sale_phase(node) == "live")
    assert wall_ms() >= starts_at
    await node.commerce.buy("a", sale["id"], 1, "k")
    await eventually(lambda: last_sale_phase(node) == "ended")
    assert wall_ms() >= starts_at + 1000
    last, droppable = node.events.of("room:r1", "sale")[-1]
    assert last["phase"] == "ended" and not droppable
    await node.commerce.stop()  # waits for the closing write
    rows = await ledger_rows(node.backend, "SELECT phase, returned FROM sales")
    assert tuple(rows[0].values()) == ("ended", 4)
    assert node.commerce.product(sale["product"])["stock"] == 999  # type: ignore[index]


async def test_scheduled_sale_resumes_its_timer_after_restart(backend: Backend) -> None:
    n = await backend.boot()
    sale = await sale_of(n, stock=5, starts_at=wall_ms() + 400)
    await n.close()
    n = await backend.boot()
    try:
        assert n.commerce.sales[sale["id"]].phase == "scheduled"
        await eventually(lambda: n.commerce.sales[sale["id"]].phase == "live")
        # the announcement follows the phase (in a cluster after the claim's round trip)
        await eventually(lambda: bool(n.events.of("room:r1", "sale")))
        await asyncio.sleep(0.2)  # and it is the only one
        assert [f["phase"] for f, _ in n.events.of("room:r1", "sale")] == ["live"]
    finally:
        await n.close()


async def test_cancel_returns_unsold_and_refuses_later_buys(node: Node) -> None:
    sale = await sale_of(node, stock=10, limit=3)
    await node.commerce.buy("a", sale["id"], 3, "k")
    view = await node.commerce.sale_cancel("r1", sale["id"])
    assert view["phase"] == "cancelled"
    assert await attempt(node, "b", sale["id"], "k") == "ended"
    with pytest.raises(SoukError) as info:
        await node.commerce.sale_cancel("r1", sale["id"])
    assert info.value.code == "ended"
    with pytest.raises(SoukError) as info:
        await node.commerce.sale_cancel("other-room", sale["id"])
    assert info.value.code == "not_found"
    assert node.commerce.product(sale["product"])["stock"] == 997  # type: ignore[index]
    rows = await ledger_rows(node.backend, "SELECT phase, returned FROM sales")
    assert tuple(rows[0].values()) == ("cancelled", 7)


# -- pushes --------------------------------------------------------------------------------
async def test_stock_pushes_are_coalesced_to_one_per_100ms(node: Node) -> None:
    sale = await sale_of(node, stock=100, limit=1)
    start = wall_ms()
    for i in range(40):
        await node.commerce.buy(f"u{i}", sale["id"], 1, "k")
        await asyncio.sleep(0.01)
    # the trailing flush delivers the last value
    await eventually(
        lambda: [f for f, d in node.events.of("room:r1", "sale") if d][-1]["stock_left"] == 60
    )
    elapsed = wall_ms() - start
    stock_pushes = [f for f, d in node.events.of("room:r1", "sale") if d]
    assert 2 <= len(stock_pushes) <= elapsed // 100 + 2
    assert stock_pushes[-1]["stock_left"] == 60  # the last value reached viewers
    orders = node.events.of("user:u0", "order")
    assert len(orders) == 1 and orders[0][0]["sale"] == sale["id"]


# -- team buys -----------------------------------------------------------------------------
async def offer_of(
    n: Node, size: int = 3, window_s: int = 60, stock: int | None = None
) -> dict[str, Any]:
    product = await n.commerce.product_create(
        "shop1", {"title": "Rice", "price": 900, "stock": 100}
    )
    fields: dict[str, Any] = {
        "product": product["id"],
        "price": 600,
        "size": size,
        "window_s": window_s,
    }
    if stock is not None:
        fields["stock"] = stock
    return await n.commerce.teambuy_create("r1", fields)


async def test_team_fills_and_confirms_everyone(node: Node) -> None:
    offer = await offer_of(node, size=3)
    opened = await node.commerce.team_open("a", "Ann", offer["id"], "k")
    team = opened["team"]["id"]
    assert opened["order"]["status"] == "pending"
    joined = await node.commerce.team_join("b", "Bob", offer["id"], team, "k")
    assert joined["team"]["count"] == 2
    full = await node.commerce.team_join("c", "Cid", offer["id"], None, "k")  # matched
    assert full["team"]["id"] == team and full["team"]["status"] == "confirmed"
    for user in "abc":
        statuses = [f["status"] for f, _ in node.events.of(f"user:{user}", "order")]
        assert statuses[-1] == "confirmed"
        mine = await node.commerce.orders_mine(user)
        assert [o["status"] for o in mine] == ["confirmed"]
    final = node.events.of("room:r1", "team")[-1]
    assert final[0]["status"] == "confirmed" and final[1] is False
    assert len(node.events.of("room:r1", "teambuy")) >= 1
    rows = await ledger_rows(node.backend, "SELECT status FROM teams")
    assert [r["status"] for r in rows] == ["confirmed"]
    stats = await node.commerce.sales_stats("r1")
    assert (stats["orders"], stats["revenue"]) == (3, 1800)
    with pytest.raises(SoukError) as info:
        await node.commerce.team_join("d", "", offer["id"], team, "k")
    assert info.value.code == "team_full"


async def test_team_expires_and_releases_holds(node: Node) -> None:
    offer = await offer_of(node, size=3, window_s=1, stock=3)
    opened = await node.commerce.team_open("a", "", offer["id"], "k")
    await node.commerce.team_join("b", "", offer["id"], opened["team"]["id"], "k")
    with pytest.raises(SoukError) as info:
        await node.commerce.team_open("c", "", offer["id"], "k")
    assert info.value.code == "sold_out"  # the open team holds all 3 units
    await eventually(lambda: node.events.of("room:r1", "team")[-1][0]["status"] == "failed")
    for user in "ab":
        assert node.events.of(f"user:{user}", "order")[-1][0]["status"] == "failed"
    final = node.events.of("room:r1", "team")[-1]
    assert final[0]["status"] == "failed" and final[1] is False
    await node.commerce.stop()
    assert [r["status"] for r in await ledger_rows(node.backend, "SELECT status FROM orders")] == [
        "failed"
    ] * 2
    assert (await ledger_rows(node.backend, "SELECT stock_left FROM teambuys"))[0]["stock_left"] == 3
    assert node.commerce.offers[offer["id"]].stock_left == 3


async def test_team_whose_deadline_passed_while_down_fails_at_startup(backend: Backend) -> None:
    n = await backend.boot()
    offer = await offer_of(n, size=2, window_s=60)
    opened = await n.commerce.team_open("a", "", offer["id"], "k")
    await n.close()
    later = await backend.boot(clock=lambda: wall_ms() + 61_000)
    try:
        team = later.commerce.offers[offer["id"]].teams[opened["team"]["id"]]
        assert team.status == "failed"
        assert later.events.of("user:a", "order")[-1][0]["status"] == "failed"
        # the buyer is free to open a new team
        again = await later.commerce.team_open("a", "", offer["id"], "k2")
        assert again["team"]["status"] == "open"
    finally:
        await later.close()
    rows = await ledger_rows(backend, "SELECT status FROM teams ORDER BY opened_at")
    assert [r["status"] for r in rows] == ["failed", "open"]


async def test_open_team_resumes_after_restart_and_fills(backend: Backend) -> None:
    n = await backend.boot()
    offer = await offer_of(n, size=2)
    opened = await n.commerce.team_open("a", "", offer["id"], "k")
    await n.close()
    n = await backend.boot()
    try:
        with pytest.raises(SoukError) as info:
            await n.commerce.team_open("a", "", offer["id"], "k2")
        assert info.value.code == "already_in_team"
        replay = await n.commerce.team_open("a", "", offer["id"], "k")
        assert replay["team"]["id"] == opened["team"]["id"]
        full = await n.commerce.team_join("b", "", offer["id"], None, "k")
        assert full["team"]["status"] == "confirmed"
        assert n.commerce.room_snapshot("r1")["teambuys"][0]["teams"] == []
    finally:
        await n.close()


# -- failure of the durable write ----------------------------------------------------------
async def test_failed_join_write_does_not_let_a_later_join_confirm_a_short_team(
    backend: Backend,
) -> None:
    n = await backend.boot(flaky=True)
    try:
        offer = await offer_of(n, size=3)
        team = (await n.commerce.team_open("a", "", offer["id"], "k"))["team"]["id"]
        Faults.joins = 1
        b, c = await asyncio.gather(
            n.commerce.team_join("b", "", offer["id"], team, "k"),
            n.commerce.team_join("c", "", offer["id"], team, "k"),
            return_exceptions=True,
        )
        assert isinstance(b, SoukError) and b.code == "unavailable"
        assert isinstance(c, dict) and c["team"]["status"] == "open" and c["team"]["count"] == 2
        assert c["order"]["status"] == "pending"
        assert all(f["status"] != "confirmed" for f, _ in n.events.of("room:r1", "team"))
        full = await n.commerce.team_join("b", "", offer["id"], team, "k")  # retry, same key
        assert full["team"]["status"] == "confirmed"
    finally:
        Faults.joins = 0
        await n.close()
    rows = await ledger_rows(backend, 'SELECT "user", status FROM orders ORDER BY "user"')
    assert [tuple(r.values()) for r in rows] == [("a", "confirmed"), ("b", "confirmed"), ("c", "confirmed")]


async def test_failed_write_gives_the_reservation_back(backend: Backend) -> None:
    n = await backend.boot(flaky=True)
    try:
        sale = await sale_of(n, stock=1, limit=1)
        Faults.orders = 1
        assert await attempt(n, "a", sale["id"], "k") == "unavailable"
        s = n.commerce.sales[sale["id"]]
        assert s.stock_left == 1 and s.phase == "live"
        order = await n.commerce.buy("a", sale["id"], 1, "k")  # the retry succeeds
        assert order["qty"] == 1 and s.phase == "sold_out"
    finally:
        Faults.orders = 0
        await n.close()
    await assert_books_balance(backend)


# -- hostile input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda c, s: c.buy("a", s, 0, "k"),
        lambda c, s: c.buy("a", s, "1", "k"),
        lambda c, s: c.buy("a", s, 1, ""),
        lambda c, s: c.buy("a", s, 1, "k" * 65),
        lambda c, s: c.buy("a", 123, 1, "k"),
        lambda c, s: c.buy("", s, 1, "k"),
        lambda c, s: c.buy("a", s, 1, "k", name="x" * 65),
        lambda c, s: c.product_create("shop1", {"title": "", "price": 1, "stock": 1}),
        lambda c, s: c.product_create("shop1", {"title": "t", "price": 0.5, "stock": 1}),
        lambda c, s: c.product_create("shop1", {"title": "t", "price": 1, "stock": -1}),
        lambda c, s: c.product_create(
            "shop1", {"title": "t", "price": 1, "stock": 1, "image": "javascript:x"}
        ),
        lambda c, s: c.product_create("shop1", "not a map"),
        lambda c, s: c.sale_create(
            "r1", {"product": "x", "price": 1, "stock": 1, "duration_s": 99_999}
        ),
        lambda c, s: c.sale_create(
            "r 1", {"product": "x", "price": 1, "stock": 1, "duration_s": 9}
        ),
        lambda c, s: c.teambuy_create(
            "r1", {"product": "x", "price": 1, "size": 51, "window_s": 9}
        ),
        lambda c, s: c.team_open("a", "", "tb?", "k"),
    ],
)
async def test_hostile_fields_are_refused_as_invalid(node: Node, call: Any) -> None:
    sale = await sale_of(node, stock=5)
    with pytest.raises(SoukError) as info:
        await call(node.commerce, sale["id"])
    assert info.value.code == "invalid"
    assert node.commerce.sales[sale["id"]].stock_left == 5


async def test_unknown_things_and_short_stock(node: Node) -> None:
    with pytest.raises(SoukError) as info:
        await node.commerce.buy("a", "nope", 1, "k")
    assert info.value.code == "not_found"
    product = await node.commerce.product_create(
        "shop1", {"id": "tea-1", "title": "Tea", "price": 10, "stock": 5}
    )
    with pytest.raises(SoukError) as info:
        await node.commerce.product_create(
            "shop1", {"id": "tea-1", "title": "Tea", "price": 10, "stock": 5}
        )
    assert info.value.code == "conflict"
    with pytest.raises(SoukError) as info:
        await node.commerce.sale_create(
            "r1", {"product": product["id"], "price": 5, "stock": 6, "duration_s": 9}
        )
    assert info.value.code == "conflict"
    with pytest.raises(SoukError) as info:
        await node.commerce.sale_create(
            "r1", {"product": product["id"], "price": 5, "stock": 1, "duration_s": 9}, shop="shop2"
        )
    assert info.value.code == "not_found"
    assert node.commerce.product("tea-1")["stock"] == 5  # type: ignore[index]
    assert [p["id"] for p in node.commerce.products("shop1")] == ["tea-1"]


async def test_room_snapshot_and_rooms_of_sales_and_offers(node: Node) -> None:
    sale = await sale_of(node, stock=5)
    offer = await offer_of(node, size=2)
    for i in range(25):
        await node.commerce.team_open(f"u{i}", "", offer["id"], "k")
    snap = node.commerce.room_snapshot("r1")
    assert [s["id"] for s in snap["sales"]] == [sale["id"]]
    s = snap["sales"][0]
    assert {
        "id",
        "phase",
        "stock_left",
        "ends_at",
        "starts_at",
        "price",
        "product",
        "title",
    } <= set(s)
    [tb] = snap["teambuys"]
    assert tb["id"] == offer["id"] and tb["open_teams"] == 25 and len(tb["teams"]) == 20
    assert node.commerce.room_snapshot("elsewhere") == {"sales": [], "teambuys": []}
    assert node.commerce.sale_room(sale["id"]) == "r1"
    assert node.commerce.offer_room(offer["id"]) == "r1"
    assert node.commerce.sale_room("nope") is None and node.commerce.sale_room(5) is None
    created = [d for f, d in node.events.of("room:r1", "teambuy") if f["open_teams"] == 0]
    assert created == [False]  # creation is not droppable; updates are


async def test_buyer_that_goes_away_still_gets_its_durable_order(node: Node) -> None:
    sale = await sale_of(node, stock=1)
    task = asyncio.create_task(node.commerce.buy("a", sale["id"], 1, "k"))
    await asyncio.sleep(0)  # the reservation is made; the write is queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: bool(node.events.of("user:a", "order")))
    order = node.events.of("user:a", "order")[0][0]
    assert last_sale_phase(node) == "sold_out"
    again = await node.commerce.buy("a", sale["id"], 1, "k")  # the retry finds it
    assert again["id"] == order["id"]
    assert (await ledger_rows(node.backend, "SELECT id FROM orders"))[0]["id"] == order["id"]
    await assert_books_balance(node.backend)


async def test_team_joiner_that_goes_away_still_fills_the_team(node: Node) -> None:
    offer = await offer_of(node, size=2)
    team = (await node.commerce.team_open("a", "", offer["id"], "k"))["team"]["id"]
    task = asyncio.create_task(node.commerce.team_join("b", "", offer["id"], team, "k"))
    held = node.commerce.offers[offer["id"]].teams[team]
    for _ in range(100_000):  # until the join is reserved (a cluster node reads the store
        await asyncio.sleep(0)  # first) and its write is on its way: then the caller leaves
        if len(held.members) == 2 or task.done():
            break
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: node.events.of("room:r1", "team")[-1][0]["status"] == "confirmed")
    # the members were released once the filling write committed: a may open a new team
    again = await node.commerce.team_open("a", "", offer["id"], "k2")
    assert again["team"]["status"] == "open"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # adoption: cluster nodes only
async def test_concurrent_adoptions_register_a_sale_and_an_offer_once(backend: Backend) -> None:
    """Cluster: several buyers on B ask at once for a sale (and an offer) A created after B
    started; B adopts each once: one entry in its snapshot, one object, one set of timers."""
    b = await backend.boot()
    a = await backend.boot()
    try:
        sale = await sale_of(a, stock=5)
        offer = await offer_of(a)
        found = await asyncio.gather(*(b.commerce.locate_sale(sale["id"]) for _ in range(4)),
                                     *(b.commerce.locate_offer(offer["id"]) for _ in range(4)))
        assert found == ["r1"] * 8
        snap = b.commerce.room_snapshot("r1")
        assert [s["id"] for s in snap["sales"]] == [sale["id"]]
        assert [o["id"] for o in snap["teambuys"]] == [offer["id"]]
        order = await b.commerce.buy("u1", sale["id"], 1, "k1")
        assert order["sale"] == sale["id"]
    finally:
        await a.close()
        await b.close()
