"""A silent viewer on a bare asyncio Protocol: the cheapest client that still speaks the
real protocol (HTTP upgrade, masked client frames, auth, join, every frame read).

Why: a generator built on a full websocket client spends more CPU per connection than the
server does (handshake parsing, per-message tasks), and on a small machine that makes the
generator, not the server, the bottleneck. This viewer writes a fixed upgrade request, reads
the 101 answer, sends two masked frames and then only frames and counts what arrives; the
`seq` of each frame is checked with `framescan`, so nothing is decoded after the join.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, Frame, decode, encode

Pairs = Callable[[bytes], None]


class JoinRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _client_frame(payload: bytes, opcode: Opcode = Opcode.BINARY) -> bytes:
    return WsFrame(opcode, payload).serialize(mask=True)


class RawViewer(asyncio.Protocol):
    """auth → (group_join) → join, then read-only. `joined` resolves with the join reply."""

    def __init__(self, url: str, steps: list[Frame], on_frame: Pairs) -> None:
        self.host, self.port, self.path = _target(url)
        self.steps = steps
        self.on_frame = on_frame
        self.joined: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.step = 0
        self.frames = 0

    # ---- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is an asyncio.Transport in all but its class hierarchy
        tr: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tr
        key = base64.b64encode(os.urandom(16)).decode()
        tr.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL_MSGPACK}\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("connection lost before the join reply"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:12])
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(ConnectionError(f"upgrade refused: {status.decode(errors='replace')}"))
                return
            del self.buf[: end + 4]
            self.upgraded = True
            self._send_step()
        self._parse()

    # ---- frames ---------------------------------------------------------------------
    def _send_step(self) -> None:
        assert self.transport is not None
        frame = {**self.steps[self.step], "rid": self.step + 1}
        self.transport.write(_client_frame(encode(frame, SUBPROTOCOL_MSGPACK)))

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            n = buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 0x8:  # close: answer it and let the server drop the connection
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(_client_frame(payload[:2], Opcode.CLOSE))
                    self.transport.close()
                return
            if opcode == 0x9:  # ping
                if self.transport is not None:
                    self.transport.write(_client_frame(payload, Opcode.PONG))
                continue
            if opcode not in (0x1, 0x2):
                continue
            self.frames += 1
            if not self.joined.done():
                self._handshake_frame(payload)
            else:
                self.on_frame(payload)

    def _handshake_frame(self, payload: bytes) -> None:
        try:
            frame = decode(payload, SUBPROTOCOL_MSGPACK)
        except ValueError:
            return
        if frame.get("op") not in ("ok", "error") or frame.get("rid") != self.step + 1:
            self.on_frame(payload)  # an event between replies still counts for seq checks
            return
        if frame["op"] == "error":
            self._fail(JoinRefused(str(frame.get("code")), str(frame.get("message", ""))))
            return
        self.step += 1
        if self.step < len(self.steps):
            self._send_step()
        else:
            self.joined.set_result(frame)

    def _fail(self, exc: Exception) -> None:
        if not self.joined.done():
            self.joined.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(struct.pack("!H", 1000), Opcode.CLOSE))
            self.transport.close()


@functools.lru_cache(maxsize=64)
def _target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a ws:// URL, parsed once per URL, not once per viewer."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/ws"


async def open_silent(url: str, steps: list[Frame], on_frame: Pairs, timeout_s: float) -> tuple[RawViewer, Frame]:
    """Connect, upgrade, run `steps` (auth, join, ...); return the viewer and the last reply.

    One timer bounds the whole of it (no extra task per viewer, as `wait_for` would make):
    the generator's own cost per arrival is what the server's latency must not include."""
    loop = asyncio.get_running_loop()
    host, port, _ = _target(url)
    me = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if me is not None:
            me.cancel()

    timer = loop.call_later(timeout_s, expire)
    viewer: RawViewer | None = None
    try:
        _, viewer = await loop.create_connection(lambda: RawViewer(url, steps, on_frame), host, port)
        return viewer, await viewer.joined
    except asyncio.CancelledError:
        if viewer is not None:
            viewer.close()
        if expired:
            if me is not None:
                me.uncancel()  # our own cancellation, turned into the timeout it stands for
            raise TimeoutError(f"no join reply within {timeout_s} s") from None
        raise
    except BaseException:
        if viewer is not None:
            viewer.close()
        raise
    finally:
        timer.cancel()
