"""The draws store over both databases (the embedded SQLite file and the cluster's
PostgreSQL): the same guards, the same answers. Then, PostgreSQL only, writers on separate
connections racing as two nodes would: entries against the close, two closers, two settlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.domain.coupons import Coupon, CouponSpec
from server.domain.draw import Draw, Phase, Winner, draw_spec, entrant_hash
from server.domain.order import Order
from server.store.db import Db
from server.store.draws import DrawClosed, SqlDrawStore
from server.store.ledger import SqlLedger, StockConflict
from server.store.stores import open_db
from tests.conftest import scratch_database, scratch_schema

T0 = 1_764_000_000_000
SEED = "ab" * 32


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    target: Path | str = tmp_path / "souk.db"
    if request.param == "postgres":
        target = scratch_schema(request.getfixturevalue("pg_database"))
    database = await open_db(target)
    await database.write(_product("p1", 10))
    yield database
    await database.close()


def _product(pid: str, stock: int):  # type: ignore[no-untyped-def]
    def body():  # type: ignore[no-untyped-def]
        from server.store.db import X

        yield X("INSERT INTO products (id, shop, title, price, currency, stock, created_at)"
                " VALUES (?, 'shop', 'Tea', 100, 'CNY', ?, ?)", pid, stock, T0)

    return body


def draw(draw_id: str = "d1", prize: dict | None = None, winners: int = 2) -> Draw:  # type: ignore[type-arg]
    spec = draw_spec({"title": "福袋", "prize": prize or {"product": "p1"}, "winners": winners,
                      "duration_s": 60}, "room", T0)
    return Draw.create(draw_id, "shop", "room", "r1", spec, "boss", SEED, T0)


async def stock(db: Db, pid: str = "p1") -> int:
    return int((await db.rows("SELECT stock FROM products WHERE id = ?", pid))[0]["stock"])


def prize_orders(d: Draw, winners: list[Winner]) -> list[Order]:
    return [Order(id=f"o-{d.id}-{w.user}", user=w.user, room="r1", product="p1", qty=1, price=0,
                  currency="CNY", key=d.id, created_at=T0, name=w.name, draw=d.id) for w in winners]


async def test_a_draw_holds_its_prize_units_and_gives_back_what_nobody_won(db: Db) -> None:
    store = SqlDrawStore(db)
    d = draw(winners=3)
    await store.add_draw(d, 3)
    assert await stock(db) == 7
    with pytest.raises(StockConflict):
        await store.add_draw(draw("d2", winners=8), 8)
    assert await stock(db) == 7 and await store.draw("d2") is None
    await store.add_entries("d1", [("u1", "Ann", "op", T0)])
    claim = await store.claim("d1", "n1", d.ends_at, 5, 0, None)
    assert claim is not None and claim.entries == {"u1": "Ann"}
    d.close(claim.closed_at, [entrant_hash("u1")], 5)
    won = d.draw(claim.entries, None)
    assert await store.settle(d, won, None, prize_orders(d, won), [], d.ends_at + 5)
    assert await stock(db) == 9  # 3 held, 1 won
    orders = await SqlLedger(db).orders_of("u1")
    assert [(o["kind"], o["price"], o["draw"]) for o in orders] == [("prize", 0, "d1")]


async def test_entries_once_per_user_counted_and_refused_after_the_close(db: Db) -> None:
    store = SqlDrawStore(db)
    d = draw()
    await store.add_draw(d, 2)
    new, count = await store.add_entries("d1", [("u1", "A", "op", T0), ("u2", "B", "keyword", T0)])
    assert sorted(new) == ["u1", "u2"] and count == 2
    new, count = await store.add_entries("d1", [("u2", "B", "op", T0), ("u3", "C", "op", T0)])
    assert new == ["u3"] and count == 3
    assert await store.entered("u2", ["d1", "nope"]) == {"d1"}
    many = [(f"m{i:05d}", "M", "op", T0) for i in range(1200)]  # more than one statement's rows
    new, count = await store.add_entries("d1", many)
    assert len(new) == 1200 and count == 1203
    claim = await store.claim("d1", "n1", d.ends_at, 0, 0, None)
    assert claim is not None and claim.first and len(claim.entries) == 1203
    with pytest.raises(DrawClosed):
        await store.add_entries("d1", [("late", "L", "op", T0)])
    hashes = await store.entrant_hashes("d1")
    assert hashes == sorted(entrant_hash(u) for u in claim.entries)
    assert (await store.draw("d1")).digest == claim.digest  # type: ignore[union-attr]


async def test_one_close_one_result_and_a_takeover_after_the_lease(db: Db) -> None:
    store = SqlDrawStore(db)
    d = draw()
    await store.add_draw(d, 2)
    await store.add_entries("d1", [(f"u{i}", f"U{i}", "op", T0) for i in range(5)])
    plan = {"url": "http://beacon", "round": 7, "status": "pending"}
    first = await store.claim("d1", "n1", d.ends_at, 3, 10_000, plan)
    assert first is not None and first.first and first.beacon == plan
    assert await store.claim("d1", "n2", d.ends_at + 1000, 9, 10_000, None) is None  # n1 alive
    again = await store.claim("d1", "n1", d.ends_at + 1000, 9, 10_000, None)  # n1's own retry
    assert again is not None and not again.first
    taken = await store.claim("d1", "n2", d.ends_at + 12_000, 9, 10_000, None)  # n1 went quiet
    assert taken is not None and not taken.first
    assert (taken.closed_at, taken.digest, taken.viewers, taken.beacon) == (
        first.closed_at, first.digest, 3, plan)  # the first close's record, not the taker's
    d.close(first.closed_at, [entrant_hash(u) for u in first.entries], 3)
    won = d.draw(first.entries, None)
    assert await store.settle(d, won, {"status": "ok"}, prize_orders(d, won), [], d.ends_at + 20)
    assert not await store.settle(d, won, None, prize_orders(d, won), [], d.ends_at + 30)  # once
    assert await store.claim("d1", "n3", d.ends_at + 99_000, 0, 0, None) is None  # done
    stored = await store.draw("d1")
    assert stored is not None and stored.phase is Phase.DONE and stored.result == won
    assert stored.beacon == {"status": "ok"}
    rows = await db.rows("SELECT COUNT(*) AS n FROM orders WHERE draw = 'd1'")
    assert rows[0]["n"] == 2
    orders, coupons = await store.prizes("d1", [w.user for w in won])
    assert sorted(o.user for o in orders) == sorted(w.user for w in won) and coupons == []
    assert await store.announced("d1") and not await store.announced("d1")


async def test_coupon_prizes_and_cancel(db: Db) -> None:
    store = SqlDrawStore(db)
    d = draw(prize={"coupon": {"kind": "amount", "value": 500, "title": "5 off"}}, winners=1)
    await store.add_draw(d, 0)
    await store.add_entries(d.id, [("u1", "A", "op", T0)])
    claim = await store.claim(d.id, "n1", d.ends_at, 0, 0, None)
    assert claim is not None
    d.close(claim.closed_at, [entrant_hash("u1")], 0)
    won = d.draw(claim.entries, None)
    spec = CouponSpec("amount", 500, 0, T0 + 86_400_000, "5 off")
    coupon = Coupon("c-d1-u1", "shop", "u1", spec, T0, "draw")
    assert await store.settle(d, won, None, [], [coupon], T0)
    _, coupons = await store.prizes(d.id, ["u1"])
    assert [(c.id, c.user, c.spec) for c in coupons] == [("c-d1-u1", "u1", spec)]
    c = draw("d2", winners=4)
    await store.add_draw(c, 4)
    assert await stock(db) == 6
    assert await store.cancel("d2") and not await store.cancel("d2")
    assert await stock(db) == 10
    with pytest.raises(DrawClosed):
        await store.add_entries("d2", [("u1", "A", "op", T0)])


async def test_load_after_a_restart_finds_what_is_left_to_do(db: Db) -> None:
    store = SqlDrawStore(db)
    for i, phase in enumerate(("open", "drawing", "done-unannounced", "done")):
        d = draw(f"d{i}", winners=1)
        await store.add_draw(d, 1)
        await store.add_entries(d.id, [("u1", "A", "op", T0)])
        if phase == "open":
            continue
        claim = await store.claim(d.id, "n1", d.ends_at, 0, 0, None)
        assert claim is not None
        if phase == "drawing":
            continue
        d.close(claim.closed_at, [entrant_hash("u1")], 0)
        won = d.draw(claim.entries, None)
        await store.settle(d, won, None, prize_orders(d, won), [], T0 + 60_000)
        if phase == "done":
            await store.announced(d.id)
    state = await store.load(T0 + 61_000)
    assert {(d.id, d.phase, frozenset(d.entered)) for d in state.active} == {
        ("d0", Phase.OPEN, frozenset({"u1"})), ("d1", Phase.DRAWING, frozenset({"u1"}))}
    assert [d.id for d in state.unannounced] == ["d2"] and [d.id for d in state.recent] == ["d3"]
    stats = await store.room_stats("r1")
    assert stats == {"draws": 2, "entrants": 2, "stayed": 0}
    assert {d.id for d in await store.draws_of("room", "r1", 10)} == {"d0", "d1", "d2", "d3"}
    assert len(await store.draws_of("room", "r1", 2)) == 2


async def test_orders_keep_their_guards_for_sales_and_teams(db: Db) -> None:
    """The rebuilt `orders` still refuses what the first release refused."""
    from server.store.db import Duplicate, X

    def insert(price: int, sale: str | None, draw_id: str | None, oid: str):  # type: ignore[no-untyped-def]
        def body():  # type: ignore[no-untyped-def]
            yield X('INSERT INTO orders (id, "user", room, product, sale, qty, price, currency, key,'
                    " status, created_at, draw) VALUES (?, 'u', 'r', 'p1', ?, 1, ?, 'CNY', ?, 'confirmed', 0, ?)",
                    oid, sale, price, oid, draw_id)
        return body

    for price, sale, draw_id in ((0, None, None), (100, None, None), (0, "s1", "d1"), (5, None, "d1")):
        with pytest.raises(Exception) as exc:
            await db.write(insert(price, sale, draw_id, f"bad{price}{sale}{draw_id}"))
        assert not isinstance(exc.value, Duplicate), (price, sale, draw_id)  # a CHECK said no
    await db.write(insert(0, None, "d9", "ok1"))
    with pytest.raises(Duplicate):
        await db.write(insert(0, None, "d9", "ok2"))  # one prize per user and draw


# ---- PostgreSQL: writers racing on separate connections, as two nodes would -------------------
@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[tuple[Db, Db]]:
    dsn = scratch_schema(pg_database)
    a, b = await open_db(dsn), await open_db(dsn)
    await a.write(_product("p1", 10))
    yield a, b
    await a.close()
    await b.close()


async def test_entries_racing_the_close_are_in_the_list_or_refused(pg: tuple[Db, Db]) -> None:
    """Every batch a node acknowledged is in the closed list; every other was refused."""
    a, b = SqlDrawStore(pg[0]), SqlDrawStore(pg[1])
    d = draw()
    await a.add_draw(d, 2)
    acked: set[str] = set()
    refused: set[str] = set()

    async def node(store: SqlDrawStore, tag: str) -> None:
        for i in range(200):
            rows = [(f"{tag}{i}-{j}", "N", "op", T0) for j in range(5)] + [(f"both{i}", "B", "op", T0)]
            try:
                await store.add_entries("d1", rows)
                acked.update(u for u, *_ in rows)
            except DrawClosed:
                refused.update(u for u, *_ in rows)
                return

    async def closer() -> object:
        await asyncio.sleep(0.15)
        return await b.claim("d1", "n2", d.ends_at, 0, 0, None)

    _, _, claim = await asyncio.gather(node(a, "a"), node(b, "b"), closer())
    assert claim is not None
    listed = set(claim.entries)  # type: ignore[attr-defined]
    assert acked <= listed, "an acknowledged entry is missing from the closed list"
    assert not (listed & (refused - acked)), "a refused entry is in the list"
    assert len(listed) == int((await pg[0].rows("SELECT entrants FROM draws WHERE id = 'd1'"))[0]["entrants"])


async def test_two_settlers_grant_the_prizes_once(pg: tuple[Db, Db]) -> None:
    a, b = SqlDrawStore(pg[0]), SqlDrawStore(pg[1])
    d = draw(winners=2)
    await a.add_draw(d, 2)
    await a.add_entries("d1", [(f"u{i}", "U", "op", T0) for i in range(6)])
    claim = await a.claim("d1", "n1", d.ends_at, 0, 0, None)
    assert claim is not None
    d.close(claim.closed_at, [entrant_hash(u) for u in claim.entries], 0)
    won = d.draw(claim.entries, None)
    results = await asyncio.gather(a.settle(d, won, None, prize_orders(d, won), [], T0),
                                   b.settle(d, won, None, prize_orders(d, won), [], T0),
                                   return_exceptions=True)
    assert sorted(r is True for r in results) == [False, True], results
    assert (await pg[0].rows("SELECT COUNT(*) AS n FROM orders WHERE draw = 'd1'"))[0]["n"] == 2
    assert await stock(pg[0]) == 8
