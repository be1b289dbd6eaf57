"""One client connection: its identity, subscriptions, limits and raw outbound path."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Close, Frame
from server.auth import Identity
from server.domain.ratelimit import StrikeCounter, TokenBucket
from server.wsframe import frame_bytes

if TYPE_CHECKING:
    from server.config import Config

_ids = itertools.count(1)


class Session:
    """Wraps a websockets ServerConnection; the hub writes pre-serialized frames through it."""

    def __init__(self, ws: ServerConnection, cfg: Config) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.subprotocol: str = (
            SUBPROTOCOL_MSGPACK if ws.subprotocol == SUBPROTOCOL_MSGPACK else SUBPROTOCOL_JSON
        )
        self.binary = self.subprotocol == SUBPROTOCOL_MSGPACK
        self.identity: Identity | None = None
        self.channels: set[str] = set()
        self.bucket = TokenBucket(cfg.ops_per_s, cfg.ops_burst)
        self.chat_bucket = TokenBucket(cfg.chat_per_s, cfg.chat_burst)
        self.strikes = StrikeCounter(cfg.strike_limit, int(cfg.strike_window_s * 1000))
        self.dropped = 0
        self.closing = False
        self.close_task: asyncio.Task[None] | None = None
        self.on_overflow: Callable[[Session], None] | None = None
        self.media: set[tuple[str, str]] = set()  # (kind, room) this session publishes/watches
        transport = ws.transport
        self._transport = transport
        self._buffer_size = transport.get_write_buffer_size

    # ---- the hub's side -------------------------------------------------------------
    def buffered(self) -> int:
        return int(self._buffer_size())

    def write(self, data: bytes) -> None:
        if not self.closing and self.ws.protocol.state is State.OPEN:
            self._transport.write(data)

    def overflow(self) -> None:
        """Outbound buffer past the hard bound: stop feeding it at once, then close it; the
        client must reconnect and resume."""
        if self.on_overflow is not None:
            self.on_overflow(self)
        self.close(Close.SLOW_CONSUMER, "slow consumer: reconnect and resume")

    # ---- the gateway's side ---------------------------------------------------------
    def send(self, frame: Frame) -> None:
        self.write(frame_bytes(frame, self.subprotocol))

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

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_task = asyncio.get_running_loop().create_task(self.ws.close(code, reason[:120]))
