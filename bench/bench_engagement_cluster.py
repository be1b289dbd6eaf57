"""Engagement on the cluster, measured: two in-process nodes (own pools, own Redis clients,
notices over Redis) on one PostgreSQL database.

    PYTHONPATH=. python bench/bench_engagement_cluster.py [samples]

Prints p50/p99 of: a guarded vote, a check-in, a points redemption (each committed in
PostgreSQL), a coupon issued on A until it is in B's book, a vote on B until A's tally has it,
and the three dashboard queries on the small data the run made. A private database and Redis
prefix, dropped at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from server.cluster.notices import ENGAGEMENT_CHANNEL, ClusterSync
from server.community import Community
from server.engagement import Engagement
from server.insights import Insights
from server.store.stores import open_db, stores_on

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def show(name: str, ms: list[float]) -> None:
    print(f"{name:44s} n={len(ms):4d}  p50 {statistics.median(ms):6.2f} ms  p99 {pct(ms, 99):6.2f} ms")


class Clock:
    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now


async def node(dsn: str, prefix: str, path: Path, clock: Clock) -> tuple[Engagement, Any, Redis]:
    pub = lambda *a, **k: None  # noqa: E731 - the bus is not measured here
    db = await open_db(dsn)  # the node's own pool on the cluster's database
    stores = stores_on(db)
    community = Community(stores.community, pub, clock, overdue_check_s=3600)
    redis = Redis.from_url(REDIS_URL)
    insights = Insights(stores.insights, clock)
    ops = Engagement(stores.engagement, insights, pub, clock,
                     sync=ClusterSync(redis, prefix, channel=ENGAGEMENT_CHANNEL))
    await community.start()
    await ops.start()
    return ops, (db, community, insights), redis


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.0005)


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t = time.perf_counter()
    await fn()
    return (time.perf_counter() - t) * 1000


async def main(samples: int) -> None:
    name = f"souk_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{PG}/{name}"
    prefix = f"souk-bench-{uuid.uuid4().hex[:8]}:"
    clock = Clock()
    tmp = Path(tempfile.mkdtemp())
    a, (dba, ca, ia), ra = await node(dsn, prefix, tmp / "a.db", clock)
    b, (dbb, cb, ib), rb = await node(dsn, prefix, tmp / "b.db", clock)
    try:
        gid = (await ca.group_create("shop", {"tier": "normal", "topic": "tea"}))["id"]
        poll = await a.poll_create("shop", "group", gid, "host", {"question": "Q?", "options": ["x", "y"]})
        await until(lambda: poll["id"] in b.polls)
        pa, pb = a.polls[poll["id"]], b.polls[poll["id"]]
        votes, seen, checkins, redeems, issued = [], [], [], [], []
        for i in range(samples):
            voter = f"v{i}"
            votes.append(await timed(lambda: b.poll_vote(pb, voter, i % 2)))  # noqa: B023 (awaited at once)
            t = time.perf_counter()
            await until(lambda: voter in pa.votes)  # noqa: B023
            seen.append(votes[-1] + (time.perf_counter() - t) * 1000)
            checkins.append(await timed(lambda: (a, b)[i % 2].checkin("shop", gid, f"u{i}")))  # noqa: B023
        for i in range(samples):  # 10 points each: give the balance for one coupon
            user = f"u{i}"
            for day in range(1, 10):
                await (a, b)[day % 2].store.checkin("shop", f"g{day}", user, day, 1, 10, clock.now)
            redeems.append(await timed(lambda: b.points_redeem("shop", user, 100)))  # noqa: B023
            t = time.perf_counter()
            res = await a.coupon_issue("shop", {"value": 100}, [f"w{i}"], ("user", f"w{i}"))
            cid = res["coupons"][0]["id"]
            await until(lambda: cid in b.coupons.coupons)  # noqa: B023 (awaited at once)
            issued.append((time.perf_counter() - t) * 1000)
        await ia.flush()
        room = [await timed(lambda: ib.store.for_room("r1", "shop")) for _ in range(20)]
        group = [await timed(lambda: ib.store.for_group(gid, clock.now)) for _ in range(20)]
        shop = [await timed(lambda: ib.store.for_shop("shop")) for _ in range(20)]
        show("vote on B, committed (guarded upsert)", votes)
        show("vote on B -> in A's tally", seen)
        show("check-in, committed (streak read + insert)", checkins)
        show("points redeemed on B (conditional UPDATE)", redeems)
        show("coupon issued on A -> in B's book", issued)
        show("room numbers from B", room)
        show("group numbers from B", group)
        show("shop numbers from B", shop)
    finally:
        for ops, db, c, r in ((a, dba, ca, ra), (b, dbb, cb, rb)):
            await ops.stop()
            await c.stop()
            await db.close()
            await r.aclose()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
