"""Lucky draws over real sockets: an in-process server on 127.0.0.1, websocket clients of the
SDK, the HTTP API, `souk draw-verify` as a real process, and a fake drand beacon that is a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from client_sdk import Client
from client_sdk.errors import SoukError
from server.domain.draw import entrant_hash, pick
from tests.conftest import ROOT, Running, free_port, token

DURATION = 5


def get(http: str, path: str, tok: str) -> tuple[int, Any]:
    req = urllib.request.Request(http + path, headers={"Authorization": f"Bearer {tok}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def api(srv: Running, path: str, sub: str = "boss", role: str = "streamer") -> tuple[int, Any]:
    return await asyncio.to_thread(get, srv.http, path, token(sub, role))


async def code_of(call: Any) -> str:
    try:
        await call
    except SoukError as e:
        return e.code
    return "ok"


async def until_done(ev: Any, draw_id: str, timeout: float = DURATION + 10) -> dict[str, Any]:
    return dict(await ev.wait_for(lambda e: e.get("id") == draw_id and e.get("phase") in ("done", "cancelled"),
                                  timeout=timeout))


def verify_cli(tmp: Path, data: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    f = tmp / f"entrants-{time.monotonic_ns()}.json"
    f.write_text(json.dumps(data))
    return subprocess.run([sys.executable, "-m", "server", "draw-verify", "--entrants", str(f), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


async def clients(srv: Running, subs: list[str], room: str, role: str = "viewer") -> list[Client]:
    cs = [srv.client(s, role) for s in subs]
    await asyncio.gather(*(c.connect() for c in cs))
    await asyncio.gather(*(c.join(room) for c in cs))
    return cs


async def test_a_product_draw_from_entry_to_prize_and_verification(server: Running, tmp_path: Path) -> None:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.join("dr1")
    await st.request("product_create", id="tea", title="Tea", price=1000, stock=10)
    room = st.events("room:dr1", ["draw"])
    d = (await st.request("draw_create", room="dr1", title="福袋", prize={"product": "tea"},
                          winners=2, duration_s=DURATION))["draw"]
    assert d["phase"] == "open" and "seed" not in d and len(d["commitment"]) == 64
    assert d["prize"] == {"product": "tea", "title": "Tea", "currency": "CNY"}
    assert await code_of(st.request("draw_create", room="dr1", title="x", prize={"product": "tea"},
                                    winners=9, duration_s=DURATION)) == "conflict"  # 8 left

    viewers = await clients(server, [f"v{i}" for i in range(6)], "dr1")
    twin = server.client("v0")  # v0's second connection
    await twin.connect()
    await twin.join("dr1")
    mod = (await clients(server, ["mod"], "dr1", "moderator"))[0]
    outsider = server.client("out")
    await outsider.connect()
    user_events = [v.events(f"user:v{i}", ["order", "draw_entered"]) for i, v in enumerate(viewers)]

    both = await asyncio.gather(viewers[0].draw_enter(d["id"]), twin.draw_enter(d["id"]))
    assert all(r["entered"] for r in both) and sorted(r["new"] for r in both) == [False, True]
    for v in viewers[1:]:
        assert (await v.draw_enter(d["id"]))["entered"]
    assert await code_of(mod.draw_enter(d["id"])) == "forbidden"  # staff never enter
    assert await code_of(outsider.draw_enter(d["id"])) == "forbidden"  # not in the room
    assert await code_of(viewers[1].draw_enter("nope")) == "not_found"
    assert (await api(server, f"/api/draws/{d['id']}/entrants"))[0] == 409  # not yet published
    listed = await viewers[2].draws("dr1")
    assert listed[0]["id"] == d["id"] and listed[0]["entered"] and listed[0]["entrants"] == 6

    done = await until_done(room, d["id"])
    assert time.time() * 1000 - done["ends_at"] < 3000
    assert done["entrants"] == 6 and len(done["winners"]) == 2
    winners = {w["user"] for w in done["winners"]}
    assert winners <= {f"v{i}" for i in range(6)}
    assert all(w["name"].endswith("*") and len(w["name"]) == 2 for w in done["winners"])
    for i, v in enumerate(viewers):
        assert (await user_events[i].wait_for(lambda e: e["type"] == "draw_entered"))["draw"] == d["id"]
        mine = [o for o in await v.orders_mine() if o.get("draw") == d["id"]]
        if f"v{i}" in winners:
            assert [(o["kind"], o["price"], o["qty"]) for o in mine] == [("prize", 0, 1)]
            pushed = await user_events[i].wait_for(lambda e: e["type"] == "order")
            assert pushed["id"] == mine[0]["id"]
        else:
            assert mine == []
    after = await viewers[0].draws("dr1")
    assert after[0]["won"] == ("v0" in winners) and after[0]["seed"] == done["seed"]
    rows = await server.app.stores.db.rows("SELECT stock FROM products WHERE id = 'tea'")
    assert rows[0]["stock"] == 8  # 2 held, 2 won

    status, published = await api(server, f"/api/draws/{d['id']}/entrants", "v3", "viewer")
    assert status == 200 and published["seed"] == done["seed"] and len(published["entrants"]) == 6
    assert entrant_hash("v3") in published["entrants"]
    assert published["winners"] == pick(done["seed"], published["entrants"], 2)
    ok = verify_cli(tmp_path, published, "--user", "v3")
    assert ok.returncode == 0 and "verified" in ok.stdout and "user v3: entered" in ok.stdout, ok
    tampered = dict(published, winners=list(reversed(published["winners"])))
    bad = verify_cli(tmp_path, tampered)
    assert bad.returncode == 1 and "NOT verified" in bad.stdout
    wrong_seed = verify_cli(tmp_path, {"entrants": published["entrants"]}, "--seed", "00" * 32,
                            "--commitment", published["commitment"], "--winners", "2")
    assert wrong_seed.returncode == 1 and "MISMATCH" in wrong_seed.stdout
    assert (await api(server, f"/api/draws/{d['id']}/entrants", "x", "viewer"))[0] == 200
    assert (await asyncio.to_thread(get, server.http, f"/api/draws/{d['id']}/entrants",
                                    token("y", "viewer", rooms=["other"])))[0] == 403
    numbers = (await api(server, "/api/rooms/dr1/metrics"))[1]
    assert numbers["buyers"] == 0  # a prize is not a purchase
    dash = (await api(server, "/api/rooms/dr1/draws"))[1]
    assert dash["draws"] == 1 and dash["entrants"] == 6 and dash["list"][0]["id"] == d["id"]
    late = server.client("late")
    await late.connect()
    snap = await late.join("dr1")
    assert [x["phase"] for x in snap["draws"]] == ["done"]
    for c in [*viewers, twin, mod, outsider, late, st]:
        await c.close()


async def test_keyword_watch_time_coupons_and_refusals(server: Running) -> None:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.join("dr2")
    room = st.events("room:dr2")
    d = (await st.request("draw_create", room="dr2", title="Say it", winners=1, duration_s=DURATION,
                          prize={"coupon": {"kind": "amount", "value": 500, "title": "¥5"}},
                          condition={"keyword": "要", "watch_s": 2}))["draw"]
    a, b = await clients(server, ["ka", "kb"], "dr2")
    ea, eb = a.events("user:ka"), b.events("user:kb")
    assert await code_of(a.draw_enter(d["id"])) == "forbidden"  # a keyword draw: by chat
    await a.chat("dr2", "我要!")  # too early: still a chat, and a private refusal
    said = await room.wait_for(lambda e: e["type"] == "chat" and e["user"] == "ka")
    assert said["text"] == "我要!"
    refused = await ea.wait_for(lambda e: e["type"] == "draw_refused")
    assert refused["code"] == "forbidden" and "more" in refused["message"]
    await b.leave("dr2")  # a short break: within the grace, the stay goes on
    await asyncio.sleep(0.2)
    await b.join("dr2")
    await asyncio.sleep(2.1)
    await a.chat("dr2", "要要要")
    await b.chat("dr2", "I 要 it")
    for ev in (ea, eb):
        assert (await ev.wait_for(lambda e: e["type"] == "draw_entered"))["draw"] == d["id"]
    await a.chat("dr2", "要")  # again: no second entry
    done = await until_done(room, d["id"])
    assert done["entrants"] == 2 and len(done["winners"]) == 1
    winner, ev = (a, ea) if done["winners"][0]["user"] == "ka" else (b, eb)
    pushed = await ev.wait_for(lambda e: e["type"] == "coupon")
    assert pushed["value"] == 500 and pushed["source"] == "draw"
    mine = (await winner.request("coupons_mine"))["coupons"]
    assert [c["id"] for c in mine] == [pushed["id"]]
    # refusals over the wire
    v = server.client("viewer-x")
    await v.connect()
    assert await code_of(v.request("draw_create", room="dr2", title="t", prize={"product": "x"},
                                   winners=1, duration_s=DURATION)) == "forbidden"
    for bad in ({"winners": 0}, {"duration_s": 1}, {"prize": {"product": "missing"}},
                {"condition": {"watch_s": "x"}}, {"title": "x" * 500}):
        fields = {"room": "dr2", "title": "t", "prize": {"coupon": {"value": 100}}, "winners": 1,
                  "duration_s": DURATION, **bad}
        assert await code_of(st.request("draw_create", **fields)) in ("invalid", "not_found"), bad
    for c in (st, a, b, v):
        await c.close()


async def test_cancel_gives_the_units_back_and_group_draws(server: Running) -> None:
    st = server.client("boss", "streamer")
    await st.connect()
    await st.join("dr3")
    await st.request("product_create", id="cup", title="Cup", price=500, stock=5)
    d = (await st.request("draw_create", room="dr3", title="x", prize={"product": "cup"}, winners=3,
                          duration_s=60, condition={"group": "gx"}))["draw"]
    (v,) = await clients(server, ["gv"], "dr3")
    refused = await code_of(v.draw_enter(d["id"]))
    assert refused in ("forbidden", "not_found")  # not a member of gx
    cancelled = (await st.request("draw_cancel", draw=d["id"]))["draw"]
    assert cancelled["phase"] == "cancelled"
    assert await code_of(v.draw_enter(d["id"])) == "ended"
    assert await code_of(st.request("draw_cancel", draw=d["id"])) == "conflict"
    rows = await server.app.stores.db.rows("SELECT stock FROM products WHERE id = 'cup'")
    assert rows[0]["stock"] == 5
    # a draw in a community group, for its members
    gid = (await st.request("group_create", tier="normal", topic="tea", cap=50))["group"]["id"]
    gd = (await st.request("draw_create", group=gid, title="群福袋", prize={"coupon": {"value": 100}},
                           winners=1, duration_s=DURATION))["draw"]
    assert gd["group"] == gid
    m = server.client("gm", "member")
    await m.connect()
    await m.request("group_join", group=gid)
    await m.join(group=gid)
    gev = m.events(f"group:{gid}", ["draw"])
    assert (await m.draw_enter(gd["id"]))["entered"]
    assert [x["id"] for x in await m.draws(group=gid)] == [gd["id"]]
    done = await until_done(gev, gd["id"])
    assert [w["user"] for w in done["winners"]] == ["gm"]
    for c in (st, v, m):
        await c.close()


# ---- the beacon: a fake drand server, really listening on 127.0.0.1 ---------------------------
class FakeBeacon:
    """drand's /info and /public/<round> with a 1 s period; rounds are published on time."""

    def __init__(self) -> None:
        self.genesis = int(time.time()) - 100
        self.period = 1
        self.asked: list[int] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @staticmethod
    def randomness(round_: int) -> str:
        return hashlib.sha256(f"round-{round_}".encode()).hexdigest()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/info", self.info)
        app.router.add_get("/public/{round}", self.public)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"period": self.period, "genesis_time": self.genesis, "hash": "fake"})

    async def public(self, request: web.Request) -> web.Response:
        r = int(request.match_info["round"])
        self.asked.append(r)
        if time.time() < self.genesis + (r - 1) * self.period:
            return web.json_response({"error": "too early"}, status=425)
        return web.json_response({"round": r, "randomness": self.randomness(r), "signature": "00"})


@pytest.fixture
async def beacon() -> AsyncIterator[FakeBeacon]:
    b = FakeBeacon()
    await b.start()
    yield b
    await b.stop()


async def test_a_beacon_round_after_the_close_is_mixed_in(server_factory: Any, beacon: FakeBeacon,
                                                          tmp_path: Path) -> None:
    srv = await server_factory(draw_beacon_url=f"http://127.0.0.1:{beacon.port}")
    st = srv.client("boss", "streamer")
    await st.connect()
    await st.join("dr4")
    room = st.events("room:dr4", ["draw"])
    d = (await st.request("draw_create", room="dr4", title="b", prize={"coupon": {"value": 100}},
                          winners=2, duration_s=DURATION))["draw"]
    vs = await clients(srv, [f"b{i}" for i in range(5)], "dr4")
    for v in vs:
        await v.draw_enter(d["id"])
    done = await until_done(room, d["id"])
    b = done["beacon"]
    assert b["status"] == "ok" and b["url"] == f"http://127.0.0.1:{beacon.port}"
    closed_round = (done["closed_at"] / 1000 - beacon.genesis) // beacon.period + 1
    assert b["round"] == closed_round + 1  # the first round published after the close
    assert b["randomness"] == FakeBeacon.randomness(b["round"])
    hashes = [entrant_hash(f"b{i}") for i in range(5)]
    assert [w["user"] for w in done["winners"]] == [
        f"b{i}" for h in pick(done["seed"], hashes, 2, b["randomness"]) for i in range(5)
        if entrant_hash(f"b{i}") == h]
    published = (await asyncio.to_thread(get, srv.http, f"/api/draws/{d['id']}/entrants",
                                         token("b0")))[1]
    assert verify_cli(tmp_path, published).returncode == 0
    # the beacon goes away: the draw goes on with the seed alone, and says so
    await beacon.stop()
    d2 = (await st.request("draw_create", room="dr4", title="b2", prize={"coupon": {"value": 100}},
                           winners=1, duration_s=DURATION))["draw"]
    for v in vs:
        await v.draw_enter(d2["id"])
    done2 = await until_done(room, d2["id"], timeout=DURATION + 20)
    assert done2["beacon"]["status"] == "unavailable" and done2["beacon"]["error"]
    assert [entrant_hash(done2["winners"][0]["user"])] == pick(done2["seed"], hashes, 1)
    published2 = (await asyncio.to_thread(get, srv.http, f"/api/draws/{d2['id']}/entrants",
                                          token("b0")))[1]
    assert verify_cli(tmp_path, published2).returncode == 0
    for c in (st, *vs):
        await c.close()


async def test_a_result_settled_but_not_announced_is_announced_at_the_next_start(tmp_path: Path) -> None:
    """A run that committed a result and died before telling anyone: the next start announces
    it once (the winner's coupon in their book, the draw done in every listing)."""
    from server.app import App
    from server.domain.coupons import Coupon
    from server.store.draws import SqlDrawStore
    from server.store.stores import open_db
    from tests.conftest import make_config

    app = App(make_config(tmp_path))
    await app.start()
    url = f"ws://127.0.0.1:{app.cfg.port}/ws"
    try:
        async with Client(url, token("boss", "streamer")) as st:
            d = (await st.request("draw_create", room="dr5", title="t", winners=1, duration_s=60,
                                  prize={"coupon": {"value": 300}}))["draw"]
        async with Client(url, token("only")) as v:
            await v.join("dr5")
            await v.draw_enter(d["id"])
    finally:
        await app.stop()
    db = await open_db(make_config(tmp_path).db_path)
    try:  # what the dead run had committed: the close, the result, the prize
        store = SqlDrawStore(db)
        stored = await store.draw(d["id"])
        assert stored is not None
        claim = await store.claim(d["id"], "dead-node", stored.ends_at, 0, 0, None)
        assert claim is not None
        stored.close(claim.closed_at, [entrant_hash("only")], 0)
        won = stored.draw(claim.entries, None)
        assert stored.prize.coupon is not None
        prize = Coupon("c-dead-prize", "default", "only", stored.prize.coupon, stored.ends_at, "draw")
        assert await store.settle(stored, won, None, [], [prize], stored.ends_at)
    finally:
        await db.close()
    app = App(make_config(tmp_path))
    await app.start()
    url = f"ws://127.0.0.1:{app.cfg.port}/ws"
    try:
        async with Client(url, token("only")) as v:
            await v.join("dr5")
            listed = await v.draws("dr5")
            assert listed[0]["phase"] == "done" and listed[0]["won"] and listed[0]["seed"]
            assert [c["id"] for c in (await v.request("coupons_mine"))["coupons"]] == ["c-dead-prize"]
        for _ in range(50):  # the announcement runs in the background of the start
            rows = await app.stores.db.rows("SELECT announced FROM draws WHERE id = ?", d["id"])
            if rows[0]["announced"] == 1:
                break
            await asyncio.sleep(0.1)
        assert rows[0]["announced"] == 1
    finally:
        await app.stop()


async def test_a_room_runs_a_bounded_number_of_draws(server: Running) -> None:
    async with Client(server.url, token("boss", "streamer")) as st:
        made = [(await st.request("draw_create", room="dr6", title=f"d{i}", winners=1, duration_s=600,
                                  prize={"coupon": {"value": 100}}))["draw"]["id"] for i in range(10)]
        assert await code_of(st.request("draw_create", room="dr6", title="one more", winners=1,
                                        duration_s=600, prize={"coupon": {"value": 100}})) == "conflict"
        await st.request("draw_cancel", draw=made[0])  # a cancelled one makes room
        assert (await st.request("draw_create", room="dr6", title="now", winners=1, duration_s=600,
                                 prize={"coupon": {"value": 100}}))["draw"]["phase"] == "open"
