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

`--rush`: a flash sale of `--stock` units, `--buyers` buyers arriving open-loop at `--arrival`
per second, through `Commerce.buy` (the websocket op is wired by the gateway): embedded
(SQLite group commit, one process) vs 2 node processes (PostgreSQL ledger + Redis stock gate)
sharing the arrivals. Reports orders/s (first arrival to last acknowledgement) and buy
latency from scheduled arrival (p50/p99/max), and checks PostgreSQL holds exactly the orders.

Caveat: the load process shares the 2 cores with the server; with 2 workers it competes with
both. Numbers are for comparing configurations in one run, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
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

from bench.ports import free_port
from client_sdk.protocol import SUBPROTOCOL_MSGPACK, decode, encode
from client_sdk.tokens import mint_token

SECRET = "bench-secret-0123456789-0123456789-abcdef"
ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"


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
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                assert self.transport is not None
                self.transport.write(_masked(encode({"op": "auth", "rid": 1, "token": self.token},
                                                    SUBPROTOCOL_MSGPACK)))
                self.transport.write(_masked(encode({"op": "join", "rid": 2, "room": "bench"},
                                                    SUBPROTOCOL_MSGPACK)))
                self.upgraded.set_result(None)
                self.buf = self.buf[end + 4:]
            return
        self.buf += data
        self._frames()

    def _frames(self) -> None:
        """Skip over frames without decoding them; answer pings (the server closes a peer
        that does not pong within 20 s)."""
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            op, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < head + n:
                break
            if op == 0x9 and self.transport is not None:  # ping -> pong, same payload
                payload = buf[pos + head:pos + head + n]
                self.transport.write(bytes([0x8A, 0x80 | n]) + b"\0\0\0\0" + payload)
            pos += head + n
        self.buf = buf[pos:]

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


# ---- flash-sale rush: 2 cluster nodes (PostgreSQL + Redis gate) vs the embedded SQLite ---------

PG = "postgresql://postgres@127.0.0.1:5432"


async def _buyers(commerce: Any, sale: str, first: int, n: int, rate: float) -> dict[str, Any]:
    """Open loop: buyer i arrives at start + i/rate whatever the server is doing."""
    from hdrh.histogram import HdrHistogram

    from server.errors import SoukError

    hist = HdrHistogram(1, 60_000_000, 3)
    acked = refused = 0
    last_ack = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal acked, refused, last_ack
        try:
            await commerce.buy(f"u{i}", sale, 1, f"k{i}")
            acked += 1
            last_ack = time.time()
        except SoukError:
            refused += 1
        hist.record_value(max(1, int((time.monotonic() - due) * 1e6)))

    start = time.monotonic() + 0.1
    t0 = time.time() + 0.1
    tasks = []
    for k in range(n):
        due = start + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first + k, due)))
    await asyncio.gather(*tasks)
    return {"acked": acked, "refused": refused, "t0": t0, "last_ack": last_ack,
            "p50_ms": hist.get_value_at_percentile(50) / 1000,
            "p99_ms": hist.get_value_at_percentile(99) / 1000,
            "max_ms": hist.get_max_value() / 1000}


def rush_node(dsn: str, schema: str, prefix: str, sale: str, first: int, n: int, rate: float,
              go: Any, out: Any) -> None:
    async def main() -> None:
        import asyncpg
        from redis.asyncio import Redis

        from server.commerce import Commerce
        from server.store.gate import StockGate
        from server.store.ledger import SqlLedger
        from server.store.postgres import PgDatabase
        from server.store.schema import migrate

        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=8,
                                         server_settings={"search_path": schema})
        db = PgDatabase(pool)
        await migrate(db)
        commerce = Commerce(SqlLedger(db, StockGate(Redis.from_url(REDIS), prefix)),
                            lambda *a, **k: None)
        await commerce.start()
        out.put("ready")
        while go.empty():
            await asyncio.sleep(0.01)
        out.put(await _buyers(commerce, sale, first, n, rate))
        await commerce.stop()
        await pool.close()

    uvloop.run(main())


async def _sale_on(commerce: Any, stock: int) -> str:
    product = await commerce.product_create("shop", {"title": "Tea", "price": 1000,
                                                     "stock": stock * 2})
    sale = await commerce.sale_create("bench", {"product": product["id"], "price": 500,
                                                "stock": stock, "duration_s": 600})
    return str(sale["id"])


def rush_embedded(stock: int, buyers: int, rate: float) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        from server.commerce import Commerce
        from server.store.ledger import SqlLedger
        from server.store.schema import migrate
        from server.store.sqlite import SqliteDatabase

        db = SqliteDatabase(Path(tempfile.mkdtemp(prefix="souk-rush-")) / "souk.db")
        await db.start()
        await migrate(db)
        commerce = Commerce(SqlLedger(db), lambda *a, **k: None)
        await commerce.start()
        sale = await _sale_on(commerce, stock)
        r = await _buyers(commerce, sale, 0, buyers, rate)
        await commerce.stop()
        await db.close()
        return r

    r = uvloop.run(main())
    return _rush_report("embedded (SQLite, 1 process)", [r], stock, buyers, rate)


def rush_cluster(stock: int, buyers: int, rate: float) -> dict[str, Any]:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    prefix = f"souk-bench-{uuid.uuid4().hex[:8]}:"
    dsn = PG + "/postgres"

    async def setup() -> str:
        from redis.asyncio import Redis

        from server.commerce import Commerce
        from server.store.gate import StockGate
        from server.store.ledger import SqlLedger
        from server.store.postgres import PgDatabase
        from server.store.schema import migrate

        conn = await asyncpg.connect(dsn)
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.close()
        pool = await asyncpg.create_pool(dsn, server_settings={"search_path": schema})
        redis = Redis.from_url(REDIS)
        db = PgDatabase(pool)
        await migrate(db)
        commerce = Commerce(SqlLedger(db, StockGate(redis, prefix)), lambda *a, **k: None)
        await commerce.start()
        sale = await _sale_on(commerce, stock)
        await commerce.stop()
        await pool.close()
        await redis.aclose()
        return sale

    async def teardown() -> None:
        from redis.asyncio import Redis

        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
        r = Redis.from_url(REDIS)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()

    sale = asyncio.run(setup())
    ctx = mp.get_context("spawn")
    go, outs, procs = ctx.Queue(), [ctx.Queue(), ctx.Queue()], []
    half = buyers // 2
    for k in range(2):
        p = ctx.Process(target=rush_node, args=(dsn, schema, prefix, sale, k * half, half,
                                                rate / 2, go, outs[k]))
        p.start()
        procs.append(p)
    for q in outs:
        assert q.get(timeout=60) == "ready"
    go.put(1)
    go.put(1)
    results = [q.get(timeout=300) for q in outs]
    for p in procs:
        p.join(30)

    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        n = await conn.fetchval("SELECT COUNT(*) FROM orders WHERE sale = $1", sale)
        left = await conn.fetchval("SELECT stock_left FROM sales WHERE id = $1", sale)
        await conn.close()
        return int(n), int(left)

    durable, left = asyncio.run(count())
    asyncio.run(teardown())
    report = _rush_report("2 nodes (PostgreSQL + Redis gate)", results, stock, buyers, rate)
    report["orders_in_postgres"] = durable
    report["stock_left_in_postgres"] = left
    return report


def _rush_report(name: str, parts: list[dict[str, Any]], stock: int, buyers: int,
                 rate: float) -> dict[str, Any]:
    acked = sum(p["acked"] for p in parts)
    t0 = min(p["t0"] for p in parts)
    last = max(p["last_ack"] for p in parts)
    return {
        "config": name, "stock": stock, "buyers": buyers, "arrival_per_s": rate,
        "orders": acked, "refused": sum(p["refused"] for p in parts),
        "orders_per_s": round(acked / max(last - t0, 1e-6), 1),
        "buy_p50_ms": max(p["p50_ms"] for p in parts),
        "buy_p99_ms": max(p["p99_ms"] for p in parts),
        "buy_max_ms": max(p["max_ms"] for p in parts),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--rate", type=float, default=20.0, help="chat events per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--probes", type=int, default=20, help="viewers that decode and time events")
    p.add_argument("--configs", default="embedded,redis-1,redis-2")
    p.add_argument("--out", default="reports/bench/scaleout.json")
    p.add_argument("--rush", action="store_true", help="the flash-sale rush comparison only")
    p.add_argument("--stock", type=int, default=2000)
    p.add_argument("--buyers", type=int, default=6000)
    p.add_argument("--arrival", type=float, default=3000.0, help="buyers arriving per second")
    a = p.parse_args()
    if a.rush:
        rush_report = {"runs": [rush_embedded(a.stock, a.buyers, a.arrival),
                                rush_cluster(a.stock, a.buyers, a.arrival)],
                       "load_average": os.getloadavg()}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_bytes(orjson.dumps(rush_report, option=orjson.OPT_INDENT_2))
        print(orjson.dumps(rush_report, option=orjson.OPT_INDENT_2).decode())
        return
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
