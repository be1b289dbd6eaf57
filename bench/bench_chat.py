"""What durable room chat costs: chat throughput and chat → viewer latency, this tree against
a baseline tree whose room chat lives in memory only, alternated in one run.

Why: since room chat is written to SQLite before it is published (server/chatlog.py), a
message waits for a commit (one fsync shared by every write queued meanwhile). This measures
what a sender and a viewer feel: acknowledged messages per second with `--senders`
connections each sending as fast as their acks come back (closed loop), or at a fixed total
`--rate` (open loop: what a busy room sends, whatever the acks do), and the time from
`chat` sent to the message seen by each of `--viewers` viewers (p50, p99).

Run (from the repository, with its .venv):

    git worktree add --detach /tmp/chat-base main
    .venv/bin/python bench/bench_chat.py --base /tmp/chat-base --runs 3

Each run starts a fresh server (new data directory) from each tree, pinned to CPU 1
(`taskset -c 1`); this process (the clients) runs on CPU 0. Runs alternate base, head, base,
head, ... and the medians are compared. The host's load average is printed with the figures:
on a shared machine they are labelled "busy host".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402
from client_sdk import Client  # noqa: E402
from client_sdk.tokens import mint_token  # noqa: E402

SECRET = "bench-chat-secret-0123456789abcdef0123456789"


def start(tree: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SOUK_SECRET": SECRET, "SOUK_OPS_PER_S": "100000", "SOUK_OPS_BURST": "100000",
           "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data)],
                            cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, timeout_s=20, what=f"the server of {tree}")
    return proc


async def measure(port: int, senders: int, viewers: int, seconds: float, rate: float = 0) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/ws"

    def tok(sub: str, role: str) -> str:
        return mint_token(SECRET, sub, name=sub, role=role, rooms=["*"], groups=[], ttl_s=3600)

    # senders are staff: the per-user chat bucket (1 a second) would measure the rate limit
    sending = [Client(url, tok(f"s{i}", "streamer"), reconnect=False) for i in range(senders)]
    watching = [Client(url, tok(f"v{i}", "viewer"), reconnect=False) for i in range(viewers)]
    await asyncio.gather(*(c.connect() for c in (*sending, *watching)))
    for c in (*sending, *watching):
        await c.join("bench")
    lat_ms: list[float] = []
    ack_ms: list[float] = []
    sent_at: dict[str, int] = {}

    async def watch(c: Client) -> None:
        stream = c.events("room:bench", types=["chat"])
        while True:
            ev = await stream.next()
            at = sent_at.get(str(ev.get("text")))
            if at is not None:
                lat_ms.append((time.perf_counter_ns() - at) / 1e6)

    acked = 0
    stop = time.monotonic() + seconds

    async def one(c: Client, text: str) -> None:
        nonlocal acked
        t = sent_at[text] = time.perf_counter_ns()
        await c.chat("bench", text)
        ack_ms.append((time.perf_counter_ns() - t) / 1e6)
        acked += 1

    async def send(c: Client, i: int) -> None:
        n = 0
        if rate <= 0:  # closed loop: the next message once the last one is acknowledged
            while time.monotonic() < stop:
                await one(c, f"{i}-{n}")
                n += 1
            return
        gap = senders / rate  # open loop: this sender's share of `rate`, on a fixed schedule
        start = time.monotonic() + gap * i / senders
        flying: list[asyncio.Task[None]] = []
        while (at := start + n * gap) < stop:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            flying.append(asyncio.create_task(one(c, f"{i}-{n}")))
            n += 1
        await asyncio.gather(*flying)

    watchers = [asyncio.create_task(watch(c)) for c in watching]
    t0 = time.monotonic()
    await asyncio.gather(*(send(c, i) for i, c in enumerate(sending)))
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)  # the last messages reach the viewers
    for w in watchers:
        w.cancel()
    await asyncio.gather(*(c.close() for c in (*sending, *watching)), return_exceptions=True)
    lat_ms.sort()
    ack_ms.sort()
    return {"msgs_per_s": acked / elapsed, "p50_ms": lat_ms[len(lat_ms) // 2],
            "p99_ms": lat_ms[int(len(lat_ms) * 0.99)], "deliveries": len(lat_ms),
            "ack_p50_ms": ack_ms[len(ack_ms) // 2], "ack_p99_ms": ack_ms[int(len(ack_ms) * 0.99)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the baseline tree (a worktree of main)")
    ap.add_argument("--head", type=Path, default=ROOT, help="the tree measured (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--senders", type=int, default=20)
    ap.add_argument("--viewers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="messages per second in all (open loop); 0: each sender as fast as acks come")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    results: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    for run in range(args.runs):
        for label, tree in (("base", args.base), ("head", args.head)):
            data = Path(tempfile.mkdtemp(prefix=f"chat-{label}-"))
            port = free_port()
            proc = start(tree.resolve(), data, port)
            try:
                r = asyncio.run(measure(port, args.senders, args.viewers, args.seconds, args.rate))
            finally:
                proc.terminate()
                proc.wait(10)
                shutil.rmtree(data, ignore_errors=True)
            r["load1"] = os.getloadavg()[0]
            results[label].append(r)
            print(f"run {run + 1} {label}: {r['msgs_per_s']:.0f} msg/s, chat→viewer p50 {r['p50_ms']:.1f} ms,"
                  f" p99 {r['p99_ms']:.1f} ms ({r['deliveries']} deliveries), ack p50 {r['ack_p50_ms']:.1f} ms"
                  f" p99 {r['ack_p99_ms']:.1f} ms, load {r['load1']:.2f}", flush=True)
    summary = {}
    for label in ("base", "head"):
        summary[label] = {k: statistics.median(r[k] for r in results[label])
                          for k in ("msgs_per_s", "p50_ms", "p99_ms", "ack_p50_ms", "ack_p99_ms")}
    for label in ("base", "head"):
        m = summary[label]
        print(f"median {label}: {m['msgs_per_s']:.0f} msg/s, chat→viewer p50 {m['p50_ms']:.1f} ms,"
              f" p99 {m['p99_ms']:.1f} ms, ack p50 {m['ack_p50_ms']:.1f} ms, p99 {m['ack_p99_ms']:.1f} ms")
    print(f"head/base throughput {summary['head']['msgs_per_s'] / summary['base']['msgs_per_s']:.2f},"
          f" p99 {summary['head']['p99_ms'] / summary['base']['p99_ms']:.2f}; load average {os.getloadavg()}")
    if args.out:
        args.out.write_text(json.dumps({"runs": results, "median": summary, "loadavg": os.getloadavg(),
                                        "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))


if __name__ == "__main__":
    main()
