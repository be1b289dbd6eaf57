"""One websocket connection: the asyncio protocol of its transport, its identity, its
subscriptions and limits, and the outbound path every byte to the client takes.

Why a protocol and not a task: an idle viewer costs only what it holds. Incoming bytes are
parsed by websockets' sans-I/O `ServerProtocol` (frames, fragmentation, control frames, the
close handshake, size limits); a task exists only while one of the client's ops runs, and ops
of one connection run one at a time, in the order they arrived. Keepalive pings are sent by
one sweep over every session (server/gateway.py), not by a timer per connection.

Outbound, two paths: the hub writes fan-out frames straight to `write` (the transport's own),
and moves the session out of its fast loop while the transport says its buffer is above the
soft bound (`pause_writing`). Everything else (replies, errors, resumed history) goes through
`send_bytes`, which closes the connection (4408) rather than let its buffer pass the hard
bound: the bound holds for every byte, wherever it came from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, Close, Frame
from server.auth import Identity
from server.domain.ratelimit import StrikeCounter, TokenBucket
from server.wsframe import frame_bytes

if TYPE_CHECKING:
    from server.gateway import Gateway

_ids = itertools.count(1)
_ws_log = logging.getLogger("websockets.server")  # the library's own: kept to warnings
# before `auth` no op may chat; after it the user's shared bucket replaces this one
_NO_CHAT = TokenBucket(0.0, 0.0)
INBOX_LIMIT = 32  # frames waiting behind a running op; above, the socket is not read
CLOSE_TIMEOUT_S = 2.0  # after our close frame, the client's close (then TCP) within this

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


def _simple_frames(data: bytes, max_size: int | None) -> list[tuple[bytes, bool]] | None:
    """The (payload, is text) of each frame when `data` is nothing but whole, unfragmented,
    masked text or binary frames with no reserved bits, each within `max_size` and under
    64 KiB; else None, and the protocol parses `data` (and answers what is wrong with it).

    Why: a client's `auth` or `join` arrives as one small frame in one read; the protocol's
    generator-based parser costs several times this scan for it. A frame accepted here is one
    the protocol would accept and yield the same way (text frames are UTF-8-checked in
    `_message`, as they are after the protocol)."""
    out: list[tuple[bytes, bool]] = []
    end = len(data)
    i = 0
    while i < end:
        if end - i < 6:
            return None
        b0 = data[i]
        if b0 != 0x81 and b0 != 0x82:  # FIN, no RSV bits, text or binary
            return None
        n = data[i + 1] ^ 0x80  # the mask bit must be set
        if n > 127:
            return None
        i += 2
        if n == 126:
            if end - i < 6:
                return None
            n = (data[i] << 8) | data[i + 1]
            i += 2
        elif n == 127:
            return None
        if max_size is not None and n > max_size:
            return None
        stop = i + 4 + n
        if stop > end:
            return None
        out.append((apply_mask(data[i + 4:stop], data[i:i + 4]), b0 == 0x81))
        i = stop
    return out


def _whole_frames(data: bytes) -> bool:
    """Does `data` end where a frame ends (it holds whole frames, of any kind)?"""
    end = len(data)
    i = 0
    while i < end:
        if end - i < 2:
            return False
        b1 = data[i + 1]
        n = b1 & 0x7F
        i += 2
        if n == 126:
            if end - i < 2:
                return False
            n = int.from_bytes(data[i:i + 2], "big")
            i += 2
        elif n == 127:
            if end - i < 8:
                return False
            n = int.from_bytes(data[i:i + 8], "big")
            i += 8
        i += n + (4 if b1 & 0x80 else 0)
    return i == end


class Session(asyncio.Protocol):
    """A client's websocket after the handshake (server/listener.py hands the transport over)."""

    __slots__ = (
        "_aligned",
        "_assembling",
        "_inbox",
        "_max_size",
        "_reading_paused",
        "_release",
        "_task",
        "_ws",
        "binary",
        "bucket",
        "channels",
        "chat_bucket",
        "closing",
        "dropped",
        "gateway",
        "heard",
        "id",
        "identity",
        "lost",
        "media",
        "paused",
        "peer",
        "pinged",
        "strikes",
        "subprotocol",
        "timer",
        "transport",
        "write",
    )

    def __init__(self, gateway: Gateway, transport: asyncio.Transport, subprotocol: str,
                 peer: str = "", release: Callable[[], None] | None = None) -> None:
        cfg = gateway.app.cfg
        self.id = next(_ids)
        self.gateway = gateway
        self.transport = transport
        self.write: Callable[[bytes], None] = transport.write  # the hub's fast path
        self.subprotocol = subprotocol
        self.binary = subprotocol == SUBPROTOCOL_MSGPACK
        self._ws: ServerProtocol | None = None  # made when first needed (`ws`)
        self._max_size = cfg.max_ws_bytes
        self.identity: Identity | None = None
        self.channels: set[str] = set()
        self.bucket = TokenBucket(cfg.ops_per_s, cfg.ops_burst)
        self.chat_bucket = _NO_CHAT
        self.strikes: StrikeCounter | None = None  # made at the first refusal
        self.dropped = 0
        self.closing = False  # our close frame is out (or the peer's came): no more frames
        self.paused = False  # the transport's buffer is above the soft bound
        self.lost = False  # the transport is gone
        self.media: set[tuple[str, str]] = set()  # (kind, room) this session publishes/watches
        self.heard = False  # bytes arrived since the last keepalive sweep
        self.pinged = False
        self.timer: asyncio.TimerHandle | None = None  # auth deadline, then close deadline
        self.peer = peer
        self._release = release
        self._task: asyncio.Task[None] | None = None
        self._inbox: deque[bytes | str] | None = None
        self._reading_paused = False
        self._assembling: tuple[bool, bytearray] | None = None  # a fragmented message
        # the protocol's parser waits at a frame boundary with nothing buffered: whole data
        # frames may skip it (`_simple_frames`); False for good once a read ended mid-frame
        self._aligned = True
        transport.set_write_buffer_limits(high=cfg.soft_limit, low=cfg.soft_limit // 4)

    @property
    def ws(self) -> ServerProtocol:
        """websockets' sans-I/O protocol (frames, control frames, the closing handshake).

        Made at its first use: a viewer whose frames all take the fast path in
        `data_received` and who leaves by closing TCP never needs one (~8 us and a getrandom
        call for its id). It starts at a frame boundary: `_aligned` holds until it exists."""
        ws = self._ws
        if ws is None:
            ws = self._ws = ServerProtocol(state=State.OPEN, max_size=self._max_size, logger=_ws_log)
        return ws

    # ---- asyncio.Protocol -----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.heard = True
        if self._aligned:
            ws = self._ws
            if (self._assembling is None and not self.closing
                    and (ws is None or (ws.state is State.OPEN and ws.current_size is None))):
                frames = _simple_frames(data, self._max_size)
                if frames is not None:  # the common case: whole data frames, read in one go
                    for payload, text in frames:
                        self._message(payload, text)
                    return
            # anything else goes through the protocol, which starts at a frame boundary here;
            # it stays there only if this read ended with a frame
            self._aligned = _whole_frames(data)
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        if ws.state is not State.OPEN and not self.closing:
            self._begin_closing()  # the peer's close frame, or a protocol error (1002, 1009)
        self._send_protocol_data()
        for frame in events:
            self._frame(cast(WsFrame, frame))  # once open, the protocol yields frames only

    def eof_received(self) -> bool | None:
        ws = self._ws
        if ws is not None:
            ws.receive_eof()
        if not self.closing:
            self._begin_closing()
        if ws is not None:
            ws.data_to_send()  # only our end of stream: the transport closes itself instead
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closing:
            self._begin_closing()
        if self._ws is not None:
            self._ws.receive_eof()  # the protocol's state is CLOSED from now on
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self._release is not None:
            self._release()
            self._release = None
        if self._task is None:
            self.gateway.closed(self)
        # else: the running op finishes first, then `_run` reports the session closed

    def pause_writing(self) -> None:
        self.paused = True
        self.gateway.hub.pause(self, self.channels)

    def resume_writing(self) -> None:
        self.paused = False
        self.gateway.hub.resume(self, self.channels)

    # ---- incoming frames ------------------------------------------------------------
    def _frame(self, frame: WsFrame) -> None:
        opcode = frame.opcode
        if opcode is _TEXT or opcode is _BINARY:
            if frame.fin:
                self._message(frame.data, opcode is _TEXT)
            else:
                self._assembling = (opcode is _TEXT, bytearray(frame.data))
        elif opcode is _CONT and self._assembling is not None:
            self._assembling[1].extend(frame.data)
            if frame.fin:
                text, buf = self._assembling
                self._assembling = None
                self._message(bytes(buf), text)
        # ping, pong, close: answered by the protocol (pong, close) or only keep us awake

    def _message(self, data: bytes | bytearray | memoryview, text: bool) -> None:
        if self.closing:
            return
        payload = data if type(data) is bytes else bytes(data)
        message: bytes | str = payload
        if text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self.fail(1007, "invalid UTF-8 in a text frame")
                return
        if self._task is None:
            self._task = self.gateway.loop.create_task(self._run(message))
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if len(inbox) >= INBOX_LIMIT and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    async def _run(self, message: bytes | str) -> None:
        """Run this op and whatever arrived meanwhile, in order; then no task is left."""
        dispatch = self.gateway.dispatch
        try:
            await dispatch(self, message)
            inbox = self._inbox
            while inbox and not self.closing:
                await dispatch(self, inbox.popleft())
                if self._reading_paused and len(inbox) <= INBOX_LIMIT // 2 and not self.lost:
                    self._reading_paused = False
                    self.transport.resume_reading()
        finally:
            self._task = None
            self._inbox = None
            if self.identity is not None and self.timer is not None and not self.closing:
                self.timer.cancel()  # authenticated: the auth deadline is off
                self.timer = None
            if self.lost:
                self.gateway.closed(self)

    # ---- outgoing -------------------------------------------------------------------
    def buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def send_bytes(self, data: bytes) -> None:
        """Write a frame that is not fan-out (a reply, an error, resumed history): never past
        the hard bound; a connection that would pass it is closed as a slow consumer."""
        if self.closing:
            return
        if self.transport.get_write_buffer_size() + len(data) > self.gateway.hard_limit:
            self.overflow()
            return
        self.write(data)

    def send(self, frame: Frame) -> None:
        self.send_bytes(frame_bytes(frame, self.subprotocol))

    def reply(self, rid: Any, result: dict[str, Any] | None = None) -> None:
        frame: Frame = {"op": "ok", "rid": rid}
        if result:
            frame.update(result)
        self.send(frame)

    def error(self, rid: Any, code: str, message: str, **extra: Any) -> None:
        frame: Frame = {"op": "error", "code": code, "message": message}
        if rid is not None:
            frame["rid"] = rid
        frame.update(extra)
        self.send(frame)

    def overflow(self) -> None:
        """Outbound buffer at the hard bound: stop feeding it at once, then close it; the
        client must reconnect and resume."""
        if self.closing:
            return
        self.gateway.overflowed(self)
        self.close(Close.SLOW_CONSUMER, "slow consumer: reconnect and resume")

    # ---- closing --------------------------------------------------------------------
    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: our close frame, then the client's, then TCP; a
        client that does not answer within CLOSE_TIMEOUT_S is cut off."""
        if self.closing:
            return
        self._begin_closing()
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason[:120])
        self._send_protocol_data()

    def fail(self, code: int, reason: str) -> None:
        """A protocol violation: close frame with `code`, then the TCP connection."""
        if not self.closing:
            self._begin_closing()
        self.ws.fail(code, reason)
        self._send_protocol_data()

    def keepalive(self) -> None:
        """Called by the gateway's sweep once per ping interval."""
        if self.closing:
            return
        if self.heard:
            self.heard = self.pinged = False
        elif not self.pinged:
            self.pinged = True
            self.ws.send_ping(b"")
            self._send_protocol_data()
        else:  # silent for a whole interval after a ping: the peer is gone
            self.close(1011, "keepalive ping timeout")

    def _begin_closing(self) -> None:
        self.closing = True
        if self.timer is not None:  # the auth deadline no longer matters
            self.timer.cancel()
            self.timer = None
        self.gateway.hub.drop(self, self.channels)

    def _send_protocol_data(self) -> None:
        """Write what the protocol produced (pongs, close frames, end of stream) and arm the
        close deadline once the protocol expects the TCP connection to end."""
        ws = self._ws
        if ws is None:  # nothing was ever asked of the protocol: nothing to send
            return
        transport = self.transport
        for data in ws.data_to_send():
            if self.lost:
                break
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if self.closing and self.timer is None and not self.lost and ws.close_expected():
            self.timer = self.gateway.loop.call_later(CLOSE_TIMEOUT_S, self._abort)

    def _abort(self) -> None:
        self.timer = None
        self.abort()

    def abort(self) -> None:
        """Cut the connection now (no closing handshake)."""
        if not self.lost:
            self.transport.abort()
