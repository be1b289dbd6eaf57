"""Every table of Souk, in one dialect-neutral schema, and its numbered migrations.

Why one module: the embedded SQLite file and the cluster's PostgreSQL database hold the same
tables, written by the same store classes; declaring them once keeps the two from drifting.
`BIGINT`, `INTEGER` and `TEXT` mean the same in both; the few differences are rendered here
(`{serial}`: an id the database numbers; `{rowid}`: the order rows were written in, SQLite's
implicit `rowid` and a `rowid BIGSERIAL` column in PostgreSQL; `{bytes}`: BLOB / BYTEA), and so are the indexes that
only one database's planner or write load wants.

A database records the migrations applied to it (`schema_version`); `migrate` applies the
missing ones in order, each in its own transaction, under a lock that serialises the nodes
starting together (docs/storage.md says how to add one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from server.store.db import Body, Db, Dialect, Lock, Many, Q, X

TABLES: Final = (
    # commerce
    """products (id TEXT PRIMARY KEY, shop TEXT NOT NULL, title TEXT NOT NULL,
        price BIGINT NOT NULL CHECK (price > 0), currency TEXT NOT NULL,
        stock BIGINT NOT NULL CHECK (stock >= 0), image TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL)""",
    """sales (id TEXT PRIMARY KEY, room TEXT NOT NULL, product TEXT NOT NULL REFERENCES products (id),
        price BIGINT NOT NULL CHECK (price > 0), currency TEXT NOT NULL,
        stock BIGINT NOT NULL CHECK (stock > 0),
        stock_left BIGINT NOT NULL CHECK (stock_left >= 0 AND stock_left <= stock),
        per_user_limit INTEGER NOT NULL CHECK (per_user_limit > 0), starts_at BIGINT NOT NULL,
        ends_at BIGINT NOT NULL, phase TEXT NOT NULL, returned BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL)""",
    """teambuys (id TEXT PRIMARY KEY, room TEXT NOT NULL, product TEXT NOT NULL REFERENCES products (id),
        price BIGINT NOT NULL CHECK (price > 0), currency TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 2), window_s INTEGER NOT NULL CHECK (window_s > 0),
        stock BIGINT, stock_left BIGINT CHECK (stock_left IS NULL OR stock_left >= 0),
        created_at BIGINT NOT NULL)""",
    """teams (id TEXT PRIMARY KEY, offer TEXT NOT NULL REFERENCES teambuys (id), room TEXT NOT NULL,
        leader TEXT NOT NULL, size INTEGER NOT NULL, opened_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, status TEXT NOT NULL)""",
    """orders ({rowid}id TEXT PRIMARY KEY, "user" TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
        room TEXT NOT NULL, product TEXT NOT NULL, sale TEXT REFERENCES sales (id),
        offer TEXT REFERENCES teambuys (id), team TEXT REFERENCES teams (id),
        qty INTEGER NOT NULL CHECK (qty >= 1), price BIGINT NOT NULL CHECK (price > 0),
        currency TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,
        created_at BIGINT NOT NULL, CHECK ((sale IS NULL) <> (team IS NULL)))""",
    # one row per spent coupon, written in its order's transaction: spent once
    """coupon_redemptions (coupon TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL, discount BIGINT NOT NULL CHECK (discount >= 0), ts BIGINT NOT NULL)""",
    # community
    """groups (id TEXT PRIMARY KEY, shop TEXT NOT NULL, tier TEXT NOT NULL, topic TEXT NOT NULL,
        title TEXT, cap INTEGER NOT NULL CHECK (cap >= 2), created_at BIGINT NOT NULL)""",
    """group_members (group_id TEXT NOT NULL REFERENCES groups (id), user_id TEXT NOT NULL,
        name TEXT NOT NULL, role TEXT NOT NULL, joined_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id))""",
    """group_removed (group_id TEXT NOT NULL, user_id TEXT NOT NULL, removed_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id))""",
    """group_exits (group_id TEXT NOT NULL, user_id TEXT NOT NULL, joined_at BIGINT NOT NULL,
        left_at BIGINT NOT NULL, removed INTEGER NOT NULL)""",
    """member_tags (shop TEXT NOT NULL, user_id TEXT NOT NULL, bought TEXT NOT NULL,
        big_customer INTEGER NOT NULL, source TEXT, invited_by TEXT, PRIMARY KEY (shop, user_id))""",
    """group_notices (id {serial}, group_id TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,
        ts BIGINT NOT NULL)""",
    """group_messages ({rowid}id TEXT PRIMARY KEY, group_id TEXT NOT NULL, user_id TEXT NOT NULL,
        name TEXT NOT NULL, text TEXT NOT NULL, reply_to TEXT, ts BIGINT NOT NULL)""",
    "qa_rooms (room TEXT PRIMARY KEY, target_s INTEGER NOT NULL)",
    # `rev` orders a question's updates across nodes; one vote per user in question_votes
    """questions (id TEXT PRIMARY KEY, room TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        text TEXT NOT NULL, asked_at BIGINT NOT NULL, votes INTEGER NOT NULL, status TEXT NOT NULL,
        answer TEXT, answered_by TEXT, answered_at BIGINT, on_stream INTEGER NOT NULL,
        overdue_flagged INTEGER NOT NULL, rev BIGINT NOT NULL DEFAULT 0)""",
    """question_votes (question TEXT NOT NULL REFERENCES questions (id), user_id TEXT NOT NULL,
        PRIMARY KEY (question, user_id))""",
    """room_links (room TEXT NOT NULL, group_id TEXT NOT NULL, pos INTEGER NOT NULL,
        PRIMARY KEY (room, group_id))""",
    """mirrors (id TEXT PRIMARY KEY, room TEXT NOT NULL, question TEXT NOT NULL,
        group_id TEXT NOT NULL, UNIQUE (room, question, group_id))""",
    """connectors (id TEXT PRIMARY KEY, shop TEXT NOT NULL, room TEXT NOT NULL,
        platform TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL, config TEXT NOT NULL,
        created_at BIGINT NOT NULL)""",
    """dead_letters (id {serial}, connector_id TEXT NOT NULL, room TEXT NOT NULL, item TEXT NOT NULL,
        error TEXT NOT NULL, attempts INTEGER NOT NULL, ts BIGINT NOT NULL)""",
    # engagement: coupons, polls, check-ins and points, invites, posts, layers
    """coupons (id TEXT PRIMARY KEY, shop TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL,
        value BIGINT NOT NULL, min_spend BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        title TEXT NOT NULL, issued_at BIGINT NOT NULL, source TEXT NOT NULL)""",
    """polls (id TEXT PRIMARY KEY, shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL,
        question TEXT NOT NULL, options TEXT NOT NULL, created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL, closes_at BIGINT, closed INTEGER NOT NULL DEFAULT 0)""",
    # `rev` (sequence poll_vote_rev) orders a user's votes across nodes
    """poll_votes (poll TEXT NOT NULL, user_id TEXT NOT NULL, option INTEGER NOT NULL,
        ts BIGINT NOT NULL, rev BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (poll, user_id))""",
    """checkins (shop TEXT NOT NULL, group_id TEXT NOT NULL, user_id TEXT NOT NULL,
        day INTEGER NOT NULL, streak INTEGER NOT NULL, points INTEGER NOT NULL, ts BIGINT NOT NULL,
        PRIMARY KEY (group_id, user_id, day))""",
    """points_log (id {serial}, shop TEXT NOT NULL, user_id TEXT NOT NULL, delta INTEGER NOT NULL,
        reason TEXT NOT NULL, ts BIGINT NOT NULL)""",
    """points_balance (shop TEXT NOT NULL, user_id TEXT NOT NULL,
        balance BIGINT NOT NULL CHECK (balance >= 0), PRIMARY KEY (shop, user_id))""",
    """invite_codes (code TEXT PRIMARY KEY, shop TEXT NOT NULL, user_id TEXT NOT NULL,
        UNIQUE (shop, user_id))""",
    """invites (shop TEXT NOT NULL, invitee TEXT NOT NULL, inviter TEXT NOT NULL,
        group_id TEXT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (shop, invitee))""",
    """invite_rewards (shop TEXT NOT NULL, inviter TEXT NOT NULL, n INTEGER NOT NULL,
        coupon TEXT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (shop, inviter, n))""",
    """showcase_posts (id TEXT PRIMARY KEY, shop TEXT NOT NULL, group_id TEXT NOT NULL,
        order_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, image_url TEXT NOT NULL,
        text TEXT NOT NULL, ts BIGINT NOT NULL, status TEXT NOT NULL, coupon TEXT)""",
    """sale_targets (sale TEXT PRIMARY KEY, shop TEXT NOT NULL, layer TEXT NOT NULL,
        ts BIGINT NOT NULL)""",
    "layer_thresholds (shop TEXT PRIMARY KEY, data TEXT NOT NULL)",
    "metrics_excluded (shop TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (shop, user_id))",
    # the activity behind the merchant's numbers (every node writes its own rows)
    """room_activity (room TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL,
        n INTEGER NOT NULL, ts BIGINT NOT NULL)""",
    """room_presence (room TEXT NOT NULL, ts BIGINT NOT NULL, viewers INTEGER NOT NULL,
        interval_ms INTEGER NOT NULL)""",
    """merchant_actions (shop TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL,
        kind TEXT NOT NULL, detail TEXT NOT NULL, ts BIGINT NOT NULL)""",
    # rooms and their bans and mutes
    """rooms (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '',
        shop TEXT NOT NULL DEFAULT 'default', state TEXT NOT NULL DEFAULT 'idle', pinned TEXT)""",
    """sanctions (ch TEXT NOT NULL, user_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('ban', 'mute')), until BIGINT, by_user TEXT NOT NULL,
        at BIGINT NOT NULL, PRIMARY KEY (ch, user_id, kind))""",
)

# name: (table and columns, only on this database or None). The rush writes orders: SQLite's
# have the indexes its queries read from (covering the numbers' aggregates), PostgreSQL's its own.
INDEXES: Final[dict[str, tuple[str, Dialect | None]]] = {
    "products_shop": ("products (shop)", None),
    "sales_room": ("sales (room)", None),
    "teambuys_room": ("teambuys (room)", None),
    "teams_offer": ("teams (offer, status)", None),
    "orders_sale_key": ('orders ("user", sale, key) WHERE sale IS NOT NULL', None),
    "orders_offer_key": ('orders ("user", offer, key) WHERE offer IS NOT NULL', None),
    "orders_user": ('orders ("user", created_at)', None),
    "orders_team": ("orders (team)", None),
    "orders_room": ("orders (room, status)", "sqlite"),
    "orders_created": ("orders (created_at)", "sqlite"),
    "orders_metrics": ('orders (room, status, "user", qty, price, product, sale, offer, team)',
                       "sqlite"),
    "orders_sale": ("orders (sale)", "postgres"),
    "orders_room_metrics": ('orders (room, status, "user", qty, price, sale, offer, team)',
                            "postgres"),
    "orders_product_metrics": ('orders (product, status, "user", created_at)', "postgres"),
    "groups_family": ("groups (shop, tier, lower(topic))", None),
    "group_members_by_user": ("group_members (user_id)", None),
    "group_exits_by_group": ("group_exits (group_id, left_at)", None),
    "group_notices_by_group": ("group_notices (group_id, ts)", None),
    "group_messages_by_group": ("group_messages (group_id, ts)", None),
    "group_messages_by_user": ("group_messages (user_id, ts)", None),
    "group_messages_metrics": ("group_messages (group_id, ts, user_id, reply_to)", None),
    "questions_by_room": ("questions (room, asked_at)", None),
    "questions_by_answerer": ("questions (answered_by, answered_at)", None),
    "mirrors_by_group": ("mirrors (group_id)", None),
    "coupons_user": ("coupons (user_id)", None),
    "coupons_shop": ("coupons (shop, issued_at)", None),
    "polls_target": ("polls (scope, target, created_at)", None),
    "poll_votes_user": ("poll_votes (user_id, ts)", None),
    "checkins_shop": ("checkins (shop, ts)", None),
    "checkins_user": ("checkins (user_id, ts)", None),
    "points_log_user": ("points_log (shop, user_id)", None),
    "invites_inviter": ("invites (shop, inviter)", None),
    "room_activity_room": ("room_activity (room, kind, user_id, n)", None),
    "room_presence_room": ("room_presence (room, ts)", None),
    "merchant_actions_target": ("merchant_actions (scope, target, ts)", None),
}

_UNIQUE: Final = frozenset({"orders_sale_key", "orders_offer_key"})  # one order per key
_TYPES: Final[dict[Dialect, dict[str, str]]] = {
    "sqlite": {"{serial}": "INTEGER PRIMARY KEY AUTOINCREMENT", "{rowid}": "", "{bytes}": "BLOB"},
    "postgres": {"{serial}": "BIGSERIAL PRIMARY KEY", "{rowid}": "rowid BIGSERIAL, ", "{bytes}": "BYTEA"},
}


def render(sql: str, dialect: Dialect) -> str:
    """Neutral DDL in the dialect's words."""
    for token, words in _TYPES[dialect].items():
        sql = sql.replace(token, words)
    return sql


Change = str | Callable[[Dialect], Body[None]]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: statements (neutral DDL, see `render`) or a body that needs
    to look before it changes (e.g. a column made by an older release)."""

    version: int
    name: str
    changes: tuple[Change, ...]


def _columns(dialect: Dialect, table: str) -> Body[set[str]]:
    if dialect == "sqlite":
        rows = yield Q("SELECT name FROM pragma_table_info(?)", table)
    else:
        rows = yield Q("SELECT column_name AS name FROM information_schema.columns"
                       " WHERE table_schema = current_schema() AND table_name = ?", table)
    return {r["name"] for r in rows}


# the first release named a user `user` in these tables of its SQLite file (`user_id` in
# PostgreSQL); orders keep `"user"` in both
_SQLITE_USER_COLUMNS: Final = ("coupons", "poll_votes", "checkins", "points_log", "invite_codes",
                               "showcase_posts", "metrics_excluded", "room_activity",
                               "coupon_redemptions")


def _adopt_first_release(dialect: Dialect) -> Body[None]:
    """Bring the tables the first release made (it had no versions) to this schema's shape,
    before the missing tables are created. Finds nothing to do in a new database."""
    if dialect == "sqlite":
        for table in _SQLITE_USER_COLUMNS:
            if "user" in (yield from _columns(dialect, table)):
                yield X(f"ALTER TABLE {table} RENAME COLUMN user TO user_id")
        if (cols := (yield from _columns(dialect, "poll_votes"))) and "rev" not in cols:
            yield X("ALTER TABLE poll_votes ADD COLUMN rev BIGINT NOT NULL DEFAULT 0")
        if (cols := (yield from _columns(dialect, "questions"))) and "rev" not in cols:
            yield X("ALTER TABLE questions ADD COLUMN rev BIGINT NOT NULL DEFAULT 0")
    else:
        for table in ("orders", "group_messages"):
            if "n" in (yield from _columns(dialect, table)):
                yield X(f"ALTER TABLE {table} RENAME COLUMN n TO rowid")


def _create_tables(dialect: Dialect) -> Body[None]:
    for table in TABLES:
        yield X("CREATE TABLE IF NOT EXISTS " + render(table, dialect))
    for name, (on, only) in INDEXES.items():
        if only in (None, dialect):
            unique = "UNIQUE " if name in _UNIQUE else ""
            yield X(f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {on}")
    if dialect == "sqlite":
        yield X("CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    else:
        yield X("CREATE SEQUENCE IF NOT EXISTS poll_vote_rev")


def _fill_first_release(dialect: Dialect) -> Body[None]:
    """What the first release kept elsewhere: in SQLite a question's voters as JSON in its row
    and a balance as the sum of the points log; in PostgreSQL a room's shop in `room_shops`."""
    if dialect == "sqlite":
        if "voters" in (yield from _columns(dialect, "questions")):
            yield X("INSERT INTO question_votes (question, user_id) SELECT q.id, v.value"
                    " FROM questions q, json_each(q.voters) v WHERE true ON CONFLICT DO NOTHING")
            yield X("ALTER TABLE questions DROP COLUMN voters")
        yield X("INSERT INTO points_balance (shop, user_id, balance) SELECT shop, user_id,"
                " MAX(SUM(delta), 0) FROM points_log GROUP BY shop, user_id")
    elif (yield from _columns(dialect, "room_shops")):
        yield X("INSERT INTO rooms (id, shop) SELECT room, shop FROM room_shops"
                " ON CONFLICT (id) DO NOTHING")
        yield X("DROP TABLE room_shops")


# lucky draws: a winner's prize is an order of kind `prize` (price 0, naming its draw, no sale
# or team), which the first release's CHECKs on `orders` refuse; one prize per user and draw
_ORDERS_WITH_PRIZES: Final = """orders_next ({rowid}id TEXT PRIMARY KEY, "user" TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', room TEXT NOT NULL, product TEXT NOT NULL,
    sale TEXT REFERENCES sales (id), offer TEXT REFERENCES teambuys (id),
    team TEXT REFERENCES teams (id), qty INTEGER NOT NULL CHECK (qty >= 1),
    price BIGINT NOT NULL, currency TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,
    created_at BIGINT NOT NULL, draw TEXT, CONSTRAINT orders_kind CHECK ({kind}))"""
_ORDER_KIND: Final = ("CASE WHEN draw IS NULL THEN price > 0 AND (sale IS NULL) <> (team IS NULL)"
                      " ELSE price = 0 AND sale IS NULL AND team IS NULL END")
_ORDER_COLUMNS: Final = ('id, "user", name, room, product, sale, offer, team, qty, price,'
                         " currency, key, status, created_at")


def _orders_take_prizes(dialect: Dialect) -> Body[None]:
    """SQLite cannot change a table's CHECK: the table is rebuilt (rows, their `rowid` order
    and the indexes kept); PostgreSQL drops the two CHECKs by what they say and adds one."""
    if dialect == "sqlite":
        yield X("CREATE TABLE " + render(_ORDERS_WITH_PRIZES, dialect).replace("{kind}", _ORDER_KIND))
        yield X(f"INSERT INTO orders_next (rowid, {_ORDER_COLUMNS})"
                f" SELECT rowid, {_ORDER_COLUMNS} FROM orders")
        yield X("DROP TABLE orders")
        yield X("ALTER TABLE orders_next RENAME TO orders")
        for name, (on, only) in INDEXES.items():
            if on.startswith("orders (") and only in (None, dialect):
                unique = "UNIQUE " if name in _UNIQUE else ""
                yield X(f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {on}")
    else:
        yield X("ALTER TABLE orders ADD COLUMN draw TEXT")
        checks = yield Q("SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
                         " WHERE conrelid = 'orders'::regclass AND contype = 'c'")
        for r in checks:
            if "price" in r["def"] or "team IS NULL" in r["def"]:
                yield X(f'ALTER TABLE orders DROP CONSTRAINT "{r["conname"]}"')
        yield X(f"ALTER TABLE orders ADD CONSTRAINT orders_kind CHECK ({_ORDER_KIND})")
    yield X('CREATE UNIQUE INDEX orders_draw_user ON orders (draw, "user") WHERE draw IS NOT NULL')


# sanctions become a log (a ban and its lifting, each with who and when); `id` orders them
_SANCTIONS_LOG: Final = """sanctions_next (id {serial}, ch TEXT NOT NULL, user_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ban', 'mute', 'unban', 'unmute')), until BIGINT,
    by_user TEXT NOT NULL, at BIGINT NOT NULL)"""


def _sanctions_log(dialect: Dialect) -> Body[None]:
    """Both databases rebuild the table (a CHECK and a key change): rows kept in `at` order."""
    yield X("CREATE TABLE " + render(_SANCTIONS_LOG, dialect))
    yield X("INSERT INTO sanctions_next (ch, user_id, kind, until, by_user, at)"
            " SELECT ch, user_id, kind, until, by_user, at FROM sanctions ORDER BY at")
    yield X("DROP TABLE sanctions")
    yield X("ALTER TABLE sanctions_next RENAME TO sanctions")
    yield X("CREATE INDEX sanctions_ch ON sanctions (ch, id)")


MIGRATIONS: Final = (
    Migration(1, "the first release's tables, and the databases it made",
              (_adopt_first_release, _create_tables, _fill_first_release)),
    Migration(2, "lucky draws, their entries, and prize orders", (
        """CREATE TABLE draws (id TEXT PRIMARY KEY, shop TEXT NOT NULL, scope TEXT NOT NULL,
            target TEXT NOT NULL, title TEXT NOT NULL, prize TEXT NOT NULL,
            winners INTEGER NOT NULL CHECK (winners >= 1), condition TEXT NOT NULL,
            created_by TEXT NOT NULL, created_at BIGINT NOT NULL, ends_at BIGINT NOT NULL,
            seed TEXT NOT NULL, commitment TEXT NOT NULL, phase TEXT NOT NULL,
            entrants INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,
            closed_at BIGINT, digest TEXT, viewers_at_close INTEGER NOT NULL DEFAULT 0,
            closer TEXT, claimed_at BIGINT, beacon TEXT, result TEXT, settled_at BIGINT,
            announced INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX draws_target ON draws (scope, target, created_at)",
        "CREATE INDEX draws_phase ON draws (phase, announced)",
        """CREATE TABLE draw_entries (draw TEXT NOT NULL REFERENCES draws (id),
            user_id TEXT NOT NULL, name TEXT NOT NULL, via TEXT NOT NULL, ts BIGINT NOT NULL,
            PRIMARY KEY (draw, user_id))""",
        "CREATE INDEX draw_entries_user ON draw_entries (user_id, draw)",
        _orders_take_prizes,
    )),
    Migration(3, "sanctions kept as a log with their liftings; the rooms' staff", (
        _sanctions_log,
        """CREATE TABLE room_staff (ch TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
            at BIGINT NOT NULL, PRIMARY KEY (ch, user_id))""",
    )),
    Migration(4, "room chat and like totals kept across restarts", (
        # `seq` orders the messages as written; (ch, user_id, cid) finds a resend's first copy
        """CREATE TABLE room_chat (seq {serial}, ch TEXT NOT NULL, id TEXT NOT NULL,
            user_id TEXT NOT NULL, cid TEXT, body TEXT NOT NULL, at BIGINT NOT NULL,
            UNIQUE (ch, id))""",
        "CREATE UNIQUE INDEX room_chat_cid ON room_chat (ch, user_id, cid) WHERE cid IS NOT NULL",
        "CREATE INDEX room_chat_recent ON room_chat (ch, at)",
        "CREATE TABLE room_likes (ch TEXT PRIMARY KEY, total BIGINT NOT NULL)",
        # a notice as the group heard it (title, price, sale...), for a late member's snapshot
        "ALTER TABLE group_notices ADD COLUMN fields TEXT",
    )),
    Migration(5, "stream replays: recordings, their chapters, the rooms that record", (
        """CREATE TABLE replays (id TEXT PRIMARY KEY, room TEXT NOT NULL, file TEXT NOT NULL,
            started_at BIGINT NOT NULL, ended_at BIGINT, duration_ms BIGINT NOT NULL DEFAULT 0,
            size BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL, reason TEXT)""",
        "CREATE INDEX replays_room ON replays (room, started_at)",
        """CREATE TABLE replay_chapters (replay TEXT NOT NULL REFERENCES replays (id),
            at_ms BIGINT NOT NULL, kind TEXT NOT NULL, product TEXT NOT NULL,
            title TEXT NOT NULL, image TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX replay_chapters_replay ON replay_chapters (replay, at_ms)",
        "CREATE TABLE replay_rooms (room TEXT PRIMARY KEY, record INTEGER NOT NULL)",
    )),
    Migration(6, "a sanction keeps the name of whom it names (staff list them by name)", (
        "ALTER TABLE sanctions ADD COLUMN name TEXT NOT NULL DEFAULT ''",
    )),
    Migration(7, "uploaded product pictures in the database, which every node of a cluster reads", (
        "CREATE TABLE images (name TEXT PRIMARY KEY, body {bytes} NOT NULL, at BIGINT NOT NULL)",
    )),
)


def _apply(dialect: Dialect, m: Migration) -> Body[bool]:
    yield Lock("souk:schema")  # nodes starting together: one migrates, the others then skip
    yield X("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
    if (yield Q("SELECT 1 FROM schema_version WHERE version = ?", m.version)):
        return False
    for change in m.changes:
        if isinstance(change, str):
            yield X(render(change, dialect))
        else:
            yield from change(dialect)
    yield X("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            m.version, m.name, time.time_ns() // 1_000_000)
    return True


async def migrate(db: Db, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations this database lacks, in order; returns the versions applied."""
    done: list[int] = []
    for m in sorted(migrations, key=lambda m: m.version):
        if await db.write(functools.partial(_apply, db.dialect, m)):
            done.append(m.version)
    return done


async def version(db: Db) -> int:
    """The highest migration applied (0: none)."""
    rows = await db.rows("SELECT MAX(version) AS v FROM schema_version")
    return int(rows[0]["v"] or 0)


async def move_node_rooms(db: Db, path: Path) -> int:
    """The first release kept a cluster's rooms in each node's SQLite file: copy this node's
    into the shared database (a row another node filled in first stays), once per file (a
    table in the file marks it; the file is otherwise left as it was). Returns the rooms
    copied."""

    def read() -> list[tuple[Any, ...]]:
        if not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(path)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "rooms" not in tables or _MOVED in tables:
                return []
            return conn.execute("SELECT id, title, shop, state, pinned FROM rooms").fetchall()

    def done() -> None:
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_MOVED} (at INTEGER NOT NULL)")
            conn.execute(f"INSERT INTO {_MOVED} (at) VALUES (?)", (time.time_ns() // 1_000_000,))

    rows = await asyncio.to_thread(read)
    if not rows:
        return 0

    def body() -> Body[None]:
        yield Many("INSERT INTO rooms (id, title, shop, state, pinned) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (id) DO UPDATE SET title = excluded.title, state = excluded.state,"
                   " pinned = excluded.pinned WHERE rooms.title = ''", rows)

    await db.write(body)
    await asyncio.to_thread(done)
    return len(rows)


_MOVED: Final = "rooms_moved_to_postgres"
