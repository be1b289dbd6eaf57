"""Ledger and buy-path benchmarks (run by `make bench`, never by `make test`).

1. Durable orders per second through `Commerce.buy`, with group commit (the orders of one loop
   iteration in one write, the writes queued meanwhile in one transaction and one fsync) vs one
   transaction and fsync per order (same run, same machine, same file system), and the ratio
   (goal: >= 10x). Also group commit without the per-iteration batching (one job per order).
2. 10,000 buyers arrive within one second (open loop: each call is scheduled at its arrival
   time and its latency is measured from that time, so a stalled loop cannot hide its stall)
   on a sale of 100 units: exactly 100 orders; p50/p99/max of the answers (goal: p99 < 150 ms).
   Also the same 10,000 calls fired at once (a burst).

Run: `python -m pytest bench/test_bench_ledger.py -s` or `python bench/test_bench_ledger.py`.
Results are printed and written to `reports/bench_ledger.json`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.commerce import Commerce, wall_ms  # noqa: E402
from server.errors import SoukError  # noqa: E402
from server.store.ledger import SqlLedger  # noqa: E402
from server.store.schema import migrate  # noqa: E402
from server.store.sqlite import SqliteDatabase  # noqa: E402


def no_bus(ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
    """Events are not the subject here; the fan-out has its own benchmarks."""


async def _node(
    directory: Path, group_commit: bool, order_batch: int = 1000
) -> tuple[SqliteDatabase, Commerce]:
    name = f"ledger-{group_commit}-{order_batch}-{wall_ms()}.db"
    db = SqliteDatabase(directory / name, group_commit=group_commit)
    await db.start()
    await migrate(db)
    commerce = Commerce(SqlLedger(db), no_bus, order_batch=order_batch)
    await commerce.start()
    return db, commerce


async def _sale(commerce: Commerce, stock: int) -> str:
    product = await commerce.product_create("shop", {"title": "Tea", "price": 1000, "stock": stock})
    sale = await commerce.sale_create(
        "room",
        {"product": product["id"], "price": 100, "stock": stock, "duration_s": 3600},
    )
    return str(sale["id"])


async def durable_orders_per_second(
    directory: Path, group_commit: bool, order_batch: int, orders: int
) -> dict[str, Any]:
    """`orders` distinct buyers, all in flight at once, each answered only once durable."""
    db, commerce = await _node(directory, group_commit, order_batch)
    try:
        sale = await _sale(commerce, orders)
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(commerce.buy(f"u{i}", sale, 1, "k") for i in range(orders))
        )
        elapsed = time.perf_counter() - t0
        assert len(results) == orders
        return {
            "group_commit": group_commit,
            "order_batch": order_batch,
            "orders": orders,
            "seconds": round(elapsed, 3),
            "orders_per_s": round(orders / elapsed),
            "commits": db.stats.commits,
            "largest_batch": db.stats.largest_batch,
        }
    finally:
        await commerce.stop()
        await db.close()


def _pct(sorted_ms: list[float], p: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))], 2)


async def rush(directory: Path, buyers: int, units: int, spread_s: float) -> dict[str, Any]:
    """`buyers` calls to buy() on `units` units, arriving uniformly over `spread_s` seconds."""
    db, commerce = await _node(directory, True)
    loop = asyncio.get_running_loop()
    try:
        sale = await _sale(commerce, units)
        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        done = asyncio.Event()

        async def one(i: int, due: float) -> None:
            try:
                await commerce.buy(f"u{i}", sale, 1, "k")
                outcome = "order"
            except SoukError as err:
                outcome = err.code
            latencies.append((loop.time() - due) * 1000)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if len(latencies) == buyers:
                done.set()

        tasks: set[asyncio.Task[None]] = set()

        def start_one(i: int, due: float) -> None:
            task = loop.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        start = loop.time() + 0.05
        for i in range(buyers):
            due = start + spread_s * i / buyers
            loop.call_at(due, functools.partial(start_one, i, due))
        await asyncio.wait_for(done.wait(), 60)
        latencies.sort()
        assert outcomes.get("order") == units, outcomes
        assert sum(outcomes.values()) == buyers
        return {
            "buyers": buyers,
            "units": units,
            "spread_s": spread_s,
            "outcomes": outcomes,
            "p50_ms": _pct(latencies, 0.50),
            "p99_ms": _pct(latencies, 0.99),
            "max_ms": round(latencies[-1], 2),
        }
    finally:
        await commerce.stop()
        await db.close()


async def run_all(base: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=base) as d:
        directory = Path(d)
        grouped = await durable_orders_per_second(directory, True, 1000, 5000)
        jobs_grouped = await durable_orders_per_second(directory, True, 1, 5000)
        single = await durable_orders_per_second(directory, False, 1, 500)
        arrival = await rush(directory, 10_000, 100, 1.0)
        burst = await rush(directory, 10_000, 100, 0.0)
    return {
        "at_ms": wall_ms(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),  # the machine is shared: read with it
        "cpus": os.cpu_count(),
        "durable_group_commit": grouped,
        "durable_group_commit_one_job_per_order": jobs_grouped,
        "durable_fsync_per_order": single,
        "group_commit_ratio": round(grouped["orders_per_s"] / single["orders_per_s"], 1),
        "rush_10k_in_1s": arrival,
        "rush_10k_at_once": burst,
    }


def report(results: dict[str, Any]) -> None:
    print(json.dumps(results, indent=2))
    out = ROOT / "reports" / "bench_ledger.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def test_bench_ledger() -> None:
    import uvloop

    # on the project's disk (not tmpfs), so that fsync costs what it costs
    base = Path(os.environ.get("SOUK_BENCH_DIR", ROOT / "data"))
    base.mkdir(parents=True, exist_ok=True)
    results = uvloop.run(run_all(base))
    report(results)
    assert results["rush_10k_in_1s"]["outcomes"]["order"] == 100


if __name__ == "__main__":
    test_bench_ledger()
