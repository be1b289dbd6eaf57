"""Before/after: the fan-out and join benchmarks of two git revisions, alternated, in one run.

A change that reshapes the inside (the wiring, the op handlers' seams) must not slow the two
paths every viewer takes: one event to every viewer of a room (`bench/bench_fanout.py`), and
joining a room (`souk-loadtest join` against a real server process). Timing on a shared
machine drifts, so the two revisions are measured alternately (base, head, base, head, ...)
and compared by their medians; each run's fan-out is also a ratio to the raw-write floor
measured in the same run, which cancels most of the drift, and each join run reports the
server's CPU time per join (CPU time, unlike latency, does not count the time another
process held the core).

Run (from the repository, with its .venv):

    .venv/bin/python bench/bench_ab.py --base main --head HEAD --runs 3

Each revision is exported (`git archive`) into a temporary directory and run from there with
this checkout's virtualenv. The join server is pinned to CPU 0 and the load generator to CPU 1
(`taskset`). Prints one line per run and the medians with head/base ratios; writes JSON to
`--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
LOADTEST = ROOT / ".venv" / "bin" / "souk-loadtest"


def export(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def fanout(tree: Path, viewers: int, rate: float, rounds: int, out: Path) -> dict[str, float]:
    subprocess.run([str(PY), str(tree / "bench" / "bench_fanout.py"), "--viewers", str(viewers),
                    "--rate", str(rate), "--rounds", str(rounds), "--out", str(out)],
                   cwd=tree, check=True, capture_output=True)
    result: dict[str, float] = json.loads(out.read_text())
    return result


def join(tree: Path, viewers: int, rate: float, duration: float, report: Path) -> dict[str, float]:
    port, secret = free_port(), "ab-" + secrets.token_hex(16)
    data = Path(tempfile.mkdtemp(prefix="souk-ab-"))
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(PY), "-m", "server", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--secret", secret, "--data-dir", str(data),
         "--log-level", "warning"], cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        cpu = psutil.Process(server.pid).cpu_times()
        subprocess.run(["taskset", "-c", "1", str(LOADTEST), "join", "--url",
                        f"ws://127.0.0.1:{port}/ws", "--secret", secret, "--viewers", str(viewers),
                        "--rate", str(rate), "--duration", str(duration), "--report", str(report),
                        "--no-live", "--server-pid", str(server.pid)],
                       cwd=ROOT, check=False, capture_output=True)
        after = psutil.Process(server.pid).cpu_times()
        doc = json.loads((report / "report.json").read_text())
        lat = doc["summary"]["join"]
        used_s = (after.user + after.system) - (cpu.user + cpu.system)
        return {"p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "count": lat["count"],
                "cpu_ms_per_join": round(used_s * 1000 / max(1, lat["count"]), 3)}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fanout-viewers", type=int, default=2000)
    ap.add_argument("--fanout-rate", type=float, default=500.0)
    ap.add_argument("--fanout-rounds", type=int, default=15)
    ap.add_argument("--join-viewers", type=int, default=1500)
    ap.add_argument("--join-rate", type=float, default=250.0)
    ap.add_argument("--join-duration", type=float, default=4.0)
    ap.add_argument("--out", default="reports/bench/ab.json")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="souk-ab-trees-"))
    results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    try:
        trees = {"base": export(a.base, work / "base"), "head": export(a.head, work / "head")}
        for run in range(a.runs):
            for side in ("base", "head") if run % 2 == 0 else ("head", "base"):
                f = fanout(trees[side], a.fanout_viewers, a.fanout_rate, a.fanout_rounds,
                           work / f"fanout-{side}-{run}.json")
                j = join(trees[side], a.join_viewers, a.join_rate, a.join_duration,
                         work / f"join-{side}-{run}")
                row = {"fanout_us": f["per_recipient_us_fanout"], "fanout_ratio": f["ratio_fanout_to_raw"],
                       "join_p50_ms": j["p50_ms"], "join_p99_ms": j["p99_ms"],
                       "join_cpu_ms": j["cpu_ms_per_join"]}
                for k, v in row.items():
                    results[side].setdefault(k, []).append(float(v))
                print(f"run {run} {side:4}: " + "  ".join(f"{k} {v}" for k, v in row.items()),
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for k in results["base"]:
        b, h = statistics.median(results["base"][k]), statistics.median(results["head"][k])
        summary[k] = {"base": b, "head": h, "head_over_base": round(h / b, 3) if b else None}
        print(f"median {k:14} base {b:8.2f}  head {h:8.2f}  head/base {summary[k]['head_over_base']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "runs": results, "medians": summary,
                               "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
