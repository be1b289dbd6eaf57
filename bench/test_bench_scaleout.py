"""`make bench` entry for the scale-out benchmark (never run by `make test`): the same viewer
load on the embedded server, 1 node over Redis and 2 workers, then a flash-sale rush through
2 cluster nodes vs the embedded ledger. Prints the JSON report and writes
reports/bench/scaleout*.json. See bench/bench_scaleout.py for what is measured."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scaleout as b


def run_all() -> dict[str, Any]:
    prefix = f"souk-bench-{uuid.uuid4().hex[:8]}:"
    configs = {
        "embedded": [],
        "redis-1": ["--redis", b.REDIS, "--redis-prefix", prefix + "1:"],
        "redis-2": ["--redis", b.REDIS, "--redis-prefix", prefix + "2:", "--workers", "2"],
    }
    viewers = [b.run_config(name, extra, 1000, 20.0, 8.0, 20) for name, extra in configs.items()]
    rush = [b.rush_embedded(2000, 6000, 3000.0), b.rush_cluster(2000, 6000, 3000.0)]
    report = {"viewers": viewers, "rush": rush, "load_average": os.getloadavg()}
    out = Path("reports/bench/scaleout.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return report


def test_bench_scaleout(benchmark: Any) -> None:
    report = benchmark.pedantic(run_all, rounds=1, iterations=1)
    assert all(r["held"] == r["viewers"] for r in report["viewers"])
    assert all(r["orders"] == 2000 for r in report["rush"])


if __name__ == "__main__":
    run_all()
