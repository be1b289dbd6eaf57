"""Mirror latency at the adapter: room question → publish into 5 linked groups, and a group
answer → publish into the room, with 5 groups of 200 members and durable SQLite commits.

This measures Souk's own part of the path (rules + group-committed write + publish call); the
websocket fan-out to 2,000 viewers and 1,000 members is the gateway's and adds its own time
(~13–16 µs per recipient per frame on this kind of machine, docs/scaleout.md). Run: `python bench/bench_mirror.py`.
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from server.community import Community
from server.store.community import SqlCommunityStore
from server.store.schema import migrate
from server.store.sqlite import SqliteDatabase


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


class Timing:
    """The publish callback: records when each event reached the bus."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.copies: dict[str, dict[str, str]] = {}

    def __call__(self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
        if type != "question":
            return
        now = time.perf_counter()
        origin = fields.get("origin")
        key = origin["question"] if origin else fields["id"]
        self.seen[(ch, key + ":" + fields["status"])] = now
        if origin:
            self.copies.setdefault(key, {})[ch] = fields["id"]


async def run(questions: int, concurrency: int, groups: int, members: int, data_dir: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        timing = Timing()
        db = SqliteDatabase(Path(tmp) / "bench.db")
        await db.start()
        await migrate(db)
        c = Community(SqlCommunityStore(db), timing, lambda: time.time_ns() // 1_000_000,
                      overdue_check_s=3600)
        await c.start()
        gids = []
        for i in range(groups):
            g = await c.group_create("shop", {"tier": "core" if i == 0 else "normal", "topic": f"t{i}"})
            gids.append(g["id"])
            await asyncio.gather(
                *(c.group_join({"id": f"g{i}u{n}", "name": f"M{n}", "role": "member"}, g["id"]) for n in range(members))
            )
        await c.link_groups("room", gids)

        ask_lat: list[float] = []
        answer_lat: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                q = await c.ask("room", {"id": f"v{n}", "name": "Viewer", "role": "viewer"}, f"question {n}?")
                last = max(timing.seen[(f"group:{g}", q["id"] + ":open")] for g in gids)
                ask_lat.append((last - t0) * 1000)
                gid = gids[n % groups]
                copy_id = timing.copies[q["id"]][f"group:{gid}"]
                t1 = time.perf_counter()
                await c.on_group_chat(
                    gid, {"id": f"g{n % groups}u1", "name": "M1", "role": "member"},
                    {"id": f"chat{n}", "text": "answer", "reply_to": copy_id},
                )
                answer_lat.append((timing.seen[("room:room", q["id"] + ":answered")] - t1) * 1000)

        t_start = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(questions)))
        elapsed = time.perf_counter() - t_start
        await c.stop()
        await db.close()
        print(f"{groups} groups x {members} members, {questions} questions, concurrency {concurrency}")
        print(f"  commits {db.stats.commits} for {db.stats.writes} writes (largest batch {db.stats.largest_batch})")
        for name, lat in (("question -> all group copies", ask_lat), ("group answer -> room", answer_lat)):
            print(
                f"  {name:30s} p50 {pct(lat, 0.5):6.2f} ms  p90 {pct(lat, 0.9):6.2f} ms  "
                f"p99 {pct(lat, 0.99):6.2f} ms  max {max(lat):6.2f} ms"
            )
        print(f"  throughput {questions / elapsed:.0f} question+answer pairs/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--dir", default=None, help="where the SQLite file goes (default: /tmp)")
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(a.questions, a.concurrency, a.groups, a.members, a.dir))


if __name__ == "__main__":
    main()
