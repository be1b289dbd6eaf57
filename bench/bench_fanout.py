"""Fan-out: server CPU per recipient, last-client latency and memory per idle connection,
Souk against a bare uvloop server and a websockets `broadcast()` server in the same run.

Run: `make bench` (sizes 1,000, 5,000 and 10,000), or
`.venv/bin/python bench/bench_fanout.py --sizes 1000 --rounds 2 --events 30` for a look.

Each server runs alone as its own process pinned to one core (`--server-cpu`, `taskset`);
the viewers are one process of bare asyncio clients pinned to the other (`--client-cpu`):
each opens a websocket, sends `auth` and `join` (msgpack), then only reads. One streamer
connection sends `chat`; every server fans one ~200-byte event out to every viewer (Souk as
it ships, the baselines with the same bytes: bench/floor_server.py). Per event the
controller waits until every viewer has it, then pauses, so each event is measured alone.

- CPU per recipient: the server's utime+stime (ns, /proc/<pid>/task/*/schedstat) over the
  events, divided by events x viewers. Everything the server does in that window counts.
- last-client latency: from the `chat` leaving the streamer to the last viewer reading its
  event (one host, one monotonic clock); p50 over the events.
- memory per idle connection: server RSS with every viewer joined, minus RSS before any
  connected, divided by viewers.
Rounds alternate the servers (raw, websockets, souk, raw, ...) so host noise hits all alike.
Ratios are to the raw server of the same round, then the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402
from client_sdk.tokens import mint_token  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-abcdef"
MARK = b"BENCH:"
KINDS = ("raw", "websockets", "souk")


# ---- clients ------------------------------------------------------------------------
def _masked(frame: dict[str, Any]) -> bytes:
    payload = msgpack.packb(frame, use_bin_type=True)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0xFE]) + struct.pack("!H", n)
    return head + mask + masked


def _upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: souk.v1.msgpack\r\n\r\n").encode()


class Viewer(asyncio.Protocol):
    """Handshake, `auth`, `join`, then reads: each frame carrying MARK is an event arrival."""

    def __init__(self, port: int, steps: list[bytes], on_event: Callable[[bytes, int], None]) -> None:
        self.port = port
        self.steps = steps
        self.on_event = on_event
        self.buf = bytearray()
        self.upgraded = False
        self.replies = 0
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(_upgrade(self.port))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.joined.set_exception(ConnectionError(bytes(buf[:40]).decode(errors="replace")))
                return
            del buf[: end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(self.steps[0])
        while len(buf) >= 2:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < pos + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 0x9 and self.transport is not None:  # ping: answer with a masked pong
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            at = payload.find(MARK)
            if at >= 0:
                self.on_event(payload[at + len(MARK): at + len(MARK) + 6], now)
            elif not self.joined.done() and payload[1:4] == b"\xa2op" and b"\xa2ok" in payload[:8]:
                self.replies += 1
                if self.replies < len(self.steps):
                    assert self.transport is not None
                    self.transport.write(self.steps[self.replies])
                else:
                    self.joined.set_result(None)


@dataclass
class Arrivals:
    count: dict[bytes, int] = field(default_factory=dict)
    last: dict[bytes, int] = field(default_factory=dict)

    def see(self, key: bytes, now: int) -> None:
        self.count[key] = self.count.get(key, 0) + 1
        self.last[key] = now


def viewers_process(pipe: Connection, port: int, n: int, cpu: int | None, concurrency: int) -> None:
    """The crowd: `n` viewers on one core; tells the controller when all joined and, for
    each event, when every viewer got it."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        arrivals = Arrivals()
        tokens = [mint_token(SECRET, f"v{i}", rooms=["bench"], ttl_s=3600) for i in range(n)]
        join = _masked({"op": "join", "rid": 2, "room": "bench"})
        sem = asyncio.Semaphore(concurrency)
        viewers: list[Viewer] = []

        async def one(i: int) -> None:
            steps = [_masked({"op": "auth", "rid": 1, "token": tokens[i]}), join]
            async with sem:
                _, v = await loop.create_connection(lambda: Viewer(port, steps, arrivals.see),
                                                    "127.0.0.1", port)
                await asyncio.wait_for(v.joined, 60)
            viewers.append(v)

        await asyncio.gather(*(one(i) for i in range(n)))
        pipe.send(("joined", len(viewers)))
        while True:
            while not pipe.poll():
                await asyncio.sleep(0.005)
            cmd, arg = pipe.recv()
            if cmd == "stop":
                break
            key = arg.encode()  # wait until every viewer has event `key`
            deadline = time.monotonic() + 10
            while arrivals.count.get(key, 0) < len(viewers) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            pipe.send((arrivals.count.get(key, 0), arrivals.last.get(key, 0)))
        for v in viewers:
            if v.transport is not None:
                v.transport.abort()

    uvloop.run(main())


# ---- servers --------------------------------------------------------------------------
def server_cpu_ns(pid: int, main_only: bool = False) -> int:
    """utime + stime of every thread (or of the event loop's thread), in ns: schedstat
    counts them exactly, where /proc/<pid>/stat counts 10 ms ticks."""
    total = 0
    tasks = [Path(f"/proc/{pid}/task/{pid}")] if main_only else Path(f"/proc/{pid}/task").iterdir()
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_server(kind: str, port: int, cpu: int | None, data_dir: Path) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    if kind == "souk":
        cmd = [*pin, sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    else:
        cmd = [*pin, sys.executable, str(ROOT / "bench" / "floor_server.py"), "--kind", kind,
               "--port", str(port)]
    env = {**os.environ, "SOUK_SECRET": SECRET}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port, proc, what=f"the {kind} server")
    return proc


class Streamer(Viewer):
    """The controller's connection that sends `chat` (a streamer token: no chat limit)."""

    def __init__(self, port: int) -> None:
        tok = mint_token(SECRET, "streamer", role="streamer", rooms=["bench"], ttl_s=3600)
        super().__init__(port, [_masked({"op": "auth", "rid": 1, "token": tok}),
                                _masked({"op": "join", "rid": 2, "room": "bench"})], lambda k, t: None)


async def measure(kind: str, viewers: int, events: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(kind, port, args.server_cpu, Path(tmp))
        try:
            return await _measure(proc, kind, port, viewers, events, args)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _measure(proc: subprocess.Popen[bytes], kind: str, port: int, viewers: int, events: int,
                   args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(proc.pid)
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    crowd = ctx.Process(target=viewers_process, args=(theirs, port, viewers, args.client_cpu, 200))
    crowd.start()
    try:
        while not mine.poll():
            await asyncio.sleep(0.05)
        _, joined = mine.recv()
        _, streamer = await loop.create_connection(lambda: Streamer(port), "127.0.0.1", port)
        await asyncio.wait_for(streamer.joined, 10)
        await asyncio.sleep(1.5)  # presence and join bursts settle
        rss1 = rss_bytes(proc.pid)
        text = "x" * 120
        lat: list[float] = []
        missing = 0
        cpu0, main0 = server_cpu_ns(proc.pid), server_cpu_ns(proc.pid, main_only=True)
        for k in range(events):
            key = f"{k:06d}"
            frame = _masked({"op": "chat", "rid": 10 + k, "room": "bench",
                             "text": f"{MARK.decode()}{key} {text}"})
            mine.send(("wait", key))
            sent = time.monotonic_ns()
            assert streamer.transport is not None
            streamer.transport.write(frame)
            while not mine.poll():
                await asyncio.sleep(0.001)
            got, last = mine.recv()
            missing += joined - got
            if got == joined:
                lat.append((last - sent) / 1e6)
            await asyncio.sleep(args.gap)
        cpu = server_cpu_ns(proc.pid) - cpu0
        main = server_cpu_ns(proc.pid, main_only=True) - main0
        mine.send(("stop", ""))
        crowd.join(30)
    finally:
        if crowd.is_alive():
            crowd.kill()
    return {
        "kind": kind,
        "viewers": joined,
        "events": events,
        "missing": missing,
        "cpu_us_per_recipient": cpu / 1000 / (events * joined),
        "loop_thread_share": main / cpu if cpu else None,  # the rest: other threads (SQLite)
        "last_client_p50_ms": statistics.median(lat) if lat else None,
        "last_client_max_ms": max(lat) if lat else None,
        "kib_per_idle_connection": (rss1 - rss0) / joined / 1024,
    }


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        rounds: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["size"] == n:
                rounds.setdefault(r["round"], {})[r["kind"]] = r
        row: dict[str, Any] = {}
        for kind in KINDS:
            cells = [rd[kind] for rd in rounds.values() if kind in rd]
            if not cells:
                continue
            row[kind] = {
                "cpu_us_per_recipient": statistics.median(c["cpu_us_per_recipient"] for c in cells),
                "last_client_p50_ms": statistics.median(c["last_client_p50_ms"] or 0 for c in cells),
                "kib_per_idle_connection": statistics.median(c["kib_per_idle_connection"] for c in cells),
            }
            if kind != "raw":
                both = [rd for rd in rounds.values() if kind in rd and "raw" in rd]
                row[kind]["cpu_ratio_to_raw"] = statistics.median(
                    rd[kind]["cpu_us_per_recipient"] / rd["raw"]["cpu_us_per_recipient"] for rd in both)
                row[kind]["latency_ratio_to_raw"] = statistics.median(
                    (rd[kind]["last_client_p50_ms"] or 0) / (rd["raw"]["last_client_p50_ms"] or 1)
                    for rd in both)
        out[str(n)] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,5000,10000", help="viewer counts, comma-separated")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per size")
    p.add_argument("--events", type=int, default=0,
                   help="events per measurement (default: about 200,000 deliveries, 20..200)")
    p.add_argument("--gap", type=float, default=0.05, help="seconds between events")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--out", default="reports/bench/fanout.json")
    # the interface bench/bench_ab.py drives every revision with: one size, raw and souk,
    # `--rounds` events; the JSON then also carries its flat keys
    p.add_argument("--viewers", type=int, help="(bench_ab) one size; --rounds then counts events")
    p.add_argument("--rate", type=float, help="(bench_ab) accepted, unused")
    a = p.parse_args()
    if a.client_cpu is not None:
        os.sched_setaffinity(0, {a.client_cpu})
    if a.viewers:
        a.sizes, a.kinds, a.events, a.rounds = str(a.viewers), "raw,souk", a.rounds, 1
    sizes = [int(s) for s in a.sizes.split(",") if s]
    kinds = [k for k in a.kinds.split(",") if k]
    runs: list[dict[str, Any]] = []
    for n in sizes:
        events = a.events or max(20, min(200, 200_000 // n))
        for r in range(a.rounds):
            for kind in kinds:
                res = uvloop.run(measure(kind, n, events, a))
                res.update(size=n, round=r)
                runs.append(res)
                print(f"{n:>6} viewers  round {r}  {kind:<10}  "
                      f"{res['cpu_us_per_recipient']:6.2f} us/recipient  "
                      f"last client p50 {res['last_client_p50_ms'] or float('nan'):7.1f} ms  "
                      f"{res['kib_per_idle_connection']:5.1f} KiB/conn  missing {res['missing']}  "
                      f"loop thread {100 * (res['loop_thread_share'] or 0):.0f} %",
                      flush=True)
    summary = summarize(runs, sizes)
    doc: dict[str, Any] = {"host_cpus": os.cpu_count(), "runs": runs, "summary": summary,
                           "date": time.strftime("%Y-%m-%d"), "loadavg": os.getloadavg()}
    if a.viewers and "souk" in summary[str(a.viewers)]:
        cell = summary[str(a.viewers)]["souk"]
        doc.update(viewers=a.viewers, per_recipient_us_fanout=cell["cpu_us_per_recipient"],
                   ratio_fanout_to_raw=cell["cpu_ratio_to_raw"],
                   memory_per_idle_connection_kib=cell["kib_per_idle_connection"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print()
    print(f"{'viewers':>8} {'server':<11} {'us/recipient':>13} {'x raw':>6} {'last p50 ms':>12} "
          f"{'x raw':>6} {'KiB/conn':>9}")
    for n, row in summary.items():
        for kind, cell in row.items():
            print(f"{n:>8} {kind:<11} {cell['cpu_us_per_recipient']:13.2f} "
                  f"{cell.get('cpu_ratio_to_raw', 1.0):6.2f} {cell['last_client_p50_ms']:12.1f} "
                  f"{cell.get('latency_ratio_to_raw', 1.0):6.2f} {cell['kib_per_idle_connection']:9.1f}")
    print(f"\nJSON: {a.out}")


if __name__ == "__main__":
    main()
