"""The dashboard's three queries on the cluster's PostgreSQL, on a big shop.

    PYTHONPATH=. python bench/bench_dashboard_pg.py [runs]

The same data sizes as bench/bench_dashboard.py (SQLite): 1,000,000 group messages,
100,000 orders, 200,000 activity rows, 20,000 questions, 20,000 members; built with
generate_series in a private database (dropped at the end), then `SqlInsightsStore`'s room,
group and shop numbers timed. Goal, as on SQLite: p99 < 200 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

import asyncpg

from server.store.insights import SqlInsightsStore
from server.store.stores import open_db

PG = "postgresql://postgres@127.0.0.1:5432"
NOW = 1_764_000_000_000

FILL = (
    "INSERT INTO products SELECT 'p' || i, 'shop', 'P' || i, 1000, 'CNY', 1000000, '', 0"
    " FROM generate_series(0::bigint, 99) i",
    "INSERT INTO sales SELECT 's' || i, 'r' || (i % 10), 'p' || i, 1000, 'CNY', 1000000, 900000, 100,"
    " 0, 1, 'live', 0, 0 FROM generate_series(0::bigint, 49) i",
    'INSERT INTO orders (id, "user", name, room, product, sale, qty, price, currency, key, status,'
    " created_at) SELECT 'o' || i, 'u' || (i % 20000), '', 'r' || (i % 50 % 10), 'p' || (i % 50),"
    " 's' || (i % 50), 1, 1000, 'CNY', 'k' || i, 'confirmed', $1::bigint - i * 1000"
    " FROM generate_series(0::bigint, 99999) i",
    "INSERT INTO groups SELECT 'g' || i, 'shop', 'normal', 't' || i, NULL, 5000, 0 FROM generate_series(0::bigint, 9) i",
    "INSERT INTO group_members SELECT 'g' || (i % 10), 'u' || i, 'U', 'member', $1::bigint - i * 60000"
    " FROM generate_series(0::bigint, 19999) i",
    "INSERT INTO group_messages (id, group_id, user_id, name, text, reply_to, ts) SELECT 'm' || i,"
    " 'g' || (i % 10), 'u' || (i % 20000), 'U', 'hello', CASE WHEN i % 7 = 0 THEN 'm1' END,"
    " $1::bigint - i * 3000 FROM generate_series(0::bigint, 999999) i",
    "INSERT INTO questions SELECT 'q' || i, 'r0', 'u' || (i % 20000), 'U', 'q?', $1::bigint - i * 10000, 0,"
    " CASE WHEN i % 2 = 0 THEN 'answered' ELSE 'open' END, NULL, NULL,"
    " CASE WHEN i % 2 = 0 THEN $1::bigint - i * 10000 + 60000 END, 0, 0, 0 FROM generate_series(0::bigint, 19999) i",
    "INSERT INTO room_activity SELECT 'r0', 'u' || (i % 20000), CASE i % 3 WHEN 0 THEN 'view' WHEN 1 THEN"
    " 'chat' ELSE 'like' END, 1, $1::bigint - i * 100 FROM generate_series(0::bigint, 199999) i",
    "INSERT INTO room_presence SELECT 'r0', $1::bigint - i * 5000, 100 + i % 50, 5000 FROM generate_series(0::bigint, 9999) i",
)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


async def main(runs: int) -> None:
    name = f"souk_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{PG}/{name}"
    db = await open_db(dsn)  # the server's own tables and indexes
    try:
        t = time.perf_counter()
        c = await asyncpg.connect(dsn)
        try:
            for sql in FILL:
                await (c.execute(sql, NOW) if "$1" in sql else c.execute(sql))
            await c.execute("ANALYZE")
        finally:
            await c.close()
        print(f"built in {time.perf_counter() - t:.1f} s")
        insights = SqlInsightsStore(db)
        for label, call in (("room", lambda: insights.for_room("r0", "shop")),
                            ("group", lambda: insights.for_group("g0", NOW)),
                            ("shop", lambda: insights.for_shop("shop"))):
            ms = []
            for _ in range(runs):
                t = time.perf_counter()
                await call()
                ms.append((time.perf_counter() - t) * 1000)
            print(f"{label:6s} n={runs}  p50 {statistics.median(ms):7.1f} ms  p99 {pct(ms, 99):7.1f} ms")
    finally:
        await db.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 40))
