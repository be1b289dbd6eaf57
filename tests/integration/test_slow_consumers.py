"""A client that stops reading must neither grow server memory without bound nor delay others."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, encode
from tests.conftest import Running, token


def ws_frame(payload: bytes) -> bytes:
    """A masked client binary frame (what a browser or SDK would send)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + masked


async def stalled_client(port: int, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Handshake, auth and join by hand, then never read again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL_MSGPACK}\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(ws_frame(encode({"op": "auth", "rid": 1, "token": token("slow")}, SUBPROTOCOL_MSGPACK)))
    writer.write(ws_frame(encode({"op": "join", "rid": 2, "room": room}, SUBPROTOCOL_MSGPACK)))
    await writer.drain()
    return reader, writer


async def test_slow_consumer_is_bounded_and_does_not_delay_others(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Running = await server_factory(soft_limit=64 * 1024, hard_limit=512 * 1024,
                                        ops_per_s=10_000.0, ops_burst=10_000.0)
    room = "slow"
    async with srv.client("s", "streamer") as st, srv.client("fast") as fast:
        await st.join(room)
        await fast.join(room)
        _reader, writer = await stalled_client(srv.app.cfg.port, room)
        for _ in range(100):
            if srv.app.hub.subscriber_count(f"room:{room}") == 3:
                break
            await asyncio.sleep(0.02)
        assert srv.app.hub.subscriber_count(f"room:{room}") == 3
        # emulate a slow link: shrink the kernel's send buffer for the stalled connection,
        # so what it cannot take piles up in the server's own outbound buffer
        slow = next(s for s in srv.app.sessions if s.identity and s.identity.id == "slow")
        slow.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        events = fast.events(f"room:{room}", types=["chat"])
        text = "z" * 490
        n = 3000
        started = time.perf_counter()
        max_lag = 0.0
        for i in range(n):
            await st.request("chat", room=room, text=f"{i}:{text}")
            if i % 100 == 99:
                # the fast viewer keeps up while the slow one stalls
                ev = await events.wait_for(lambda e, i=i: e["text"].startswith(f"{i}:"), timeout=5)
                max_lag = max(max_lag, time.time() * 1000 - ev["ts"])
        elapsed = time.perf_counter() - started
        stats = srv.app.hub.stats
        # droppable chat is shed for the stalled connection; its buffer stays bounded
        assert stats.dropped > 0
        assert slow.buffered() < srv.app.cfg.hard_limit
        assert max_lag < 600, max_lag
        assert elapsed < 60
        # events that may not be dropped (moderation) keep coming: past the hard bound it is closed
        for i in range(4000):
            await st.send("mute", room=room, user=f"user-{i:06d}-" + "q" * 100, seconds=60)
        await st.ping()
        for _ in range(100):
            if stats.overflows:
                break
            await asyncio.sleep(0.05)
        assert stats.overflows >= 1
        assert srv.app.hub.subscriber_count(f"room:{room}") == 2
        assert await fast.ping() > 0
        writer.close()
