"""The merchant's numbers over the cluster's PostgreSQL (`--postgres`).

Why: in a cluster the records behind the numbers are spread over one database that every
node writes: orders and coupon redemptions (the ledger, server/store/postgres.py), groups,
members, messages and questions (server/store/community_pg.py), and the operations tables
with the activity log (server/store/operations_pg.py). So any node answers for the whole
cluster: a chat on node A and an order on node B are in the numbers fetched from node C.

The same queries and shapes as the SQLite `SqliteMetricsStore` (server/store/metrics_store.py),
in PostgreSQL's dialect, with two cluster differences: presence samples are written by every
node, so a sample is the sum over nodes of one interval (nodes sample at their own phase: the
peak and average are approximate), and a room's shop comes from the caller or `room_shops`
(rooms live in each node's SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import asyncpg

from server.domain import metrics as m
from server.domain.layers import WINDOW_MS, MemberStats, Thresholds, describe
from server.store.metrics_store import STAFF, _tags
from server.store.operations_pg import PgOperationsStore

NOT_EXCLUDED: Final = "NOT IN (SELECT user_id FROM metrics_excluded WHERE shop = :shop)"
REDEMPTION: Final = "LEFT JOIN coupon_redemptions r ON r.order_id = o.id"
NET: Final = "SUM(o.qty * o.price) - COALESCE(SUM(r.discount), 0)"
_NAME: Final = re.compile(r"(?<![:\w]):([a-z_]+)")


def _q(sql: str, p: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Named `:params` (as in the SQLite queries) to asyncpg's `$n`."""
    order: list[str] = []

    def sub(mt: re.Match[str]) -> str:
        name = mt.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return _NAME.sub(sub, sql), [p[n] for n in order]


class PgMetricsStore:
    """Read-only queries on the cluster's PostgreSQL: on a pool given, on the pool of a
    `PgOperationsStore` (the app shares it: fewer connections per node), or on a pool of its
    own opened lazily from a DSN."""

    def __init__(self, pool: asyncpg.Pool | str | PgOperationsStore) -> None:
        self._dsn = pool if isinstance(pool, str) else None
        self._store = pool if isinstance(pool, PgOperationsStore) else None
        self.pool: asyncpg.Pool | None = pool if isinstance(pool, asyncpg.Pool) else None

    async def _conn_pool(self) -> asyncpg.Pool:
        if self._store is not None:
            assert self._store.pool is not None, "start the operations store first"
            return self._store.pool
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
        return self.pool

    async def close(self) -> None:
        if self._dsn is not None and self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _fetch(self, c: asyncpg.Connection, sql: str, p: Mapping[str, Any]) -> list[Any]:
        q, args = _q(sql, p)
        return list(await c.fetch(q, *args))

    async def _row(self, c: asyncpg.Connection, sql: str, p: Mapping[str, Any]) -> Any:
        q, args = _q(sql, p)
        return await c.fetchrow(q, *args)

    async def _val(self, c: asyncpg.Connection, sql: str, p: Mapping[str, Any]) -> Any:
        q, args = _q(sql, p)
        return await c.fetchval(q, *args)

    # -- rooms -----------------------------------------------------------------------------
    async def room_metrics(self, room: str, shop: str | None = None) -> dict[str, Any]:
        pool = await self._conn_pool()
        async with pool.acquire() as c:
            if shop is None:
                shop = await c.fetchval("SELECT shop FROM room_shops WHERE room = $1", room) or "default"
            p = {"room": room, "shop": shop}
            pres = await self._row(c, (
                "SELECT MAX(v) AS peak, AVG(v) AS avg, SUM(w) AS watch FROM (SELECT ts / interval_ms,"
                " SUM(viewers) AS v, SUM(viewers * interval_ms) AS w FROM room_presence"
                " WHERE room = :room GROUP BY 1) AS samples"), p)
            # one pass over the room's activity (hash aggregates, not COUNT(DISTINCT) sorts):
            # per kind the total and the distinct users, and kind '*' the interacting users
            act = {r["kind"]: r for r in await self._fetch(c, (
                "WITH per AS (SELECT kind, user_id, SUM(n) AS n FROM room_activity WHERE room = :room"
                f" AND user_id {NOT_EXCLUDED} GROUP BY kind, user_id),"
                " who AS (SELECT COUNT(*) AS c FROM (SELECT user_id FROM per WHERE kind IN ('chat', 'like')"
                f" UNION SELECT user_id FROM questions WHERE room = :room AND user_id {NOT_EXCLUDED}) AS x)"
                " SELECT kind, SUM(n) AS n, COUNT(*) AS users FROM per GROUP BY kind"
                " UNION ALL SELECT '*', c, c FROM who"), p)}
            interacting = int(act["*"]["users"])
            qs = await self._fetch(c, (
                f"SELECT status, asked_at, answered_at FROM questions WHERE room = :room"
                f" AND user_id {NOT_EXCLUDED}"), p)
            orders = await self._row(c, (
                'SELECT COUNT(*) AS orders, COALESCE(SUM(o.qty), 0) AS units,'
                ' COALESCE(SUM(o.qty * o.price), 0) AS gross, COUNT(DISTINCT o."user") AS buyers'
                f' FROM orders o WHERE o.room = :room AND o.status = \'confirmed\''
                f' AND o."user" {NOT_EXCLUDED}'), p)
            off = {r[0]: int(r[1]) for r in await self._fetch(c, (
                "SELECT o.sale, SUM(r.discount) FROM coupon_redemptions r JOIN orders o ON o.id = r.order_id"
                f" WHERE o.room = :room AND o.status = 'confirmed' AND o.\"user\" {NOT_EXCLUDED}"
                " GROUP BY o.sale"), p)}
            per_sale = [{"sale": r["sale"], "orders": int(r["orders"]), "units": int(r["units"]),
                         "revenue": int(r["revenue"]) - off.get(r["sale"], 0)}
                        for r in await self._fetch(c, (
                            "SELECT o.sale AS sale, COUNT(*) AS orders, SUM(o.qty) AS units,"
                            " SUM(o.qty * o.price) AS revenue FROM orders o WHERE o.room = :room"
                            " AND o.status = 'confirmed' AND o.sale IS NOT NULL"
                            f" AND o.\"user\" {NOT_EXCLUDED} GROUP BY o.sale"), p)]
            per_team = [{"teambuy": r["teambuy"], "orders": int(r["orders"]), "units": int(r["units"]),
                         "revenue": int(r["revenue"]), "teams": int(r["teams"])}
                        for r in await self._fetch(c, (
                            "SELECT o.offer AS teambuy, COUNT(*) AS orders, SUM(o.qty) AS units,"
                            " SUM(o.qty * o.price) AS revenue, COUNT(DISTINCT o.team) AS teams"
                            " FROM orders o WHERE o.room = :room AND o.status = 'confirmed'"
                            f" AND o.offer IS NOT NULL AND o.\"user\" {NOT_EXCLUDED}"
                            " GROUP BY o.offer ORDER BY revenue DESC"), p)]
        return m.room_numbers(room, pres, act, interacting, qs, orders, off, per_sale, per_team)

    # -- groups ----------------------------------------------------------------------------
    async def group_metrics(self, group: str, now_ms: int, weeks: int = 8) -> dict[str, Any] | None:
        pool = await self._conn_pool()
        async with pool.acquire() as c:
            shop = await c.fetchval("SELECT shop FROM groups WHERE id = $1", group)
            if shop is None:
                return None
            first = m.week_of(now_ms) - weeks + 1
            p = {"group": group, "shop": shop, "since": now_ms - 7 * 86_400_000, "from": first * m.WEEK_MS}
            members = [r["user_id"] for r in await self._fetch(c, (
                f"SELECT user_id FROM group_members WHERE group_id = :group AND role NOT IN {STAFF}"
                f" AND user_id {NOT_EXCLUDED}"), p)]
            joins = [int(r[0]) for r in await self._fetch(c, (
                f"SELECT joined_at FROM group_members WHERE group_id = :group AND role NOT IN {STAFF}"
                f" AND user_id {NOT_EXCLUDED} UNION ALL SELECT joined_at FROM group_exits"
                f" WHERE group_id = :group AND user_id {NOT_EXCLUDED}"), p)]
            exits = [int(r[0]) for r in await self._fetch(c, (
                f"SELECT left_at FROM group_exits WHERE group_id = :group AND user_id {NOT_EXCLUDED}"), p)]
            before = sum(1 for t in joins if t < p["from"]) - sum(1 for t in exits if t < p["from"])
            msg_weeks: dict[int, int] = {}
            msg_total = replies = 0
            for r in await self._fetch(c, (
                    f"SELECT ts / {m.WEEK_MS}, COUNT(*), COUNT(reply_to) FROM group_messages"
                    f" WHERE group_id = :group AND user_id {NOT_EXCLUDED} GROUP BY 1"), p):
                msg_total += int(r[1])
                replies += int(r[2])
                if int(r[0]) >= first:
                    msg_weeks[int(r[0])] = int(r[1])
            actions: dict[int, list[str]] = {}
            for r in await self._fetch(c, (
                    "SELECT kind, detail, ts FROM merchant_actions WHERE scope = 'group' AND target = :group"
                    " AND ts >= :from UNION ALL SELECT 'notice:' || kind, substr(text, 1, 60), ts"
                    " FROM group_notices WHERE group_id = :group AND ts >= :from ORDER BY 3"), p):
                actions.setdefault(m.week_of(int(r[2])), []).append(f"{r[0]} {r[1]}".strip())
            votes = int(await self._val(c, (
                "SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll WHERE q.scope = 'group'"
                f" AND q.target = :group AND v.user_id {NOT_EXCLUDED}"), p))
            active = int(await self._val(c, (
                "SELECT COUNT(*) FROM (SELECT user_id AS u FROM group_messages WHERE group_id = :group"
                " AND ts >= :since UNION SELECT v.user_id FROM poll_votes v JOIN polls q ON q.id = v.poll"
                " WHERE q.scope = 'group' AND q.target = :group AND v.ts >= :since UNION SELECT user_id"
                " FROM checkins WHERE group_id = :group AND ts >= :since) AS who"
                f" WHERE u {NOT_EXCLUDED} AND u IN (SELECT user_id FROM group_members WHERE group_id = :group)"), p))
            buys = await self._fetch(c, (
                f'SELECT o."user" AS user_id, COUNT(*) AS n, {NET} AS spent FROM orders o {REDEMPTION}'
                ' JOIN group_members gm ON gm.user_id = o."user" AND gm.group_id = :group'
                " JOIN products pr ON pr.id = o.product AND pr.shop = :shop"
                f" WHERE o.status = 'confirmed' AND gm.role NOT IN {STAFF} AND o.\"user\" {NOT_EXCLUDED}"
                ' GROUP BY o."user"'), p)
        return m.group_numbers(group, len(members), active, msg_total, replies, votes, buys,
                               joins, exits, p["from"], before, msg_weeks, actions, first, now_ms)

    # -- the shop --------------------------------------------------------------------------
    async def shop_metrics(self, shop: str) -> dict[str, Any]:
        pool = await self._conn_pool()
        p = {"shop": shop}
        async with pool.acquire() as c:
            off = {r[0]: int(r[1]) for r in await self._fetch(c, (
                "SELECT o.room, SUM(r.discount) FROM coupon_redemptions r JOIN orders o ON o.id = r.order_id"
                f" WHERE o.status = 'confirmed' AND o.\"user\" {NOT_EXCLUDED} GROUP BY o.room"), p)}
            rooms = [{"room": r["room"], "orders": int(r["orders"]), "units": int(r["units"]),
                      "revenue": int(r["revenue"]) - off.get(r["room"], 0), "buyers": int(r["buyers"])}
                     for r in await self._fetch(c, (
                         "SELECT o.room AS room, COUNT(*) AS orders, SUM(o.qty) AS units,"
                         ' SUM(o.qty * o.price) AS revenue, COUNT(DISTINCT o."user") AS buyers FROM orders o'
                         " WHERE o.status = 'confirmed' AND o.product IN (SELECT id FROM products WHERE shop = :shop)"
                         f' AND o."user" {NOT_EXCLUDED} GROUP BY o.room'), p)]
            rooms.sort(key=lambda r: -r["revenue"])
            rooms = rooms[:100]
            groups = [{"id": r["id"], "tier": r["tier"], "members": int(r["members"])}
                      for r in await self._fetch(c, (
                          "SELECT g.id AS id, g.tier AS tier, (SELECT COUNT(*) FROM group_members gm"
                          f" WHERE gm.group_id = g.id AND gm.role NOT IN {STAFF}) AS members FROM groups g"
                          " WHERE g.shop = :shop ORDER BY g.id LIMIT 200"), p)]
            coupons = await self._row(c, (
                "SELECT COUNT(*) AS issued, COUNT(r.coupon) AS redeemed, COALESCE(SUM(r.discount), 0) AS discounts"
                " FROM coupons k LEFT JOIN coupon_redemptions r ON r.coupon = k.id WHERE k.shop = :shop"), p)
            invites = await c.fetchval("SELECT COUNT(*) FROM invites WHERE shop = $1", shop)
        return {
            "shop": shop, "rooms": rooms, "groups": groups,
            "orders": sum(r["orders"] for r in rooms), "revenue": sum(r["revenue"] for r in rooms),
            "coupons": {k: int(coupons[k]) for k in ("issued", "redeemed", "discounts")},
            "invited_members": int(invites),
        }

    # -- member layers ---------------------------------------------------------------------
    async def one_member(self, shop: str, user: str, now_ms: int, t: Thresholds) -> dict[str, Any]:
        """One member's layer (for a sale targeted at a layer): indexed per-user lookups."""
        pool = await self._conn_pool()
        p = {"shop": shop, "user": user, "since": now_ms - WINDOW_MS}
        async with pool.acquire() as c:
            o = await self._row(c, (
                "SELECT COUNT(*), COALESCE(SUM(o.qty * o.price), 0) FROM orders o"
                ' JOIN products pr ON pr.id = o.product WHERE o."user" = :user AND o.created_at >= :since'
                " AND pr.shop = :shop AND o.status = 'confirmed'"), p)
            counts = [int(await self._val(c, sql, p)) for sql in (
                "SELECT COUNT(*) FROM group_messages m JOIN groups g ON g.id = m.group_id"
                " WHERE m.user_id = :user AND m.ts >= :since AND g.shop = :shop",
                "SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                " WHERE v.user_id = :user AND v.ts >= :since AND q.shop = :shop",
                "SELECT COUNT(*) FROM checkins WHERE user_id = :user AND ts >= :since AND shop = :shop",
                "SELECT COUNT(*) FROM questions WHERE answered_by = :user AND answered_at >= :since",
            )]
        return describe(MemberStats(user, int(o[0]), int(o[1]), *counts), t)

    async def member_stats(self, shop: str, now_ms: int, t: Thresholds, excluded: set[str]) -> list[dict[str, Any]]:
        pool = await self._conn_pool()
        p = {"shop": shop, "since": now_ms - WINDOW_MS}
        users: dict[str, dict[str, int]] = {}
        async with pool.acquire() as c:

            async def add(sql: str, key: str) -> None:
                for r in await self._fetch(c, sql, p):
                    users.setdefault(r[0], {})[key] = int(r[1])
                    if len(r) > 2:
                        users[r[0]]["spent"] = int(r[2] or 0)

            for r in await self._fetch(c, (
                    "SELECT DISTINCT m.user_id FROM group_members m JOIN groups g ON g.id = m.group_id"
                    f" WHERE g.shop = :shop AND m.role NOT IN {STAFF}"), p):
                users.setdefault(r[0], {})
            await add('SELECT o."user", COUNT(*), SUM(o.qty * o.price) FROM orders o JOIN products pr'
                      " ON pr.id = o.product WHERE pr.shop = :shop AND o.status = 'confirmed'"
                      ' AND o.created_at >= :since GROUP BY o."user"', "orders")
            await add("SELECT m.user_id, COUNT(*) FROM group_messages m JOIN groups g ON g.id = m.group_id"
                      " WHERE g.shop = :shop AND m.ts >= :since GROUP BY m.user_id", "messages")
            await add("SELECT v.user_id, COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                      " WHERE q.shop = :shop AND v.ts >= :since GROUP BY v.user_id", "votes")
            await add("SELECT user_id, COUNT(*) FROM checkins WHERE shop = :shop AND ts >= :since"
                      " GROUP BY user_id", "checkins")
            await add("SELECT answered_by, COUNT(*) FROM questions WHERE answered_by IS NOT NULL"
                      " AND answered_at >= :since AND COALESCE((SELECT shop FROM room_shops"
                      " WHERE room = questions.room), 'default') = :shop GROUP BY answered_by", "answers")
            tags = {r["user_id"]: r for r in await self._fetch(c, "SELECT * FROM member_tags WHERE shop = :shop", p)}
            staffish = {r[0] for r in await c.fetch(
                f"SELECT DISTINCT user_id FROM group_members WHERE role IN {STAFF}")}
        out: list[dict[str, Any]] = []
        for user, v in sorted(users.items()):
            if user in excluded or user in staffish:
                continue
            s = MemberStats(user, v.get("orders", 0), v.get("spent", 0), v.get("messages", 0),
                            v.get("votes", 0), v.get("checkins", 0), v.get("answers", 0))
            row = describe(s, t)
            row["tags"] = _tags(tags.get(user))
            out.append(row)
        return out
