"""What recording a live costs: the server's CPU with recording on and off, alternated.

One publisher (aiortc's stamped synthetic camera, 30 fps VP8 + Opus, in this process), no
viewer, a fresh `souk serve --media-workers 0` for every run, pinned with `taskset` to one
core (the publisher to the other). Each run: the room goes live (recording on: the room was
created with `record: true`), the stream is published, `--warm` seconds pass, then the
server's CPU time (user + system, from /proc) is read over `--measure` seconds. Runs
alternate off, on, off, on, ... so that drift on a busy host falls on both. The cost of
recording is the difference of the medians, in points of a core (1 point = 1 % of a core).

    .venv/bin/python bench/bench_recording.py --runs 3 --out reports/bench_recording.json
    .venv/bin/python bench/bench_recording.py --runs 3 --size 320x240 --noise   # ~2.5 Mbit/s

Prints one line per run, the medians and the host's load average (other processes share
the machine: label the figures with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402
from client_sdk import Client, mint_token  # noqa: E402
from media.testing import loopback  # noqa: E402
from media.testing.peers import PublisherPeer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its threads (the recorder is a thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def spawn(cpus: str, port: int, data: str, secret: str) -> subprocess.Popen[bytes]:
    """A fresh server, pinned to ``cpus``, its media in-process (the recorder is a thread)."""
    return subprocess.Popen(
        ["taskset", "-c", cpus, sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", data, "--media-workers", "0"],
        cwd=ROOT, env={**os.environ, "SOUK_SECRET": secret},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def recorded_bytes(data: Path) -> int:
    return sum(f.stat().st_size for f in (data / "replays").glob("*.webm"))


async def run(record: bool, server_cpu: str, warm_s: float, measure_s: float,
              size: tuple[int, int] = (320, 240), noise: bool = False) -> dict[str, float]:
    secret = secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = spawn(server_cpu, port, tmp, secret)
        try:
            await asyncio.to_thread(wait_listening, port, proc, timeout_s=20)
            tok = mint_token(secret, "host", name="host", role="streamer", rooms=["*"],
                             groups=[], ttl_s=3600)
            with loopback():
                pub = PublisherPeer(codec="VP8", width=size[0], height=size[1], noise=noise)
                async with Client(f"ws://127.0.0.1:{port}/ws", tok) as st:
                    await st.request("room_create", room="bench", title="bench", record=record)
                    await st.request("room_state", room="bench", state="live")
                    reply = await st.request("publish", room="bench", sdp=await pub.offer())
                    await pub.accept(reply["sdp"])
                    await pub.connected()
                    await asyncio.sleep(warm_s)
                    c0, t0, f0 = cpu_s(proc.pid), time.monotonic(), pub.video.frames_sent
                    await asyncio.sleep(measure_s)
                    c1, t1, f1 = cpu_s(proc.pid), time.monotonic(), pub.video.frames_sent
                    stats = await pub.pc.getStats()
                    sent = sum(getattr(s, "bytesSent", 0) for s in stats.values()
                               if getattr(s, "type", "") == "outbound-rtp")
                    await st.request("room_state", room="bench", state="ended")
                await pub.close()
            file_bytes = recorded_bytes(Path(tmp)) if record else 0
        finally:
            proc.terminate()
            proc.wait(10)
    return {"record": record, "cpu_points": 100 * (c1 - c0) / (t1 - t0),
            "fps": (f1 - f0) / (t1 - t0), "file_bytes": file_bytes,
            "uplink_kbit_s": 8 * sent / 1000 / (t1 - t0 + warm_s)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of each (on and off)")
    ap.add_argument("--warm", type=float, default=4.0)
    ap.add_argument("--measure", type=float, default=15.0)
    ap.add_argument("--server-cpu", default="1", help="taskset CPU list of the server")
    ap.add_argument("--client-cpu", default="0", help="CPU of this process (the publisher)")
    ap.add_argument("--size", default="320x240", help="the synthetic camera's frame size")
    ap.add_argument("--noise", action="store_true",
                    help="noisy frames: the encoder's bitrate goes up (640x480: ~10 Mbit/s)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    results: list[dict[str, float]] = []
    for i in range(args.runs):
        for record in (False, True):
            w, h = (int(x) for x in args.size.split("x"))
            r = await run(record, args.server_cpu, args.warm, args.measure, (w, h), args.noise)
            results.append(r)
            print(f"run {i + 1} record={'on ' if record else 'off'} cpu {r['cpu_points']:.2f} "
                  f"points of a core, publisher {r['fps']:.1f} fps "
                  f"~{r['uplink_kbit_s']:.0f} kbit/s, file {r['file_bytes']} B",
                  flush=True)
    off = statistics.median(r["cpu_points"] for r in results if not r["record"])
    on = statistics.median(r["cpu_points"] for r in results if r["record"])
    load = os.getloadavg()
    summary = {"size": args.size, "noise": args.noise, "median_off": off, "median_on": on, "cost_points": on - off,
               "load_avg": load, "cores": os.cpu_count(), "runs": results}
    print(f"median off {off:.2f}, on {on:.2f}: recording costs {on - off:.2f} points of a core "
          f"(busy host, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
