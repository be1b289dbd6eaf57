"""Media cascade benchmark: time to first frame and latency on the origin vs on an edge.

Run: `.venv/bin/python bench/bench_cascade.py --samples 5` (needs Redis on 127.0.0.1:6379).
Prints JSON.

Two `souk serve --redis` processes (A, B) share a fresh key prefix; a stamped aiortc
publisher (VP8, 30 fps, 320x240) publishes room `bench` to A. Then, `--samples` times each:

- **origin**: a fresh decoding viewer watches on A;
- **edge, cold**: a fresh viewer watches on B while B has no pull (B looks the origin up,
  opens its service socket to A, negotiates the pull, then answers the viewer);
- **edge, warm**: a second viewer on B while B's pull is running.

Time to first frame = first decoded frame - the moment the viewer sent `watch` (docs/loadtest.md
"Metrics": from the first signalling frame). Then one viewer on A and one on B watch together for
`--seconds`, reading the capture stamp of every frame: the difference of their latencies
is what the extra hop adds (same clock, same frames). Between cold samples the edge's
last viewer leaves and the bench waits until B has dropped its pull (grace 0.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402
from client_sdk import Client, mint_token  # noqa: E402
from media.testing import loopback  # noqa: E402
from media.testing.peers import PublisherPeer, ViewerPeer, wait_until  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-abcdef"
REDIS = "redis://127.0.0.1:6379/0"


class Node:
    def __init__(self, prefix: str, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        env = {**os.environ, "SOUK_SECRET": SECRET, "SOUK_EDGE_GRACE_S": "0.5"}
        self.log = open(tmp / f"{name}.log", "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--data-dir", str(tmp / name), "--redis", REDIS,
             "--redis-prefix", prefix, "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.proc, what=name)

    def media(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {m[1]: float(m[2])
                for m in re.finditer(r'^souk_media\{stat="(\w+)"\} (\S+)$', text, re.M)}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def client(node: Node, sub: str, role: str = "viewer") -> Client:
    return Client(node.url, mint_token(SECRET, sub, role=role), reconnect=False)


async def ttff(node: Node, sub: str) -> tuple[float, Client, ViewerPeer]:
    """Watch on ``node`` with a fresh decoding viewer; seconds to its first decoded frame."""
    c = client(node, sub)
    await c.connect()
    peer = ViewerPeer(read_every=30)
    offer = await peer.offer()
    started = time.time()
    reply = await c.request("watch", room="bench", sdp=offer)
    await peer.accept(reply["sdp"])
    await wait_until(lambda: peer.sink.first_frame_at is not None, 60, f"{sub}'s first frame")
    assert peer.sink.first_frame_at is not None
    return peer.sink.first_frame_at - started, c, peer


async def leave(c: Client, peer: ViewerPeer) -> None:
    await c.close()
    await peer.close()


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "max_ms": round(ms[-1], 1),
            "min_ms": round(ms[0], 1)}


async def run(samples: int, seconds: float) -> dict[str, Any]:
    prefix = f"souk-bench-{uuid.uuid4().hex[:10]}:"
    with tempfile.TemporaryDirectory() as tmp_name, loopback():
        tmp = Path(tmp_name)
        a, b = Node(prefix, tmp, "a"), Node(prefix, tmp, "b")
        pub = PublisherPeer(codec="VP8")
        streamer = client(a, "streamer", "streamer")
        out: dict[str, Any] = {}
        try:
            await streamer.connect()
            reply = await streamer.request("publish", room="bench", sdp=await pub.offer())
            await pub.accept(reply["sdp"])
            await pub.connected(30)
            await asyncio.sleep(1.0)  # the origin has a keyframe cached, as in a live room
            origin, cold, warm = [], [], []
            for i in range(samples):
                t, c, p = await ttff(a, f"o{i}")
                origin.append(t)
                await leave(c, p)
                t, c, p = await ttff(b, f"c{i}")
                cold.append(t)
                t2, c2, p2 = await ttff(b, f"w{i}")
                warm.append(t2)
                await leave(c2, p2)
                await leave(c, p)
                deadline = time.monotonic() + 30
                while (await asyncio.to_thread(b.media)).get("edge_pulls", 1) != 0:
                    if time.monotonic() > deadline:
                        raise RuntimeError("B kept its pull")
                    await asyncio.sleep(0.1)
            out["ttff_origin"] = summary(origin)
            out["ttff_edge_cold"] = summary(cold)
            out["ttff_edge_warm"] = summary(warm)
            # the hop: one viewer per node, same frames, same clock
            _, ca, pa = await ttff(a, "lat-a")
            _, cb, pb = await ttff(b, "lat-b")
            pa.sink.read_every = pb.sink.read_every = 1
            pa.sink.latencies_ms.clear()
            pb.sink.latencies_ms.clear()
            await asyncio.sleep(seconds)
            la, lb = sorted(pa.sink.latencies_ms), sorted(pb.sink.latencies_ms)
            out["latency_origin_ms"] = {"n": len(la), "p50": la[len(la) // 2],
                                        "p95": la[int(len(la) * 0.95)]}
            out["latency_edge_ms"] = {"n": len(lb), "p50": lb[len(lb) // 2],
                                      "p95": lb[int(len(lb) * 0.95)]}
            out["added_by_hop_p50_ms"] = lb[len(lb) // 2] - la[len(la) // 2]
            out["stats_a"] = await asyncio.to_thread(a.media)
            out["stats_b"] = await asyncio.to_thread(b.media)
            out["loadavg"] = os.getloadavg()
            await leave(ca, pa)
            await leave(cb, pb)
        finally:
            await streamer.close()
            await pub.close()
            a.stop()
            b.stop()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.samples, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
