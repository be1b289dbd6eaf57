"""The baselines Souk's connection layer is measured against, as servers the same clients use.

`--kind raw`: a bare uvloop `asyncio.Protocol`: a fixed 101 answer, the fewest lines that
unmask a client frame, canned replies to `auth` and `join`, and a `chat` fanned out as one
`transport.write` of the same bytes per connection: the floor of what Python on uvloop can do.
`--kind websockets`: the websockets library's own asyncio server (compression off) with
`broadcast()`: the well-kept library a Souk server would otherwise be.

Both speak just enough of Souk's protocol (msgpack) for bench/bench_fanout.py and
bench/bench_joins.py to drive them exactly like a Souk server: the `chat` event they fan
out has Souk's shape and size (see `event_frame`). Not a server for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.wsframe import serialize  # an unmasked server frame, as Souk writes it

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"\r\nsec-websocket-key:[ \t]*([A-Za-z0-9+/=]+)", re.IGNORECASE)


def event_frame(seq: int, text: str, user: str) -> bytes:
    """A chat event with Souk's fields, so the bytes per recipient match Souk's."""
    now = time.time_ns() // 1_000_000
    event = {"id": f"m{seq}", "user": user, "name": user, "role": "streamer", "text": text,
             "reply_to": None, "at": now, "op": "event", "ch": "room:bench", "ts": now,
             "type": "chat", "seq": seq}
    return serialize(msgpack.packb(event, use_bin_type=True), True)


def reply(frame: dict[str, Any], seq: int) -> bytes:
    rid = frame.get("rid")
    op = frame.get("op")
    doc: dict[str, Any] = {"op": "ok", "rid": rid}
    if op == "auth":
        doc.update({"user": {"id": "u", "name": "u", "role": "viewer"}, "ch": "user:u",
                    "epoch": "00000000", "seq": 0, "server_time": time.time_ns() // 1_000_000})
    elif op == "join":
        doc.update({"ch": "room:bench", "snapshot": {
            "id": "bench", "kind": "room", "title": "", "state": "idle", "viewers": 0,
            "likes": 0, "pinned": None, "chat": [], "questions": [], "sales": [],
            "teambuys": [], "epoch": "00000000", "seq": seq}})
    elif op == "chat":
        doc["id"] = f"m{seq}"
    return serialize(msgpack.packb(doc, use_bin_type=True), True)


class Fanout:
    def __init__(self) -> None:
        self.seq = 0
        self.members: list[Any] = []  # raw: transports; websockets: connections


class RawConnection(asyncio.Protocol):
    def __init__(self, hub: Fanout) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _KEY.search(self.buf, 0, end + 2)
            key = m.group(1) if m else b""
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                                 b"\r\nSec-WebSocket-Protocol: souk.v1.msgpack\r\n\r\n")
            del self.buf[: end + 4]
            self.open = True
        self.frames()

    def frames(self) -> None:
        buf = self.buf
        while len(buf) >= 6:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            pos = 2
            if n == 126:
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < pos + 4 + n:
                return
            mask = bytes(buf[pos : pos + 4])
            payload = bytes(b ^ mask[i & 3] for i, b in enumerate(buf[pos + 4 : pos + 4 + n]))
            del buf[: pos + 4 + n]
            assert self.transport is not None
            if opcode == 0x8:
                self.transport.close()
                return
            if opcode != 0x2:
                continue
            self.message(msgpack.unpackb(payload, raw=False))

    def message(self, frame: dict[str, Any]) -> None:
        hub = self.hub
        assert self.transport is not None
        if frame.get("op") == "chat":
            hub.seq += 1
            data = event_frame(hub.seq, frame.get("text", ""), "streamer")
            for t in hub.members:  # the floor: one bare write of the same bytes each
                t.write(data)
        elif frame.get("op") == "join":
            hub.members.append(self.transport)
        self.transport.write(reply(frame, hub.seq))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.hub.members:
            self.hub.members.remove(self.transport)


async def serve_raw(host: str, port: int) -> None:
    hub = Fanout()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawConnection(hub), host, port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


async def serve_websockets(host: str, port: int) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    hub = Fanout()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                frame = msgpack.unpackb(message, raw=False)
                op = frame.get("op")
                if op == "chat":
                    hub.seq += 1
                    event = event_frame(hub.seq, frame.get("text", ""), "streamer")
                    broadcast(hub.members, _payload(event))
                elif op == "join":
                    hub.members.append(ws)
                await ws.send(_payload(reply(frame, hub.seq)))
        finally:
            if ws in hub.members:
                hub.members.remove(ws)

    async with serve(handler, host, port, compression=None, max_queue=32, backlog=4096,
                     subprotocols=["souk.v1.msgpack"]):  # type: ignore[list-item]
        print("ready", flush=True)
        await asyncio.Future()


def _payload(frame: bytes) -> bytes:
    """The message inside one of our serialized frames (websockets frames it again)."""
    n = frame[1] & 0x7F
    return frame[2:] if n < 126 else frame[4:] if n == 126 else frame[10:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kind", choices=["raw", "websockets"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    uvloop.run(serve_raw(a.host, a.port) if a.kind == "raw" else serve_websockets(a.host, a.port))


if __name__ == "__main__":
    main()
