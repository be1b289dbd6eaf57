"""Engagement: coupons, polls and votes, check-ins and points, invites,
show-your-order posts, layer thresholds and sale targets.

Why in the same database as commerce and community: layers and numbers join orders, group
messages and questions with these tables in one query, and every write here is as durable as
an order. Where two writers can race (two nodes of a cluster, or a retried request), the
guard is SQL that both databases run:

- one vote per (poll, user) (primary key) while the poll is open; a vote's `rev` comes from
  one sequence, so every node applies a user's votes in commit order;
- one check-in per (group, user, day) (primary key: `GuardRefused`);
- points are spent once: `balance = balance - n WHERE balance >= n`, in the transaction that
  writes the coupon (`GuardRefused` when short);
- an invitee counts once per shop and each reward once per (shop, inviter, n), counted in SQL
  under a lock on the inviter;
- one post per order (unique `order_id`), one approval per post (`WHERE status = 'pending'`),
  one close per poll (`WHERE closed = 0`: every node's timer fires, one wins).

A coupon's redemption row is the ledger's (`coupon_redemptions`, server/store/ledger.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import orjson

from server.domain.checkin import Streak
from server.domain.coupons import Coupon
from server.domain.invites import rewards_due
from server.domain.polls import Poll
from server.store.db import Body, Db, Lock, Many, Next, Q, Row, X, steps

_COUPON: Final = ("INSERT INTO coupons (id, shop, user_id, kind, value, min_spend, expires_at,"
                  " title, issued_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ACTION: Final = ("INSERT INTO merchant_actions (shop, scope, target, kind, detail, ts)"
                  " VALUES (?, ?, ?, ?, ?, ?)")
_POINTS: Final = "INSERT INTO points_log (shop, user_id, delta, reason, ts) VALUES (?, ?, ?, ?, ?)"


class GuardRefused(Exception):
    """A guard refused a write another writer got in first: a second check-in the same day,
    points already spent, a post already shown or approved, a closed poll."""

    def __init__(self, message: str, balance: int | None = None) -> None:
        super().__init__(message)
        self.balance = balance


class EngagementStore(Protocol):
    """What `server.engagement.Engagement` needs of a store."""

    shared: bool  # other nodes write it too: what this node does not know may exist

    async def add_coupons(self, coupons: list[Coupon],
                          action: tuple[Any, ...] | None = None) -> None: ...
    async def coupons_of(self, user: str) -> tuple[list[Row], list[Row]]: ...
    async def add_poll(self, p: Poll) -> None: ...
    async def vote(self, poll: str, user: str, option: int, ts: int) -> int: ...
    async def close_poll(self, poll: str, closes_at: int | None) -> bool: ...
    async def load_poll(self, poll_id: str) -> tuple[Poll, dict[str, tuple[int, int]]] | None: ...
    async def streak(self, group: str, user: str) -> Streak | None: ...
    async def checkin(self, shop: str, group: str, user: str, day: int, streak: int,
                      points: int, ts: int) -> int: ...
    async def balance(self, shop: str, user: str) -> int: ...
    async def redeem(self, shop: str, user: str, points: int, coupon: Coupon) -> int: ...
    async def add_code(self, code: str, shop: str, user: str) -> str: ...
    async def load_code(self, code: str) -> tuple[str, str] | None: ...
    async def known_before(self, shop: str, user: str) -> bool: ...
    async def add_invite(self, shop: str, invitee: str, inviter: str, group: str, ts: int,
                         threshold: int, make_rewards: Callable[[int, int], list[tuple[int, Coupon]]],
                         ) -> tuple[bool, list[tuple[int, Coupon]]]: ...
    async def invite_stats(self, shop: str, user: str) -> tuple[int, int]: ...
    async def add_post(self, post: dict[str, Any]) -> None: ...
    async def approve_post(self, post_id: str, coupon: Coupon) -> None: ...
    async def load_post(self, post_id: str) -> dict[str, Any] | None: ...
    async def target_sale(self, sale: str, shop: str, layer: str, ts: int) -> None: ...
    async def save_thresholds(self, shop: str, data: dict[str, int]) -> None: ...
    async def load(self) -> Mapping[str, list[Row]]: ...


class SqlEngagementStore:
    """`EngagementStore` over a `Db`."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.shared = db.shared

    # -- coupons -----------------------------------------------------------------------------
    async def add_coupons(self, coupons: list[Coupon],
                          action: tuple[Any, ...] | None = None) -> None:
        rows = [coupon_row(c) for c in coupons]

        await self.db.write(steps(Many(_COUPON, rows),
                                  *([] if action is None else [X(_ACTION, *action)])))

    async def coupons_of(self, user: str) -> tuple[list[Row], list[Row]]:
        """A user's coupons and their redemptions (a node that missed a notice catches up)."""

        def body() -> Body[tuple[list[Row], list[Row]]]:
            rows = yield Q("SELECT * FROM coupons WHERE user_id = ? ORDER BY issued_at, id", user)
            spent = yield Q("SELECT r.coupon, r.order_id FROM coupon_redemptions r JOIN coupons c"
                            " ON c.id = r.coupon WHERE c.user_id = ?", user)
            return rows, spent

        return await self.db.read(body)

    # -- polls -------------------------------------------------------------------------------
    async def add_poll(self, p: Poll) -> None:
        row = (p.id, p.shop, p.scope, p.target, p.question, orjson.dumps(p.options).decode(),
               p.created_by, p.created_at, p.closes_at)
        action = (p.shop, p.scope, p.target, "poll", p.question[:100], p.created_at)

        await self.db.write(steps(
            X("INSERT INTO polls (id, shop, scope, target, question, options, created_by,"
              " created_at, closes_at, closed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)", *row),
            X(_ACTION, *action)))

    async def vote(self, poll: str, user: str, option: int, ts: int) -> int:
        """Record or change a vote while the poll is open (else `GuardRefused`); its rev."""

        def body() -> Body[int]:
            open_ = yield Q("SELECT closed FROM polls WHERE id = ? FOR SHARE", poll)
            if not open_ or open_[0]["closed"]:
                raise GuardRefused(f"poll {poll} is closed")
            rev = yield Next("poll_vote_rev")
            yield X("INSERT INTO poll_votes (poll, user_id, option, ts, rev) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (poll, user_id) DO UPDATE SET option = excluded.option,"
                    " ts = excluded.ts, rev = excluded.rev", poll, user, option, ts, rev)
            return int(rev)

        return await self.db.write(body)

    async def close_poll(self, poll: str, closes_at: int | None) -> bool:
        """Close once: True for the call whose UPDATE closed it."""

        def body() -> Body[bool]:
            n: int = yield X("UPDATE polls SET closed = 1, closes_at = ? WHERE id = ?"
                             " AND closed = 0", closes_at, poll)
            return n == 1

        return await self.db.write(body)

    async def load_poll(self, poll_id: str) -> tuple[Poll, dict[str, tuple[int, int]]] | None:
        """A poll and its votes (user -> (option, rev))."""

        def body() -> Body[tuple[Poll, dict[str, tuple[int, int]]] | None]:
            r = yield Q("SELECT * FROM polls WHERE id = ?", poll_id)
            if not r:
                return None
            votes = yield Q("SELECT user_id, option, rev FROM poll_votes WHERE poll = ?", poll_id)
            return poll_from(r[0]), {v["user_id"]: (v["option"], v["rev"]) for v in votes}

        return await self.db.read(body)

    # -- check-ins and points ----------------------------------------------------------------
    async def streak(self, group: str, user: str) -> Streak | None:
        """The member's last check-in in the group (whatever node took it)."""
        rows = await self.db.rows(
            "SELECT day, streak, (SELECT COUNT(*) FROM checkins d WHERE d.group_id = ?1"
            " AND d.user_id = ?2) AS total FROM checkins WHERE group_id = ?1 AND user_id = ?2"
            " ORDER BY day DESC LIMIT 1", group, user)
        return Streak(rows[0]["day"], rows[0]["streak"], int(rows[0]["total"])) if rows else None

    async def checkin(self, shop: str, group: str, user: str, day: int, streak: int,
                      points: int, ts: int) -> int:
        """One check-in per (group, user, day), else `GuardRefused`; the new balance."""

        def body() -> Body[int]:
            if (yield X("INSERT INTO checkins (shop, group_id, user_id, day, streak, points, ts)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        shop, group, user, day, streak, points, ts)) != 1:
                raise GuardRefused("already checked in today")
            yield X(_POINTS, shop, user, points, f"checkin:{group}", ts)
            r = yield Q("INSERT INTO points_balance (shop, user_id, balance) VALUES (?, ?, ?)"
                        " ON CONFLICT (shop, user_id) DO UPDATE SET"
                        " balance = points_balance.balance + excluded.balance RETURNING balance",
                        shop, user, points)
            return int(r[0]["balance"])

        return await self.db.write(body)

    async def balance(self, shop: str, user: str) -> int:
        rows = await self.db.rows("SELECT balance FROM points_balance WHERE shop = ?"
                                  " AND user_id = ?", shop, user)
        return int(rows[0]["balance"]) if rows else 0

    async def redeem(self, shop: str, user: str, points: int, coupon: Coupon) -> int:
        """Spend points for a coupon, once (`GuardRefused` when the balance is short, e.g. spent
        meanwhile on another node); the balance left."""
        row = coupon_row(coupon)

        def body() -> Body[int]:
            left = yield Q("UPDATE points_balance SET balance = balance - ?3 WHERE shop = ?1"
                           " AND user_id = ?2 AND balance >= ?3 RETURNING balance",
                           shop, user, points)
            if not left:
                have = yield Q("SELECT balance FROM points_balance WHERE shop = ? AND user_id = ?",
                               shop, user)
                balance = int(have[0]["balance"]) if have else 0
                raise GuardRefused(f"you have {balance} points", balance)
            yield X(_COUPON, *row)
            yield X(_POINTS, shop, user, -points, f"redeem:{row[0]}", row[8])
            return int(left[0]["balance"])

        return await self.db.write(body)

    # -- invites -----------------------------------------------------------------------------
    async def add_code(self, code: str, shop: str, user: str) -> str:
        """Store a code; the code the user already had if any (one per shop)."""

        def body() -> Body[str]:
            yield X("INSERT INTO invite_codes (code, shop, user_id) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING", code, shop, user)
            r = yield Q("SELECT code FROM invite_codes WHERE shop = ? AND user_id = ?", shop, user)
            return str(r[0]["code"])

        return await self.db.write(body)

    async def load_code(self, code: str) -> tuple[str, str] | None:
        rows = await self.db.rows("SELECT shop, user_id FROM invite_codes WHERE code = ?", code)
        return (rows[0]["shop"], rows[0]["user_id"]) if rows else None

    async def known_before(self, shop: str, user: str) -> bool:
        """Was the user ever a member of one of the shop's groups, or counted as an invitee?"""
        rows = await self.db.rows(
            "SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.shop = ?1"
            " AND m.user_id = ?2 UNION ALL SELECT 1 FROM group_exits e JOIN groups g"
            " ON g.id = e.group_id WHERE g.shop = ?1 AND e.user_id = ?2"
            " UNION ALL SELECT 1 FROM invites WHERE shop = ?1 AND invitee = ?2 LIMIT 1", shop, user)
        return bool(rows)

    async def add_invite(self, shop: str, invitee: str, inviter: str, group: str, ts: int,
                         threshold: int, make_rewards: Callable[[int, int], list[tuple[int, Coupon]]],
                         ) -> tuple[bool, list[tuple[int, Coupon]]]:
        """Count an invitee and grant the rewards due, in one transaction under a lock on
        (shop, inviter): the invitee counts once per shop (primary key), and the rewards due
        are the thresholds crossed less the rewards granted, counted here, so no reward is
        granted twice. `make_rewards(first_n, due)` makes the coupons. Returns (counted,
        rewards)."""

        def body() -> Body[tuple[bool, list[tuple[int, Coupon]]]]:
            yield Lock(f"invite|{shop}|{inviter}")
            counted = (yield X("INSERT INTO invites (shop, invitee, inviter, group_id, ts)"
                               " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               shop, invitee, inviter, group, ts)) == 1
            invited, granted = yield from _invite_counts(shop, inviter)
            if not counted:
                return False, []
            due = rewards_due(invited, granted, threshold)
            rewards = make_rewards(granted + 1, due) if due > 0 else []
            yield Many(_COUPON, [coupon_row(k) for _, k in rewards])
            yield Many("INSERT INTO invite_rewards (shop, inviter, n, coupon, ts)"
                       " VALUES (?, ?, ?, ?, ?)", [(shop, inviter, n, k.id, ts) for n, k in rewards])
            return True, rewards

        return await self.db.write(body)

    async def invite_stats(self, shop: str, user: str) -> tuple[int, int]:
        """(invitees counted, rewards granted) for the user."""
        return await self.db.read(lambda: _invite_counts(shop, user))

    # -- show-your-order ---------------------------------------------------------------------
    async def add_post(self, post: dict[str, Any]) -> None:
        p = post
        row = (p["id"], p["shop"], p["group"], p["order"], p["user"], p["image_url"], p["text"],
               p["ts"], p["status"])

        def body() -> Body[None]:
            if (yield X("INSERT INTO showcase_posts (id, shop, group_id, order_id, user_id,"
                        " image_url, text, ts, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT DO NOTHING", *row)) != 1:
                raise GuardRefused(f"order {row[3]} was already shown")

        await self.db.write(body)

    async def approve_post(self, post_id: str, coupon: Coupon) -> None:
        row = coupon_row(coupon)

        def body() -> Body[None]:
            if (yield X("UPDATE showcase_posts SET status = 'approved', coupon = ? WHERE id = ?"
                        " AND status = 'pending'", row[0], post_id)) != 1:
                raise GuardRefused(f"post {post_id} is not pending")
            yield X(_COUPON, *row)

        await self.db.write(body)

    async def load_post(self, post_id: str) -> dict[str, Any] | None:
        rows = await self.db.rows("SELECT * FROM showcase_posts WHERE id = ?", post_id)
        return post_from(rows[0]) if rows else None

    async def target_sale(self, sale: str, shop: str, layer: str, ts: int) -> None:
        await self.db.write(steps(
            X("INSERT INTO sale_targets (sale, shop, layer, ts) VALUES (?, ?, ?, ?)"
              " ON CONFLICT (sale) DO UPDATE SET layer = excluded.layer, ts = excluded.ts",
              sale, shop, layer, ts),
            X(_ACTION, shop, "sale", sale, "target", layer, ts)))

    # -- settings ----------------------------------------------------------------------------
    async def save_thresholds(self, shop: str, data: dict[str, int]) -> None:
        blob = orjson.dumps(data).decode()

        await self.db.write(steps(
            X("INSERT INTO layer_thresholds (shop, data) VALUES (?, ?)"
              " ON CONFLICT (shop) DO UPDATE SET data = excluded.data", shop, blob)))

    # -- loading -----------------------------------------------------------------------------
    async def load(self) -> dict[str, list[Row]]:
        """Everything the adapter keeps in memory, read once at start-up."""
        q = {
            "coupons": "SELECT * FROM coupons ORDER BY issued_at, id",
            "redemptions": "SELECT coupon, order_id FROM coupon_redemptions",
            "polls": "SELECT * FROM polls WHERE closed = 0",
            "votes": "SELECT v.* FROM poll_votes v JOIN polls p ON p.id = v.poll WHERE p.closed = 0",
            "streaks": "SELECT c.group_id, c.user_id, c.day, c.streak, (SELECT COUNT(*) FROM"
                       " checkins d WHERE d.group_id = c.group_id AND d.user_id = c.user_id)"
                       " AS total FROM checkins c WHERE c.day = (SELECT MAX(day) FROM checkins e"
                       " WHERE e.group_id = c.group_id AND e.user_id = c.user_id)",
            "points": "SELECT shop, user_id, balance FROM points_balance",
            "codes": "SELECT * FROM invite_codes",
            "posts": "SELECT * FROM showcase_posts",
            "thresholds": "SELECT * FROM layer_thresholds",
            "targets": "SELECT * FROM sale_targets",
        }

        def body() -> Body[dict[str, list[Row]]]:
            out: dict[str, list[Row]] = {}
            for k, sql in q.items():
                out[k] = list((yield Q(sql)))
            return out

        return await self.db.read(body)


def _invite_counts(shop: str, inviter: str) -> Body[tuple[int, int]]:
    invited = yield Q("SELECT COUNT(*) AS n FROM invites WHERE shop = ? AND inviter = ?",
                      shop, inviter)
    granted = yield Q("SELECT COALESCE(MAX(n), 0) AS n FROM invite_rewards WHERE shop = ?"
                      " AND inviter = ?", shop, inviter)
    return int(invited[0]["n"]), int(granted[0]["n"])


def coupon_row(c: Coupon) -> tuple[Any, ...]:
    s = c.spec
    return (c.id, c.shop, c.user, s.kind, s.value, s.min_spend, s.expires_at, s.title,
            c.issued_at, c.source)


def poll_from(r: Row) -> Poll:
    return Poll(r["id"], r["shop"], r["scope"], r["target"], r["question"],
                orjson.loads(r["options"]), r["created_by"], r["created_at"], r["closes_at"],
                bool(r["closed"]))


def post_from(r: Row) -> dict[str, Any]:
    return {"id": r["id"], "shop": r["shop"], "group": r["group_id"], "order": r["order_id"],
            "user": r["user_id"], "image_url": r["image_url"], "text": r["text"], "ts": r["ts"],
            "status": r["status"], "coupon": r["coupon"]}
