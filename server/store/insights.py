"""Insights, the merchant's numbers: their queries, the member layers, and the activity log
they are computed from (views, chat, likes, presence samples, the merchant's actions).

Why SQL aggregates: the numbers come from the records Souk keeps anyway (orders, questions,
group messages, exits, votes, check-ins) plus the activity log (room views, chat, likes,
presence samples): nothing is counted twice in memory. In a cluster every node writes the
same database, so any node answers for all of them. Excluded users (the shop's
`metrics_excluded`) never count; staff are never in the activity log and staff members of a
group are not counted as members. In a cluster a presence sample is the sum over the nodes
that sampled the same interval (they sample at their own phase: the peak and average are
approximate).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import orjson

from server.domain import insights as m
from server.domain.layers import WINDOW_MS, MemberStats, Thresholds, describe
from server.store.db import Body, Db, Insert, Many, Q, Row, steps

STAFF: Final = "('moderator', 'streamer', 'admin')"
NOT_EXCLUDED: Final = "NOT IN (SELECT user_id FROM metrics_excluded WHERE shop = :shop)"
# revenue is what buyers pay: list price times units, less coupon discounts
REDEMPTION: Final = "LEFT JOIN coupon_redemptions r ON r.order_id = o.id"
NET: Final = "SUM(o.qty * o.price) - COALESCE(SUM(r.discount), 0)"
# a lucky draw's prize is an order at price 0: it is neither a sale nor a buyer, so every
# number here counts orders with a price (`price > 0` reads the same covering indexes)
CONFIRMED: Final = f"o.status = 'confirmed' AND o.price > 0 AND o.\"user\" {NOT_EXCLUDED}"


class InsightsStore(Protocol):
    """What `server.insights.Insights` needs of a store: the numbers' reads, the activity
    log's writes, the shops' excluded users."""

    async def for_room(self, room: str, shop: str | None = None) -> dict[str, Any]: ...
    async def for_group(self, group: str, now_ms: int,
                        weeks: int = 8) -> dict[str, Any] | None: ...
    async def for_shop(self, shop: str) -> dict[str, Any]: ...
    async def one_member(self, shop: str, user: str, now_ms: int,
                         t: Thresholds) -> dict[str, Any]: ...
    async def member_stats(self, shop: str, now_ms: int, t: Thresholds,
                           excluded: set[str]) -> list[dict[str, Any]]: ...
    async def excluded(self) -> dict[str, set[str]]: ...
    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> set[str]: ...
    async def record(self, activity: list[tuple[str, str, str, int, int]],
                     presence: list[tuple[str, int, int, int]],
                     actions: list[tuple[str, str, str, str, str, int]]) -> None: ...
    async def forget_rooms(self, rooms: list[str]) -> None:
        """Delete the activity and presence rows of rooms nobody created (freed)."""


class SqlInsightsStore:
    """`InsightsStore` over a `Db` (SQLite reads beside the writer: WAL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    # -- rooms -------------------------------------------------------------------------------
    async def for_room(self, room: str, shop: str | None = None) -> dict[str, Any]:
        """`shop`: the room's as the caller knows it (else its row in `rooms`)."""
        # a presence sample: alone, each the process's count; shared, the nodes' samples of
        # one interval added up
        sample = "ts / interval_ms" if self.db.shared else "rowid"

        def body() -> Body[dict[str, Any]]:
            row = [] if shop else (yield Q("SELECT shop FROM rooms WHERE id = ?", room))
            p = {"room": room, "shop": shop or (row[0]["shop"] if row else "default")}
            pres = (yield Q(
                f"SELECT MAX(v) AS peak, AVG(v) AS avg, SUM(w) AS watch FROM (SELECT {sample},"
                " SUM(viewers) AS v, SUM(viewers * interval_ms) AS w FROM room_presence"
                " WHERE room = :room GROUP BY 1) AS samples", p))[0]
            # one pass over the room's activity: per kind the total and the distinct users,
            # and kind '*' the users who chatted, liked or asked
            act = {r["kind"]: r for r in (yield Q(
                "WITH per AS (SELECT kind, user_id, SUM(n) AS n FROM room_activity WHERE room = :room"
                f" AND user_id {NOT_EXCLUDED} GROUP BY kind, user_id),"
                " who AS (SELECT COUNT(*) AS c FROM (SELECT user_id FROM per WHERE kind IN ('chat', 'like')"
                f" UNION SELECT user_id FROM questions WHERE room = :room AND user_id {NOT_EXCLUDED}) AS x)"
                " SELECT kind, SUM(n) AS n, COUNT(*) AS users FROM per GROUP BY kind"
                " UNION ALL SELECT '*', c, c FROM who", p))}
            qs = yield Q("SELECT status, asked_at, answered_at FROM questions WHERE room = :room"
                         f" AND user_id {NOT_EXCLUDED}", p)
            orders = (yield Q(
                "SELECT COUNT(*) AS orders, COALESCE(SUM(o.qty), 0) AS units,"
                ' COALESCE(SUM(o.qty * o.price), 0) AS gross, COUNT(DISTINCT o."user") AS buyers'
                f" FROM orders o WHERE o.room = :room AND {CONFIRMED}", p))[0]
            # discounts apart: few orders carry a coupon, and the aggregate above reads an index
            off = {r[0]: int(r[1]) for r in (yield Q(
                "SELECT o.sale, SUM(r.discount) FROM coupon_redemptions r JOIN orders o"
                f" ON o.id = r.order_id WHERE o.room = :room AND {CONFIRMED} GROUP BY o.sale", p))}
            per_sale = [{"sale": r["sale"], "orders": int(r["orders"]), "units": int(r["units"]),
                         "revenue": int(r["revenue"]) - off.get(r["sale"], 0)} for r in (yield Q(
                             "SELECT o.sale AS sale, COUNT(*) AS orders, SUM(o.qty) AS units,"
                             " SUM(o.qty * o.price) AS revenue FROM orders o WHERE o.room = :room"
                             f" AND {CONFIRMED} AND o.sale IS NOT NULL GROUP BY o.sale", p))]
            per_team = [{"teambuy": r["teambuy"], "orders": int(r["orders"]),
                         "units": int(r["units"]), "revenue": int(r["revenue"]),
                         "teams": int(r["teams"])} for r in (yield Q(
                             "SELECT o.offer AS teambuy, COUNT(*) AS orders, SUM(o.qty) AS units,"
                             " SUM(o.qty * o.price) AS revenue, COUNT(DISTINCT o.team) AS teams"
                             f" FROM orders o WHERE o.room = :room AND {CONFIRMED}"
                             " AND o.offer IS NOT NULL GROUP BY o.offer ORDER BY revenue DESC", p))]
            return m.room_numbers(room, pres, act, int(act["*"]["users"]), qs, orders, off,
                                  per_sale, per_team)

        return await self.db.read(body)

    # -- groups ------------------------------------------------------------------------------
    async def for_group(self, group: str, now_ms: int, weeks: int = 8) -> dict[str, Any] | None:
        def body() -> Body[dict[str, Any] | None]:
            g = yield Q("SELECT shop FROM groups WHERE id = ?", group)
            if not g:
                return None
            first = m.week_of(now_ms) - weeks + 1
            p = {"group": group, "shop": g[0]["shop"], "since": now_ms - 7 * 86_400_000,
                 "from": first * m.WEEK_MS}
            members = yield Q("SELECT user_id FROM group_members WHERE group_id = :group"
                              f" AND role NOT IN {STAFF} AND user_id {NOT_EXCLUDED}", p)
            joins = [int(r[0]) for r in (yield Q(
                f"SELECT joined_at FROM group_members WHERE group_id = :group AND role NOT IN {STAFF}"
                f" AND user_id {NOT_EXCLUDED} UNION ALL SELECT joined_at FROM group_exits"
                f" WHERE group_id = :group AND user_id {NOT_EXCLUDED}", p))]
            exits = [int(r[0]) for r in (yield Q(
                f"SELECT left_at FROM group_exits WHERE group_id = :group AND user_id {NOT_EXCLUDED}",
                p))]
            before = sum(1 for t in joins if t < p["from"]) - sum(1 for t in exits if t < p["from"])
            msg_weeks: dict[int, int] = {}
            msg_total = replies = 0
            for r in (yield Q(  # one pass over the covering index: weeks, totals and replies
                    f"SELECT ts / {m.WEEK_MS}, COUNT(*), COUNT(reply_to) FROM group_messages"
                    f" WHERE group_id = :group AND user_id {NOT_EXCLUDED} GROUP BY 1", p)):
                msg_total += int(r[1])
                replies += int(r[2])
                if int(r[0]) >= first:
                    msg_weeks[int(r[0])] = int(r[1])
            # what the merchant did, as {kind, detail} (never a raw id or an English sentence:
            # a notice is named by its kind and, where it has one, the product's title)
            found: list[tuple[int, dict[str, str]]] = [
                (int(r[2]), {"kind": str(r[0]), "detail": str(r[1])}) for r in (yield Q(
                    "SELECT kind, detail, ts FROM merchant_actions WHERE scope = 'group'"
                    " AND target = :group AND ts >= :from", p))]
            for r in (yield Q("SELECT kind, text, fields, ts FROM group_notices"
                              " WHERE group_id = :group AND ts >= :from", p)):
                heard = orjson.loads(r[2]) if r[2] else {}
                title = heard.get("title") if isinstance(heard, dict) else None
                found.append((int(r[3]), {"kind": f"notice.{r[0]}",
                                          "detail": str(title or r[1])[:60]}))
            actions: dict[int, list[dict[str, str]]] = {}
            for ts, action in sorted(found, key=lambda x: x[0]):
                actions.setdefault(m.week_of(ts), []).append(action)
            votes = (yield Q("SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                             " WHERE q.scope = 'group' AND q.target = :group"
                             f" AND v.user_id {NOT_EXCLUDED}", p))[0][0]
            active = (yield Q(
                "SELECT COUNT(*) FROM (SELECT user_id AS u FROM group_messages WHERE group_id = :group"
                " AND ts >= :since UNION SELECT v.user_id FROM poll_votes v JOIN polls q"
                " ON q.id = v.poll WHERE q.scope = 'group' AND q.target = :group AND v.ts >= :since"
                " UNION SELECT user_id FROM checkins WHERE group_id = :group AND ts >= :since) AS who"
                f" WHERE u {NOT_EXCLUDED} AND u IN (SELECT user_id FROM group_members"
                " WHERE group_id = :group)", p))[0][0]
            buys = yield Q(
                f'SELECT o."user" AS user_id, COUNT(*) AS n, {NET} AS spent FROM orders o {REDEMPTION}'
                ' JOIN group_members gm ON gm.user_id = o."user" AND gm.group_id = :group'
                " JOIN products pr ON pr.id = o.product AND pr.shop = :shop"
                f" WHERE {CONFIRMED} AND gm.role NOT IN {STAFF} GROUP BY o.\"user\"", p)
            return m.group_numbers(group, len(members), int(active), msg_total, replies,
                                   int(votes), buys, joins, exits, p["from"], before, msg_weeks,
                                   actions, first, now_ms)

        return await self.db.read(body)

    # -- the shop ----------------------------------------------------------------------------
    async def for_shop(self, shop: str) -> dict[str, Any]:
        p = {"shop": shop}

        def body() -> Body[dict[str, Any]]:
            off = {r[0]: int(r[1]) for r in (yield Q(
                "SELECT o.room, SUM(r.discount) FROM coupon_redemptions r JOIN orders o"
                f" ON o.id = r.order_id WHERE {CONFIRMED} GROUP BY o.room", p))}
            rooms = [{"room": r["room"], "orders": int(r["orders"]), "units": int(r["units"]),
                      "revenue": int(r["revenue"]) - off.get(r["room"], 0),
                      "buyers": int(r["buyers"])} for r in (yield Q(
                          "SELECT o.room AS room, COUNT(*) AS orders, SUM(o.qty) AS units,"
                          ' SUM(o.qty * o.price) AS revenue, COUNT(DISTINCT o."user") AS buyers'
                          " FROM orders o WHERE o.product IN (SELECT id FROM products"
                          f" WHERE shop = :shop) AND {CONFIRMED} GROUP BY o.room", p))]
            rooms.sort(key=lambda r: -r["revenue"])
            groups = [{"id": r["id"], "tier": r["tier"], "title": r["title"] or "",
                       "topic": r["topic"], "members": int(r["members"])}
                      for r in (yield Q(
                          "SELECT g.id AS id, g.tier AS tier, g.title AS title, g.topic AS topic,"
                          " (SELECT COUNT(*) FROM group_members gm"
                          f" WHERE gm.group_id = g.id AND gm.role NOT IN {STAFF}) AS members"
                          " FROM groups g WHERE g.shop = :shop ORDER BY g.id LIMIT 200", p))]
            coupons = (yield Q(
                "SELECT COUNT(*) AS issued, COUNT(r.coupon) AS redeemed,"
                " COALESCE(SUM(r.discount), 0) AS discounts FROM coupons k"
                " LEFT JOIN coupon_redemptions r ON r.coupon = k.id WHERE k.shop = :shop", p))[0]
            invites = (yield Q("SELECT COUNT(*) FROM invites WHERE shop = :shop", p))[0][0]
            return {"shop": shop, "rooms": rooms[:100], "groups": groups,
                    "orders": sum(r["orders"] for r in rooms[:100]),
                    "revenue": sum(r["revenue"] for r in rooms[:100]),
                    "coupons": {k: int(coupons[k]) for k in ("issued", "redeemed", "discounts")},
                    "invited_members": int(invites)}

        return await self.db.read(body)

    # -- member layers -----------------------------------------------------------------------
    async def one_member(self, shop: str, user: str, now_ms: int, t: Thresholds) -> dict[str, Any]:
        """One member's layer (for a sale targeted at a layer): indexed per-user lookups."""
        p = {"shop": shop, "user": user, "since": now_ms - WINDOW_MS}

        def body() -> Body[dict[str, Any]]:
            o = (yield Q("SELECT COUNT(*), COALESCE(SUM(o.qty * o.price), 0) FROM orders o"
                         ' JOIN products pr ON pr.id = o.product WHERE o."user" = :user'
                         " AND o.created_at >= :since AND pr.shop = :shop"
                         " AND o.status = 'confirmed' AND o.price > 0", p))[0]
            counts = []
            for sql in (
                "SELECT COUNT(*) FROM group_messages m JOIN groups g ON g.id = m.group_id"
                " WHERE m.user_id = :user AND m.ts >= :since AND g.shop = :shop",
                "SELECT COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                " WHERE v.user_id = :user AND v.ts >= :since AND q.shop = :shop",
                "SELECT COUNT(*) FROM checkins WHERE user_id = :user AND ts >= :since"
                " AND shop = :shop",
                "SELECT COUNT(*) FROM questions WHERE answered_by = :user"
                " AND answered_at >= :since",
            ):
                counts.append(int((yield Q(sql, p))[0][0]))
            return describe(MemberStats(user, int(o[0]), int(o[1]), *counts), t)

        return await self.db.read(body)

    async def member_stats(self, shop: str, now_ms: int, t: Thresholds,
                           excluded: set[str]) -> list[dict[str, Any]]:
        p = {"shop": shop, "since": now_ms - WINDOW_MS}
        queries = {
            "orders": 'SELECT o."user", COUNT(*), SUM(o.qty * o.price) FROM orders o JOIN products pr'
                      " ON pr.id = o.product WHERE pr.shop = :shop AND o.status = 'confirmed'"
                      ' AND o.price > 0 AND o.created_at >= :since GROUP BY o."user"',
            "messages": "SELECT m.user_id, COUNT(*) FROM group_messages m JOIN groups g"
                        " ON g.id = m.group_id WHERE g.shop = :shop AND m.ts >= :since"
                        " GROUP BY m.user_id",
            "votes": "SELECT v.user_id, COUNT(*) FROM poll_votes v JOIN polls q ON q.id = v.poll"
                     " WHERE q.shop = :shop AND v.ts >= :since GROUP BY v.user_id",
            "checkins": "SELECT user_id, COUNT(*) FROM checkins WHERE shop = :shop"
                        " AND ts >= :since GROUP BY user_id",
            "answers": "SELECT answered_by, COUNT(*) FROM questions WHERE answered_by IS NOT NULL"
                       " AND answered_at >= :since AND COALESCE((SELECT shop FROM rooms"
                       " WHERE id = questions.room), 'default') = :shop GROUP BY answered_by",
        }

        def body() -> Body[tuple[dict[str, dict[str, int]], dict[str, Row], set[str]]]:
            users: dict[str, dict[str, int]] = {}
            for r in (yield Q("SELECT DISTINCT m.user_id FROM group_members m JOIN groups g"
                              f" ON g.id = m.group_id WHERE g.shop = :shop AND m.role NOT IN {STAFF}",
                              p)):
                users.setdefault(r[0], {})
            for key, sql in queries.items():
                for r in (yield Q(sql, p)):
                    users.setdefault(r[0], {})[key] = int(r[1])
                    if len(r) > 2:
                        users[r[0]]["spent"] = int(r[2] or 0)
            tags = {r["user_id"]: r for r in (yield Q("SELECT * FROM member_tags WHERE shop = :shop",
                                                      p))}
            staff = {r[0] for r in (yield Q("SELECT DISTINCT user_id FROM group_members"
                                            f" WHERE role IN {STAFF}"))}
            return users, tags, staff

        users, tags, staff = await self.db.read(body)
        out: list[dict[str, Any]] = []
        for user, v in sorted(users.items()):
            if user in excluded or user in staff:
                continue
            row = describe(MemberStats(user, v.get("orders", 0), v.get("spent", 0),
                                       v.get("messages", 0), v.get("votes", 0),
                                       v.get("checkins", 0), v.get("answers", 0)), t)
            row["tags"] = _tags(tags.get(user))
            out.append(row)
        return out

    # -- what the numbers are computed from ------------------------------------------------
    async def excluded(self) -> dict[str, set[str]]:
        """Every shop's excluded users, read once at start-up."""
        out: dict[str, set[str]] = {}
        for r in await self.db.rows("SELECT * FROM metrics_excluded"):
            out.setdefault(r["shop"], set()).add(r["user_id"])
        return out

    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> set[str]:
        """Change the shop's excluded users; the list as recorded (other nodes' changes too)."""

        def body() -> Body[set[str]]:
            yield Many("INSERT INTO metrics_excluded (shop, user_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", [(shop, u) for u in add])
            yield Many("DELETE FROM metrics_excluded WHERE shop = ? AND user_id = ?",
                       [(shop, u) for u in remove])
            rows = yield Q("SELECT user_id FROM metrics_excluded WHERE shop = ?", shop)
            return {r["user_id"] for r in rows}

        return await self.db.write(body)

    async def forget_rooms(self, rooms: list[str]) -> None:
        if self.db.shared:  # another node may serve the room right now: its rows stay
            return
        rows = [(r,) for r in rooms]
        await self.db.write(steps(Many("DELETE FROM room_presence WHERE room = ?", rows),
                                  Many("DELETE FROM room_activity WHERE room = ?", rows)))

    # -- activity log ------------------------------------------------------------------------
    async def record(self, activity: list[tuple[str, str, str, int, int]],
                     presence: list[tuple[str, int, int, int]],
                     actions: list[tuple[str, str, str, str, str, int]]) -> None:
        await self.db.write(steps(
            Insert("room_activity", ("room", "user_id", "kind", "n", "ts"), activity,
                   copy=True),
            Insert("room_presence", ("room", "ts", "viewers", "interval_ms"), presence),
            Insert("merchant_actions", ("shop", "scope", "target", "kind", "detail", "ts"),
                   actions)))


def _tags(r: Row | None) -> list[str]:
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
