"""The commerce ledger: products, flash sales, team buys, teams and orders.

Why this shape: each acknowledged order is one durable transaction that inserts the order and
decrements its sale's `stock_left` together, so after `kill -9` at any moment `stock_left +
SUM(qty of the sale's orders) == stock` holds for every sale. The guards live in the database
as well as in memory: a unique index on (user, sale, key) stops a second order for one
idempotency key, `CHECK (stock_left >= 0)` and a conditional UPDATE stop an oversell, an order
for a closed sale is refused, a coupon's redemption row is written once with its order, and a
buyer is in one open team of an offer at a time (under a lock on (offer, user)).

In a cluster several nodes sell the same sale: a Redis stock gate (server/store/gate.py) decides
each buy for all of them before the order reaches the database, whose guards stay the final
word; this ledger is then `shared` and its refusals carry the reason the buyer hears.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from client_sdk.protocol import Code
from server.domain import order as order_status
from server.domain.catalog import Product
from server.domain.flashsale import FlashSale, Phase
from server.domain.order import Order
from server.domain.teambuy import Team, TeamBuyOffer, TeamStatus
from server.store.db import Body, Db, Duplicate, Insert, Lock, Q, Row, X, in_list, steps
from server.store.gate import GATE_CODES, StockGate


@dataclass
class LedgerState:
    """Everything recovery needs: products, sales with their orders, offers with their teams."""

    products: list[Product] = field(default_factory=list)
    sales: list[FlashSale] = field(default_factory=list)
    offers: list[TeamBuyOffer] = field(default_factory=list)


class StockConflict(Exception):
    """A durable guard refused a write (stock would go below zero, the sale closed, ...).
    `code` is what the buyer hears: in a cluster the shared guard, not this node's memory,
    decides, so its reason must reach the buyer as is."""

    def __init__(self, message: str, code: str = Code.ENDED) -> None:
        super().__init__(message)
        self.code = code


class KnownKey(Exception):
    """The (user, sale or offer, key) already made an order, on another node of the cluster:
    the buyer gets that order back (`sale_order` / `team_order`), not a refusal."""


class CouponConflict(Exception):
    """The coupon's redemption row exists: it was already spent."""


class CommerceStore(Protocol):
    """What `server.commerce.Commerce` needs (`SqlLedger` below says what each call does).
    Every write returns once it is durable; a writer reads every value it needs from the
    domain objects before its first `await` (they keep changing on the loop meanwhile)."""

    # several processes share this store (a cluster): a node's memory only knows its own
    # buyers, so the adapter asks the store and follows other nodes' events
    shared: bool

    async def load(self) -> LedgerState: ...
    async def add_product(self, product: Product) -> None: ...
    async def add_sale(self, sale: FlashSale) -> None: ...
    async def add_orders(self, orders: list[Order]) -> list[Exception | None]: ...
    async def close_sale(self, sale_id: str, phase: str) -> int: ...
    async def add_offer(self, offer: TeamBuyOffer) -> None: ...
    async def open_team(self, team: Team, order: Order) -> None: ...
    async def join_team(self, order: Order) -> bool: ...
    async def fail_team(self, team_id: str) -> bool: ...
    async def product(self, product_id: str) -> Product | None: ...
    async def sale(self, sale_id: str) -> FlashSale | None: ...
    async def offer(self, offer_id: str) -> TeamBuyOffer | None: ...
    async def team(self, team_id: str) -> Team | None: ...
    async def sale_order(self, user: str, sale_id: str, key: str) -> Order | None: ...
    async def team_order(self, user: str, offer_id: str, key: str) -> Order | None: ...
    async def room_items(self, room: str) -> tuple[list[str], list[str]]: ...
    def stock_left(self, sale_id: str) -> int | None: ...
    async def claim(self, what: str) -> bool: ...
    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]: ...
    async def teams_of(self, user: str, limit: int = 20) -> list[Team]: ...
    async def set_product_image(self, product_id: str, image: str) -> None: ...
    async def order(self, order_id: str) -> dict[str, Any] | None: ...
    async def orders_of_room(self, room: str, limit: int = 1000,
                             after: str | None = None) -> list[dict[str, Any]]: ...
    async def sales_stats(self, room: str) -> dict[str, Any]: ...


COLUMNS: Final = ("id", '"user"', "name", "room", "product", "sale", "offer", "team", "qty",
                  "price", "currency", "key", "status", "created_at", "draw")
_COLS: Final = ", ".join(COLUMNS)
_ONE: Final = ", ".join("?" * len(COLUMNS))
Result = list[Exception | None]


class SqlLedger:
    """`CommerceStore` over a `Db`, with the Redis stock gate in front of flash-sale orders
    when several nodes sell (`gate`)."""

    def __init__(self, db: Db, gate: StockGate | None = None) -> None:
        self.db = db
        self.gate = gate
        self.shared = gate is not None
        self.rebuilds = 0  # how many sale gates this node rebuilt from the database
        self._left: dict[str, int] = {}  # sale -> units left as the gate last reported
        self._waiting: list[tuple[list[Order], asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    # -- recovery and reading back -----------------------------------------------------------
    async def load(self) -> LedgerState:
        state = await self.db.read(_load)
        if self.gate is not None:
            for sale in state.sales:
                if sale.phase not in (Phase.ENDED, Phase.CANCELLED):
                    await self.rebuild_gate(sale.id)
        return state

    async def product(self, product_id: str) -> Product | None:
        rows = await self.db.rows("SELECT * FROM products WHERE id = ?", product_id)
        return product_from(rows[0]) if rows else None

    async def sale(self, sale_id: str) -> FlashSale | None:
        """One sale with its orders, as `load` gives it."""
        found = await self.db.read(lambda: _sales("WHERE id = ?", sale_id))
        return found[0] if found else None

    async def offer(self, offer_id: str) -> TeamBuyOffer | None:
        """The offer with the teams that can still be joined."""
        found = await self.db.read(lambda: _offers("WHERE id = ?", offer_id, teams="open"))
        return found[0] if found else None

    async def team(self, team_id: str) -> Team | None:
        def body() -> Body[Team | None]:
            r = yield Q("SELECT * FROM teams WHERE id = ?", team_id)
            if not r:
                return None
            team = team_from(r[0])
            team.durable = True
            team.members = [order_from(o) for o in (yield Q(
                f"SELECT {_COLS} FROM orders WHERE team = ? ORDER BY rowid", team_id))]
            return team

        return await self.db.read(body)

    async def sale_order(self, user: str, sale_id: str, key: str) -> Order | None:
        rows = await self.db.rows(f'SELECT {_COLS} FROM orders WHERE "user" = ? AND sale = ?'
                                  " AND key = ?", user, sale_id, key)
        return order_from(rows[0]) if rows else None

    async def team_order(self, user: str, offer_id: str, key: str) -> Order | None:
        rows = await self.db.rows(f'SELECT {_COLS} FROM orders WHERE "user" = ? AND offer = ?'
                                  " AND key = ?", user, offer_id, key)
        return order_from(rows[0]) if rows else None

    async def room_items(self, room: str) -> tuple[list[str], list[str]]:
        def body() -> Body[tuple[list[str], list[str]]]:
            sales = yield Q("SELECT id FROM sales WHERE room = ? ORDER BY created_at, id", room)
            offers = yield Q("SELECT id FROM teambuys WHERE room = ? ORDER BY created_at, id", room)
            return [r["id"] for r in sales], [r["id"] for r in offers]

        return await self.db.read(body)

    def stock_left(self, sale_id: str) -> int | None:
        """A sale's units left cluster-wide as this node's last write saw them; None when
        this node's memory is the whole truth."""
        return None if self.gate is None else self._left.get(sale_id)

    async def claim(self, what: str) -> bool:
        """True for exactly one caller per `what` over the cluster (always, alone)."""
        return True if self.gate is None else await self.gate.claim(what)

    # -- products and sales ------------------------------------------------------------------
    async def add_product(self, product: Product) -> None:
        p = product
        row = (p.id, p.shop, p.title, p.price, p.currency, p.stock, p.image, p.created_at)

        await self.db.write(steps(
            X("INSERT INTO products (id, shop, title, price, currency, stock, image,"
              " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", *row)))

    async def add_sale(self, sale: FlashSale) -> None:
        """Insert a sale and take its stock from the product, atomically."""
        s = sale
        row = (s.id, s.room, s.product, s.price, s.currency, s.stock, s.stock_left,
               s.per_user_limit, s.starts_at, s.ends_at, str(s.phase), s.returned, s.created_at)

        def body() -> Body[None]:
            yield from _take_product(row[2], row[5])
            yield X("INSERT INTO sales (id, room, product, price, currency, stock, stock_left,"
                    " per_user_limit, starts_at, ends_at, phase, returned, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *row)

        await self.db.write(body)
        if self.gate is not None:
            await self.rebuild_gate(s.id)

    async def add_orders(self, orders: list[Order]) -> Result:
        """Insert sale orders and take their units from their sales, in one durable step (a
        sale reaching zero is sold_out). One entry per order: None (recorded), StockConflict
        (its sale is closed or short: that order alone is refused), CouponConflict (its
        coupon has a redemption), KnownKey (its key made an order on another node). Many
        orders per call is the point: the adapter gathers a loop iteration's orders.

        SQLite's writer already runs every write queued meanwhile in one transaction; on
        PostgreSQL, while one transaction is in flight later calls queue up here and go
        together in the next: every order of a rush updates the same sale row, so concurrent
        transactions would only wait on its lock one after another."""
        if self.db.group_commit:
            return await self._write_orders(orders)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((orders, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                results = await self._write_orders([o for orders, _ in group for o in orders])
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

    async def _write_orders(self, orders: list[Order]) -> Result:
        results: Result = [None] * len(orders)
        passed = list(range(len(orders)))
        if self.gate is not None:
            passed = await self._through_gate(orders, results)
            if not passed:
                return results
        rows = [order_row(orders[i]) for i in passed]
        coupons = [(o.coupon, o.id, o.user, o.discount, o.created_at) if o.coupon else None
                   for o in (orders[i] for i in passed)]
        sales = [(orders[i].sale, orders[i].qty) for i in passed]
        written = await self.db.write(lambda: _add_orders(rows, coupons, sales))
        for j, outcome in written.items():
            results[passed[j]] = outcome
        if self.gate is not None:  # the database said no: the gate gives the units back
            for j in written:
                o = orders[passed[j]]
                assert o.sale is not None
                await self.gate.give(o.sale, o.user, o.key, o.qty)
        return results

    async def _through_gate(self, orders: list[Order], results: Result) -> list[int]:
        """One pipelined round trip for the whole batch; a sale whose gate Redis lost is
        rebuilt from the database and its orders asked again. A refusal keeps the gate's
        reason, and the units it reports left become this node's view of the sale."""
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
                                           GATE_CODES.get(verdict, Code.ENDED))
        passed.sort()
        return passed

    async def rebuild_gate(self, sale_id: str) -> bool:
        """A sale's stock, per-user units and keys from the database into Redis (only if
        Redis lost them: the script writes nothing when the gate exists)."""
        assert self.gate is not None

        def body() -> Body[tuple[Row, list[Row]]]:
            sale = yield Q("SELECT * FROM sales WHERE id = ?", sale_id)
            orders = yield Q('SELECT "user", key, qty FROM orders WHERE sale = ?', sale_id)
            return (sale[0] if sale else None), orders

        sale, rows = await self.db.read(body)
        if sale is None:
            return False
        units: dict[str, int] = {}
        keys: dict[str, int] = {}
        for r in rows:
            units[r["user"]] = units.get(r["user"], 0) + r["qty"]
            keys[f"{r['user']}|{r['key']}"] = r["qty"]
        built = await self.gate.build(dict(sale), units, keys)
        self.rebuilds += int(built)
        return built

    async def close_sale(self, sale_id: str, phase: str) -> int:
        """End or cancel a sale, giving its unsold units back to the product; the units
        given back (0 when it was closed already)."""

        def body() -> Body[int]:
            r = yield Q("SELECT product, stock_left, phase FROM sales WHERE id = ? FOR UPDATE",
                        sale_id)
            if not r or r[0]["phase"] in ("ended", "cancelled"):
                return 0
            left = int(r[0]["stock_left"])
            yield X("UPDATE sales SET phase = ?, returned = ? WHERE id = ?", phase, left, sale_id)
            yield X("UPDATE products SET stock = stock + ? WHERE id = ?", left, r[0]["product"])
            return left

        left = await self.db.write(body)
        if self.gate is not None:
            await self.gate.close(sale_id)
        return left

    # -- team buys ---------------------------------------------------------------------------
    async def add_offer(self, offer: TeamBuyOffer) -> None:
        o = offer
        row = (o.id, o.room, o.product, o.price, o.currency, o.size, o.window_s, o.stock,
               o.stock_left, o.created_at)

        def body() -> Body[None]:
            if row[7] is not None:
                yield from _take_product(row[2], row[7])
            yield X("INSERT INTO teambuys (id, room, product, price, currency, size, window_s,"
                    " stock, stock_left, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *row)

        await self.db.write(body)

    async def open_team(self, team: Team, order: Order) -> None:
        """The offer's stock is taken only if there is enough (`sold_out`), and a buyer
        already in an open team of the offer (opened or joined on any node) is refused."""
        t = team
        trow = (t.id, t.offer, t.room, t.leader, t.size, t.opened_at, t.expires_at)
        orow, user = order_row(order), order.user

        def body() -> Body[None]:
            yield from _one_team_per_buyer(trow[1], user)
            if (yield X("UPDATE teambuys SET stock_left = stock_left - ?1 WHERE id = ?2"
                        " AND (stock_left IS NULL OR stock_left >= ?1)", trow[4], trow[1])) != 1:
                raise StockConflict(f"offer {trow[1]} has no stock for another team", Code.SOLD_OUT)
            yield X("INSERT INTO teams (id, offer, room, leader, size, opened_at, expires_at,"
                    " status) VALUES (?, ?, ?, ?, ?, ?, ?, 'open')", *trow)
            yield from _insert_team_order(orow)

        await self.db.write(body)

    async def join_team(self, order: Order) -> bool:
        """The team row is locked, then its members counted in a statement of their own (read
        committed: it sees every join committed before the lock was granted), so joins racing
        for the last places from several nodes never take more than the size; a team past
        its deadline or failed is refused."""
        orow, team, offer, user, at = (order_row(order), order.team, order.offer, order.user,
                                       order.created_at)
        assert offer is not None

        def body() -> Body[bool]:
            yield from _one_team_per_buyer(offer, user)
            r = yield Q("SELECT status, size, expires_at FROM teams WHERE id = ? FOR UPDATE", team)
            if not r or r[0]["status"] == "failed" or at >= r[0]["expires_at"]:
                raise StockConflict(f"team {team} is not open", Code.ENDED)
            n = (yield Q("SELECT COUNT(*) AS n FROM orders WHERE team = ?", team))[0]["n"]
            if r[0]["status"] != "open" or n >= r[0]["size"]:
                raise StockConflict(f"team {team} is full", Code.TEAM_FULL)
            yield from _insert_team_order(orow)
            if n + 1 < r[0]["size"]:
                return False
            yield X("UPDATE teams SET status = 'confirmed' WHERE id = ?", team)
            yield X("UPDATE orders SET status = ? WHERE team = ?", order_status.CONFIRMED, team)
            return True

        return await self.db.write(body)

    async def fail_team(self, team_id: str) -> bool:
        """Fail an open team and its orders, giving its units back; True only for the call
        that failed it (in a cluster exactly one node tells the members)."""

        def body() -> Body[bool]:
            r = yield Q("SELECT offer, size, status FROM teams WHERE id = ? FOR UPDATE", team_id)
            if not r or r[0]["status"] != "open":
                return False
            yield X("UPDATE teams SET status = 'failed' WHERE id = ?", team_id)
            yield X("UPDATE orders SET status = ? WHERE team = ?", order_status.FAILED, team_id)
            yield X("UPDATE teambuys SET stock_left = stock_left + ? WHERE id = ?"
                    " AND stock_left IS NOT NULL", r[0]["size"], r[0]["offer"])
            return True

        return await self.db.write(body)

    # -- queries -----------------------------------------------------------------------------
    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.db.rows(f'SELECT {_COLS} FROM orders WHERE "user" = ?'
                                  " ORDER BY created_at DESC, rowid DESC LIMIT ?", user, limit)
        return [order_from(r).to_dict() for r in rows]

    async def set_product_image(self, product_id: str, image: str) -> None:
        await self.db.write(steps(X("UPDATE products SET image = ? WHERE id = ?", image, product_id)))

    async def teams_of(self, user: str, limit: int = 20) -> list[Team]:
        """The user's most recent teams (open or not), with every member."""
        def body() -> Body[list[Team]]:
            teams = [team_from(r) for r in (yield Q(
                "SELECT t.* FROM teams t JOIN orders o ON o.team = t.id"
                ' WHERE o."user" = ? ORDER BY t.opened_at DESC, t.id DESC LIMIT ?', user, limit))]
            if not teams:
                return []
            by_id = {t.id: t for t in teams}
            for o in (yield Q(f"SELECT {_COLS} FROM orders WHERE team IN {in_list(len(teams))}"
                              " ORDER BY rowid", *by_id)):
                order = order_from(o)
                by_id[str(order.team)].members.append(order)
            for t in teams:
                t.durable = True
            return teams

        return await self.db.read(body)

    async def order(self, order_id: str) -> dict[str, Any] | None:
        rows = await self.db.rows(f"SELECT {_COLS} FROM orders WHERE id = ?", order_id)
        return order_from(rows[0]).to_dict() if rows else None

    async def orders_of_room(self, room: str, limit: int = 1000,
                             after: str | None = None) -> list[dict[str, Any]]:
        if after is None:
            rows = await self.db.rows(f"SELECT {_COLS} FROM orders WHERE room = ?"
                                      " ORDER BY rowid LIMIT ?", room, limit)
        else:
            rows = await self.db.rows(f"SELECT {_COLS} FROM orders WHERE room = ? AND rowid >"
                                      " (SELECT rowid FROM orders WHERE id = ?) ORDER BY rowid"
                                      " LIMIT ?", room, after, limit)
        return [order_from(r).to_dict() for r in rows]

    async def sales_stats(self, room: str) -> dict[str, Any]:
        rows = await self.db.rows(
            "SELECT o.product, o.currency, p.title, COUNT(*) AS orders, SUM(o.qty) AS units,"
            " SUM(o.qty * o.price) AS revenue FROM orders o LEFT JOIN products p ON p.id = o.product"
            " WHERE o.room = ? AND o.status = 'confirmed' AND o.price > 0"  # prizes are not sales
            " GROUP BY o.product, o.currency, p.title"
            " ORDER BY revenue DESC", room)
        products = [{"product": r["product"], "title": r["title"] or "", "currency": r["currency"],
                     "orders": int(r["orders"]), "units": int(r["units"]),
                     "revenue": int(r["revenue"])} for r in rows]
        return {"room": room, "products": products,
                "orders": sum(p["orders"] for p in products),
                "units": sum(p["units"] for p in products),
                "revenue": sum(p["revenue"] for p in products)}


# -- transaction bodies (run by SQLite's writer thread or awaited on PostgreSQL) --------------
def _load() -> Body[LedgerState]:
    state = LedgerState()
    state.products = [product_from(r) for r in
                      (yield Q("SELECT * FROM products ORDER BY created_at, id"))]
    state.sales = yield from _sales()
    state.offers = yield from _offers()
    return state


def _sales(where: str = "", *args: Any) -> Body[list[FlashSale]]:
    """The sales `where` picks, each with its orders restored."""
    sales = {r["id"]: sale_from(r) for r in
             (yield Q(f"SELECT * FROM sales {where} ORDER BY created_at, id", *args))}
    for r in (yield Q(f"SELECT {_COLS} FROM orders WHERE sale IN (SELECT id FROM sales {where})"
                      " ORDER BY rowid", *args)):
        sales[r["sale"]].restore(order_from(r))
    return list(sales.values())


def _offers(where: str = "", *args: Any, teams: str = "") -> Body[list[TeamBuyOffer]]:
    """The offers `where` picks, each with its teams (of status `teams`, or all) and their
    members restored."""
    picked = f"offer IN (SELECT id FROM teambuys {where})" + (f" AND status = '{teams}'" if teams else "")
    offers = {r["id"]: offer_from(r) for r in
              (yield Q(f"SELECT * FROM teambuys {where} ORDER BY created_at, id", *args))}
    made = {r["id"]: team_from(r) for r in
            (yield Q(f"SELECT * FROM teams WHERE {picked} ORDER BY opened_at, id", *args))}
    for r in (yield Q(f"SELECT {_COLS} FROM orders WHERE team IN (SELECT id FROM teams"
                      f" WHERE {picked}) ORDER BY rowid", *args)):
        made[r["team"]].members.append(order_from(r))
    for team in made.values():
        offers[team.offer].restore(team)
    return list(offers.values())


def _add_orders(rows: list[tuple[Any, ...]], coupons: list[tuple[Any, ...] | None],
                sales: list[tuple[str | None, int]]) -> Body[dict[int, Exception]]:
    """Insert the orders that pass; the refused ones (by position) and why. A spent coupon
    refuses its order alone; a sale short for the whole batch is tried order by order."""
    refused: dict[int, Exception] = {}
    by_sale: dict[str | None, list[int]] = {}
    for j, redemption in enumerate(coupons):
        if redemption is not None and (yield X(
                "INSERT INTO coupon_redemptions (coupon, order_id, user_id, discount, ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", *redemption)) != 1:
            refused[j] = CouponConflict(f"coupon {redemption[0]} already redeemed")
        else:
            by_sale.setdefault(sales[j][0], []).append(j)
    accepted: list[int] = []
    for sale, js in by_sale.items():
        if (yield from _take(sale, sum(sales[j][1] for j in js))):
            accepted.extend(js)
            continue
        for j in js:  # not all of them fit: each alone, in arrival order
            if (yield from _take(sale, sales[j][1])):
                accepted.append(j)
                continue
            if coupons[j] is not None:  # no order, no redemption
                yield X("DELETE FROM coupon_redemptions WHERE order_id = ?", rows[j][0])
            phase = yield Q("SELECT phase FROM sales WHERE id = ?", sale)
            closed = not phase or phase[0]["phase"] in ("ended", "cancelled")
            refused[j] = StockConflict(f"sale {sale} is closed or short of stock",
                                       Code.ENDED if closed else Code.SOLD_OUT)
    if accepted:
        accepted.sort()
        yield Insert("orders", COLUMNS, [rows[j] for j in accepted])
    return refused


def _take(sale: str | None, qty: int) -> Body[bool]:
    """Take units from a sale if it is open and has that many: the durable guard."""
    done = yield X("UPDATE sales SET stock_left = stock_left - ?1,"
                   " phase = CASE WHEN stock_left = ?1 THEN 'sold_out' ELSE phase END"
                   " WHERE id = ?2 AND stock_left >= ?1 AND phase NOT IN ('ended', 'cancelled')",
                   qty, sale)
    return bool(done == 1)


def _take_product(product: str, units: int) -> Body[None]:
    if (yield X("UPDATE products SET stock = stock - ?1 WHERE id = ?2 AND stock >= ?1",
                units, product)) != 1:
        raise StockConflict(f"product {product} lacks {units} units")


def _one_team_per_buyer(offer: str, user: str) -> Body[None]:
    """A buyer is in at most one open team of an offer, whichever node served them."""
    yield Lock(f"team|{offer}|{user}")
    team = yield Q('SELECT t.id FROM orders o JOIN teams t ON t.id = o.team WHERE o.offer = ?'
                   ' AND o."user" = ? AND t.status = \'open\' LIMIT 1', offer, user)
    if team:
        raise StockConflict(f"{user} is already in open team {team[0]['id']}",
                            Code.ALREADY_IN_TEAM)


def _insert_team_order(row: tuple[Any, ...]) -> Body[None]:
    """A team order; a (user, offer, key) used before (on another node) is that order."""
    try:
        yield X(f"INSERT INTO orders ({_COLS}) VALUES ({_ONE})", *row)
    except Duplicate:
        raise KnownKey(f"key {row[11]} of {row[1]} made an order") from None


def order_row(o: Order) -> tuple[Any, ...]:
    return (o.id, o.user, o.name, o.room, o.product, o.sale, o.offer, o.team, o.qty, o.price,
            o.currency, o.key, o.status, o.created_at, o.draw)


def order_from(r: Row) -> Order:
    return Order(id=r["id"], user=r["user"], name=r["name"], room=r["room"], product=r["product"],
                 sale=r["sale"], offer=r["offer"], team=r["team"], qty=r["qty"], price=r["price"],
                 currency=r["currency"], key=r["key"], status=r["status"],
                 created_at=r["created_at"], draw=r["draw"])


def product_from(r: Row) -> Product:
    return Product(id=r["id"], shop=r["shop"], title=r["title"], price=r["price"],
                   currency=r["currency"], stock=r["stock"], image=r["image"],
                   created_at=r["created_at"])


def sale_from(r: Row) -> FlashSale:
    """A sales row as a FlashSale (its orders are restored by the caller)."""
    return FlashSale(id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                     currency=r["currency"], stock=r["stock"], stock_left=r["stock_left"],
                     starts_at=r["starts_at"], ends_at=r["ends_at"],
                     per_user_limit=r["per_user_limit"], created_at=r["created_at"],
                     phase=Phase(r["phase"]), returned=r["returned"])


def offer_from(r: Row) -> TeamBuyOffer:
    """A teambuys row as a TeamBuyOffer (its teams are restored by the caller)."""
    return TeamBuyOffer(id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                        currency=r["currency"], size=r["size"], window_s=r["window_s"],
                        created_at=r["created_at"], stock=r["stock"], stock_left=r["stock_left"])


def team_from(r: Row) -> Team:
    """A teams row as a Team without members."""
    return Team(id=r["id"], offer=r["offer"], room=r["room"], leader=r["leader"],
                size=r["size"], opened_at=r["opened_at"], expires_at=r["expires_at"],
                status=TeamStatus(r["status"]))
