"""Joins: the load-test suite's own client against a minimal independent one, and the server's
CPU per join, on the same arrival shape.

Run: `make bench` (3,000 viewers at 500/s, 5 alternating runs), or
`.venv/bin/python bench/bench_joins.py --viewers 600 --rate 300 --runs 2` for a look.

Each run starts a fresh `souk serve` pinned to `--server-cpu`, then one client pinned to
`--client-cpu` brings `--viewers` viewers in with the `join` scenario's shape (a warming ramp,
a steady stretch, then 30 % of them as a flash crowd within 100 ms: loadtest/scenarios/
audience.py): `souk-loadtest join` (the suite), or bench/join_client.mjs (Node + `ws`, the
independent client; installed into bench/node_modules when missing). Runs alternate the two.
Join latency is from each viewer's scheduled arrival to the `ok` carrying the snapshot, in
both. The server's CPU (utime + stime of every thread) over the run, divided by the viewers,
is the CPU per join.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from bench_fanout import SECRET, free_port, server_cpu_ns, start_server  # noqa: E402

from client_sdk.tokens import mint_token  # noqa: E402
from loadtest.scenarios.audience import join_offsets  # noqa: E402

CLIENTS = ("loadtest", "node")


def ensure_ws() -> None:
    if (BENCH / "node_modules" / "ws").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("bench_joins: node and npm are needed for the independent client")
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def run_loadtest(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    report = tmp / "report"
    cmd = [*pin(args.client_cpu), str(ROOT / ".venv" / "bin" / "souk-loadtest"), "join", "--url", url,
           "--viewers", str(args.viewers), "--rate", str(args.rate), "--room", "bench",
           "--secret", SECRET, "--report", str(report), "--no-live"]
    if not Path(cmd[len(pin(args.client_cpu))]).exists():
        cmd[len(pin(args.client_cpu))] = "souk-loadtest"
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    data = orjson.loads((report / "report.json").read_bytes())
    s = data["summary"]["join"]
    return {"count": s["count"], "errors": s["errors"] + s["timeouts"], "p50_ms": s["p50_ms"],
            "p90_ms": s["p90_ms"], "p99_ms": s["p99_ms"], "max_ms": s["max_ms"]}


def run_node(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    plan = {"url": url, "room": "bench", "timeout_ms": 10_000,
            "offsets_ns": join_offsets(args.viewers, args.rate, "mixed"),
            "tokens": [mint_token(SECRET, f"node-{i}", rooms=["*"], ttl_s=3600)
                       for i in range(args.viewers)]}
    path = tmp / "plan.json"
    path.write_bytes(orjson.dumps(plan))
    out = subprocess.run([*pin(args.client_cpu), "node", str(BENCH / "join_client.mjs"), str(path)],
                         cwd=BENCH, capture_output=True, timeout=600, check=True)
    res: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    res["errors"] = res.pop("errors") + res.pop("timeouts")
    return res


def one(client: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server("souk", port, args.server_cpu, Path(tmp) / "data")
        try:
            time.sleep(1.0)
            cpu0 = server_cpu_ns(server.pid)
            url = f"ws://127.0.0.1:{port}/ws"
            res = (run_loadtest if client == "loadtest" else run_node)(url, args, Path(tmp))
            time.sleep(1.0)  # the last releases
            res["server_cpu_us_per_join"] = (server_cpu_ns(server.pid) - cpu0) / 1000 / args.viewers
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    res["client"] = client
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=3000)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--runs", type=int, default=5, help="runs per client, alternating")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--out", default="reports/bench/joins.json")
    a = p.parse_args()
    ensure_ws()
    runs: list[dict[str, Any]] = []
    for r in range(a.runs):
        for client in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
            res = one(client, a)
            res["run"] = r
            runs.append(res)
            print(f"run {r}  {client:<9} p50 {res['p50_ms']:7.1f} ms  p90 {res['p90_ms']:7.1f}  "
                  f"p99 {res['p99_ms']:7.1f}  max {res['max_ms']:7.1f}  failed {res['errors']}  "
                  f"server {res['server_cpu_us_per_join']:6.1f} us/join", flush=True)
    summary: dict[str, Any] = {}
    for client in CLIENTS:
        mine = [x for x in runs if x["client"] == client]
        summary[client] = {k: statistics.median(x[k] for x in mine)
                           for k in ("p50_ms", "p90_ms", "p99_ms", "server_cpu_us_per_join")}
    for k in ("p50_ms", "p90_ms", "p99_ms"):
        summary[f"ratio_{k}"] = summary["loadtest"][k] / summary["node"][k]
    doc = {"viewers": a.viewers, "rate": a.rate, "runs": runs, "summary": summary,
           "date": time.strftime("%Y-%m-%d"), "loadavg": os.getloadavg()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print()
    print(f"{'client':<10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'server us/join':>16}")
    for client in CLIENTS:
        s = summary[client]
        print(f"{client:<10}{s['p50_ms']:9.1f}{s['p90_ms']:9.1f}{s['p99_ms']:9.1f}{s['server_cpu_us_per_join']:16.1f}")
    print(f"suite / independent: p50 {summary['ratio_p50_ms']:.2f}x  p90 {summary['ratio_p90_ms']:.2f}x  "
          f"p99 {summary['ratio_p99_ms']:.2f}x (medians of {a.runs} runs each)\nJSON: {a.out}")


if __name__ == "__main__":
    main()
