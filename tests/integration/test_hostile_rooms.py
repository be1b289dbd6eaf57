"""Made-up rooms are freed: a token that may enter every room joins and leaves thousands of
ids (and resumes some, and leaves `user:` histories behind); after the grace the server holds
what it held before, while rooms someone created, sold in or still follows stay."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.conftest import ROOT, SECRET, Running

GRACE_S = 0.4


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


async def _gauge(srv: Running, name: str) -> float:
    text = await asyncio.to_thread(_fetch, srv.http + "/metrics")
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


async def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_made_up_rooms_are_freed_after_the_grace(server_factory: Any) -> None:
    srv: Running = await server_factory(room_grace_s=GRACE_S, ops_per_s=1e6, ops_burst=1e6)
    app = srv.app
    async with srv.client("boss", "streamer") as boss, srv.client("fan") as fan:
        await boss.request("room_create", room="kept", title="Created")
        p = (await boss.request("product_create", title="Tea", price=100, stock=5))["product"]
        await boss.request("sale_create", room="sold", product=p["id"], price=100, stock=1,
                           duration_s=600, per_user_limit=1)
        await fan.join("followed")
        await fan.join("sold")
        await fan.leave("sold")  # empty, but a sale names it
        before_rooms = len(app.rooms.by_channel)
        before_logs = len(app.bus.logs)  # type: ignore[union-attr]
        n = 0
        async with srv.client("wanderer") as w:
            for batch in range(100):
                ids = [f"made{batch}-{i}" for i in range(30)]
                await asyncio.gather(*(w.join(r) for r in ids))
                # they exist from their first join, as the protocol says
                assert all(f"room:{r}" in app.rooms.by_channel for r in ids)
                await asyncio.gather(*(w.leave(r) for r in ids))
                n += len(ids)
            for i in range(30):  # resume does not leave rooms behind either
                await w.request("resume", ch=f"room:resumed{i}", seq=5, epoch="gone")
        # user: channels whose history nobody follows any more
        for i in range(20):
            async with srv.client(f"passer{i}"):
                pass
            app.bus.publish(f"user:passer{i}", "coupon", {"id": f"c{i}"})
        assert n == 3000
        await _until(lambda: len(app.rooms.by_channel) <= before_rooms, timeout=GRACE_S * 20)
        assert await _gauge(srv, "souk_rooms") <= before_rooms
        kept = set(app.rooms.by_channel)
        assert {"room:kept", "room:sold", "room:followed"} <= kept
        await _until(lambda: not any(ch.startswith("user:passer")
                                     for ch in app.bus.logs))  # type: ignore[union-attr]
        assert len(app.bus.logs) <= before_logs + 3  # type: ignore[union-attr]
        assert len(app.hub.channels) <= 3 + 2
        assert not any(r.startswith("made") for r in app.insights.log.present)
        # a freed room is made anew by the next join, and the followed one still works
        snap = await fan.join("made0-0")
        assert snap["viewers"] >= 0 and "room:made0-0" in app.rooms.by_channel
        await fan.chat("followed", "still here")
    await app.insights.flush()
    rows = await app.stores.insights.db.rows(  # type: ignore[attr-defined]
        "SELECT COUNT(*) AS n FROM room_activity WHERE room LIKE 'made%' AND room <> 'made0-0'")
    assert rows[0]["n"] == 0


async def test_a_freed_room_keeps_what_was_said_and_liked(server_factory: Any) -> None:
    """Freeing a made-up room drops it from memory, never its kept chat or likes: a later
    join brings both back (likes counted just before the grace are saved first)."""
    srv: Running = await server_factory(room_grace_s=0.05)  # well inside the likes' 500 ms
    app = srv.app
    async with srv.client("talker") as t:
        await t.join("chatty")
        await t.chat("chatty", "anyone here?")
        await t.request("like", room="chatty", count=7)
        await t.leave("chatty")
        await _until(lambda: "room:chatty" not in app.rooms.by_channel)
        snap = await t.join("chatty")
    assert [m["text"] for m in snap["chat"]] == ["anyone here?"]
    assert snap["likes"] == 7


def test_souk_token_names_its_rooms() -> None:
    """`souk token` has no default of every room: `--room` is required ('*' explicitly)."""
    base = [sys.executable, "-m", "server", "token", "--secret", SECRET, "--sub", "u1"]
    none = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert none.returncode == 2 and "--room" in none.stderr
    star = subprocess.run([*base, "--room", "*"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert star.returncode == 0 and star.stdout.count(".") == 2
