"""Read-only queries for the merchant's numbers and member layers.

Why SQL aggregates on the reader connection: the numbers are computed from the records Souk
keeps anyway (orders, questions, group messages, exits, votes, check-ins) plus the activity
log (room views, chat, likes, presence samples); nothing is counted twice in memory, and WAL
lets these reads run beside the writer. Excluded users (the shop's `metrics_excluded` list)
never count; staff are never recorded in the activity log and staff members of a group are
not counted as members.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, Final, Protocol

import orjson

from server.domain import metrics as m
from server.domain.layers import WINDOW_MS, MemberStats, Thresholds, describe
from server.store.sqlite import SqliteDatabase

STAFF: Final = "('moderator', 'streamer', 'admin')"
NOT_EXCLUDED: Final = "NOT IN (SELECT user FROM metrics_excluded WHERE shop = :shop)"
# revenue is what buyers pay: list price times units, less coupon discounts
REDEMPTION: Final = "LEFT JOIN coupon_redemptions r ON r.order_id = o.id"
NET: Final = "SUM(o.qty * o.price) - COALESCE(SUM(r.discount), 0)"


def _room_shop(c: sqlite3.Connection, room: str) -> str:
    r = c.execute("SELECT shop FROM rooms WHERE id = ?", (room,)).fetchone()
    return str(r["shop"]) if r else "default"


class MetricsStore(Protocol):
    """The merchant's numbers: over the embedded SQLite file (below) or over the cluster's
    PostgreSQL (server/store/metrics_pg.py); both answer the same shapes."""

    async def room_metrics(self, room: str, shop: str | None = None) -> dict[str, Any]: ...
    async def group_metrics(self, group: str, now_ms: int, weeks: int = 8) -> dict[str, Any] | None: ...
    async def shop_metrics(self, shop: str) -> dict[str, Any]: ...
    async def one_member(self, shop: str, user: str, now_ms: int, t: Thresholds) -> dict[str, Any]: ...
    async def member_stats(self, shop: str, now_ms: int, t: Thresholds,
                           excluded: set[str]) -> list[dict[str, Any]]: ...


class SqliteMetricsStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    # -- rooms -----------------------------------------------------------------------------
    async def room_metrics(self, room: str, shop: str | None = None) -> dict[str, Any]:
        """`shop` is for the cluster store; here the rooms table knows the room's shop."""
        return await self.db.read(lambda c: self._room(c, room))

    @staticmethod
    def _room(c: sqlite3.Connection, room: str) -> dict[str, Any]:
        p = {"room": room, "shop": _room_shop(c, room)}
        pres = c.execute("SELECT MAX(viewers) AS peak, AVG(viewers) AS avg, SUM(viewers * interval_ms) AS watch"
                         " FROM room_presence WHERE room = :room", p).fetchone()
        act = {r["kind"]: r for r in c.execute(
            f"SELECT kind, SUM(n) AS n, COUNT(DISTINCT user) AS users FROM room_activity"
            f" WHERE room = :room AND user {NOT_EXCLUDED} GROUP BY kind", p)}
        interacting = c.execute(
            f"SELECT COUNT(*) FROM (SELECT user FROM room_activity WHERE room = :room AND kind IN ('chat', 'like')"
            f" AND user {NOT_EXCLUDED} UNION SELECT user_id FROM questions WHERE room = :room AND user_id {NOT_EXCLUDED})",
            p).fetchone()[0]
        qs = c.execute(f"SELECT status, asked_at, answered_at FROM questions WHERE room = :room AND user_id {NOT_EXCLUDED}",
                       p).fetchall()
        orders = c.execute(
            f"SELECT COUNT(*) AS orders, COALESCE(SUM(o.qty), 0) AS units, COALESCE(SUM(o.qty * o.price), 0) AS gross,"
            f" COUNT(DISTINCT o.user) AS buyers FROM orders o"
            f" WHERE o.room = :room AND o.status = 'confirmed' AND o.user {NOT_EXCLUDED}", p).fetchone()
        # discounts apart: few orders carry a coupon, and the aggregate above reads only an index
        off = {r[0]: int(r[1]) for r in c.execute(
            f"SELECT o.sale, SUM(r.discount) FROM coupon_redemptions r CROSS JOIN orders o ON o.id = r.order_id"
            f" WHERE o.room = :room AND o.status = 'confirmed' AND o.user {NOT_EXCLUDED} GROUP BY o.sale", p)}
        per_sale = [{**dict(r), "revenue": int(r["revenue"]) - off.get(r["sale"], 0)} for r in c.execute(
            f"SELECT o.sale AS sale, COUNT(*) AS orders, SUM(o.qty) AS units, SUM(o.qty * o.price) AS revenue"
            f" FROM orders o WHERE o.room = :room AND o.status = 'confirmed' AND o.sale IS NOT NULL"
            f" AND o.user {NOT_EXCLUDED} GROUP BY o.sale", p)]
        per_team = [dict(r) for r in c.execute(
            f"SELECT o.offer AS teambuy, COUNT(*) AS orders, SUM(o.qty) AS units, SUM(o.qty * o.price) AS revenue,"
            f" COUNT(DISTINCT o.team) AS teams FROM orders o WHERE o.room = :room AND o.status = 'confirmed'"
            f" AND o.offer IS NOT NULL AND o.user {NOT_EXCLUDED} GROUP BY o.offer ORDER BY revenue DESC", p)]
        return m.room_numbers(room, pres, act, int(interacting), qs, orders, off, per_sale,
                              per_team)

    # -- groups ----------------------------------------------------------------------------
    async def group_metrics(self, group: str, now_ms: int, weeks: int = 8) -> dict[str, Any] | None:
        return await self.db.read(lambda c: self._group(c, group, now_ms, weeks))

    @staticmethod
    def _group(c: sqlite3.Connection, group: str, now_ms: int, weeks: int) -> dict[str, Any] | None:
        g = c.execute("SELECT shop FROM groups WHERE id = ?", (group,)).fetchone()
        if g is None:
            return None
        p = {"group": group, "shop": g["shop"], "since": now_ms - 7 * 86_400_000}
        first = m.week_of(now_ms) - weeks + 1
        p["from"] = first * m.WEEK_MS
        members = [r["user_id"] for r in c.execute(
            f"SELECT user_id FROM group_members WHERE group_id = :group AND role NOT IN {STAFF}"
            f" AND user_id {NOT_EXCLUDED}", p)]
        joins = [int(r[0]) for r in c.execute(
            f"SELECT joined_at FROM group_members WHERE group_id = :group AND role NOT IN {STAFF} AND user_id {NOT_EXCLUDED}"
            f" UNION ALL SELECT joined_at FROM group_exits WHERE group_id = :group AND user_id {NOT_EXCLUDED}", p)]
        exits = [int(r[0]) for r in c.execute(
            f"SELECT left_at FROM group_exits WHERE group_id = :group AND user_id {NOT_EXCLUDED}", p)]
        before = sum(1 for t in joins if t < p["from"]) - sum(1 for t in exits if t < p["from"])
        msg_weeks: dict[int, int] = {}
        msg_total = replies = 0
        for r in c.execute(  # one pass over the covering index: weeks, totals and replies
                f"SELECT ts / {m.WEEK_MS}, COUNT(*), COUNT(reply_to) FROM group_messages WHERE group_id = :group"
                f" AND user_id {NOT_EXCLUDED} GROUP BY 1", p):
            msg_total += int(r[1])
            replies += int(r[2])
            if int(r[0]) >= first:
                msg_weeks[int(r[0])] = int(r[1])
        actions: dict[int, list[str]] = {}
        for r in c.execute("SELECT kind, detail, ts FROM merchant_actions WHERE scope = 'group' AND target = :group"
                           " AND ts >= :from UNION ALL SELECT 'notice:' || kind, substr(text, 1, 60), ts"
                           " FROM group_notices WHERE group_id = :group AND ts >= :from ORDER BY 3", p):
            actions.setdefault(m.week_of(int(r[2])), []).append(f"{r[0]} {r[1]}".strip())
        votes = c.execute(f"SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                          f" WHERE q.scope = 'group' AND q.target = :group AND v.user {NOT_EXCLUDED}", p).fetchone()[0]
        active = c.execute(
            f"SELECT COUNT(*) FROM (SELECT user_id AS u FROM group_messages WHERE group_id = :group AND ts >= :since"
            f" UNION SELECT v.user FROM poll_votes v JOIN polls q ON q.id = v.poll WHERE q.scope = 'group'"
            f" AND q.target = :group AND v.ts >= :since UNION SELECT user FROM checkins WHERE group_id = :group"
            f" AND ts >= :since) WHERE u {NOT_EXCLUDED}"
            f" AND u IN (SELECT user_id FROM group_members WHERE group_id = :group)", p).fetchone()[0]
        buys = c.execute(
            f"SELECT o.user AS user, COUNT(*) AS n, {NET} AS spent FROM orders o {REDEMPTION}"
            " JOIN group_members gm ON gm.user_id = o.user AND gm.group_id = :group"
            " JOIN products pr ON pr.id = o.product AND pr.shop = :shop"
            f" WHERE o.status = 'confirmed' AND gm.role NOT IN {STAFF} AND o.user {NOT_EXCLUDED} GROUP BY o.user",
            p).fetchall()
        return m.group_numbers(group, len(members), int(active), msg_total, replies, int(votes),
                               buys, joins, exits, p["from"], before, msg_weeks, actions, first,
                               now_ms)

    # -- the shop --------------------------------------------------------------------------
    async def shop_metrics(self, shop: str) -> dict[str, Any]:
        def run(c: sqlite3.Connection) -> dict[str, Any]:
            p = {"shop": shop}
            off = {r[0]: int(r[1]) for r in c.execute(
                f"SELECT o.room, SUM(r.discount) FROM coupon_redemptions r CROSS JOIN orders o ON o.id = r.order_id"
                f" WHERE o.status = 'confirmed' AND o.user {NOT_EXCLUDED} GROUP BY o.room", p)}
            rooms = [{**dict(r), "revenue": int(r["revenue"]) - off.get(r["room"], 0)} for r in c.execute(
                f"SELECT o.room AS room, COUNT(*) AS orders, SUM(o.qty) AS units, SUM(o.qty * o.price) AS revenue,"
                f" COUNT(DISTINCT o.user) AS buyers FROM orders o"
                f" WHERE o.status = 'confirmed' AND o.product IN (SELECT id FROM products WHERE shop = :shop)"
                f" AND o.user {NOT_EXCLUDED} GROUP BY o.room", p)]
            rooms.sort(key=lambda r: -r["revenue"])
            rooms = rooms[:100]
            groups = [dict(r) for r in c.execute(
                f"SELECT g.id AS id, g.tier AS tier, (SELECT COUNT(*) FROM group_members gm WHERE gm.group_id = g.id"
                f" AND gm.role NOT IN {STAFF}) AS members FROM groups g WHERE g.shop = :shop ORDER BY g.id LIMIT 200", p)]
            coupons = c.execute(
                "SELECT COUNT(*) AS issued, COUNT(r.coupon) AS redeemed, COALESCE(SUM(r.discount), 0) AS discounts"
                " FROM coupons k LEFT JOIN coupon_redemptions r ON r.coupon = k.id WHERE k.shop = :shop", p).fetchone()
            invites = c.execute("SELECT COUNT(*) FROM invites WHERE shop = :shop", p).fetchone()[0]
            return {
                "shop": shop, "rooms": rooms, "groups": groups,
                "orders": sum(int(r["orders"]) for r in rooms), "revenue": sum(int(r["revenue"]) for r in rooms),
                "coupons": dict(coupons), "invited_members": int(invites),
            }

        return await self.db.read(run)

    # -- member layers ---------------------------------------------------------------------
    async def one_member(self, shop: str, user: str, now_ms: int, t: Thresholds) -> dict[str, Any]:
        """One member's layer (for a sale targeted at a layer): indexed per-user lookups."""

        def run(c: sqlite3.Connection) -> dict[str, Any]:
            p = {"shop": shop, "user": user, "since": now_ms - WINDOW_MS}
            o = c.execute("SELECT COUNT(*), COALESCE(SUM(o.qty * o.price), 0) FROM orders o"
                          " JOIN products pr ON pr.id = o.product WHERE o.user = :user AND o.created_at >= :since"
                          " AND pr.shop = :shop AND o.status = 'confirmed'", p).fetchone()

            def one(sql: str) -> int:
                return int(c.execute(sql, p).fetchone()[0])

            s = MemberStats(
                user, int(o[0]), int(o[1]),
                one("SELECT COUNT(*) FROM group_messages m JOIN groups g ON g.id = m.group_id"
                    " WHERE m.user_id = :user AND m.ts >= :since AND g.shop = :shop"),
                one("SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                    " WHERE v.user = :user AND v.ts >= :since AND q.shop = :shop"),
                one("SELECT COUNT(*) FROM checkins WHERE user = :user AND ts >= :since AND shop = :shop"),
                one("SELECT COUNT(*) FROM questions WHERE answered_by = :user AND answered_at >= :since"),
            )  # fmt: skip
            return describe(s, t)

        return await self.db.read(run)

    async def member_stats(self, shop: str, now_ms: int, t: Thresholds, excluded: set[str]) -> list[dict[str, Any]]:
        def run(c: sqlite3.Connection) -> list[dict[str, Any]]:
            p = {"shop": shop, "since": now_ms - WINDOW_MS}
            users: dict[str, dict[str, int]] = {}

            def add(sql: str, key: str) -> None:
                for r in c.execute(sql, p):
                    users.setdefault(r[0], {})[key] = int(r[1])
                    if len(tuple(r)) > 2:
                        users[r[0]]["spent"] = int(r[2] or 0)

            for r in c.execute(f"SELECT DISTINCT m.user_id FROM group_members m JOIN groups g ON g.id = m.group_id"
                               f" WHERE g.shop = :shop AND m.role NOT IN {STAFF}", p):
                users.setdefault(r[0], {})
            add("SELECT o.user, COUNT(*), SUM(o.qty * o.price) FROM orders o JOIN products pr ON pr.id = o.product"
                " WHERE pr.shop = :shop AND o.status = 'confirmed' AND o.created_at >= :since GROUP BY o.user", "orders")
            add("SELECT m.user_id, COUNT(*) FROM group_messages m JOIN groups g ON g.id = m.group_id"
                " WHERE g.shop = :shop AND m.ts >= :since GROUP BY m.user_id", "messages")
            add("SELECT v.user, COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                " WHERE q.shop = :shop AND v.ts >= :since GROUP BY v.user", "votes")
            add("SELECT user, COUNT(*) FROM checkins WHERE shop = :shop AND ts >= :since GROUP BY user", "checkins")
            add("SELECT answered_by, COUNT(*) FROM questions WHERE answered_by IS NOT NULL AND answered_at >= :since"
                " AND COALESCE((SELECT shop FROM rooms WHERE id = questions.room), 'default') = :shop"
                " GROUP BY answered_by", "answers")
            tags = {r["user_id"]: r for r in c.execute("SELECT * FROM member_tags WHERE shop = :shop", p)}
            staffish = {r[0] for r in c.execute(f"SELECT DISTINCT user_id FROM group_members WHERE role IN {STAFF}")}
            out: list[dict[str, Any]] = []
            for user, v in sorted(users.items()):
                if user in excluded or user in staffish:
                    continue
                s = MemberStats(user, v.get("orders", 0), v.get("spent", 0), v.get("messages", 0),
                                v.get("votes", 0), v.get("checkins", 0), v.get("answers", 0))
                row = describe(s, t)
                tr = tags.get(user)
                row["tags"] = _tags(tr)
                out.append(row)
            return out

        return await self.db.read(run)


def _tags(r: Mapping[str, Any] | sqlite3.Row | None) -> list[str]:
    """Tags as flat strings: `bought:<product>`, `big_customer`, `source:<s>`, `invited_by:<u>`."""
    if r is None:
        return []
    out = [f"bought:{p}" for p in orjson.loads(r["bought"])] if r["bought"] else []
    if r["big_customer"]:
        out.append("big_customer")
    if r["source"]:
        out.append(f"source:{r['source']}")
    if r["invited_by"]:
        out.append(f"invited_by:{r['invited_by']}")
    return out
