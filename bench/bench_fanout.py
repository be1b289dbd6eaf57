"""Fan-out cost per recipient vs a raw uvloop transport.write, and memory per idle connection.

Run: `make bench` (or `.venv/bin/python bench/bench_fanout.py --viewers 5000`).
The server runs in this process (so its loop can be timed from inside); the viewers are a
separate process that reads and discards. Both measurements use the same sockets and bytes
in the same run, alternating, so machine noise hits both alike. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, decode, encode
from client_sdk.tokens import mint_token

SECRET = "bench-secret-0123456789-0123456789-abcdef"


def viewers_process(url: str, n: int, ready: mp.Event, stop: mp.Event, rate: float) -> None:  # type: ignore[type-arg]
    import websockets

    async def one(i: int) -> None:
        ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL_MSGPACK], compression=None,
                                      max_queue=None, open_timeout=60)  # type: ignore[list-item]
        tok = mint_token(SECRET, f"b{i}", rooms=["bench"])
        await ws.send(encode({"op": "auth", "rid": 1, "token": tok}, SUBPROTOCOL_MSGPACK))
        await ws.recv()
        await ws.send(encode({"op": "join", "rid": 2, "room": "bench"}, SUBPROTOCOL_MSGPACK))
        while decode(await ws.recv(), SUBPROTOCOL_MSGPACK).get("rid") != 2:
            pass
        conns.append(ws)
        async for _ in ws:
            pass

    conns: list[object] = []

    async def main() -> None:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(1 / rate)
        while len(conns) < n:
            await asyncio.sleep(0.1)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()

    uvloop.run(main())


async def run(viewers: int, rate: float, rounds: int) -> dict[str, object]:
    from server.app import App
    from server.config import Config

    cfg = Config(host="127.0.0.1", port=0, data_dir=Path(tempfile.mkdtemp()), secret=SECRET,
                 ops_per_s=1000, ops_burst=1000)
    app = App(cfg)
    await app.start()
    me = psutil.Process(os.getpid())
    rss0 = me.memory_info().rss
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=viewers_process, args=(f"ws://127.0.0.1:{cfg.port}/ws", viewers, ready, stop, rate))
    proc.start()
    while not ready.is_set():
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    rss1 = me.memory_info().rss
    ch = "room:bench"
    subs = [s for s in app.sessions if ch in s.channels]
    fanout_t: list[float] = []
    raw_t: list[float] = []
    text = "x" * 120
    for r in range(rounds):
        # Souk's path: publish (seq, history) + hub flush (encode once, write to each)
        t0 = time.perf_counter()
        app.bus.publish(ch, "chat", {"id": f"m{r}", "user": "s", "name": "s", "text": text})
        app.hub.flush(ch)
        fanout_t.append(time.perf_counter() - t0)
        await asyncio.sleep(0.3)
        # the floor: the same number of raw transport.write calls of a frame of the same size
        from server.wsframe import frame_bytes

        data = frame_bytes({"op": "event", "ch": ch, "seq": 0, "ts": 0, "type": "chat", "id": f"m{r}",
                            "user": "s", "name": "s", "text": text}, SUBPROTOCOL_MSGPACK)
        t0 = time.perf_counter()
        for s in subs:
            s._transport.write(data)
        raw_t.append(time.perf_counter() - t0)
        await asyncio.sleep(0.3)
    stop.set()
    proc.join(30)
    await app.stop()
    f_med, r_med = statistics.median(fanout_t), statistics.median(raw_t)
    return {
        "viewers": len(subs),
        "fanout_ms_median": round(f_med * 1000, 2),
        "raw_write_ms_median": round(r_med * 1000, 2),
        "per_recipient_us_fanout": round(f_med / len(subs) * 1e6, 2),
        "per_recipient_us_raw": round(r_med / len(subs) * 1e6, 2),
        "ratio_fanout_to_raw": round(f_med / r_med, 3),
        "memory_per_idle_connection_kib": round((rss1 - rss0) / len(subs) / 1024, 1),
        "rounds": rounds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--viewers", type=int, default=5000)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--out", default="reports/bench/fanout.json")
    a = p.parse_args()
    result = uvloop.run(run(a.viewers, a.rate, a.rounds))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
