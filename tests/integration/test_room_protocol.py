"""The room protocol over real sockets: join, chat order, likes, presence, resume, moderation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from client_sdk import Client
from client_sdk.errors import Forbidden, Invalid, SoukError
from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, decode, encode
from server.app import App
from tests.conftest import Running, make_config, token


async def test_two_viewers_and_streamer_see_chat_in_one_order(server: Running) -> None:
    async with server.client("s1", "streamer") as st, server.client("v1") as v1, \
            server.client("v2", encoding="json") as v2:
        streams = []
        for c in (st, v1, v2):
            snap = await c.join("r1")
            assert snap["state"] == "idle" and "seq" in snap and "epoch" in snap
            streams.append(c.events("room:r1", types=["chat"]))
        sent = []
        for i in range(4):  # viewers stay within their chat burst of 5
            for c in (st, v1, v2):
                sent.append(await c.chat("r1", f"{c.user['id']}-{i}"))  # type: ignore[index]
        seen = []
        for stream in streams:
            texts = [(await stream.next(5))["text"] for _ in range(12)]
            seen.append(texts)
        assert seen[0] == seen[1] == seen[2]
        assert len(set(seen[0])) == 12


async def test_snapshot_carries_recent_chat_pin_and_viewers(server: Running) -> None:
    async with server.client("s1", "streamer") as st, server.client("v1") as v1:
        await st.join("r2")
        await st.chat("r2", "welcome")
        await st.request("product_create", id="sku-1", title="Serum", price=9900, stock=10)
        await st.request("pin", room="r2", product="sku-1")
        await st.request("room_state", room="r2", state="live")
        snap = await v1.join("r2")
        assert [m["text"] for m in snap["chat"]] == ["welcome"]
        assert snap["pinned"]["id"] == "sku-1" and snap["pinned"]["price"] == 9900
        assert snap["state"] == "live"
        assert snap["viewers"] == 1  # "watching": the streamer is not counted


async def test_likes_are_aggregated_not_one_event_per_tap(server: Running) -> None:
    async with server.client("v1") as v1, server.client("v2") as v2:
        await v1.join("r3")
        await v2.join("r3")
        likes = v2.events("room:r3", types=["likes"])
        for _ in range(30):
            await v1.like("r3", 1)
        await v1.like("r3", 20)
        totals = []
        while True:
            ev = await likes.next(3)
            totals.append(ev["total"])
            if ev["total"] == 50:
                break
        assert len(totals) <= 3  # pushed at most every 500 ms, never 31 events


async def test_viewer_count_is_throttled(server: Running) -> None:
    async with server.client("w") as watcher:
        await watcher.join("r4")
        counts = watcher.events("room:r4", types=["viewers"])
        clients = [server.client(f"v{i}") for i in range(8)]
        for c in clients:
            await c.connect()
            await c.join("r4")
        ev = await counts.wait_for(lambda e: e["count"] == 9, timeout=5)
        assert ev["count"] == 9
        # 8 joins in well under a second: at most a couple of count events, not 8
        await asyncio.sleep(1.2)
        extra = counts.queue.qsize()
        assert extra <= 1
        for c in clients:
            await c.close()


async def test_viewer_that_drops_and_resumes_gets_exactly_the_missed_events(server: Running) -> None:
    async with server.client("s1", "streamer") as st:
        await st.join("r5")
        v = server.client("v1")
        await v.connect()
        await v.join("r5")
        evs = v.events("room:r5", types=["chat"])
        await st.chat("r5", "before")
        assert (await evs.next(5))["text"] == "before"
        # cut the viewer's socket under it; the SDK reconnects and resumes by itself
        assert v._ws is not None
        v._ws.transport.abort()
        for i in range(5):
            await st.chat("r5", f"missed-{i}")
        got = [(await evs.next(10))["text"] for _ in range(5)]
        assert got == [f"missed-{i}" for i in range(5)]
        await st.chat("r5", "after")
        assert (await evs.next(5))["text"] == "after"
        assert evs.queue.empty()
        assert v.reconnects == 1
        await v.close()


async def test_resume_with_stale_epoch_gets_resync(server: Running) -> None:
    async with server.client("v1") as v:
        await v.join("r6")
        evs = v.events("room:r6", types=["resync"])
        reply = await v.request("resume", ch="room:r6", seq=0, epoch="not-the-epoch")
        assert reply["resync"] is True
        ev = await evs.next(5)
        assert ev["snapshot"]["id"] == "r6"


async def test_resume_beyond_history_gets_resync(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(history=5)
    async with srv.client("s", "streamer") as st, srv.client("v") as v:
        snap = await st.join("r7")
        for i in range(12):
            await st.chat("r7", f"m{i}")
        await v.join("r7")
        evs = v.events("room:r7", types=["resync"])
        reply = await v.request("resume", ch="room:r7", seq=1, epoch=snap["epoch"])
        assert reply["resync"] is True
        assert (await evs.next(5))["snapshot"]["chat"][-1]["text"] == "m11"


async def test_moderation_mute_ban_delete(server: Running) -> None:
    async with server.client("m", "moderator") as mod, server.client("v1") as v1, server.client("v2") as v2:
        for c in (mod, v1, v2):
            await c.join("r8")
        evs = v2.events("room:r8")
        mid = await v1.chat("r8", "spam")
        await mod.request("delete_message", room="r8", message=mid)
        await evs.wait_for(lambda e: e["type"] == "message_deleted" and e["id"] == mid)
        await mod.request("mute", room="r8", user="v1", seconds=60)
        with pytest.raises(SoukError) as err:
            await v1.chat("r8", "hello?")
        assert err.value.code == "muted"
        await mod.request("ban", room="r8", user="v1")
        await evs.wait_for(lambda e: e["type"] == "banned" and e["user"] == "v1")
        with pytest.raises(SoukError) as err:
            await v1.join("r8")
        assert err.value.code == "banned"
        with pytest.raises(Forbidden):
            await v2.request("ban", room="r8", user="m")


async def test_sanctions_list_the_current_ones_by_name_to_staff_only(server: Running) -> None:
    """`sanctions`: a room's bans and running mutes, each with the name the person goes by
    (from their messages, else their connection), for staff to lift; a lifted one leaves the
    list; a viewer is refused, and so is a moderator of a group they do not moderate."""
    async with server.client("m", "moderator") as mod, server.client("v1", name="小明") as v1, \
            server.client("v2", name="Troll") as v2, server.client("v3") as v3:
        for c in (mod, v1, v2, v3):
            await c.join("r10")
        await v1.chat("r10", "buy buy buy")
        await mod.request("mute", room="r10", user="v1", seconds=120)
        await mod.request("ban", room="r10", user="v2")
        listed = (await mod.request("sanctions", room="r10"))["sanctions"]
        by_user = {s["user"]: s for s in listed}
        assert set(by_user) == {"v1", "v2"}
        assert by_user["v1"]["name"] == "小明" and by_user["v1"]["kind"] == "mute"
        assert by_user["v1"]["until"] > by_user["v1"]["at"] and by_user["v1"]["by"] == "m"
        assert by_user["v2"]["name"] == "Troll" and by_user["v2"]["kind"] == "ban"
        assert by_user["v2"]["until"] is None
        await mod.request("unmute", room="r10", user="v1")
        listed = (await mod.request("sanctions", room="r10"))["sanctions"]
        assert [(s["user"], s["kind"]) for s in listed] == [("v2", "ban")]
        with pytest.raises(Forbidden):
            await v3.request("sanctions", room="r10")
        with pytest.raises(Invalid):
            await mod.request("sanctions")
    async with server.client("st", "streamer", groups=["*"]) as st, \
            server.client("gm", "moderator", groups=["g-own"]) as gm:
        group = (await st.request("group_create", tier="normal", topic="tea"))["group"]["id"]
        assert (await st.request("sanctions", group=group))["sanctions"] == []
        with pytest.raises(Forbidden):
            await gm.request("sanctions", group=group)


async def test_bans_and_mutes_survive_a_restart(tmp_path: Path) -> None:
    """A sanction is recorded before it is announced: after a restart (same data directory)
    the banned viewer still cannot join and the muted one still cannot speak."""
    async def boot() -> App:
        app = App(make_config(tmp_path))
        await app.start()
        return app

    app = await boot()
    url = f"ws://127.0.0.1:{app.cfg.port}/ws"
    try:
        async with Client(url, token("m", "moderator")) as mod:
            await mod.join("rs")
            await mod.request("ban", room="rs", user="troll")
            await mod.request("mute", room="rs", user="loud", seconds=600)
            await mod.request("mute", room="rs", user="brief", seconds=1)
    finally:
        await app.stop()
    await asyncio.sleep(1.1)  # brief's mute is over by now
    app = await boot()
    url = f"ws://127.0.0.1:{app.cfg.port}/ws"
    try:
        async with Client(url, token("troll")) as troll, Client(url, token("loud")) as loud, \
                Client(url, token("brief")) as brief:
            with pytest.raises(SoukError) as err:
                await troll.join("rs")
            assert err.value.code == "banned"
            await loud.join("rs")
            with pytest.raises(SoukError) as err:
                await loud.chat("rs", "still here?")
            assert err.value.code == "muted"
            await brief.join("rs")
            await brief.chat("rs", "back")  # an expired mute is not loaded again
        async with Client(url, token("m", "moderator")) as mod:
            listed = (await mod.request("sanctions", room="rs"))["sanctions"]
            assert sorted((s["user"], s["kind"]) for s in listed) == [("loud", "mute"), ("troll", "ban")]
    finally:
        await app.stop()


async def test_room_state_and_pin_are_staff_only(server: Running) -> None:
    async with server.client("v1") as v1:
        await v1.join("r9")
        with pytest.raises(Forbidden):
            await v1.request("room_state", room="r9", state="live")
        with pytest.raises(Forbidden):
            await v1.request("pin", room="r9", product="x")
    async with server.client("s", "streamer") as st:
        with pytest.raises(Invalid):
            await st.request("room_state", room="r9", state="exploded")


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON, None])
async def test_raw_clients_in_each_encoding(server: Running, subprotocol: str | None) -> None:
    sp = subprotocol or SUBPROTOCOL_JSON
    kw = {"subprotocols": [subprotocol]} if subprotocol else {}
    async with websockets.connect(server.url, **kw) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == subprotocol
        # JSON travels in text frames, msgpack in binary ones (a binary JSON frame is refused)
        await ws.send(encode({"op": "auth", "rid": 1, "token": token("raw")}, sp), text=sp == SUBPROTOCOL_JSON)
        reply = decode(await ws.recv(), sp)
        assert reply["op"] == "ok" and reply["rid"] == 1 and reply["user"]["id"] == "raw"
        await ws.send(encode({"op": "join", "rid": 2, "room": "enc"}, sp), text=sp == SUBPROTOCOL_JSON)
        reply = decode(await ws.recv(), sp)
        assert reply["op"] == "ok" and reply["snapshot"]["id"] == "enc"
