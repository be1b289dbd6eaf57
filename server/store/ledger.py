"""The commerce ledger on SQLite: products, sales, team buys, teams and orders.

Why this shape: each acknowledged order is one group-committed transaction that inserts the
order and decrements the sale's `stock_left` together, so after `kill -9` at any moment
`stock_left + SUM(qty of the sale's orders) == stock` holds for every sale. Guards live in the
database as well as in memory: a unique index on (user, sale, key) stops a second order for one
idempotency key, `CHECK (stock_left >= 0)` and a conditional UPDATE stop an oversell, and an
order for a closed sale is refused (its stock was already given back to the product).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from server.domain import order as order_status
from server.domain.catalog import Product
from server.domain.flashsale import FlashSale, Phase
from server.domain.order import Order
from server.domain.teambuy import Team, TeamBuyOffer, TeamStatus
from server.store.base import CouponConflict, LedgerState, StockConflict
from server.store.sqlite import SqliteDatabase

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS products (
        id TEXT PRIMARY KEY,
        shop TEXT NOT NULL,
        title TEXT NOT NULL,
        price INTEGER NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        stock INTEGER NOT NULL CHECK (stock >= 0),
        image TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS products_shop ON products (shop)",
    """CREATE TABLE IF NOT EXISTS sales (
        id TEXT PRIMARY KEY,
        room TEXT NOT NULL,
        product TEXT NOT NULL REFERENCES products (id),
        price INTEGER NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        stock INTEGER NOT NULL CHECK (stock > 0),
        stock_left INTEGER NOT NULL CHECK (stock_left >= 0 AND stock_left <= stock),
        per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0),
        starts_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL,
        phase TEXT NOT NULL,
        returned INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sales_room ON sales (room)",
    """CREATE TABLE IF NOT EXISTS teambuys (
        id TEXT PRIMARY KEY,
        room TEXT NOT NULL,
        product TEXT NOT NULL REFERENCES products (id),
        price INTEGER NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 2),
        window_s INTEGER NOT NULL CHECK (window_s > 0),
        stock INTEGER,
        stock_left INTEGER CHECK (stock_left IS NULL OR stock_left >= 0),
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS teambuys_room ON teambuys (room)",
    """CREATE TABLE IF NOT EXISTS teams (
        id TEXT PRIMARY KEY,
        offer TEXT NOT NULL REFERENCES teambuys (id),
        room TEXT NOT NULL,
        leader TEXT NOT NULL,
        size INTEGER NOT NULL,
        opened_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        status TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS teams_offer ON teams (offer, status)",
    """CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        room TEXT NOT NULL,
        product TEXT NOT NULL,
        sale TEXT REFERENCES sales (id),
        offer TEXT REFERENCES teambuys (id),
        team TEXT REFERENCES teams (id),
        qty INTEGER NOT NULL CHECK (qty >= 1),
        price INTEGER NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL,
        key TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        CHECK ((sale IS NULL) <> (team IS NULL)))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS orders_sale_key ON orders (user, sale, key) WHERE sale IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS orders_offer_key ON orders (user, offer, key) WHERE offer IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS orders_user ON orders (user, created_at)",
    "CREATE INDEX IF NOT EXISTS orders_room ON orders (room, status)",
    "CREATE INDEX IF NOT EXISTS orders_team ON orders (team)",
    # operations (issue 10): one row per spent coupon, written with its order; the primary
    # key is the final guard against spending a coupon twice
    """CREATE TABLE IF NOT EXISTS coupon_redemptions (
        coupon TEXT PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        discount INTEGER NOT NULL CHECK (discount >= 0),
        ts INTEGER NOT NULL)""",
)

_ORDER_COLUMNS: Final = "id, user, name, room, product, sale, offer, team, qty, price, currency, key, status, created_at"


def _order_row(o: Order) -> tuple[Any, ...]:
    return (
        o.id, o.user, o.name, o.room, o.product, o.sale, o.offer, o.team,
        o.qty, o.price, o.currency, o.key, o.status, o.created_at,
    )  # fmt: skip


def _order_from(r: sqlite3.Row) -> Order:
    return Order(
        id=r["id"],
        user=r["user"],
        name=r["name"],
        room=r["room"],
        product=r["product"],
        sale=r["sale"],
        offer=r["offer"],
        team=r["team"],
        qty=r["qty"],
        price=r["price"],
        currency=r["currency"],
        key=r["key"],
        status=r["status"],
        created_at=r["created_at"],
    )


class SqliteLedger:
    """`CommerceStore` over a `SqliteDatabase` (WAL, group commit)."""

    shared = False  # one process owns the file

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    # -- schema and recovery ---------------------------------------------------------------
    async def migrate(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for sql in SCHEMA:
                conn.execute(sql)

        await self.db.write(run)

    async def load(self) -> LedgerState:
        return await self.db.read(self._load)

    @staticmethod
    def _load(conn: sqlite3.Connection) -> LedgerState:
        state = LedgerState()
        for r in conn.execute("SELECT * FROM products ORDER BY created_at, id"):
            state.products.append(product_from(r))
        sales: dict[str, FlashSale] = {}
        for r in conn.execute("SELECT * FROM sales ORDER BY created_at, id"):
            sales[r["id"]] = sale_from(r)
        for r in conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE sale IS NOT NULL ORDER BY created_at"
        ):
            sales[r["sale"]].restore(_order_from(r))
        state.sales = list(sales.values())
        offers: dict[str, TeamBuyOffer] = {}
        for r in conn.execute("SELECT * FROM teambuys ORDER BY created_at, id"):
            offers[r["id"]] = offer_from(r)
        teams: dict[str, Team] = {}
        for r in conn.execute("SELECT * FROM teams ORDER BY opened_at, id"):
            teams[r["id"]] = team_from(r)
        for r in conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE team IS NOT NULL ORDER BY created_at, rowid"
        ):
            teams[r["team"]].members.append(_order_from(r))
        for team in teams.values():
            offers[team.offer].restore(team)
        state.offers = list(offers.values())
        return state

    # -- reading one thing back ------------------------------------------------------------
    async def product(self, product_id: str) -> Product | None:
        def run(conn: sqlite3.Connection) -> Product | None:
            r = conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
            return None if r is None else product_from(r)

        return await self.db.read(run)

    async def sale(self, sale_id: str) -> FlashSale | None:
        def run(conn: sqlite3.Connection) -> FlashSale | None:
            r = conn.execute("SELECT * FROM sales WHERE id = ?", (sale_id,)).fetchone()
            if r is None:
                return None
            sale = sale_from(r)
            for o in conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE sale = ? ORDER BY created_at, rowid",
                (sale_id,),
            ):
                sale.restore(_order_from(o))
            return sale

        return await self.db.read(run)

    async def offer(self, offer_id: str) -> TeamBuyOffer | None:
        def run(conn: sqlite3.Connection) -> TeamBuyOffer | None:
            r = conn.execute("SELECT * FROM teambuys WHERE id = ?", (offer_id,)).fetchone()
            if r is None:
                return None
            offer = offer_from(r)
            teams = {t["id"]: team_from(t) for t in conn.execute(
                "SELECT * FROM teams WHERE offer = ? AND status = 'open' ORDER BY opened_at, id",
                (offer_id,))}
            for o in conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE team IN"
                " (SELECT id FROM teams WHERE offer = ? AND status = 'open')"
                " ORDER BY created_at, rowid", (offer_id,)):
                teams[o["team"]].members.append(_order_from(o))
            for team in teams.values():
                offer.restore(team)
            return offer

        return await self.db.read(run)

    async def team(self, team_id: str) -> Team | None:
        def run(conn: sqlite3.Connection) -> Team | None:
            r = conn.execute("SELECT * FROM teams WHERE id = ?", (team_id,)).fetchone()
            if r is None:
                return None
            team = team_from(r)
            team.durable = True
            team.members = [_order_from(o) for o in conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE team = ? ORDER BY created_at, rowid",
                (team_id,))]
            return team

        return await self.db.read(run)

    async def sale_order(self, user: str, sale_id: str, key: str) -> Order | None:
        def run(conn: sqlite3.Connection) -> Order | None:
            r = conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user = ? AND sale = ? AND key = ?",
                (user, sale_id, key)).fetchone()
            return None if r is None else _order_from(r)

        return await self.db.read(run)

    async def team_order(self, user: str, offer_id: str, key: str) -> Order | None:
        def run(conn: sqlite3.Connection) -> Order | None:
            r = conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user = ? AND offer = ? AND key = ?",
                (user, offer_id, key)).fetchone()
            return None if r is None else _order_from(r)

        return await self.db.read(run)

    async def room_items(self, room: str) -> tuple[list[str], list[str]]:
        def run(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            sales = [r["id"] for r in conn.execute(
                "SELECT id FROM sales WHERE room = ? ORDER BY created_at, id", (room,))]
            offers = [r["id"] for r in conn.execute(
                "SELECT id FROM teambuys WHERE room = ? ORDER BY created_at, id", (room,))]
            return sales, offers

        return await self.db.read(run)

    def stock_left(self, sale_id: str) -> int | None:
        return None  # one process: its memory counts every buyer

    async def claim(self, what: str) -> bool:
        return True  # one process: it is the only one to announce

    # -- products and sales ----------------------------------------------------------------
    async def add_product(self, product: Product) -> None:
        p = product
        row = (p.id, p.shop, p.title, p.price, p.currency, p.stock, p.image, p.created_at)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self.db.write(run)

    async def add_sale(self, sale: FlashSale) -> None:
        s = sale
        row = (
            s.id, s.room, s.product, s.price, s.currency, s.stock, s.stock_left,
            s.per_user_limit, s.starts_at, s.ends_at, str(s.phase), s.returned, s.created_at,
        )  # fmt: skip
        product, stock = s.product, s.stock

        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                (stock, product, stock),
            )
            if cur.rowcount != 1:
                raise StockConflict(f"product {product} lacks {stock} units")
            conn.execute(
                "INSERT INTO sales (id, room, product, price, currency, stock, stock_left,"
                " per_user_limit, starts_at, ends_at, phase, returned, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self.db.write(run)

    async def add_orders(self, orders: list[Order]) -> list[Exception | None]:
        rows = [_order_row(o) for o in orders]
        sales = [(o.sale, o.qty) for o in orders]
        coupons = [(i, (o.coupon, o.id, o.user, o.discount, o.created_at))
                   for i, o in enumerate(orders) if o.coupon is not None]

        def run(conn: sqlite3.Connection) -> list[Exception | None]:
            results: list[Exception | None] = [None] * len(rows)
            by_sale: dict[str | None, list[int]] = {}
            for i, redemption in coupons:  # first: a spent coupon refuses its order alone
                cur = conn.execute(
                    "INSERT OR IGNORE INTO coupon_redemptions (coupon, order_id, user, discount, ts)"
                    " VALUES (?, ?, ?, ?, ?)", redemption)
                if cur.rowcount != 1:
                    results[i] = CouponConflict(f"coupon {redemption[0]} already redeemed")
            for i, (sale, _) in enumerate(sales):
                if results[i] is None:
                    by_sale.setdefault(sale, []).append(i)
            accepted: list[int] = []
            for sale, idxs in by_sale.items():
                if _take(conn, sale, sum(sales[i][1] for i in idxs)):
                    accepted.extend(idxs)
                    continue
                for i in idxs:  # not all of them fit: each alone, in arrival order
                    if _take(conn, sale, sales[i][1]):
                        accepted.append(i)
                    else:
                        results[i] = StockConflict(f"sale {sale} is closed or short of stock",
                                                   _refusal(conn, sale))
                        if orders[i].coupon is not None:  # no order, no redemption
                            conn.execute("DELETE FROM coupon_redemptions WHERE order_id = ?",
                                         (orders[i].id,))
            accepted.sort()
            # one multi-row INSERT per chunk: one statement is one hand-off of the GIL
            for start in range(0, len(accepted), _ROWS_PER_INSERT):
                chunk = accepted[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES "
                    + ", ".join([f"({_PLACEHOLDERS})"] * len(chunk)),
                    [value for i in chunk for value in rows[i]],
                )
            return results

        return await self.db.write(run)

    async def close_sale(self, sale_id: str, phase: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            r = conn.execute(
                "SELECT product, stock_left, phase FROM sales WHERE id = ?", (sale_id,)
            ).fetchone()
            if r is None or r["phase"] in ("ended", "cancelled"):
                return 0
            left = int(r["stock_left"])
            conn.execute(
                "UPDATE sales SET phase = ?, returned = ? WHERE id = ?", (phase, left, sale_id)
            )
            conn.execute("UPDATE products SET stock = stock + ? WHERE id = ?", (left, r["product"]))
            return left

        return await self.db.write(run)

    # -- team buys -------------------------------------------------------------------------
    async def add_offer(self, offer: TeamBuyOffer) -> None:
        o = offer
        row = (
            o.id, o.room, o.product, o.price, o.currency, o.size, o.window_s,
            o.stock, o.stock_left, o.created_at,
        )  # fmt: skip
        product, stock = o.product, o.stock

        def run(conn: sqlite3.Connection) -> None:
            if stock is not None:
                cur = conn.execute(
                    "UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                    (stock, product, stock),
                )
                if cur.rowcount != 1:
                    raise StockConflict(f"product {product} lacks {stock} units")
            conn.execute("INSERT INTO teambuys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self.db.write(run)

    async def open_team(self, team: Team, order: Order) -> None:
        t = team
        trow = (t.id, t.offer, t.room, t.leader, t.size, t.opened_at, t.expires_at, "open")
        orow = _order_row(order)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE teambuys SET stock_left = stock_left - ?"
                " WHERE id = ? AND stock_left IS NOT NULL",
                (trow[4], trow[1]),
            )
            conn.execute("INSERT INTO teams VALUES (?, ?, ?, ?, ?, ?, ?, ?)", trow)
            conn.execute(f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({_PLACEHOLDERS})", orow)

        await self.db.write(run)

    async def join_team(self, order: Order) -> bool:
        orow = _order_row(order)
        team = order.team

        def run(conn: sqlite3.Connection) -> bool:
            r = conn.execute(
                "SELECT t.status, t.size, (SELECT COUNT(*) FROM orders o WHERE o.team = t.id) AS n"
                " FROM teams t WHERE t.id = ?",
                (team,),
            ).fetchone()
            if r is None or r["status"] == "failed":
                raise StockConflict(f"team {team} is not open", "ended")
            if r["status"] != "open" or r["n"] >= r["size"]:
                raise StockConflict(f"team {team} is full", "team_full")
            conn.execute(f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({_PLACEHOLDERS})", orow)
            if r["n"] + 1 < r["size"]:
                return False
            conn.execute("UPDATE teams SET status = 'confirmed' WHERE id = ?", (team,))
            conn.execute(
                "UPDATE orders SET status = ? WHERE team = ?", (order_status.CONFIRMED, team)
            )
            return True

        return await self.db.write(run)

    async def fail_team(self, team_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            r = conn.execute(
                "SELECT offer, size, status FROM teams WHERE id = ?", (team_id,)
            ).fetchone()
            if r is None or r["status"] != "open":
                return False
            conn.execute("UPDATE teams SET status = 'failed' WHERE id = ?", (team_id,))
            conn.execute(
                "UPDATE orders SET status = ? WHERE team = ?", (order_status.FAILED, team_id)
            )
            conn.execute(
                "UPDATE teambuys SET stock_left = stock_left + ?"
                " WHERE id = ? AND stock_left IS NOT NULL",
                (r["size"], r["offer"]),
            )
            return True

        return await self.db.write(run)

    # -- queries ---------------------------------------------------------------------------
    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user = ?"
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (user, limit),
            )
            return [_order_from(r).to_dict() for r in rows]

        return await self.db.read(run)

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """One order by id (operations: show-your-order checks the buyer and the status)."""

        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            r = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = ?", (order_id,)).fetchone()
            return None if r is None else _order_from(r).to_dict()

        return await self.db.read(run)

    async def orders_of_room(self, room: str, limit: int = 1000, after: str | None = None) -> list[dict[str, Any]]:
        """A room's orders, oldest first, for the merchant's backend (`GET /api/rooms/<id>/orders`);
        `after` is the last order id of the previous page."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            if after is None:
                rows = conn.execute(
                    f"SELECT {_ORDER_COLUMNS} FROM orders WHERE room = ? ORDER BY rowid LIMIT ?",
                    (room, limit),
                )
            else:
                rows = conn.execute(
                    f"SELECT {_ORDER_COLUMNS} FROM orders WHERE room = ? AND rowid > "
                    "(SELECT rowid FROM orders WHERE id = ?) ORDER BY rowid LIMIT ?",
                    (room, after, limit),
                )
            return [_order_from(r).to_dict() for r in rows]

        return await self.db.read(run)

    async def sales_stats(self, room: str) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT o.product, o.currency, p.title, COUNT(*) AS orders, SUM(o.qty) AS units,"
                " SUM(o.qty * o.price) AS revenue FROM orders o"
                " LEFT JOIN products p ON p.id = o.product"
                " WHERE o.room = ? AND o.status = 'confirmed'"
                " GROUP BY o.product, o.currency ORDER BY revenue DESC",
                (room,),
            ).fetchall()
            products = [
                {
                    "product": r["product"],
                    "title": r["title"] or "",
                    "currency": r["currency"],
                    "orders": int(r["orders"]),
                    "units": int(r["units"]),
                    "revenue": int(r["revenue"]),
                }
                for r in rows
            ]
            return {
                "room": room,
                "products": products,
                "orders": sum(p["orders"] for p in products),
                "units": sum(p["units"] for p in products),
                "revenue": sum(p["revenue"] for p in products),
            }

        return await self.db.read(run)


_PLACEHOLDERS: Final = ", ".join("?" for _ in _ORDER_COLUMNS.split(","))
_ROWS_PER_INSERT: Final = 500  # 14 columns: far below SQLite's 32,766 bound variables


def _refusal(conn: sqlite3.Connection, sale: str | None) -> str:
    """Why `_take` refused: the sale closed (`ended`) or ran short (`sold_out`)."""
    r = conn.execute("SELECT phase FROM sales WHERE id = ?", (sale,)).fetchone()
    return "ended" if r is None or r["phase"] in ("ended", "cancelled") else "sold_out"


def _take(conn: sqlite3.Connection, sale: str | None, qty: int) -> bool:
    """Decrement a sale's stock_left by qty if it is open and has that many; the durable
    guard behind the in-memory check."""
    cur = conn.execute(
        "UPDATE sales SET stock_left = stock_left - ?1,"
        " phase = CASE WHEN stock_left = ?1 THEN 'sold_out' ELSE phase END"
        " WHERE id = ?2 AND stock_left >= ?1 AND phase NOT IN ('ended', 'cancelled')",
        (qty, sale),
    )
    return cur.rowcount == 1


def product_from(r: Any) -> Product:
    """A products row (SQLite or PostgreSQL) as a Product."""
    return Product(id=r["id"], shop=r["shop"], title=r["title"], price=r["price"],
                   currency=r["currency"], stock=r["stock"], image=r["image"],
                   created_at=r["created_at"])


def sale_from(r: Any) -> FlashSale:
    """A sales row as a FlashSale (its orders are restored by the caller)."""
    return FlashSale(id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                     currency=r["currency"], stock=r["stock"], stock_left=r["stock_left"],
                     starts_at=r["starts_at"], ends_at=r["ends_at"],
                     per_user_limit=r["per_user_limit"], created_at=r["created_at"],
                     phase=Phase(r["phase"]), returned=r["returned"])


def offer_from(r: Any) -> TeamBuyOffer:
    """A teambuys row as a TeamBuyOffer (its teams are restored by the caller)."""
    return TeamBuyOffer(id=r["id"], room=r["room"], product=r["product"], price=r["price"],
                        currency=r["currency"], size=r["size"], window_s=r["window_s"],
                        created_at=r["created_at"], stock=r["stock"], stock_left=r["stock_left"])


def team_from(r: Any) -> Team:
    """A teams row as a Team without members."""
    return Team(id=r["id"], offer=r["offer"], room=r["room"], leader=r["leader"],
                size=r["size"], opened_at=r["opened_at"], expires_at=r["expires_at"],
                status=TeamStatus(r["status"]))
