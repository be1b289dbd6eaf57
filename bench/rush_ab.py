"""The flash-sale rush, this tree against another (a checkout of the commit before a change),
alternated run by run so that both see the same machine load.

    python bench/rush_ab.py --base /path/to/old/checkout [--runs 3]

Each run starts fresh processes in each tree (its own `server` package on PYTHONPATH) and
measures, with that tree's own benchmark code:

- `ledger`: durable orders per second through `Commerce.buy` (5,000 buyers at once, group
  commit) and 10,000 buyers arriving within 1 s on 100 units (p50/p99 of the answers), on the
  embedded SQLite file (bench/test_bench_ledger.py);
- `rush`: 6,000 buyers arriving at 3,000/s on 2,000 units, on the embedded ledger and through
  2 cluster nodes on PostgreSQL + the Redis gate (bench/bench_scaleout.py --rush).

Prints every run and the medians with the ratio new/base (> 1: slower for latencies, faster for
orders/s). Needs Redis and PostgreSQL (`make services`). On a shared host, read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]

LEDGER = """
import json, pathlib, sys, tempfile
sys.path.insert(0, "bench")
import uvloop
import test_bench_ledger as t

async def main():
    base = pathlib.Path("data"); base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as d:
        d = pathlib.Path(d)
        grouped = await t.durable_orders_per_second(d, True, 1000, 5000)
        rush = await t.rush(d, 10_000, 100, 1.0)
    return {"orders_per_s": grouped["orders_per_s"], "rush_10k_p50_ms": rush["p50_ms"],
            "rush_10k_p99_ms": rush["p99_ms"]}

print(json.dumps(uvloop.run(main())))
"""


def run_tree(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out: dict[str, float] = {}
    done = subprocess.run([sys.executable, "-c", LEDGER], cwd=tree, env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    out.update({f"ledger {k}": v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()})
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rush.json"
        subprocess.run([sys.executable, "bench/bench_scaleout.py", "--rush", "--out", str(report)],
                       cwd=tree, env=env, check=True, capture_output=True, timeout=900)
        for r in json.loads(report.read_text())["runs"]:
            name = "embedded" if r["config"].startswith("embedded") else "cluster"
            assert r["orders"] == r["stock"], r  # every unit sold, none oversold
            out[f"rush {name} orders_per_s"] = r["orders_per_s"]
            out[f"rush {name} p50_ms"] = r["buy_p50_ms"]
            out[f"rush {name} p99_ms"] = r["buy_p99_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="a checkout of the commit to compare with")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
    for i in range(args.runs):
        for name, tree in (("base", args.base.resolve()), ("new", HERE)):
            result = run_tree(tree)
            runs[name].append(result)
            print(json.dumps({"run": i + 1, "tree": name, "load_1m": os.getloadavg()[0], **result}),
                  flush=True)
    summary: dict[str, Any] = {}
    for key in runs["new"][0]:
        base = statistics.median(r[key] for r in runs["base"])
        new = statistics.median(r[key] for r in runs["new"])
        summary[key] = {"base_median": base, "new_median": new,
                        "new_over_base": round(new / base, 3) if base else None}
    print(json.dumps({"medians": summary, "runs_each": args.runs}, indent=2))


if __name__ == "__main__":
    main()
