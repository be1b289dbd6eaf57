"""Scale-out benchmark: the same load on the embedded server, 1 worker over Redis, 2 workers.

Run: `.venv/bin/python bench/bench_scaleout.py --viewers 2000 --rate 20 --seconds 10`
(needs Redis on 127.0.0.1:6379; `make services` starts it). Prints JSON.

For each configuration a real server is started as a subprocess (`souk serve`, with
`--redis` / `--workers 2`), `--viewers` websocket viewers join one room from a separate load
process (sinks that count bytes and decode nothing, so the load process stays cheap, plus
`--probes` viewers that decode and time every event), and one streamer publishes chat at a fixed rate (open loop: sends are scheduled by
the clock, never by replies, so a stalled server cannot hide its stall). Each viewer measures
event latency = arrival - send time (one machine, one clock) into an HDR histogram.
Reported: viewers connected and held to the end, events received / expected, latency
p50/p99/max, time to connect all viewers, server CPU seconds.

Caveat: the load process shares the 2 cores with the server; with 2 workers it competes with
both. Numbers are for comparing configurations in one run, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, decode, encode
from client_sdk.tokens import mint_token

SECRET = "bench-secret-0123456789-0123456789-abcdef"
ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _masked(payload: bytes) -> bytes:
    """A client-to-server websocket frame (binary, masked with a zero key: valid, cheap)."""
    n = len(payload)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


class Sink(asyncio.Protocol):
    """A viewer that costs the load process almost nothing: it counts bytes, decodes nothing."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.upgraded = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.bytes = 0
        self.closed = False
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport instances

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: souk.v1.msgpack\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if not self.upgraded.done():
            self.buf += data
            if b"\r\n\r\n" in self.buf:
                assert self.transport is not None
                self.transport.write(_masked(encode({"op": "auth", "rid": 1, "token": self.token},
                                                    SUBPROTOCOL_MSGPACK)))
                self.transport.write(_masked(encode({"op": "join", "rid": 2, "room": "bench"},
                                                    SUBPROTOCOL_MSGPACK)))
                self.upgraded.set_result(None)
                self.buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before upgrade"))


def viewers_process(url: str, n: int, ready: Any, stop: Any, out: Any, probes: int) -> None:
    """`n` sink viewers plus `probes` decoding viewers that measure event latency."""
    import websockets
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, 60_000_000, 3)  # microseconds
    received = [0] * probes
    probe_ok = [False] * probes
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    async def probe(i: int) -> None:
        try:
            ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
                                          compression=None, max_queue=None, open_timeout=60,
                                          ping_interval=None)
            tok = mint_token(SECRET, f"p{i}", rooms=["bench"])
            await ws.send(encode({"op": "auth", "rid": 1, "token": tok}, SUBPROTOCOL_MSGPACK))
            await ws.send(encode({"op": "join", "rid": 2, "room": "bench"}, SUBPROTOCOL_MSGPACK))
            while decode(await ws.recv(), SUBPROTOCOL_MSGPACK).get("rid") != 2:
                pass
            probe_ok[i] = True
            async for data in ws:
                now = time.time_ns()
                frame = decode(data, SUBPROTOCOL_MSGPACK)
                items = frame["items"] if frame.get("op") == "batch" else [frame]
                for ev in items:
                    if ev.get("type") == "chat":
                        received[i] += 1
                        hist.record_value(max(1, (now - int(ev["text"])) // 1000))
        except Exception:
            probe_ok[i] = False

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        sinks: list[Sink] = []
        for i in range(n):
            tok = mint_token(SECRET, f"v{i}", rooms=["bench"])
            try:
                _, sink = await loop.create_connection(lambda t=tok: Sink(t), "127.0.0.1", port)
                sinks.append(sink)
            except OSError:
                pass
        await asyncio.gather(*(s.upgraded for s in sinks), return_exceptions=True)
        tasks = [asyncio.create_task(probe(i)) for i in range(probes)]
        deadline = time.monotonic() + 60
        while sum(probe_ok) < probes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the joins answered; snapshots drained
        base = [s.bytes for s in sinks]
        ready.put(time.monotonic() - t0)
        while stop.empty():
            await asyncio.sleep(0.1)
        held = sum(1 for s in sinks if not s.closed)
        for t in tasks:
            t.cancel()
        out.put({
            "held": held + sum(probe_ok),
            "sink_bytes": sum(s.bytes for s in sinks) - sum(base),
            "received": sum(received),
            "p50_ms": hist.get_value_at_percentile(50) / 1000,
            "p99_ms": hist.get_value_at_percentile(99) / 1000,
            "max_ms": hist.get_max_value() / 1000,
        })
        for s in sinks:
            if s.transport is not None:
                s.transport.close()

    uvloop.run(main())


async def publisher(url: str, rate: float, seconds: float) -> int:
    import websockets

    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL_MSGPACK], compression=None)  # type: ignore[list-item]
    tok = mint_token(SECRET, "streamer", role="streamer", rooms=["bench"])
    await ws.send(encode({"op": "auth", "rid": 1, "token": tok}, SUBPROTOCOL_MSGPACK))
    await ws.send(encode({"op": "join", "rid": 2, "room": "bench"}, SUBPROTOCOL_MSGPACK))

    async def drain() -> None:
        async for _ in ws:
            pass

    reader = asyncio.create_task(drain())
    n = int(rate * seconds)
    start = time.monotonic() + 0.2
    for k in range(n):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(encode({"op": "chat", "rid": 10 + k, "room": "bench",
                              "text": str(time.time_ns())}, SUBPROTOCOL_MSGPACK))
    await asyncio.sleep(1.5)  # let the last events arrive
    reader.cancel()
    await ws.close()
    return n


def start_server(port: int, extra: list[str], data: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SOUK_SECRET": SECRET, "SOUK_OPS_PER_S": "10000", "SOUK_OPS_BURST": "10000",
           "SOUK_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = 2 if "--workers" in extra else 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
        listening = sum(1 for p in procs for c in p.net_connections()
                        if c.status == "LISTEN" and c.laddr.port == port)
        if listening >= want:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    total = 0.0
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def run_config(name: str, extra: list[str], viewers: int, rate: float, seconds: float,
               probes: int) -> dict[str, Any]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="souk-bench-"))
    proc = start_server(port, extra, data)
    url = f"ws://127.0.0.1:{port}/ws"
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    load = ctx.Process(target=viewers_process, args=(url, viewers, ready, stop, out, probes))
    load.start()
    try:
        connect_s = ready.get(timeout=180)
        cpu0 = cpu_seconds(proc)
        sent = uvloop.run(publisher(url, rate, seconds))
        cpu1 = cpu_seconds(proc)
        stop.put(1)
        result = out.get(timeout=60)
        load.join(30)
    finally:
        if load.is_alive():
            load.kill()
        proc.send_signal(15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "config": name,
        "viewers": viewers + probes,
        "held": result["held"],
        "connect_all_s": round(connect_s, 2),
        "rate_per_s": rate,
        "probe_events_expected": sent * probes,
        "probe_events_received": result["received"],
        "sink_kib_received": result["sink_bytes"] // 1024,
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "max_ms": result["max_ms"],
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--rate", type=float, default=20.0, help="chat events per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--probes", type=int, default=20, help="viewers that decode and time events")
    p.add_argument("--configs", default="embedded,redis-1,redis-2")
    p.add_argument("--out", default="reports/bench/scaleout.json")
    a = p.parse_args()
    prefix = f"souk-bench-{uuid.uuid4().hex[:8]}:"
    configs = {
        "embedded": [],
        "redis-1": ["--redis", REDIS, "--redis-prefix", prefix + "1:"],
        "redis-2": ["--redis", REDIS, "--redis-prefix", prefix + "2:", "--workers", "2"],
    }
    results = [run_config(name, configs[name], a.viewers, a.rate, a.seconds, a.probes)
               for name in a.configs.split(",")]
    report: dict[str, Any] = {"runs": results, "load_average": os.getloadavg()}
    by = {r["config"]: r for r in results}
    if "redis-1" in by and "redis-2" in by:
        report["p99_ratio_2_workers_vs_1"] = round(by["redis-2"]["p99_ms"] / max(by["redis-1"]["p99_ms"], 0.001), 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    # clean the bench keys
    import redis

    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(match=prefix + "*"))
    if keys:
        r.delete(*keys)


if __name__ == "__main__":
    main()
