"""Room chat a viewer saw survives kill -9 and comes back in the join snapshot; a resend with
the same client message id (`cid`) is answered with the first message, before and after a
restart; the likes total is kept across a restart. Real `souk serve` children, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from client_sdk import Client
from client_sdk.errors import SoukError
from tests.conftest import token


async def wait_stored_likes(data: Path, ch: str, total: int) -> None:
    """Read the server's SQLite file (WAL: a second reader is fine) until the total is there."""
    for _ in range(100):
        with contextlib.closing(sqlite3.connect(data / "souk.sqlite3")) as conn:
            row = conn.execute("SELECT total FROM room_likes WHERE ch = ?", (ch,)).fetchone()
        if row is not None and row[0] == total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the likes total of {ch} never reached {total} on disk")


async def test_chat_survives_kill9_and_a_cid_resend_posts_nothing(server_process: Any, tmp_path: Path) -> None:
    data = tmp_path / "chatdata"
    env = {"SOUK_OPS_PER_S": "1000", "SOUK_OPS_BURST": "1000"}  # 60 messages at once from one connection
    proc = server_process(data_dir=data, env=env)
    seen: list[dict[str, Any]] = []
    async with Client(proc.url, token("a", "streamer", rooms=["dc"]), reconnect=False) as a, \
            Client(proc.url, token("b", rooms=["dc"]), reconnect=False) as b:
        await a.join("dc")
        await b.join("dc")
        stream = b.events("room:dc", types=["chat"])
        ids = await asyncio.gather(*(a.chat("dc", f"hello {i}", cid=f"c{i}") for i in range(60)))
        again = await a.chat("dc", "hello 7, sent twice", cid="c7")
        assert again == ids[7]  # the first message, not a second one
        for _ in range(60):
            seen.append(await stream.next(5))
        assert [m["text"] for m in seen] == [f"hello {i}" for i in range(60)]
        assert seen[3]["cid"] == "c3"
        # Refused: a cid that is not a short printable string.
        for bad in ("", "x" * 65, "a\nb", 7):
            try:
                await a.request("chat", room="dc", text="bad cid", cid=bad)
            except SoukError as e:
                assert e.code == "invalid"
            else:
                raise AssertionError(f"cid {bad!r} was accepted")
        likes = b.events("room:dc", types=["likes"])
        await a.like("dc", 5)
        await likes.wait_for(lambda ev: ev.get("total") == 5, timeout=5)
        await wait_stored_likes(data, "room:dc", 5)  # coalesced: written by the periodic flush
        gid = (await a.request("group_create", tier="normal", topic="tea", title="Fans"))["group"]["id"]
        await a.request("notice", group=gid, kind="coupon", text="Coupons at 8 pm")
        asked = await b.ask("dc", "Does it ship abroad?")
        await a.answer("dc", asked["id"], "Yes, everywhere")
        await b.chat("dc", "last words")
        await stream.wait_for(lambda ev: ev.get("text") == "last words", timeout=5)
    proc.kill9()

    proc = server_process(data_dir=data, port=proc.port, env=env)
    async with Client(proc.url, token("c", rooms=["dc"]), reconnect=False) as c, \
            Client(proc.url, token("a", "streamer", rooms=["dc"]), reconnect=False) as a:
        snap = await c.join("dc")
        texts = [m["text"] for m in snap["chat"]]
        assert len(texts) == 50
        assert texts == [f"hello {i}" for i in range(11, 60)] + ["last words"]
        # the answered question is in the snapshot again (it was in the store already)
        assert [(q["text"], q["status"], q["answer"]) for q in snap["questions"]] == [
            ("Does it ship abroad?", "answered", "Yes, everywhere")]
        await a.join("dc")
        # a member who joins the group after the restart gets its recent notices
        async with Client(proc.url, token("late", "member", rooms=["dc"]), reconnect=False) as late:
            joined = await late.request("group_join", group=gid)
            gsnap = await late.join(group=gid)
        for got in (joined["group"]["notices"], gsnap["notices"]):
            assert [(n["kind"], n["text"]) for n in got] == [("coupon", "Coupons at 8 pm")]
        stream = c.events("room:dc", types=["chat"])
        # A resend of a message from before the kill: the first message, nothing posted.
        assert await a.chat("dc", "hello 59 again", cid="c59") == ids[59]
        fresh = await a.chat("dc", "after the restart", cid="c-new")
        ev = await stream.next(5)
        assert ev["text"] == "after the restart"  # and not the resend
        assert fresh not in ids and fresh != snap["chat"][-1]["id"]  # ids go on, never reused
        likes = c.events("room:dc", types=["likes"])
        await a.like("dc", 2)
        await likes.wait_for(lambda e: e.get("total") == 7, timeout=5)
    assert proc.terminate() == 0  # SIGTERM: the likes counted so far are saved on the way out

    proc = server_process(data_dir=data, port=proc.port, env=env)
    async with Client(proc.url, token("d", rooms=["dc"]), reconnect=False) as d, \
            Client(proc.url, token("e", rooms=["dc"]), reconnect=False) as e:
        # two first joins at once: the kept history and total are loaded once, not twice
        snaps = await asyncio.gather(d.join("dc"), e.join("dc"))
        for snap in snaps:
            assert snap["chat"][-1]["text"] == "after the restart"
            assert len({m["id"] for m in snap["chat"]}) == len(snap["chat"]) == 50
            assert snap["likes"] == 7  # 5 flushed before the kill, 2 saved by the clean stop


def stored_chat(data: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(data / "souk.sqlite3")) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM room_chat ORDER BY seq")]


async def test_chat_retention_deletes_old_chat_at_start_and_keeps_the_rest(
        server_process: Any, tmp_path: Path) -> None:
    """`--chat-retention-days`: stored room chat older than the retention is deleted by a sweep
    at start (and hourly), so it is not in the snapshot after the restart; newer chat is."""
    data = tmp_path / "retention"
    proc = server_process(data_dir=data)
    async with Client(proc.url, token("a", rooms=["rt"]), reconnect=False) as a:
        await a.join("rt")
        await a.chat("rt", "old news")
    assert len(stored_chat(data)) == 1
    assert proc.terminate() == 0
    await asyncio.sleep(1.2)  # "old news" is now more than a second old

    proc = server_process("--chat-retention-days", str(1 / 86_400), data_dir=data, port=proc.port)
    for _ in range(100):
        if not stored_chat(data):
            break
        await asyncio.sleep(0.05)
    assert stored_chat(data) == []
    async with Client(proc.url, token("b", rooms=["rt"]), reconnect=False) as b:
        assert (await b.join("rt"))["chat"] == []
        await b.chat("rt", "fresh")
    assert proc.terminate() == 0

    proc = server_process("--chat-retention-days", "30", data_dir=data, port=proc.port)
    async with Client(proc.url, token("c", rooms=["rt"]), reconnect=False) as c:
        assert [m["text"] for m in (await c.join("rt"))["chat"]] == ["fresh"]
