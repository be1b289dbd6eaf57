"""kill -9 of a real `souk serve` process during a lucky draw, then a restart on the same data:
the draw still closes on time with every entry it acknowledged, nobody is entered twice, and
the prizes are granted exactly once, also when the kill lands while the winners are being
drawn (held there by a slow beacon, a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from client_sdk import Client
from client_sdk.errors import SoukError
from server.domain.draw import entrant_hash
from tests.conftest import ServerProcess, free_port, token

DURATION = 8


def entrants_of(http: str, draw_id: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"{http}/api/draws/{draw_id}/entrants",
                                 headers={"Authorization": f"Bearer {token('v0')}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def prize_rows(db: Path, draw_id: str) -> list[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return [(u, p) for u, p in conn.execute('SELECT "user", price FROM orders WHERE draw = ?', (draw_id,))]
    finally:
        conn.close()


def stock(db: Path, product: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT stock FROM products WHERE id = ?", (product,)).fetchone()[0])
    finally:
        conn.close()


async def enter_all(url: str, users: list[str], draw_id: str, acked: set[str], attempted: set[str],
                    rng: random.Random, spread_s: float) -> None:
    """Each user joins and enters at a random moment within `spread_s`; a connection lost
    to the kill leaves that user unacknowledged (tried again after the restart)."""

    async def one(user: str) -> None:
        await asyncio.sleep(rng.uniform(0, spread_s))
        c = Client(url, token(user), reconnect=False)
        try:
            await c.connect()
            await c.join("crash")
            attempted.add(user)
            reply = await c.draw_enter(draw_id)
            if reply["entered"]:
                acked.add(user)
        except (SoukError, OSError, TimeoutError):
            pass
        finally:
            await c.close()

    await asyncio.gather(*(one(u) for u in users), return_exceptions=True)


async def wait_done(proc: ServerProcess, draw_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with Client(proc.url, token("watcher")) as c:
        await c.join("crash")
        while time.monotonic() < deadline:
            draws = await c.draws("crash")
            d = next(x for x in draws if x["id"] == draw_id)
            if d["phase"] == "done":
                return dict(d)
            await asyncio.sleep(0.1)
    raise AssertionError(f"draw {draw_id} not done in {timeout} s")


async def test_kill9_during_entries_and_after_the_result(server_process: Callable[..., ServerProcess],
                                                         tmp_path: Path) -> None:
    rng = random.Random(18)
    data = tmp_path / "data"
    proc = server_process(data_dir=data)
    async with Client(proc.url, token("boss", "streamer")) as st:
        await st.request("product_create", id="bag", title="Bag", price=900, stock=100)
        d = (await st.request("draw_create", room="crash", title="福袋", prize={"product": "bag"},
                              winners=3, duration_s=DURATION))["draw"]
    users = [f"v{i}" for i in range(60)]
    acked: set[str] = set()
    attempted: set[str] = set()
    entering = asyncio.create_task(enter_all(proc.url, users, d["id"], acked, attempted, rng, 2.5))
    await asyncio.sleep(rng.uniform(0.8, 2.0))
    proc.kill9()
    await entering
    assert acked, "nothing was acknowledged before the kill"
    before = set(acked)
    proc = server_process(data_dir=data, port=proc.port)
    rest = [u for u in users if u not in acked]
    await enter_all(proc.url, rest, d["id"], acked, attempted, rng, 1.0)
    done = await wait_done(proc, d["id"], DURATION + 10)
    assert done["closed_at"] - done["ends_at"] < 2000, "the draw did not close on time"
    status, published = await asyncio.to_thread(entrants_of, proc.http, d["id"])
    assert status == 200
    listed = set(published["entrants"])
    assert {entrant_hash(u) for u in acked} <= listed, "an acknowledged entry was lost"
    assert listed <= {entrant_hash(u) for u in attempted}, "an entry nobody made"
    assert len(listed) == done["entrants"] == len(published["entrants"])
    assert before and len(acked) == len(users)  # everyone got in, before or after the kill
    db = data / "souk.sqlite3"
    prizes = prize_rows(db, d["id"])
    winners = sorted(w["user"] for w in done["winners"])
    assert sorted(u for u, _ in prizes) == winners and all(p == 0 for _, p in prizes)
    assert stock(db, "bag") == 97
    # killed again after the result: nothing is granted twice, the result stays
    proc.kill9()
    proc = server_process(data_dir=data, port=proc.port)
    again = await wait_done(proc, d["id"], 10)
    assert again["winners"] == done["winners"] and again["seed"] == done["seed"]
    assert sorted(u for u, _ in prize_rows(db, d["id"])) == winners
    assert stock(db, "bag") == 97


class SlowBeacon:
    """A drand-style beacon whose rounds are published on time but answered late: it keeps
    the server in the `drawing` phase long enough to kill it there."""

    def __init__(self, delay_s: float) -> None:
        self.genesis = int(time.time()) - 50
        self.delay_s = delay_s
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.asked: list[int] = []

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/info", self.info)
        app.router.add_get("/public/{round}", self.public)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"period": 1, "genesis_time": self.genesis})

    async def public(self, request: web.Request) -> web.Response:
        r = int(request.match_info["round"])
        self.asked.append(r)
        await asyncio.sleep(self.delay_s)
        if time.time() < self.genesis + (r - 1):
            return web.json_response({}, status=425)
        return web.json_response({"round": r,
                                  "randomness": hashlib.sha256(str(r).encode()).hexdigest()})


async def test_kill9_while_drawing_finishes_with_the_same_round(
        server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    beacon = SlowBeacon(delay_s=1.5)
    await beacon.start()
    try:
        data = tmp_path / "data"
        flags = ("--draw-beacon-url", f"http://127.0.0.1:{beacon.port}")
        proc = server_process(*flags, data_dir=data)
        async with Client(proc.url, token("boss", "streamer")) as st:
            await st.request("product_create", id="bag", title="Bag", price=900, stock=10)
            d = (await st.request("draw_create", room="crash", title="福袋", prize={"product": "bag"},
                                  winners=2, duration_s=5))["draw"]
        async with Client(proc.url, token("w"), reconnect=False) as w:
            room = w.events("room:crash", ["draw"])
            await w.join("crash")
            for i in range(8):
                async with Client(proc.url, token(f"u{i}")) as c:
                    await c.join("crash")
                    await c.draw_enter(d["id"])
            drawing = await room.wait_for(lambda e: e["phase"] == "drawing", timeout=15)
        assert drawing["entrants"] == 8
        await asyncio.sleep(0.3)  # the beacon is being asked; nothing settled yet
        assert prize_rows(data / "souk.sqlite3", d["id"]) == []
        proc.kill9()
        proc = server_process(*flags, data_dir=data, port=proc.port)
        done = await wait_done(proc, d["id"], 20)
        assert done["beacon"]["status"] == "ok"
        assert done["beacon"]["round"] == (drawing["closed_at"] / 1000 - beacon.genesis) // 1 + 2
        assert set(beacon.asked) == {done["beacon"]["round"]}  # the same round, asked again
        prizes = prize_rows(data / "souk.sqlite3", d["id"])
        assert sorted(u for u, _ in prizes) == sorted(w["user"] for w in done["winners"])
        assert len(prizes) == 2 and stock(data / "souk.sqlite3", "bag") == 8
    finally:
        if beacon.runner is not None:
            await beacon.runner.cleanup()
