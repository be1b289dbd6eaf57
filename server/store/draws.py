"""Lucky draws on disk: the draws, their entries, the close, the result and its prizes.

Why these guards, in SQL that both databases run: several nodes of a cluster take entries for
one draw and each arms a timer for its close, and a process may be killed at any moment.

- one entry per (draw, user) (primary key, `ON CONFLICT DO NOTHING`), taken only while the
  draw's row says `open`, under that row's lock (`FOR UPDATE`): an entry is either committed
  before the close fixed the list, or refused (`DrawClosed`), never acknowledged and left out;
- one close: `open -> drawing` is one conditional UPDATE, and the entrant list is read in the
  same transaction, after it. A closer that dies leaves the draw `drawing`; another node takes
  it over once `claimed_at` is older than the lease (a lone server at once, on restart);
- one result: `drawing -> done` is one conditional UPDATE, in the transaction that writes the
  prizes (orders of kind `prize`, unique per (draw, user), or coupons) and gives unawarded
  product units back to stock: the prizes are granted exactly once, however many nodes race.

A product prize holds `winners` units of the product's stock from creation (like a sale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from server.domain.coupons import Coupon, spec_from_row
from server.domain.draw import (
    Condition,
    Draw,
    Phase,
    Winner,
    digest_of,
    entrant_hash,
    prize_stored,
)
from server.domain.order import Order
from server.store.db import Body, Db, Q, Row, X
from server.store.engagement import coupon_row
from server.store.ledger import COLUMNS, StockConflict, order_from, order_row

ENTRY_CHUNK: Final = 500  # rows per INSERT statement
RECENT_MS: Final = 3_600_000  # done draws kept for snapshots after a restart
_COUPON: Final = ("INSERT INTO coupons (id, shop, user_id, kind, value, min_spend, expires_at,"
                  " title, issued_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ORDER: Final = f"INSERT INTO orders ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class DrawClosed(Exception):
    """The draw's row no longer says `open`: the entry was not taken."""


@dataclass
class Claim:
    """What the node that closes a draw needs: the fixed entrant list (user -> name as
    entered) and the close as recorded (a takeover gets the first closer's)."""

    entries: dict[str, str]
    closed_at: int
    digest: str
    viewers: int
    beacon: dict[str, Any] | None
    first: bool  # this call moved the draw to `drawing` (else: a takeover)


@dataclass
class DrawsState:
    """At start-up: draws still open or drawing (with who entered them), draws done but not
    yet announced, and recently done ones (for snapshots)."""

    active: list[Draw] = field(default_factory=list)
    unannounced: list[Draw] = field(default_factory=list)
    recent: list[Draw] = field(default_factory=list)


class DrawStore(Protocol):
    """What `server.engagement.draws.Draws` needs of a store."""

    shared: bool

    async def load(self, now_ms: int) -> DrawsState: ...
    async def add_draw(self, draw: Draw, held: int) -> None: ...
    async def add_entries(self, draw_id: str,
                          rows: Sequence[tuple[str, str, str, int]]) -> tuple[list[str], int]: ...
    async def claim(self, draw_id: str, node: str, now_ms: int, viewers: int, lease_ms: int,
                    beacon: dict[str, Any] | None) -> Claim | None: ...
    async def settle(self, draw: Draw, winners: list[Winner], beacon: dict[str, Any] | None,
                     orders: list[Order], coupons: list[Coupon], now_ms: int) -> bool: ...
    async def announced(self, draw_id: str) -> bool: ...
    async def prizes(self, draw_id: str,
                     winners: Sequence[str]) -> tuple[list[Order], list[Coupon]]: ...
    async def cancel(self, draw_id: str) -> bool: ...
    async def draw(self, draw_id: str) -> Draw | None: ...
    async def draws_of(self, scope: str, target: str, limit: int) -> list[Draw]: ...
    async def entered(self, user: str, draw_ids: Sequence[str]) -> set[str]: ...
    async def entrant_hashes(self, draw_id: str) -> list[str]: ...
    async def room_stats(self, room: str) -> dict[str, Any]: ...


class SqlDrawStore:
    """The draws over one `Db` (SQLite or PostgreSQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.shared = db.shared

    async def load(self, now_ms: int) -> DrawsState:
        def body() -> Body[DrawsState]:
            state = DrawsState()
            rows = yield Q("SELECT * FROM draws WHERE phase IN ('open', 'drawing')"
                           " OR announced = 0 OR settled_at >= ? ORDER BY created_at", now_ms - RECENT_MS)
            for r in rows:
                d = draw_from(r)
                if d.phase in (Phase.OPEN, Phase.DRAWING):
                    users = yield Q("SELECT user_id FROM draw_entries WHERE draw = ?", d.id)
                    d.entered = {u["user_id"] for u in users}
                    state.active.append(d)
                elif not r["announced"]:
                    state.unannounced.append(d)
                else:
                    state.recent.append(d)
            return state

        return await self.db.read(body)

    async def add_draw(self, draw: Draw, held: int) -> None:
        """The draw, and the product units its prize holds (`StockConflict` when short)."""
        row = draw_row(draw)

        def body() -> Body[None]:
            if held and draw.prize.product is not None:
                if (yield X("UPDATE products SET stock = stock - ?1 WHERE id = ?2 AND stock >= ?1",
                            held, draw.prize.product)) != 1:
                    raise StockConflict(f"product {draw.prize.product} lacks {held} units")
            yield X(f"INSERT INTO draws ({', '.join(row)}, held) VALUES"
                    f" ({', '.join('?' * len(row))}, ?)", *row.values(), held)

        await self.db.write(body)

    async def add_entries(self, draw_id: str,
                          rows: Sequence[tuple[str, str, str, int]]) -> tuple[list[str], int]:
        """Enter (user, name, via, ts) rows while the draw is open: returns the users this
        call entered (the others had already) and the draw's entrant count after it."""
        ordered = sorted(rows)  # one lock order for every node's batches

        def body() -> Body[tuple[list[str], int]]:
            phase = yield Q("SELECT phase FROM draws WHERE id = ? FOR UPDATE", draw_id)
            if not phase or phase[0]["phase"] != Phase.OPEN:
                raise DrawClosed(draw_id)
            new: list[str] = []
            for at in range(0, len(ordered), ENTRY_CHUNK):
                chunk = ordered[at:at + ENTRY_CHUNK]
                values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
                args = [v for user, name, via, ts in chunk for v in (draw_id, user, name, via, ts)]
                got = yield Q(f"INSERT INTO draw_entries (draw, user_id, name, via, ts) VALUES {values}"
                              " ON CONFLICT DO NOTHING RETURNING user_id", *args)
                new += [r["user_id"] for r in got]
            count = yield Q("UPDATE draws SET entrants = entrants + ? WHERE id = ? RETURNING entrants",
                            len(new), draw_id)
            return new, int(count[0]["entrants"])

        return await self.db.write(body)

    async def claim(self, draw_id: str, node: str, now_ms: int, viewers: int, lease_ms: int,
                    beacon: dict[str, Any] | None) -> Claim | None:
        """Close the draw (open -> drawing) and read its entrant list, or take over a close
        whose node went quiet for `lease_ms` (or this node's own, tried again). None: closed
        by another node that is alive, or no longer open."""

        def body() -> Body[Claim | None]:
            moved = yield X("UPDATE draws SET phase = 'drawing', closed_at = ?, closer = ?,"
                            " claimed_at = ?, viewers_at_close = ?, beacon = ?"
                            " WHERE id = ? AND phase = 'open'",
                            now_ms, node, now_ms, viewers, _json(beacon), draw_id)
            if not moved:
                took = yield X("UPDATE draws SET closer = ?1, claimed_at = ?2 WHERE id = ?3"
                               " AND phase = 'drawing' AND (closer = ?1 OR claimed_at <= ?4)",
                               node, now_ms, draw_id, now_ms - lease_ms)
                if not took:
                    return None
            rows = yield Q("SELECT user_id, name FROM draw_entries WHERE draw = ?", draw_id)
            entries = {r["user_id"]: r["name"] for r in rows}
            digest = digest_of(sorted(entrant_hash(u) for u in entries))
            if moved:
                yield X("UPDATE draws SET digest = ?, entrants = ? WHERE id = ?",
                        digest, len(entries), draw_id)
            d = (yield Q("SELECT closed_at, viewers_at_close, beacon FROM draws WHERE id = ?",
                         draw_id))[0]
            return Claim(entries, int(d["closed_at"]), digest, int(d["viewers_at_close"]),
                         _unjson(d["beacon"]), bool(moved))

        return await self.db.write(body)

    async def settle(self, draw: Draw, winners: list[Winner], beacon: dict[str, Any] | None,
                     orders: list[Order], coupons: list[Coupon], now_ms: int) -> bool:
        """drawing -> done with its result and prizes, once; False if already settled."""
        prize_of = {o.user: o.id for o in orders} | {c.user: c.id for c in coupons}
        result = orjson.dumps([{"user": w.user, "name": w.name, "hash": w.hash,
                                "prize": prize_of.get(w.user)} for w in winners]).decode()
        order_rows = [order_row(o) for o in orders]
        coupon_rows = [coupon_row(c) for c in coupons]
        product = draw.prize.product

        def body() -> Body[bool]:
            done = yield X("UPDATE draws SET phase = 'done', result = ?, beacon = ?, settled_at = ?"
                           " WHERE id = ? AND phase = 'drawing'",
                           result, _json(beacon), now_ms, draw.id)
            if not done:
                return False
            for row in order_rows:
                yield X(_ORDER, *row)
            for row in coupon_rows:
                yield X(_COUPON, *row)
            if product is not None:  # the units held for prizes nobody won go back
                yield X("UPDATE products SET stock = stock + (SELECT held FROM draws WHERE id = ?2) - ?1"
                        " WHERE id = ?3", len(order_rows), draw.id, product)
            return True

        return await self.db.write(body)

    async def announced(self, draw_id: str) -> bool:
        """Claim the announcement of a settled draw; False when it was already made."""

        def body() -> Body[bool]:
            return bool((yield X("UPDATE draws SET announced = 1 WHERE id = ? AND announced = 0",
                                 draw_id)))

        return await self.db.write(body)

    async def cancel(self, draw_id: str) -> bool:
        """open -> cancelled (the held units back); False when it was no longer open."""

        held = await self.db.rows("SELECT prize, held FROM draws WHERE id = ?", draw_id)
        product = None
        if held and held[0]["held"]:
            product = prize_stored(orjson.loads(held[0]["prize"])).product

        def cancel_body() -> Body[bool]:
            if not (yield X("UPDATE draws SET phase = 'cancelled', announced = 1"
                            " WHERE id = ? AND phase = 'open'", draw_id)):
                return False
            if product is not None:
                yield X("UPDATE products SET stock = stock + (SELECT held FROM draws WHERE id = ?)"
                        " WHERE id = ?", draw_id, product)
            return True

        return await self.db.write(cancel_body)

    async def prizes(self, draw_id: str, winners: Sequence[str]) -> tuple[list[Order], list[Coupon]]:
        """The prizes a settled draw granted (to announce them again after a crash)."""

        def body() -> Body[tuple[list[Order], list[Coupon]]]:
            orders = yield Q(f"SELECT {', '.join(COLUMNS)} FROM orders WHERE draw = ?", draw_id)
            result = yield Q("SELECT result FROM draws WHERE id = ?", draw_id)
            ids = [w["prize"] for w in orjson.loads(result[0]["result"] or "[]") if w.get("prize")]
            coupons: list[Row] = []
            if ids:
                coupons = yield Q(f"SELECT * FROM coupons WHERE id IN ({', '.join('?' * len(ids))})"
                                  " AND source = 'draw'", *ids)
            return ([order_from(r) for r in orders],
                    [Coupon(r["id"], r["shop"], r["user_id"], spec_from_row(r), r["issued_at"],
                            r["source"]) for r in coupons])

        return await self.db.read(body)

    async def draw(self, draw_id: str) -> Draw | None:
        rows = await self.db.rows("SELECT * FROM draws WHERE id = ?", draw_id)
        return draw_from(rows[0]) if rows else None

    async def draws_of(self, scope: str, target: str, limit: int) -> list[Draw]:
        rows = await self.db.rows("SELECT * FROM draws WHERE scope = ? AND target = ?"
                                  " ORDER BY created_at DESC LIMIT ?", scope, target, limit)
        return [draw_from(r) for r in rows]

    async def entered(self, user: str, draw_ids: Sequence[str]) -> set[str]:
        if not draw_ids:
            return set()
        marks = ", ".join("?" * len(draw_ids))
        rows = await self.db.rows(f"SELECT draw FROM draw_entries WHERE user_id = ? AND draw IN ({marks})",
                                  user, *draw_ids)
        return {r["draw"] for r in rows}

    async def entrant_hashes(self, draw_id: str) -> list[str]:
        rows = await self.db.rows("SELECT user_id FROM draw_entries WHERE draw = ?", draw_id)
        return sorted(entrant_hash(r["user_id"]) for r in rows)

    async def room_stats(self, room: str) -> dict[str, Any]:
        """The dashboard's line: draws run in the room, their entrants, and the viewers who
        were still in the room when each closed."""
        rows = await self.db.rows(
            "SELECT COUNT(*) AS draws, COALESCE(SUM(entrants), 0) AS entrants,"
            " COALESCE(SUM(viewers_at_close), 0) AS stayed FROM draws"
            " WHERE scope = 'room' AND target = ? AND phase = 'done'", room)
        r = rows[0]
        return {"draws": int(r["draws"]), "entrants": int(r["entrants"]), "stayed": int(r["stayed"])}


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def draw_row(d: Draw) -> dict[str, Any]:
    return {"id": d.id, "shop": d.shop, "scope": d.scope, "target": d.target, "title": d.title,
            "prize": _json(d.prize.to_dict()), "winners": d.winners,
            "condition": _json(d.condition.to_dict()), "created_by": d.created_by,
            "created_at": d.created_at, "ends_at": d.ends_at, "seed": d.seed,
            "commitment": d.commitment, "phase": str(d.phase)}


def draw_from(r: Row) -> Draw:
    c = orjson.loads(r["condition"])
    d = Draw(id=r["id"], shop=r["shop"], scope=r["scope"], target=r["target"], title=r["title"],
             prize=prize_stored(orjson.loads(r["prize"])), winners=int(r["winners"]),
             condition=Condition(c.get("keyword"), c.get("watch_s"), c.get("group")),
             created_by=r["created_by"], created_at=int(r["created_at"]),
             ends_at=int(r["ends_at"]), seed=r["seed"], commitment=r["commitment"],
             phase=Phase(r["phase"]), entrants=int(r["entrants"]), closed_at=r["closed_at"],
             digest=r["digest"], beacon=_unjson(r["beacon"]),
             viewers_at_close=int(r["viewers_at_close"]))
    if r["result"] is not None:
        d.result = [Winner(w["user"], w["name"], w["hash"]) for w in orjson.loads(r["result"])]
    return d
