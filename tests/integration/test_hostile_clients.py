"""Every error code provoked over a real socket; auth failures; limits; abuse closes; fuzzing."""

from __future__ import annotations

import asyncio
import time

import msgpack
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, decode, encode
from tests.conftest import Running, token

MP = SUBPROTOCOL_MSGPACK


async def raw(server: Running, sp: str = MP) -> websockets.ClientConnection:
    return await websockets.connect(server.url, subprotocols=[sp], max_size=2**24)  # type: ignore[list-item]


async def call(ws: websockets.ClientConnection, frame: dict, sp: str = MP) -> dict:  # type: ignore[type-arg]
    await ws.send(encode(frame, sp), text=sp == SUBPROTOCOL_JSON)
    while True:
        reply = decode(await asyncio.wait_for(ws.recv(), 5), sp)
        if reply["op"] in ("ok", "error"):
            return reply


async def authed(server: Running, sub: str = "u", role: str = "viewer", **kw: object) -> websockets.ClientConnection:
    ws = await raw(server)
    reply = await call(ws, {"op": "auth", "rid": 0, "token": token(sub, role, **kw)})  # type: ignore[arg-type]
    assert reply["op"] == "ok"
    return ws


async def test_anything_before_auth_is_unauthorized(server: Running) -> None:
    ws = await raw(server)
    reply = await call(ws, {"op": "join", "rid": 1, "room": "x"})
    assert reply == {"op": "error", "rid": 1, "code": "unauthorized", "message": "send auth first"}
    await ws.close()


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda: token("a", secret="wrong-secret-wrong-secret-wrong-secret!"), "bad token signature"),
        (lambda: token("a", ttl_s=-60), "token expired"),
        (lambda: "not.a.jwt", "invalid token"),
        (lambda: token("a", role="pirate"), "unknown role"),
        (lambda: 12345, "token must be a non-empty string"),
    ],
)
async def test_bad_tokens(server: Running, make_token, message: str) -> None:  # type: ignore[no-untyped-def]
    ws = await raw(server)
    reply = await call(ws, {"op": "auth", "rid": 1, "token": make_token()})
    assert reply["code"] == "unauthorized"
    assert message in reply["message"]
    await ws.close()


async def test_wrong_room_and_wrong_role(server: Running) -> None:
    ws = await authed(server, rooms=["only-this"])
    reply = await call(ws, {"op": "join", "rid": 1, "room": "other"})
    assert reply["code"] == "forbidden"
    reply = await call(ws, {"op": "join", "rid": 2, "room": "only-this"})
    assert reply["op"] == "ok"
    reply = await call(ws, {"op": "ban", "rid": 3, "room": "only-this", "user": "x"})
    assert reply["code"] == "forbidden"
    reply = await call(ws, {"op": "resume", "rid": 4, "ch": "user:someone-else", "seq": 0})
    assert reply["code"] == "forbidden"
    reply = await call(ws, {"op": "join", "rid": 5, "group": "g1"})
    assert reply["code"] == "not_found"
    await ws.close()


async def test_each_error_code(server: Running) -> None:
    ws = await authed(server)
    assert (await call(ws, {"op": "fly", "rid": 1}))["code"] == "unknown_op"
    assert (await call(ws, {"op": "join", "rid": 2}))["code"] == "invalid"
    assert (await call(ws, {"op": "join", "rid": 3, "room": "bad room!"}))["code"] == "invalid"
    assert (await call(ws, {"op": "chat", "rid": 4, "room": "r", "text": "x"}))["code"] == "forbidden"
    assert (await call(ws, {"op": "leave", "rid": 5, "room": "r"}))["code"] == "not_found"
    assert (await call(ws, {"op": "auth", "rid": 6, "token": token("u")}))["code"] == "conflict"
    assert (await call(ws, {"op": "join", "rid": 7, "room": "r"}))["op"] == "ok"
    assert (await call(ws, {"op": "chat", "rid": 8, "room": "r", "text": "x" * 501}))["code"] == "invalid"
    assert (await call(ws, {"op": "like", "rid": 9, "room": "r", "count": 10**6}))["code"] == "invalid"
    assert (await call(ws, {"op": "resume", "rid": 10, "ch": "nope:x", "seq": 0}))["code"] == "invalid"
    # oversized (but below the transport limit): an error frame, the connection lives on
    big = {"op": "chat", "rid": 11, "room": "r", "text": "y" * 70_000}
    assert (await call(ws, big))["code"] == "too_large"
    # undecodable bytes and a map without op
    await ws.send(b"\xc1\xc1\xc1")
    assert decode(await ws.recv(), MP)["code"] == "bad_frame"
    await ws.send(msgpack.packb([1, 2, 3]))
    assert decode(await ws.recv(), MP)["code"] == "bad_frame"
    assert (await call(ws, {"op": "ping", "rid": -1}))["code"] == "bad_frame"
    assert (await call(ws, {"op": "ping", "rid": 12}))["op"] == "ok"
    await ws.close()


async def test_frame_above_transport_limit_closes_1009(server: Running) -> None:
    ws = await authed(server)
    await ws.send(b"\x80" * (2 * 1024 * 1024))
    with pytest.raises(ConnectionClosed):
        for _ in range(5):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1009


async def test_rate_limit_then_abuse_closes_with_1008(server: Running) -> None:
    ws = await authed(server)
    codes = []
    with pytest.raises(ConnectionClosed):
        for i in range(500):
            await ws.send(encode({"op": "ping", "rid": i}, MP))
        while True:
            frame = decode(await asyncio.wait_for(ws.recv(), 5), MP)
            codes.append(frame.get("code", frame["op"]))
    assert "rate_limited" in codes
    assert codes.count("ok") >= 40  # the burst went through
    assert ws.close_code == 1008


async def test_chat_limit_is_per_user_not_per_connection(server: Running) -> None:
    """Opening more sockets does not buy a faster chat: the burst (5) is the user's."""
    conns = [await authed(server, "spammer") for _ in range(3)]
    other = await authed(server, "someone-else")
    for ws in (*conns, other):
        assert (await call(ws, {"op": "join", "rid": 1, "room": "lim"}))["op"] == "ok"
    codes = []
    for i in range(9):
        reply = await call(conns[i % 3], {"op": "chat", "rid": 10 + i, "room": "lim",
                                          "text": f"m{i}"})
        codes.append(reply.get("code", reply["op"]))
    assert codes.count("ok") == 5 and codes[5:] == ["rate_limited"] * 4, codes
    reply = await call(other, {"op": "chat", "rid": 99, "room": "lim", "text": "hi"})
    assert reply["op"] == "ok"  # a different user is not limited by the spammer
    for ws in (*conns, other):
        await ws.close()


async def test_no_auth_within_deadline_closes_4401(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(auth_timeout_s=0.3)
    ws = await raw(srv)
    frame = decode(await asyncio.wait_for(ws.recv(), 5), MP)
    assert frame["code"] == "unauthorized"
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4401


async def test_unknown_subprotocol_is_refused_and_none_means_json(server: Running) -> None:
    with pytest.raises(websockets.InvalidStatus) as err:
        await websockets.connect(server.url, subprotocols=["souk.v9"])  # type: ignore[list-item]
    assert err.value.response.status_code == 400
    async with websockets.connect(server.url) as ws:
        await ws.send(orjson.dumps({"op": "ping", "rid": 1}).decode())
        assert orjson.loads(await ws.recv())["op"] == "ok"


async def test_channel_limit_per_connection(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(max_channels=4, ops_per_s=1000.0, ops_burst=1000.0)
    ws = await authed(srv)
    codes = [(await call(ws, {"op": "join", "rid": i, "room": f"c{i}"})).get("code", "ok") for i in range(6)]
    assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited", "rate_limited"]  # user: channel + 3 rooms


async def test_hostile_client_does_not_stall_others(server: Running) -> None:
    good = await authed(server, "good")
    await call(good, {"op": "join", "rid": 1, "room": "h"})
    bad = await raw(server)

    async def flood() -> None:
        try:
            for _ in range(2000):
                await bad.send(b"\xff" * 100)
        except ConnectionClosed:
            pass

    task = asyncio.create_task(flood())
    started = time.perf_counter()
    for i in range(20):
        assert (await call(good, {"op": "ping", "rid": 100 + i}))["op"] == "ok"
    assert time.perf_counter() - started < 5
    await task
    await good.close()


frames = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=50) | st.binary(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
ops = st.sampled_from(["auth", "join", "leave", "chat", "like", "resume", "ping", "pin", "mute", "ban",
                       "delete_message", "room_state", "room_create", "buy", "ask", "x" * 40])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_fuzz_frames_always_get_an_answer(server: Running, data: st.DataObject) -> None:
    sp = data.draw(st.sampled_from([SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON]))
    ws = await websockets.connect(server.url, subprotocols=[sp], max_size=2**24)  # type: ignore[list-item]
    try:
        login = data.draw(st.booleans())
        if login:
            await call(ws, {"op": "auth", "rid": 0, "token": token("fuzz", data.draw(st.sampled_from(["viewer", "streamer"])))}, sp)
        for _ in range(data.draw(st.integers(1, 4))):
            kind = data.draw(st.integers(0, 2))
            if kind == 0:
                payload: bytes | str = data.draw(st.binary(max_size=200)) if sp == MP else data.draw(st.text(max_size=200))
            else:
                frame = data.draw(st.dictionaries(st.text(max_size=10), frames, max_size=6))
                if kind == 2:
                    frame["op"] = data.draw(ops)
                    frame["rid"] = 7
                if sp == MP:
                    payload = msgpack.packb(frame, use_bin_type=True)
                else:
                    try:
                        payload = orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode()
                    except TypeError:
                        payload = "{}"
            await ws.send(payload)
            while True:
                reply = decode(await asyncio.wait_for(ws.recv(), 5), sp)
                if reply["op"] in ("ok", "error"):
                    break
            if reply["op"] == "error":
                assert isinstance(reply["code"], str) and reply["code"] != "internal", reply
    finally:
        await ws.close()
    # and the server still serves a fresh client
    async with websockets.connect(server.url) as probe:
        await probe.send('{"op":"ping","rid":1}')
        assert orjson.loads(await probe.recv())["op"] == "ok"


async def test_frames_whole_split_or_malformed_over_a_bare_socket(server: Running) -> None:
    """Whole data frames in one read skip the protocol's parser (server/session.py); frames
    split across reads, unmasked frames, invalid UTF-8 and control frames still get exactly
    what the protocol gives them, and a connection that was split once stays correct."""
    import os
    import struct
    from urllib.parse import urlparse

    from websockets.speedups import apply_mask

    url = urlparse(server.url)

    def frame(payload: bytes, opcode: int = 0x2, masked: bool = True) -> bytes:
        n = len(payload)
        head = bytes((0x80 | opcode,)) + (bytes((0x80 * masked | n,)) if n < 126
                                          else bytes((0x80 * masked | 126,)) + struct.pack("!H", n))
        if not masked:
            return head + payload
        mask = os.urandom(4)
        return head + mask + apply_mask(payload, mask)

    async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection(url.hostname, url.port)
        w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: souk.v1.msgpack\r\n\r\n")
        assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
        return r, w

    async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
        b0, b1 = await asyncio.wait_for(r.readexactly(2), 5)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await r.readexactly(2))[0]
        return b0 & 0x0F, await r.readexactly(n)

    def op(frame_: dict) -> bytes:  # type: ignore[type-arg]
        return frame(msgpack.packb(frame_))

    auth = op({"op": "auth", "rid": 1, "token": token("bare")})
    join = op({"op": "join", "rid": 2, "room": "bare"})
    # auth and join in one read, then a ping frame: a pong (at once) and two answers in order
    r, w = await opened()
    w.write(auth + join + frame(b"hi", opcode=0x9))
    replies = [await read_frame(r) for _ in range(3)]
    assert sorted(c for c, _ in replies) == [0x2, 0x2, 0xA]
    assert [p for c, p in replies if c == 0xA] == [b"hi"]
    assert [msgpack.unpackb(p)["rid"] for c, p in replies if c == 0x2] == [1, 2]
    w.close()
    # one byte at a time, then a frame split in two, then whole frames again
    r, w = await opened()
    for b in auth:
        w.write(bytes((b,)))
        await w.drain()
    assert msgpack.unpackb((await read_frame(r))[1])["rid"] == 1
    w.write(join[:5])
    await w.drain()
    await asyncio.sleep(0.05)
    w.write(join[5:] + op({"op": "ping", "rid": 3}))
    rids = []
    while len(rids) < 2:
        rids.append(msgpack.unpackb((await read_frame(r))[1]).get("rid"))
    assert rids == [2, 3]
    w.close()
    # an unmasked frame: 1002; a text frame of invalid UTF-8: 1007
    for bad, code in ((frame(msgpack.packb({"op": "ping"}), masked=False), 1002),
                      (frame(b"\xff\xfe", opcode=0x1), 1007)):
        r, w = await opened()
        w.write(auth)
        await read_frame(r)
        w.write(bad)
        opcode, payload = await read_frame(r)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code, (opcode, payload)
        w.close()
