"""`make bench` entry for bench_dashboard.py: 1M group messages, 100k orders, the three
dashboard queries p99 < 200 ms. Never run by `make test` (testpaths = tests)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dashboard as bd


def test_bench_dashboard(benchmark: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        bd.build(path)
        results = asyncio.run(bd.measure(path, 40))
        benchmark.pedantic(lambda: asyncio.run(bd.measure(path, 1)), rounds=3, iterations=1)
    for name, xs in results.items():
        print(f"{name:32} p50 {bd.pct(xs, 0.5):7.1f} ms  p99 {bd.pct(xs, 0.99):7.1f} ms")
    for name in ("room", "group", "shop"):
        assert bd.pct(results[name], 0.99) < 200, name
