"""Community operations on SQLite: coupons, polls and votes, check-ins and points, invites,
show-your-order posts, layer thresholds, and the activity the merchant's numbers come from.

Why the same file as commerce and community: layers and metrics join orders, group messages
and questions with these tables in one query; and one writer thread with group commit keeps
every write here as durable as an order. Unique keys are the durable guards behind the
in-memory rules: one vote row per (poll, user), one check-in per (group, user, day), one
invitee per shop, one reward per (inviter, threshold), one post and one reward per order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import orjson

from server.domain.coupons import Coupon
from server.domain.polls import Poll
from server.store.sqlite import SqliteDatabase

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS coupons (
    id TEXT PRIMARY KEY, shop TEXT NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
    value INTEGER NOT NULL, min_spend INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    title TEXT NOT NULL, issued_at INTEGER NOT NULL, source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS coupons_user ON coupons (user);
CREATE INDEX IF NOT EXISTS coupons_shop ON coupons (shop, issued_at);
CREATE TABLE IF NOT EXISTS polls (
    id TEXT PRIMARY KEY, shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL,
    question TEXT NOT NULL, options TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL, closes_at INTEGER, closed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS polls_target ON polls (scope, target, created_at);
CREATE TABLE IF NOT EXISTS poll_votes (
    poll TEXT NOT NULL, user TEXT NOT NULL, option INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (poll, user)
);
CREATE INDEX IF NOT EXISTS poll_votes_user ON poll_votes (user, ts);
CREATE TABLE IF NOT EXISTS checkins (
    shop TEXT NOT NULL, group_id TEXT NOT NULL, user TEXT NOT NULL, day INTEGER NOT NULL,
    streak INTEGER NOT NULL, points INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (group_id, user, day)
);
CREATE INDEX IF NOT EXISTS checkins_shop ON checkins (shop, ts);
CREATE TABLE IF NOT EXISTS points_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, shop TEXT NOT NULL, user TEXT NOT NULL,
    delta INTEGER NOT NULL, reason TEXT NOT NULL, ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS points_log_user ON points_log (shop, user);
CREATE TABLE IF NOT EXISTS invite_codes (
    code TEXT PRIMARY KEY, shop TEXT NOT NULL, user TEXT NOT NULL, UNIQUE (shop, user)
);
CREATE TABLE IF NOT EXISTS invites (
    shop TEXT NOT NULL, invitee TEXT NOT NULL, inviter TEXT NOT NULL, group_id TEXT NOT NULL,
    ts INTEGER NOT NULL, PRIMARY KEY (shop, invitee)
);
CREATE INDEX IF NOT EXISTS invites_inviter ON invites (shop, inviter);
CREATE TABLE IF NOT EXISTS invite_rewards (
    shop TEXT NOT NULL, inviter TEXT NOT NULL, n INTEGER NOT NULL, coupon TEXT NOT NULL,
    ts INTEGER NOT NULL, PRIMARY KEY (shop, inviter, n)
);
CREATE TABLE IF NOT EXISTS showcase_posts (
    id TEXT PRIMARY KEY, shop TEXT NOT NULL, group_id TEXT NOT NULL,
    order_id TEXT NOT NULL UNIQUE, user TEXT NOT NULL, image_url TEXT NOT NULL,
    text TEXT NOT NULL, ts INTEGER NOT NULL, status TEXT NOT NULL, coupon TEXT
);
CREATE TABLE IF NOT EXISTS sale_targets (
    sale TEXT PRIMARY KEY, shop TEXT NOT NULL, layer TEXT NOT NULL, ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_thresholds (shop TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics_excluded (
    shop TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (shop, user)
);
CREATE TABLE IF NOT EXISTS room_activity (
    room TEXT NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS room_activity_room ON room_activity (room, kind, user, n);
CREATE TABLE IF NOT EXISTS room_presence (
    room TEXT NOT NULL, ts INTEGER NOT NULL, viewers INTEGER NOT NULL, interval_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS room_presence_room ON room_presence (room, ts);
CREATE TABLE IF NOT EXISTS merchant_actions (
    shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS merchant_actions_target ON merchant_actions (scope, target, ts);
"""

# indexes on community tables: created after the community schema exists (Operations.start)
LATE_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS group_messages_by_user ON group_messages (user_id, ts)",
    "CREATE INDEX IF NOT EXISTS group_exits_by_group ON group_exits (group_id, left_at)",
    "CREATE INDEX IF NOT EXISTS orders_created ON orders (created_at)",
    "CREATE INDEX IF NOT EXISTS questions_by_answerer ON questions (answered_by, answered_at)",
    "CREATE INDEX IF NOT EXISTS checkins_user ON checkins (user, ts)",
    # covering indexes: the dashboard's aggregates read the index only, never the table
    "CREATE INDEX IF NOT EXISTS group_messages_metrics ON group_messages (group_id, ts, user_id, reply_to)",
    "CREATE INDEX IF NOT EXISTS orders_metrics ON orders (room, status, user, qty, price, product, sale, offer, team)",
)


def coupon_row(c: Coupon) -> tuple[Any, ...]:
    s = c.spec
    return (c.id, c.shop, c.user, s.kind, s.value, s.min_spend, s.expires_at, s.title,
            c.issued_at, c.source)  # fmt: skip


def insert_coupons(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    conn.executemany("INSERT INTO coupons VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(rows))


class OpConflict(Exception):
    """A guard in the store refused a write another writer (node) got in first: a second
    check-in the same day, points already spent, a post already shown or approved, a
    closed poll. The adapter answers `conflict`."""

    def __init__(self, message: str, balance: int | None = None) -> None:
        super().__init__(message)
        self.balance = balance


class OperationsStore(Protocol):
    """What `server.operations.Operations` needs of a store: the SQLite one below (one
    process) and `server.store.operations_pg.PgOperationsStore` (a cluster)."""

    async def late_indexes(self) -> None: ...
    async def add_coupons(self, coupons: list[Coupon], action: tuple[Any, ...] | None = None) -> None: ...
    async def add_poll(self, p: Poll) -> None: ...
    async def vote(self, poll: str, user: str, option: int, ts: int) -> int: ...
    async def close_poll(self, poll: str, closes_at: int | None) -> bool: ...
    async def checkin(self, shop: str, group: str, user: str, day: int, streak: int,
                      points: int, ts: int) -> int | None: ...
    async def redeem(self, shop: str, user: str, points: int, coupon: Coupon) -> int | None: ...
    async def add_code(self, code: str, shop: str, user: str) -> str: ...
    async def add_invite(self, shop: str, invitee: str, inviter: str, group: str, ts: int,
                         rewards: list[tuple[int, Coupon]]) -> None: ...
    async def add_post(self, post: dict[str, Any]) -> None: ...
    async def approve_post(self, post_id: str, coupon: Coupon) -> None: ...
    async def target_sale(self, sale: str, shop: str, layer: str, ts: int) -> None: ...
    async def save_thresholds(self, shop: str, data: dict[str, int]) -> None: ...
    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> None: ...
    async def record(self, activity: list[tuple[str, str, str, int, int]],
                     presence: list[tuple[str, int, int, int]],
                     actions: list[tuple[str, str, str, str, str, int]],
                     rooms: list[tuple[str, str]] | None = None) -> None: ...
    async def load(self) -> Mapping[str, list[Any]]: ...


class SqliteOperationsStore:
    """Durable writes and start-up loads for `server.operations.Operations` (one process)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.add_schema(SCHEMA)

    async def late_indexes(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for sql in LATE_INDEXES:
                table = sql.split(" ON ", 1)[1].split(" ", 1)[0]
                if table in tables:  # orders live in PostgreSQL in cluster mode
                    conn.execute(sql)

        await self.db.write(run)

    # -- coupons ---------------------------------------------------------------------------
    async def add_coupons(self, coupons: list[Coupon], action: tuple[Any, ...] | None = None) -> None:
        rows = [coupon_row(c) for c in coupons]

        def run(conn: sqlite3.Connection) -> None:
            insert_coupons(conn, rows)
            if action is not None:
                conn.execute("INSERT INTO merchant_actions VALUES (?, ?, ?, ?, ?, ?)", action)

        await self.db.write(run)

    # -- polls -----------------------------------------------------------------------------
    async def add_poll(self, p: Poll) -> None:
        row = (p.id, p.shop, p.scope, p.target, p.question, orjson.dumps(p.options).decode(),
               p.created_by, p.created_at, p.closes_at, 0)  # fmt: skip
        action = (p.shop, p.scope, p.target, "poll", p.question[:100], p.created_at)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO polls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            conn.execute("INSERT INTO merchant_actions VALUES (?, ?, ?, ?, ?, ?)", action)

        await self.db.write(run)

    async def vote(self, poll: str, user: str, option: int, ts: int) -> int:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO poll_votes VALUES (?, ?, ?, ?) ON CONFLICT (poll, user)"
                " DO UPDATE SET option = excluded.option, ts = excluded.ts",
                (poll, user, option, ts),
            )

        await self.db.write(run)
        return 0  # one process: its memory orders the votes

    async def close_poll(self, poll: str, closes_at: int | None) -> bool:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE polls SET closed = 1, closes_at = ? WHERE id = ?", (closes_at, poll))

        await self.db.write(run)
        return True  # one process: its memory closed the poll once

    # -- check-ins and points --------------------------------------------------------------
    async def checkin(self, shop: str, group: str, user: str, day: int, streak: int,
                      points: int, ts: int) -> int | None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO checkins VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (shop, group, user, day, streak, points, ts))
            conn.execute("INSERT INTO points_log (shop, user, delta, reason, ts) VALUES (?, ?, ?, ?, ?)",
                         (shop, user, points, f"checkin:{group}", ts))

        await self.db.write(run)
        return None  # the balance is the adapter's memory

    async def redeem(self, shop: str, user: str, points: int, coupon: Coupon) -> int | None:
        row = coupon_row(coupon)

        def run(conn: sqlite3.Connection) -> None:
            insert_coupons(conn, [row])
            conn.execute("INSERT INTO points_log (shop, user, delta, reason, ts) VALUES (?, ?, ?, ?, ?)",
                         (shop, user, -points, f"redeem:{row[0]}", row[8]))

        await self.db.write(run)
        return None

    # -- invites ---------------------------------------------------------------------------
    async def add_code(self, code: str, shop: str, user: str) -> str:
        """Store a code; returns the code the user already had if any (one per shop)."""

        def run(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO invite_codes VALUES (?, ?, ?)", (code, shop, user))
            r = conn.execute("SELECT code FROM invite_codes WHERE shop = ? AND user = ?",
                             (shop, user)).fetchone()
            return str(r["code"])

        return await self.db.write(run)

    async def add_invite(self, shop: str, invitee: str, inviter: str, group: str, ts: int,
                         rewards: list[tuple[int, Coupon]]) -> None:
        rows = [coupon_row(c) for _, c in rewards]
        marks = [(shop, inviter, n, c.id, ts) for n, c in rewards]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO invites VALUES (?, ?, ?, ?, ?)", (shop, invitee, inviter, group, ts))
            insert_coupons(conn, rows)
            conn.executemany("INSERT INTO invite_rewards VALUES (?, ?, ?, ?, ?)", marks)

        await self.db.write(run)

    # -- show-your-order -------------------------------------------------------------------
    async def add_post(self, post: dict[str, Any]) -> None:
        p = post
        row = (p["id"], p["shop"], p["group"], p["order"], p["user"], p["image_url"], p["text"],
               p["ts"], p["status"], None)  # fmt: skip

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO showcase_posts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self.db.write(run)

    async def approve_post(self, post_id: str, coupon: Coupon) -> None:
        row = coupon_row(coupon)

        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE showcase_posts SET status = 'approved', coupon = ? WHERE id = ? AND status = 'pending'",
                (row[0], post_id))
            if cur.rowcount != 1:
                raise sqlite3.IntegrityError(f"post {post_id} is not pending")
            insert_coupons(conn, [row])

        await self.db.write(run)

    async def target_sale(self, sale: str, shop: str, layer: str, ts: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO sale_targets VALUES (?, ?, ?, ?) ON CONFLICT (sale)"
                         " DO UPDATE SET layer = excluded.layer, ts = excluded.ts", (sale, shop, layer, ts))
            conn.execute("INSERT INTO merchant_actions VALUES (?, 'sale', ?, 'target', ?, ?)", (shop, sale, layer, ts))

        await self.db.write(run)

    # -- settings --------------------------------------------------------------------------
    async def save_thresholds(self, shop: str, data: dict[str, int]) -> None:
        blob = orjson.dumps(data).decode()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO layer_thresholds VALUES (?, ?) ON CONFLICT (shop)"
                         " DO UPDATE SET data = excluded.data", (shop, blob))

        await self.db.write(run)

    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO metrics_excluded VALUES (?, ?)", [(shop, u) for u in add])
            conn.executemany("DELETE FROM metrics_excluded WHERE shop = ? AND user = ?",
                             [(shop, u) for u in remove])

        await self.db.write(run)

    # -- activity log ----------------------------------------------------------------------
    async def record(self, activity: list[tuple[str, str, str, int, int]],
                     presence: list[tuple[str, int, int, int]],
                     actions: list[tuple[str, str, str, str, str, int]],
                     rooms: list[tuple[str, str]] | None = None) -> None:
        """`rooms` (room, shop) is for the cluster store; here the rooms table has it."""

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO room_activity VALUES (?, ?, ?, ?, ?)", activity)
            conn.executemany("INSERT INTO room_presence VALUES (?, ?, ?, ?)", presence)
            conn.executemany("INSERT INTO merchant_actions VALUES (?, ?, ?, ?, ?, ?)", actions)

        await self.db.write(run)

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> dict[str, list[sqlite3.Row]]:
        """Everything the adapter keeps in memory, read once at start-up."""

        def run(c: sqlite3.Connection) -> dict[str, list[sqlite3.Row]]:
            q = {
                "coupons": "SELECT * FROM coupons ORDER BY issued_at, id",
                "redemptions": "SELECT coupon, order_id FROM coupon_redemptions",
                "polls": "SELECT * FROM polls WHERE closed = 0",
                "votes": "SELECT v.* FROM poll_votes v JOIN polls p ON p.id = v.poll WHERE p.closed = 0",
                "streaks": "SELECT c.group_id, c.user, c.day, c.streak,"
                           " (SELECT COUNT(*) FROM checkins d WHERE d.group_id = c.group_id AND d.user = c.user) AS total"
                           " FROM checkins c WHERE c.day = (SELECT MAX(day) FROM checkins e"
                           " WHERE e.group_id = c.group_id AND e.user = c.user)",
                "points": "SELECT shop, user, SUM(delta) AS balance FROM points_log GROUP BY shop, user",
                "codes": "SELECT * FROM invite_codes",
                "invites": "SELECT * FROM invites ORDER BY ts",
                "rewards": "SELECT shop, inviter, MAX(n) AS n FROM invite_rewards GROUP BY shop, inviter",
                "known": "SELECT DISTINCT g.shop, m.user_id FROM group_members m JOIN groups g ON g.id = m.group_id"
                         " UNION SELECT DISTINCT g.shop, e.user_id FROM group_exits e JOIN groups g ON g.id = e.group_id",
                "posts": "SELECT * FROM showcase_posts",
                "thresholds": "SELECT * FROM layer_thresholds",
                "targets": "SELECT * FROM sale_targets",
                "excluded": "SELECT * FROM metrics_excluded",
            }
            return {k: c.execute(sql).fetchall() for k, sql in q.items()}

        return self.db.read_sync(run)  # start-up only: before the first client
