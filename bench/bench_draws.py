"""Lucky draws under load: the `draw` load scenario against the same load without a draw,
alternated run by run on fresh servers, so both see the same machine.

    python bench/bench_draws.py [--runs 3] [--profile full] [--set entrants=10000 ...]

Each run starts a fresh `souk serve` (pinned to CPU 0 when the host has more than one) and runs
`souk-loadtest draw` (pinned to the other CPUs) twice: `--set draw=0` (the baseline: the same
audience, the same 10,000 arrivals within 10 s, the same chat to the room) and `draw=1`
(the arrivals enter a draw, 500 more enter another by its keyword in the chat). Prints, per
run and as medians: the room's event p50/p99 with and without the draw and their ratio (the
goal: within 1.5x), the entries' p99 (arrival to acknowledgement, connect and join included),
how many entries were acknowledged and listed, the result's delay after the close (the goal:
within 1 s), the server's mean CPU, and each run's verdict. Writes reports/bench/draws.json.
On a shared host, read the ratio; the lead re-runs it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402

SECRET = "bench-draws-" + secrets.token_hex(16)


def pin(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SOUK_SECRET": SECRET}
    proc = subprocess.Popen([*pin("0"), sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data), "--media-workers", "0",
                             "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc


def loop_lag(port: int) -> dict[str, float]:
    """The server's own lateness over the run, from its `souk_loop_lag_seconds` histogram
    (a timer due every 100 ms): the p99 bucket's bound and the worst bucket, in ms. The
    server's share of the room's event latency, whatever the generator's."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets = [(float(m[1]), float(m[2])) for m in re.finditer(
        r'^souk_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)]
    total = buckets[-1][1] if buckets else 0.0
    p99 = next((le for le, n in buckets if total and n >= 0.99 * total), float("inf"))
    worst = next((le for le, n in buckets if n >= total), float("inf"))
    return {"samples": total, "p99_le_ms": p99 * 1000, "max_le_ms": worst * 1000}


def one(profile: str, draw: bool, sets: list[str]) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", port)
        report = Path(tmp) / "report"
        try:
            others = ",".join(str(c) for c in range(1, os.cpu_count() or 1)) or "0"
            cmd = [*pin(others), sys.executable, "-m", "loadtest", "draw", "--url",
                   f"ws://127.0.0.1:{port}/ws", "--secret", SECRET, "--room", "bench",
                   "--profile", profile, "--no-live", "--server-pid", str(server.pid),
                   "--report", str(report), "--set", f"draw={int(draw)}"]
            for s in sets:
                cmd += ["--set", s]
            subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
            data = json.loads((report / "report.json").read_text())
            lag = loop_lag(port)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
    summary = data["summary"]
    cpu = data.get("server", {}).get("cpu_pct_per_second") or [0.0]
    out: dict[str, Any] = {
        "event_p50_ms": summary.get("event", {}).get("p50_ms"),
        "event_p99_ms": summary.get("event", {}).get("p99_with_failures_ms"),
        "enter_p99_ms": summary.get("enter", {}).get("p99_with_failures_ms"),
        "enter_ok": summary.get("enter", {}).get("count"),
        "server_cpu_mean_pct": round(statistics.fmean(cpu), 1),
        "server_loop_lag": lag,
        "verdict": data["verdict"]["status"],
        "failed_checks": [c["name"] for c in data["checks"] if not c["ok"]],
        "notes": [n for n in data.get("notes", []) if "acknowledged" in n or "pressure" in n],
    }
    if draw:
        out["draw_result_max_ms"] = summary.get("draw_result", {}).get("max_ms")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", default="full", choices=["small", "full"])
    ap.add_argument("--set", action="append", default=[], help="a scenario knob, e.g. entrants=5000")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "draws.json")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        base = one(args.profile, False, args.set)
        head = one(args.profile, True, args.set)
        ratio = (head["event_p99_ms"] / base["event_p99_ms"]
                 if isinstance(head["event_p99_ms"], float) and base["event_p99_ms"] else None)
        runs.append({"baseline": base, "draw": head, "event_p99_ratio": ratio})
        print(f"run {i + 1}: event p99 {base['event_p99_ms']} ms without a draw, "
              f"{head['event_p99_ms']} ms with (ratio {ratio if ratio is None else round(ratio, 2)}); "
              f"event p50 {base['event_p50_ms']} / {head['event_p50_ms']} ms; "
              f"entries p99 {head['enter_p99_ms']} ms ({head['enter_ok']} acknowledged); "
              f"result {head.get('draw_result_max_ms')} ms after the close; "
              f"server CPU {base['server_cpu_mean_pct']}% / {head['server_cpu_mean_pct']}%; "
              f"server loop lag p99 <= {base['server_loop_lag']['p99_le_ms']:g} / "
              f"{head['server_loop_lag']['p99_le_ms']:g} ms, max <= {base['server_loop_lag']['max_le_ms']:g} / "
              f"{head['server_loop_lag']['max_le_ms']:g} ms; "
              f"verdicts {base['verdict']} / {head['verdict']} {head['failed_checks'] or ''}")
        for note in head["notes"]:
            print("   ", note)
    ratios = [float(r["event_p99_ratio"]) for r in runs if r["event_p99_ratio"] is not None]
    if ratios:
        print(f"median event p99 ratio (draw / no draw): {statistics.median(ratios):.2f}"
              f" over {len(ratios)} run(s); goal <= 1.5")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"profile": args.profile, "sets": args.set, "runs": runs}, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
