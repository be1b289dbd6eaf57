"""Dashboard queries over 1 million recorded group messages and 100,000 orders.

Builds one SQLite file with the real schemas (community, commerce, engagement) and synthetic
records: 20 groups x 1,000 members, 1,000,000 group messages over 8 weeks, 100,000 orders
over 10 rooms and 50 sales, 200,000 room activity rows, 20,000 questions, presence samples,
polls, check-ins, coupons. Then times the queries behind `GET /api/rooms/<id>/metrics`,
`/api/groups/<id>/metrics` and `/api/shop/metrics` (and, separately, the member-layer scan),
each run N times on the reader connection; prints p50/p99 in ms. Goal: p99 < 200 ms.

Run: `python bench/bench_dashboard.py [--runs 50] [--keep PATH]`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from server.domain.layers import Thresholds
from server.store.insights import SqlInsightsStore
from server.store.stores import open_db

NOW = 1_800_000_000_000
DAY = 86_400_000
GROUPS, MEMBERS_PER_GROUP, MESSAGES, ORDERS, ROOMS, SALES = 20, 1000, 1_000_000, 100_000, 10, 50


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


def build(path: Path) -> None:
    rnd = random.Random(7)

    async def schema() -> None:  # the server's own tables and indexes
        await (await open_db(path)).close()

    asyncio.run(schema())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    users = [f"u{i}" for i in range(GROUPS * MEMBERS_PER_GROUP)]
    for g in range(GROUPS):
        conn.execute("INSERT INTO groups VALUES (?, 'default', 'normal', 'skin', '', 350, ?)", (f"g{g}", NOW - 60 * DAY))
        conn.executemany("INSERT INTO group_members VALUES (?, ?, ?, 'member', ?)",
                         [(f"g{g}", u, u, NOW - rnd.randrange(56 * DAY))
                          for u in users[g * MEMBERS_PER_GROUP:(g + 1) * MEMBERS_PER_GROUP]])
        conn.executemany("INSERT INTO group_exits VALUES (?, ?, ?, ?, 0)",
                         [(f"g{g}", f"x{g}-{i}", NOW - 50 * DAY, NOW - rnd.randrange(50 * DAY)) for i in range(100)])
    conn.executemany("INSERT INTO group_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                     ((f"m{i}", f"g{i % GROUPS}", users[(i % GROUPS) * MEMBERS_PER_GROUP + rnd.randrange(MEMBERS_PER_GROUP)],
                       "n", "hello there", f"m{i - 1}" if i % 5 == 0 and i else None, NOW - rnd.randrange(56 * DAY))
                      for i in range(MESSAGES)))
    for r in range(ROOMS):
        conn.execute("INSERT INTO rooms (id, shop) VALUES (?, 'default')", (f"r{r}",))
    for p in range(10):
        conn.execute("INSERT INTO products VALUES (?, 'default', 't', 1000, 'CNY', 1000000, '', ?)", (f"p{p}", NOW))
    for s in range(SALES):
        conn.execute("INSERT INTO sales VALUES (?, ?, ?, 900, 'CNY', 100000, 0, 10, ?, ?, 'ended', 0, ?)",
                     (f"s{s}", f"r{s % ROOMS}", f"p{s % 10}", NOW - DAY, NOW, NOW - DAY))
    conn.executemany(
        'INSERT INTO orders (id, "user", name, room, product, sale, qty, price, currency, key, status, created_at)'
        " VALUES (?, ?, '', ?, ?, ?, ?, 900, 'CNY', ?, 'confirmed', ?)",
        ((f"o{i}", users[rnd.randrange(len(users))], f"r{(i % SALES) % ROOMS}", f"p{(i % SALES) % 10}", f"s{i % SALES}",
          1 + i % 3, f"k{i}", NOW - rnd.randrange(56 * DAY)) for i in range(ORDERS)))
    conn.executemany("INSERT INTO room_activity VALUES (?, ?, ?, ?, ?)",
                     ((f"r{i % ROOMS}", users[rnd.randrange(len(users))], ("view", "chat", "like")[i % 3], 1,
                       NOW - rnd.randrange(DAY)) for i in range(200_000)))
    conn.executemany("INSERT INTO room_presence VALUES (?, ?, ?, 5000)",
                     ((f"r{i % ROOMS}", NOW - i * 500, rnd.randrange(1000)) for i in range(20_000)))
    conn.executemany(
        "INSERT INTO questions VALUES (?, ?, ?, 'n', 'q?', ?, 0, ?, NULL, ?, ?, 0, 0, 0)",
        ((f"q{i}", f"r{i % ROOMS}", users[rnd.randrange(len(users))], NOW - DAY,
          "answered" if i % 4 else "open", "st" if i % 4 else None, NOW - DAY + rnd.randrange(600_000) if i % 4 else None)
         for i in range(20_000)))
    conn.executemany("INSERT INTO polls VALUES (?, 'default', 'group', ?, 'q', '[\"a\",\"b\"]', 'st', ?, NULL, 0)",
                     [(f"poll{i}", f"g{i % GROUPS}", NOW - rnd.randrange(50 * DAY)) for i in range(200)])
    conn.executemany("INSERT OR IGNORE INTO poll_votes VALUES (?, ?, ?, ?, 0)",
                     ((f"poll{rnd.randrange(200)}", users[rnd.randrange(len(users))], rnd.randrange(2),
                       NOW - rnd.randrange(50 * DAY)) for _ in range(50_000)))
    conn.executemany("INSERT OR IGNORE INTO checkins VALUES ('default', ?, ?, ?, 1, 10, ?)",
                     ((f"g{rnd.randrange(GROUPS)}", users[rnd.randrange(len(users))], d, d * DAY)
                      for d in range(NOW // DAY - 30, NOW // DAY) for _ in range(2000)))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def measure(path: Path, runs: int) -> dict[str, list[float]]:
    db = await open_db(path)
    store = SqlInsightsStore(db)
    out: dict[str, list[float]] = {"room": [], "group": [], "shop": [], "layers (not on the dashboard)": []}
    try:
        for i in range(runs):
            for name, coro in (("room", store.for_room(f"r{i % ROOMS}")),
                               ("group", store.for_group(f"g{i % GROUPS}", NOW)),
                               ("shop", store.for_shop("default"))):
                t0 = time.perf_counter()
                await coro
                out[name].append((time.perf_counter() - t0) * 1000)
        for _ in range(max(3, runs // 10)):
            t0 = time.perf_counter()
            await store.member_stats("default", NOW, Thresholds(), set())
            out["layers (not on the dashboard)"].append((time.perf_counter() - t0) * 1000)
    finally:
        await db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the database at this path")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        if not path.exists():
            t0 = time.perf_counter()
            build(path)
            print(f"built {path} in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        results: dict[str, Any] = asyncio.run(measure(path, args.runs))
    print(f"{'query':32} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, xs in results.items():
        print(f"{name:32} {len(xs):4d} {pct(xs, 0.5):8.1f} {pct(xs, 0.99):8.1f} {max(xs):8.1f}")
    worst = max(pct(results[k], 0.99) for k in ("room", "group", "shop"))
    print(f"dashboard p99 (worst of room/group/shop): {worst:.1f} ms — goal < 200 ms: {'PASS' if worst < 200 else 'FAIL'}")


if __name__ == "__main__":
    main()
