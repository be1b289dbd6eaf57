"""Community operations in PostgreSQL, shared by every node of a cluster (`--postgres`).

Why: with several nodes, a coupon issued on node A is spent with a `buy` on node B, a poll
created on A is voted on from B, and points earned on A are redeemed on B. Each node keeps
its in-memory copy (server/operations.py) for the hot paths; this store is the one record
every node writes, and where two nodes can race the guard is in SQL, not in a node's memory:

- one vote per (poll, user): the `poll_votes` primary key; a vote carries a `rev` from one
  sequence, so every node applies a user's votes in commit order (the latest choice wins);
- one check-in per (group, user, day): the `checkins` primary key (`OpConflict`);
- points are spent once: `points_balance` is updated with `balance = balance - n WHERE
  balance >= n` in the transaction that writes the coupon (`OpConflict` when short);
- an invite counts once per (shop, invitee) and each reward once per (shop, inviter, n): the
  rewards due are counted in SQL under a transaction-scoped advisory lock on the inviter;
- one post per order (unique `order_id`) and one approval per post (`UPDATE ... WHERE
  status = 'pending'`);
- a poll is closed once (`UPDATE ... WHERE closed = 0`): every node's timer fires, one wins.

The coupon redemption row is the ledger's (`coupon_redemptions` in server/store/postgres.py),
written in the same transaction as the order. The activity log (views, chat, likes, presence
samples, merchant actions) is written here by every node, so the merchant's numbers
(server/store/metrics_pg.py) count the whole cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import asyncpg
import orjson

from server.domain.checkin import Streak
from server.domain.coupons import Coupon
from server.domain.polls import Poll
from server.store.operations_store import OpConflict, coupon_row
from server.store.pgstore import PgStore

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS coupons (
        id TEXT PRIMARY KEY, shop TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL,
        value BIGINT NOT NULL, min_spend BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        title TEXT NOT NULL, issued_at BIGINT NOT NULL, source TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS coupons_user ON coupons (user_id)",
    "CREATE INDEX IF NOT EXISTS coupons_shop ON coupons (shop, issued_at)",
    """CREATE TABLE IF NOT EXISTS polls (
        id TEXT PRIMARY KEY, shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL,
        question TEXT NOT NULL, options TEXT NOT NULL, created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL, closes_at BIGINT, closed INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS polls_target ON polls (scope, target, created_at)",
    "CREATE SEQUENCE IF NOT EXISTS poll_vote_rev",
    """CREATE TABLE IF NOT EXISTS poll_votes (
        poll TEXT NOT NULL, user_id TEXT NOT NULL, option INTEGER NOT NULL, ts BIGINT NOT NULL,
        rev BIGINT NOT NULL, PRIMARY KEY (poll, user_id))""",
    "CREATE INDEX IF NOT EXISTS poll_votes_user ON poll_votes (user_id, ts)",
    """CREATE TABLE IF NOT EXISTS checkins (
        shop TEXT NOT NULL, group_id TEXT NOT NULL, user_id TEXT NOT NULL, day INTEGER NOT NULL,
        streak INTEGER NOT NULL, points INTEGER NOT NULL, ts BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id, day))""",
    "CREATE INDEX IF NOT EXISTS checkins_shop ON checkins (shop, ts)",
    "CREATE INDEX IF NOT EXISTS checkins_user ON checkins (user_id, ts)",
    """CREATE TABLE IF NOT EXISTS points_log (
        id BIGSERIAL PRIMARY KEY, shop TEXT NOT NULL, user_id TEXT NOT NULL,
        delta INTEGER NOT NULL, reason TEXT NOT NULL, ts BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS points_balance (
        shop TEXT NOT NULL, user_id TEXT NOT NULL, balance BIGINT NOT NULL CHECK (balance >= 0),
        PRIMARY KEY (shop, user_id))""",
    """CREATE TABLE IF NOT EXISTS invite_codes (
        code TEXT PRIMARY KEY, shop TEXT NOT NULL, user_id TEXT NOT NULL, UNIQUE (shop, user_id))""",
    """CREATE TABLE IF NOT EXISTS invites (
        shop TEXT NOT NULL, invitee TEXT NOT NULL, inviter TEXT NOT NULL, group_id TEXT NOT NULL,
        ts BIGINT NOT NULL, PRIMARY KEY (shop, invitee))""",
    "CREATE INDEX IF NOT EXISTS invites_inviter ON invites (shop, inviter)",
    """CREATE TABLE IF NOT EXISTS invite_rewards (
        shop TEXT NOT NULL, inviter TEXT NOT NULL, n INTEGER NOT NULL, coupon TEXT NOT NULL,
        ts BIGINT NOT NULL, PRIMARY KEY (shop, inviter, n))""",
    """CREATE TABLE IF NOT EXISTS showcase_posts (
        id TEXT PRIMARY KEY, shop TEXT NOT NULL, group_id TEXT NOT NULL,
        order_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, image_url TEXT NOT NULL,
        text TEXT NOT NULL, ts BIGINT NOT NULL, status TEXT NOT NULL, coupon TEXT)""",
    """CREATE TABLE IF NOT EXISTS sale_targets (
        sale TEXT PRIMARY KEY, shop TEXT NOT NULL, layer TEXT NOT NULL, ts BIGINT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS layer_thresholds (shop TEXT PRIMARY KEY, data TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS metrics_excluded (
        shop TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (shop, user_id))""",
    """CREATE TABLE IF NOT EXISTS room_activity (
        room TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
        ts BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS room_activity_room ON room_activity (room, kind, user_id, n)",
    """CREATE TABLE IF NOT EXISTS room_presence (
        room TEXT NOT NULL, ts BIGINT NOT NULL, viewers INTEGER NOT NULL,
        interval_ms INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS room_presence_room ON room_presence (room, ts)",
    """CREATE TABLE IF NOT EXISTS merchant_actions (
        shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
        detail TEXT NOT NULL, ts BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS merchant_actions_target ON merchant_actions (scope, target, ts)",
    # the shop of each room (rooms live in each node's SQLite): the numbers filter by shop
    "CREATE TABLE IF NOT EXISTS room_shops (room TEXT PRIMARY KEY, shop TEXT NOT NULL)",
)

# on the ledger's and the community's tables, for the merchant's numbers (server/store/metrics_pg.py)
LATE_INDEXES: Final = (
    'CREATE INDEX IF NOT EXISTS orders_room_metrics ON orders (room, status, "user", qty, price, sale, offer, team)',
    'CREATE INDEX IF NOT EXISTS orders_product_metrics ON orders (product, status, "user", created_at)',
    "CREATE INDEX IF NOT EXISTS group_messages_metrics ON group_messages (group_id, ts, user_id, reply_to)",
    "CREATE INDEX IF NOT EXISTS group_messages_by_user ON group_messages (user_id, ts)",
    "CREATE INDEX IF NOT EXISTS group_exits_by_group ON group_exits (group_id, left_at)",
    "CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members (user_id)",
    "CREATE INDEX IF NOT EXISTS questions_by_answerer ON questions (answered_by, answered_at)",
)

MIGRATE_LOCK: Final = 7306202613  # one node creates the tables at a time
INVITE_LOCK: Final = 7306202614  # with (shop, inviter): one node counts an inviter's rewards

_COUPON_INSERT: Final = "INSERT INTO coupons VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_COUPON_COLS: Final = ('id, shop, user_id AS "user", kind, value, min_spend, expires_at, title,'
                       " issued_at, source")
_ACTION_INSERT: Final = "INSERT INTO merchant_actions VALUES ($1, $2, $3, $4, $5, $6)"


def poll_from(r: Mapping[str, Any]) -> Poll:
    return Poll(r["id"], r["shop"], r["scope"], r["target"], r["question"],
                orjson.loads(r["options"]), r["created_by"], r["created_at"], r["closes_at"],
                bool(r["closed"]))  # fmt: skip


class PgOperationsStore(PgStore):
    """The operations store over an asyncpg pool (given, or opened from a DSN by `start`)."""

    SCHEMA = SCHEMA
    MIGRATE_LOCK = MIGRATE_LOCK

    async def late_indexes(self) -> None:
        """Indexes the numbers need on the ledger's and the community's tables (created by
        then: Operations starts after both)."""
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            for sql in LATE_INDEXES:
                table = sql.split(" ON ", 1)[1].split(" ", 1)[0]
                if await c.fetchval("SELECT to_regclass($1)", table) is not None:
                    await c.execute(sql)

    # -- coupons ---------------------------------------------------------------------------
    async def add_coupons(self, coupons: list[Coupon], action: tuple[Any, ...] | None = None) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.executemany(_COUPON_INSERT, [coupon_row(k) for k in coupons])
            if action is not None:
                await c.execute(_ACTION_INSERT, *action)

    async def coupons_of(self, user: str) -> tuple[list[Any], list[Any]]:
        """A user's coupons and their redemptions (a node that missed a notice catches up)."""
        async with self.pool.acquire() as c:
            rows = await c.fetch(f"SELECT {_COUPON_COLS} FROM coupons WHERE user_id = $1"
                                 " ORDER BY issued_at, id", user)
            spent = await c.fetch("SELECT coupon, order_id FROM coupon_redemptions"
                                  " WHERE coupon = ANY($1::text[])", [r["id"] for r in rows])
        return list(rows), list(spent)

    # -- polls -----------------------------------------------------------------------------
    async def add_poll(self, p: Poll) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("INSERT INTO polls VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)",
                            p.id, p.shop, p.scope, p.target, p.question,
                            orjson.dumps(p.options).decode(), p.created_by, p.created_at,
                            p.closes_at)  # fmt: skip
            await c.execute(_ACTION_INSERT, p.shop, p.scope, p.target, "poll", p.question[:100],
                            p.created_at)

    async def vote(self, poll: str, user: str, option: int, ts: int) -> int:
        """Record or change a vote, if the poll is still open; returns its rev (the order in
        which the nodes apply a user's votes)."""
        async with self.pool.acquire() as c, c.transaction():
            closed = await c.fetchval("SELECT closed FROM polls WHERE id = $1 FOR SHARE", poll)
            if closed is None or closed:
                raise OpConflict(f"poll {poll} is closed")
            rev = await c.fetchval(
                "INSERT INTO poll_votes VALUES ($1, $2, $3, $4, nextval('poll_vote_rev'))"
                " ON CONFLICT (poll, user_id) DO UPDATE SET option = excluded.option,"
                " ts = excluded.ts, rev = excluded.rev RETURNING rev", poll, user, option, ts)
        return int(rev)

    async def close_poll(self, poll: str, closes_at: int | None) -> bool:
        """Close once for the cluster: True for the node whose UPDATE closed it."""
        done = await self.pool.execute(
            "UPDATE polls SET closed = 1, closes_at = $1 WHERE id = $2 AND closed = 0", closes_at, poll)
        return bool(done == "UPDATE 1")

    async def load_poll(self, poll_id: str) -> tuple[Poll, dict[str, tuple[int, int]]] | None:
        """A poll and its votes (user -> (option, rev))."""
        async with self.pool.acquire() as c:
            r = await c.fetchrow("SELECT * FROM polls WHERE id = $1", poll_id)
            if r is None:
                return None
            votes = await c.fetch("SELECT user_id, option, rev FROM poll_votes WHERE poll = $1", poll_id)
        return poll_from(r), {v["user_id"]: (v["option"], v["rev"]) for v in votes}

    # -- check-ins and points --------------------------------------------------------------
    async def streak(self, group: str, user: str) -> Streak | None:
        """The member's last check-in in the group (whatever node took it)."""
        r = await self.pool.fetchrow(
            "SELECT day, streak, (SELECT COUNT(*) FROM checkins d WHERE d.group_id = $1"
            " AND d.user_id = $2) AS total FROM checkins WHERE group_id = $1 AND user_id = $2"
            " ORDER BY day DESC LIMIT 1", group, user)
        return None if r is None else Streak(r["day"], r["streak"], int(r["total"]))

    async def checkin(self, shop: str, group: str, user: str, day: int, streak: int,
                      points: int, ts: int) -> int:
        """One check-in per (group, user, day), else `OpConflict`; returns the new balance."""
        async with self.pool.acquire() as c, c.transaction():
            try:
                await c.execute("INSERT INTO checkins VALUES ($1, $2, $3, $4, $5, $6, $7)",
                                shop, group, user, day, streak, points, ts)
            except asyncpg.UniqueViolationError:
                raise OpConflict("already checked in today") from None
            await c.execute("INSERT INTO points_log (shop, user_id, delta, reason, ts)"
                            " VALUES ($1, $2, $3, $4, $5)", shop, user, points, f"checkin:{group}", ts)
            balance = await c.fetchval(
                "INSERT INTO points_balance VALUES ($1, $2, $3) ON CONFLICT (shop, user_id)"
                " DO UPDATE SET balance = points_balance.balance + excluded.balance RETURNING balance",
                shop, user, points)
        return int(balance)

    async def balance(self, shop: str, user: str) -> int:
        b = await self.pool.fetchval(
            "SELECT balance FROM points_balance WHERE shop = $1 AND user_id = $2", shop, user)
        return int(b or 0)

    async def redeem(self, shop: str, user: str, points: int, coupon: Coupon) -> int:
        """Spend points for a coupon, once: a conditional UPDATE (`OpConflict` when the
        balance is short, e.g. another node spent it first); returns the balance left."""
        row = coupon_row(coupon)
        async with self.pool.acquire() as c, c.transaction():
            left = await c.fetchval(
                "UPDATE points_balance SET balance = balance - $3 WHERE shop = $1 AND user_id = $2"
                " AND balance >= $3 RETURNING balance", shop, user, points)
            if left is None:
                have = await c.fetchval("SELECT balance FROM points_balance WHERE shop = $1"
                                        " AND user_id = $2", shop, user)
                raise OpConflict(f"you have {int(have or 0)} points", int(have or 0))
            await c.execute(_COUPON_INSERT, *row)
            await c.execute("INSERT INTO points_log (shop, user_id, delta, reason, ts)"
                            " VALUES ($1, $2, $3, $4, $5)", shop, user, -points, f"redeem:{row[0]}", row[8])
        return int(left)

    # -- invites ---------------------------------------------------------------------------
    async def add_code(self, code: str, shop: str, user: str) -> str:
        """Store a code; returns the code the user already had if any (one per shop)."""
        async with self.pool.acquire() as c:
            await c.execute("INSERT INTO invite_codes VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                            code, shop, user)
            return str(await c.fetchval("SELECT code FROM invite_codes WHERE shop = $1 AND user_id = $2",
                                        shop, user))

    async def load_code(self, code: str) -> tuple[str, str] | None:
        r = await self.pool.fetchrow("SELECT shop, user_id FROM invite_codes WHERE code = $1", code)
        return None if r is None else (r["shop"], r["user_id"])

    async def known_before(self, shop: str, user: str) -> bool:
        """Was the user ever a member of one of the shop's groups, or counted as an invitee?
        (asked before the join; the community's tables are in the same database)"""
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id"
            " WHERE g.shop = $1 AND m.user_id = $2) OR EXISTS (SELECT 1 FROM group_exits e"
            " JOIN groups g ON g.id = e.group_id WHERE g.shop = $1 AND e.user_id = $2)"
            " OR EXISTS (SELECT 1 FROM invites WHERE shop = $1 AND invitee = $2)", shop, user))

    async def add_invite_counted(
        self, shop: str, invitee: str, inviter: str, group: str, ts: int, threshold: int,
        make_rewards: Callable[[int, int], list[tuple[int, Coupon]]],
    ) -> tuple[bool, list[tuple[int, Coupon]], int, int]:
        """Count an invitee for the whole cluster and grant the rewards due, in one
        transaction under a lock on (shop, inviter): the invitee counts once per shop (primary
        key), and the rewards due are the thresholds crossed less the rewards granted, counted
        here, so two nodes never grant the same reward. `make_rewards(first_n, due)` makes the
        coupons. Returns (counted, rewards, invited, rewarded)."""
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtextextended($2 || '|' || $3, $1))",
                            INVITE_LOCK, shop, inviter)
            done = await c.execute("INSERT INTO invites VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                                   shop, invitee, inviter, group, ts)
            invited = int(await c.fetchval("SELECT COUNT(*) FROM invites WHERE shop = $1 AND inviter = $2",
                                           shop, inviter))
            granted = int(await c.fetchval("SELECT COALESCE(MAX(n), 0) FROM invite_rewards"
                                           " WHERE shop = $1 AND inviter = $2", shop, inviter))
            if done != "INSERT 0 1":
                return False, [], invited, granted
            due = invited // threshold - granted
            rewards = make_rewards(granted + 1, due) if due > 0 else []
            if rewards:
                await c.executemany(_COUPON_INSERT, [coupon_row(k) for _, k in rewards])
                await c.executemany("INSERT INTO invite_rewards VALUES ($1, $2, $3, $4, $5)",
                                    [(shop, inviter, n, k.id, ts) for n, k in rewards])
        return True, rewards, invited, granted + len(rewards)

    async def invite_stats(self, shop: str, user: str) -> tuple[int, int]:
        """(invitees counted, rewards granted) for the user, cluster-wide."""
        async with self.pool.acquire() as c:
            invited = await c.fetchval("SELECT COUNT(*) FROM invites WHERE shop = $1 AND inviter = $2",
                                       shop, user)
            rewarded = await c.fetchval("SELECT COALESCE(MAX(n), 0) FROM invite_rewards"
                                        " WHERE shop = $1 AND inviter = $2", shop, user)
        return int(invited), int(rewarded)

    async def add_invite(self, shop: str, invitee: str, inviter: str, group: str, ts: int,
                         rewards: list[tuple[int, Coupon]]) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("INSERT INTO invites VALUES ($1, $2, $3, $4, $5)", shop, invitee, inviter, group, ts)
            await c.executemany(_COUPON_INSERT, [coupon_row(k) for _, k in rewards])
            await c.executemany("INSERT INTO invite_rewards VALUES ($1, $2, $3, $4, $5)",
                                [(shop, inviter, n, k.id, ts) for n, k in rewards])

    # -- show-your-order -------------------------------------------------------------------
    async def add_post(self, post: dict[str, Any]) -> None:
        p = post
        try:
            await self.pool.execute(
                "INSERT INTO showcase_posts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
                p["id"], p["shop"], p["group"], p["order"], p["user"], p["image_url"], p["text"],
                p["ts"], p["status"])  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise OpConflict(f"order {p['order']} was already shown") from None

    async def approve_post(self, post_id: str, coupon: Coupon) -> None:
        row = coupon_row(coupon)
        async with self.pool.acquire() as c, c.transaction():
            done = await c.execute("UPDATE showcase_posts SET status = 'approved', coupon = $1"
                                   " WHERE id = $2 AND status = 'pending'", row[0], post_id)
            if done != "UPDATE 1":
                raise OpConflict(f"post {post_id} is not pending")
            await c.execute(_COUPON_INSERT, *row)

    async def load_post(self, post_id: str) -> dict[str, Any] | None:
        r = await self.pool.fetchrow("SELECT * FROM showcase_posts WHERE id = $1", post_id)
        return None if r is None else post_from(r)

    async def target_sale(self, sale: str, shop: str, layer: str, ts: int) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("INSERT INTO sale_targets VALUES ($1, $2, $3, $4) ON CONFLICT (sale)"
                            " DO UPDATE SET layer = excluded.layer, ts = excluded.ts", sale, shop, layer, ts)
            await c.execute(_ACTION_INSERT, shop, "sale", sale, "target", layer, ts)

    # -- settings --------------------------------------------------------------------------
    async def save_thresholds(self, shop: str, data: dict[str, int]) -> None:
        await self.pool.execute("INSERT INTO layer_thresholds VALUES ($1, $2) ON CONFLICT (shop)"
                                " DO UPDATE SET data = excluded.data", shop, orjson.dumps(data).decode())

    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> None:
        async with self.pool.acquire() as c, c.transaction():
            await c.executemany("INSERT INTO metrics_excluded VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                [(shop, u) for u in add])
            await c.executemany("DELETE FROM metrics_excluded WHERE shop = $1 AND user_id = $2",
                                [(shop, u) for u in remove])

    async def excluded_of(self, shop: str) -> set[str]:
        rows = await self.pool.fetch("SELECT user_id FROM metrics_excluded WHERE shop = $1", shop)
        return {r["user_id"] for r in rows}

    # -- activity log ----------------------------------------------------------------------
    async def record(self, activity: list[tuple[str, str, str, int, int]],
                     presence: list[tuple[str, int, int, int]],
                     actions: list[tuple[str, str, str, str, str, int]],
                     rooms: list[tuple[str, str]] | None = None) -> None:
        async with self.pool.acquire() as c, c.transaction():
            if activity:
                await c.copy_records_to_table("room_activity", records=activity,
                                              columns=["room", "user_id", "kind", "n", "ts"])
            if presence:
                await c.executemany("INSERT INTO room_presence VALUES ($1, $2, $3, $4)", presence)
            if actions:
                await c.executemany(_ACTION_INSERT, actions)
            if rooms:
                await c.executemany("INSERT INTO room_shops VALUES ($1, $2) ON CONFLICT (room)"
                                    " DO UPDATE SET shop = excluded.shop", rooms)

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> dict[str, list[Any]]:
        """Everything the adapter keeps in memory, read once at start-up (column names as in
        the SQLite store, so the adapter reads both alike)."""
        q = {
            "coupons": f"SELECT {_COUPON_COLS} FROM coupons ORDER BY issued_at, id",
            "redemptions": "SELECT coupon, order_id FROM coupon_redemptions",
            "polls": "SELECT * FROM polls WHERE closed = 0",
            "votes": 'SELECT v.poll, v.user_id AS "user", v.option, v.rev FROM poll_votes v'
                     " JOIN polls p ON p.id = v.poll WHERE p.closed = 0",
            "streaks": 'SELECT DISTINCT ON (group_id, user_id) group_id, user_id AS "user", day, streak,'
                       " COUNT(*) OVER (PARTITION BY group_id, user_id) AS total"
                       " FROM checkins ORDER BY group_id, user_id, day DESC",
            "points": 'SELECT shop, user_id AS "user", balance FROM points_balance',
            "codes": 'SELECT code, shop, user_id AS "user" FROM invite_codes',
            "invites": "SELECT * FROM invites ORDER BY ts",
            "rewards": "SELECT shop, inviter, MAX(n) AS n FROM invite_rewards GROUP BY shop, inviter",
            "known": "SELECT DISTINCT g.shop, m.user_id FROM group_members m JOIN groups g ON g.id = m.group_id"
                     " UNION SELECT DISTINCT g.shop, e.user_id FROM group_exits e JOIN groups g ON g.id = e.group_id",
            "posts": 'SELECT id, shop, group_id, order_id, user_id AS "user", image_url, text, ts, status,'
                     " coupon FROM showcase_posts",
            "thresholds": "SELECT * FROM layer_thresholds",
            "targets": "SELECT * FROM sale_targets",
            "excluded": 'SELECT shop, user_id AS "user" FROM metrics_excluded',
        }
        async with self.pool.acquire() as c:
            return {k: list(await c.fetch(sql)) for k, sql in q.items()}


def post_from(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "shop": r["shop"], "group": r["group_id"], "order": r["order_id"],
            "user": r["user_id"], "image_url": r["image_url"], "text": r["text"], "ts": r["ts"],
            "status": r["status"], "coupon": r["coupon"]}
