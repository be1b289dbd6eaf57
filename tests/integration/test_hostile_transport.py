"""The connection layer against hostile and clumsy clients, over real sockets: HTTP methods
and bodies, slow requests, malformed upgrades, frame types, duplicate keys, absurd tokens,
per-address caps, keepalive, and every byte a non-reading client is sent kept bounded."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from typing import Any

import jwt
import msgpack
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, decode, encode
from server.http import CONTENT_SECURITY_POLICY, Request, json_response
from tests.conftest import SECRET, Running, token

MP = SUBPROTOCOL_MSGPACK


# ---- raw HTTP -----------------------------------------------------------------------
async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(n), 5) if n and status != 100 else b""
    return status, headers, body


async def http(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def upgrade(port: int, *, version: str = "13", key: str | None = None, method: str = "GET",
            extra: str = "") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    return (f"{method} /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
            f"Sec-WebSocket-Protocol: {MP}\r\n{extra}\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    head = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    return head + mask + masked


async def call(ws: websockets.ClientConnection, frame: dict[str, Any], sp: str = MP) -> dict[str, Any]:
    await ws.send(encode(frame, sp), text=sp == SUBPROTOCOL_JSON)
    while True:
        reply = decode(await asyncio.wait_for(ws.recv(), 5), sp)
        if reply["op"] in ("ok", "error"):
            return reply


# ---- HTTP: methods, bodies, deadlines -------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
async def test_methods_a_path_does_not_take_get_405_with_allow(server: Running, method: str) -> None:
    port = server.app.cfg.port
    for path in ("/", "/healthz", "/live/demo", "/ws", "/api/rooms/r1"):
        status, headers, body = await http(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                                                 f"Content-Length: 9999999\r\n\r\n".encode())
        assert status == 405, (method, path)
        assert headers["allow"] == "GET, HEAD"
        assert orjson.loads(body)["error"] == "invalid"
        assert headers["connection"] == "close"  # its body was never read
    status, _, _ = await http(port, f"{method} /api/nothing/here HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 404


async def test_head_and_keep_alive(server: Running) -> None:
    port = server.app.cfg.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # two requests in one write: answered in order on the same connection
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    assert headers["connection"] == "keep-alive"
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(body)}".encode() in head
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_pages_carry_the_content_security_policy(server: Running) -> None:
    for path in ("/", "/live/demo", "/studio/demo", "/healthz", "/nope"):
        _, headers, _ = await http(server.app.cfg.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert headers["content-security-policy"] == (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'") == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"


async def test_routes_with_bodies(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The mechanism an upload is built on: a POST route with a bounded body, a DELETE."""
    srv: Running = await server_factory(http_body_timeout_s=0.5)
    seen: list[Request] = []

    async def echo(request: Request, query: dict[str, list[str]], parts: list[str]) -> Response:
        seen.append(request)
        return json_response({"id": parts[1], "method": request.method, "size": len(request.body)})

    srv.app.http.add("POST", "echo/*", echo, max_body=64)
    srv.app.http.add("DELETE", "echo/*", echo)
    port = srv.app.cfg.port
    status, _, body = await http(port, b"POST /api/echo/e1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert (status, orjson.loads(body)) == (200, {"id": "e1", "method": "POST", "size": 10})
    assert seen[-1].body == b"0123456789" and seen[-1].peer == "127.0.0.1"
    status, _, body = await http(port, b"DELETE /api/echo/e2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, orjson.loads(body)["method"]) == (200, "DELETE")
    status, headers, _ = await http(port, b"GET /api/echo/e3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and headers["allow"] == "DELETE, POST"
    status, _, _ = await http(port, b"POST /api/echo/e4 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411  # no Content-Length
    status, _, _ = await http(port, b"POST /api/echo/e5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 411
    calls = len(seen)
    status, _, body = await http(port, b"POST /api/echo/e6 HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n")
    assert status == 413 and orjson.loads(body)["error"] == "too_large"  # refused before a byte
    assert len(seen) == calls
    # Expect: 100-continue: told to go on, then answered
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/echo/e7 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert (await read_response(reader))[0] == 100
    writer.write(b"abc")
    status, _, body = await read_response(reader)
    assert (status, orjson.loads(body)["size"]) == (200, 3)
    writer.close()
    # a body that trickles in too slowly: 408 and closed, the handler never runs
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /api/echo/e8 HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234")
    status, _, _ = await read_response(reader)
    assert status == 408 and time.monotonic() - started < 3
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert len(seen) == calls + 1
    writer.close()


async def test_slow_or_oversized_heads(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(http_timeout_s=0.4)
    port = srv.app.cfg.port
    # slowloris on the head: 408, then closed
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert (await read_response(reader))[0] == 408
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    # a connection that says nothing is closed quietly
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    status, _, _ = await http(port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert status == 431
    status, _, _ = await http(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n")
    assert status == 431
    for bad in (b"GET /\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"):
        status, _, _ = await http(port, bad)
        assert status in (400, 505), bad


async def test_bad_upgrades_over_the_socket(server: Running) -> None:
    port = server.app.cfg.port
    status, headers, _ = await http(port, upgrade(port, version="8"))
    assert status == 426 and headers["sec-websocket-version"] == "13"
    assert (await http(port, upgrade(port, key="short")))[0] == 400
    status, headers, _ = await http(port, upgrade(port, method="POST"))
    assert status == 405 and "GET" in headers["allow"]
    status, _, _ = await http(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 426
    with pytest.raises(InvalidStatus) as err:
        await websockets.connect(server.url, subprotocols=["souk.v9"])  # type: ignore[list-item]
    assert err.value.response.status_code == 400


# ---- websocket frames -----------------------------------------------------------------
async def test_frames_right_behind_the_handshake_and_fragments(server: Running) -> None:
    port = server.app.cfg.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = encode({"op": "auth", "rid": 1, "token": token("pipelined")}, MP)
    ping = encode({"op": "ping", "rid": 2}, MP)
    # the request, an auth frame and a ping split in two fragments, in one write
    writer.write(upgrade(port) + client_frame(auth) + client_frame(ping[:3], fin=False)
                 + client_frame(ping[3:], opcode=0x0))
    await reader.readuntil(b"\r\n\r\n")
    rids = []
    while len(rids) < 2:
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        payload = await reader.readexactly(head[1] & 0x7F)
        frame = msgpack.unpackb(payload)
        assert frame["op"] == "ok"
        rids.append(frame["rid"])
    assert rids == [1, 2]
    writer.close()


async def test_frame_type_must_match_the_encoding(server: Running) -> None:
    async with websockets.connect(server.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send(b'{"op":"ping","rid":1}')  # JSON in a binary frame
        assert orjson.loads(await ws.recv())["code"] == "bad_frame"
        await ws.send('{"op":"ping","rid":2}')
        assert orjson.loads(await ws.recv())["op"] == "ok"
    async with websockets.connect(server.url, subprotocols=[MP]) as ws:  # type: ignore[list-item]
        await ws.send('{"op":"ping","rid":1}')  # text on msgpack
        assert decode(await ws.recv(), MP)["code"] == "bad_frame"


async def test_duplicate_keys_are_refused(server: Running) -> None:
    async with websockets.connect(server.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send('{"op":"ping","op":"auth","rid":1}')
        reply = orjson.loads(await ws.recv())
        assert reply["code"] == "bad_frame" and "duplicate" in reply["message"]
        await ws.send('{"op": "ping", "rid": 2, "x": {"a": 1, "a": 2}}')
        assert orjson.loads(await ws.recv())["code"] == "bad_frame"
        await ws.send('{"op": "ping", "rid": 3}')  # spaces: checked the slow way, accepted
        assert orjson.loads(await ws.recv())["op"] == "ok"
    async with websockets.connect(server.url, subprotocols=[MP]) as ws:  # type: ignore[list-item]
        await ws.send(b"\x83\xa2op\xa4ping\xa3rid\x01\xa2op\xa4auth")
        assert decode(await ws.recv(), MP)["code"] == "bad_frame"


async def test_invalid_utf8_in_a_text_frame_closes_1007(server: Running) -> None:
    port = server.app.cfg.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade(port) + client_frame(b'{"op":"\xff"}', opcode=0x1))
    await reader.readuntil(b"\r\n\r\n")
    head = await asyncio.wait_for(reader.readexactly(2), 5)
    assert head[0] == 0x88  # close
    payload = await reader.readexactly(head[1] & 0x7F)
    assert struct.unpack("!H", payload[:2])[0] == 1007
    writer.close()


async def test_absurd_token_lifetimes_are_refused(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(max_token_ttl=600)
    forever = jwt.encode({"sub": "x", "role": "admin", "exp": 1e300}, SECRET, algorithm="HS256")
    in_ms = jwt.encode({"sub": "x", "exp": int(time.time() * 1000)}, SECRET, algorithm="HS256")
    async with websockets.connect(srv.url, subprotocols=[MP]) as ws:  # type: ignore[list-item]
        for i, tok in enumerate((forever, in_ms, token("x", ttl_s=3600))):
            reply = await call(ws, {"op": "auth", "rid": i, "token": tok})
            assert reply["code"] == "unauthorized" and "lifetime" in reply["message"], reply
        assert (await call(ws, {"op": "auth", "rid": 9, "token": token("x", ttl_s=300)}))["op"] == "ok"
    status, _, _ = await http(srv.app.cfg.port, f"GET /api/rooms/r HTTP/1.1\r\nAuthorization: Bearer {forever}\r\n\r\n".encode())
    assert status == 401


# ---- per-address caps ------------------------------------------------------------------
async def test_per_address_caps(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(limit_loopback=True, max_conns_per_ip=3, handshakes_per_ip_s=1000.0)
    conns = [await websockets.connect(srv.url) for _ in range(3)]
    with pytest.raises(InvalidStatus) as err:
        await websockets.connect(srv.url)
    assert err.value.response.status_code == 429
    await conns.pop().close()
    for _ in range(50):
        if len(srv.app.sessions) < 3:
            break
        await asyncio.sleep(0.02)
    conns.append(await websockets.connect(srv.url))  # a slot is free again
    for c in conns:
        await c.close()
    rate: Running = await server_factory(limit_loopback=True, max_conns_per_ip=0, handshakes_per_ip_s=2.0)
    ok = 0
    for _ in range(6):
        try:
            c = await websockets.connect(rate.url)
            ok += 1
            await c.close()
        except InvalidStatus as e:
            assert e.response.status_code == 429
    assert ok == 4  # the burst: twice the rate
    await asyncio.sleep(0.6)
    await (await websockets.connect(rate.url)).close()  # a new token after 0.5 s


async def test_loopback_is_exempt_by_default(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(max_conns_per_ip=2, handshakes_per_ip_s=1.0)
    conns = [await websockets.connect(srv.url) for _ in range(10)]
    for c in conns:
        await c.close()


# ---- keepalive -------------------------------------------------------------------------
async def test_keepalive_closes_a_silent_peer_and_keeps_a_live_one(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(ping_interval_s=0.2)
    live = await websockets.connect(srv.url, ping_interval=None)  # answers pings by itself
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.app.cfg.port)
    writer.write(upgrade(srv.app.cfg.port))  # then never reads nor answers a ping
    await reader.readuntil(b"\r\n\r\n")
    for _ in range(100):
        if len(srv.app.sessions) == 1:
            break
        await asyncio.sleep(0.05)
    assert len(srv.app.sessions) == 1  # the silent one is gone (after its 2 s close deadline)
    await live.send('{"op":"ping","rid":1}')
    assert orjson.loads(await asyncio.wait_for(live.recv(), 5))["op"] == "ok"
    await live.close()
    writer.close()


# ---- every byte to a connection is bounded ---------------------------------------------
async def stalled(port: int, sub: str, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that authenticates, joins, and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(upgrade(port))
    await reader.readuntil(b"\r\n\r\n")
    writer.write(client_frame(encode({"op": "auth", "rid": 1, "token": token(sub)}, MP)))
    writer.write(client_frame(encode({"op": "join", "rid": 2, "room": room}, MP)))
    await writer.drain()
    return reader, writer


async def test_resume_that_would_pass_the_soft_bound_gets_a_resync(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(ops_per_s=5000.0, ops_burst=5000.0)
    async with srv.client("st", "streamer") as st, srv.client("late") as late:
        await st.join("big")
        text = "z" * 480
        for i in range(700):  # ~350 KB of history, more than the 256 KiB soft bound
            await st.request("chat", room="big", text=f"{i} {text}")
        snap = await late.join("big")
        head = snap["seq"]
        stream = late.events("room:big")
        reply = await late.request("resume", ch="room:big", seq=1, epoch=snap["epoch"])
        assert reply["resync"] is True and reply["seq"] == head
        ev = await stream.next(5)
        assert ev["type"] == "resync" and ev["snapshot"]["seq"] == head
        assert len(ev["snapshot"]["chat"]) <= 50
        reply = await late.request("resume", ch="room:big", seq=head - 10, epoch=snap["epoch"])
        assert reply.get("resync") is None and reply["missed"] == 10


async def test_replies_to_a_reader_that_stopped_are_bounded(server_factory) -> None:  # type: ignore[no-untyped-def]
    """A client that never reads, sending resume after resume (or join after join), is closed as a
    slow consumer when its replies reach the hard bound; its buffer never passes it."""
    srv: Running = await server_factory(soft_limit=32 * 1024, hard_limit=128 * 1024,
                                        ops_per_s=100_000.0, ops_burst=100_000.0)
    port = srv.app.cfg.port
    async with srv.client("st", "streamer") as st:
        await st.join("storm")
        for i in range(200):
            await st.request("chat", room="storm", text=f"{i} " + "q" * 400)
        for sub, frame in (("resumer", {"op": "resume", "ch": "room:storm", "seq": 100}),
                           ("joiner", {"op": "join", "rid": 3, "room": "storm"})):
            _, writer = await stalled(port, sub, "storm")
            for _ in range(100):
                s = next((x for x in srv.app.sessions if x.identity and x.identity.id == sub), None)
                if s is not None and "room:storm" in s.channels:
                    break
                await asyncio.sleep(0.02)
            assert s is not None
            s.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peak = 0
            payload = client_frame(encode(frame, MP))
            for _ in range(40_000):
                if s.closing:
                    break
                writer.write(payload)
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await asyncio.sleep(0.001)
                else:
                    await asyncio.sleep(0)
                peak = max(peak, s.buffered())
            assert s.closing, f"{sub} was never closed"
            assert peak <= srv.app.cfg.hard_limit
            writer.close()
        text = srv.app.metrics.render().decode()
        assert 'souk_closed_total{code="4408"} 2.0' in text
        assert await st.ping() > 0  # the others are served throughout


async def test_server_memory_stays_bounded_under_reply_and_fanout_attacks(server_process) -> None:  # type: ignore[no-untyped-def]
    """Twelve clients that stopped reading (SO_RCVBUF 4096): six storm the server with
    `resume` from far behind (each answered with a snapshot now), six sit in a room whose
    streamer sends events that may not be dropped. Every one is closed as a slow consumer
    (4408) and the server's RSS grows by less than 64 MiB, where two such clients used to
    take it from 115 to 340 MB in ten seconds; a well-behaved client is served throughout."""
    import psutil

    from client_sdk import Client

    proc = server_process(env={"SOUK_OPS_PER_S": "2000", "SOUK_OPS_BURST": "2000"})
    server = psutil.Process(proc.proc.pid)
    port = proc.port
    async with Client(proc.url, token("st", "streamer")) as st, Client(proc.url, token("ok")) as ok:
        await st.join("attack")
        await ok.join("attack")
        for i in range(1000):  # a full history: ~500 KB of events behind a resume from seq 1
            await st.request("chat", room="attack", text=f"{i} " + "h" * 480)
        baseline = server.memory_info().rss
        writers = []
        for i in range(6):
            writers.append((await stalled(port, f"resumer{i}", "attack"))[1])
            writers.append((await stalled(port, f"viewer{i}", "attack"))[1])
        resume = client_frame(encode({"op": "resume", "rid": 5, "ch": "room:attack", "seq": 1}, MP))
        peak = baseline
        deadline = time.monotonic() + 60  # ~10 s on a quiet machine
        n = 0
        while time.monotonic() < deadline:
            for w in writers[::2]:  # the resumers
                if not w.is_closing():
                    w.write(resume)
            await st.send("mute", room="attack", user=f"u{n}-" + "m" * 120, seconds=60)  # never dropped
            n += 1
            if n % 100 == 0:
                await asyncio.sleep(0.07)  # the streamer stays within its 2,000 ops/s
                peak = max(peak, server.memory_info().rss)
                if _closed_4408(await asyncio.to_thread(_metrics, proc.http)) >= 12:
                    break
        peak = max(peak, server.memory_info().rss)
        print(f"\nRSS under attack: {baseline / 2**20:.0f} MiB before, {peak / 2**20:.0f} MiB"
              f" at the peak ({n} never-dropped events, 12 non-reading clients)")
        assert _closed_4408(await asyncio.to_thread(_metrics, proc.http)) >= 12
        assert peak - baseline < 64 * 1024 * 1024, (baseline, peak)
        assert await ok.ping() > 0
        for w in writers:
            w.close()


def _metrics(base: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        return str(r.read().decode())


def _closed_4408(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('souk_closed_total{code="4408"}'):
            return float(line.split()[-1])
    return 0.0


async def test_demo_mode_warns_loudly(server_process) -> None:  # type: ignore[no-untyped-def]
    proc = server_process("--demo")
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and "DEMO MODE" not in text:
        await asyncio.sleep(0.1)
        text = proc.log_path.read_text()
    assert "DEMO MODE: anyone who can reach this port can mint any token, admin included" in text
    assert '"level":"warning"' in text and "demo mode" in text
