"""One full protocol client (a websocket, `auth`, rid-matched replies, pushed events).

The load test is an outside client: it speaks the wire protocol from `client_sdk.protocol`
directly instead of going through `client_sdk.Client`, so that it controls exactly when a
frame is sent and received (auto-reconnect or buffering in an SDK would hide latency).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import SUBPROTOCOL_MSGPACK, DecodeError, Frame, Op, decode, encode

EventHandler = Callable[[Frame, int], None]


class RequestError(Exception):
    """The server answered `error`; `code` is the protocol's stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Session:
    """A connected, authenticated client; events go to `on_event(frame, recv_ns)`."""

    def __init__(self, ws: ClientConnection, on_event: EventHandler | None = None) -> None:
        self.ws = ws
        self.on_event = on_event
        self.user: dict[str, Any] = {}
        self._rid = 0
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.bad_frames = 0

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        *,
        on_event: EventHandler | None = None,
        timeout_s: float = 10.0,
    ) -> Session:
        ws = await asyncio.wait_for(
            connect(
                url,
                subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
                compression=None,
                open_timeout=timeout_s,
                max_size=2**22,
                ping_interval=None,
            ),
            timeout_s,
        )
        s = cls(ws, on_event)
        s._reader = asyncio.create_task(s._read())
        try:
            reply = await s.request(Op.AUTH, timeout_s=timeout_s, token=token)
        except BaseException:
            await s.close()
            raise
        user = reply.get("user")
        s.user = user if isinstance(user, dict) else {}
        return s

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                now = time.monotonic_ns()
                try:
                    frame = decode(data, SUBPROTOCOL_MSGPACK)
                except DecodeError:
                    self.bad_frames += 1  # the server sent something that is not a frame
                    continue
                op = frame["op"]
                if op in (Op.OK, Op.ERROR):
                    fut = self._pending.pop(frame.get("rid", -1), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                elif op == Op.EVENT:
                    if self.on_event is not None:
                        self.on_event(frame, now)
                elif op == Op.BATCH and self.on_event is not None:
                    for item in frame.get("items", ()):
                        if isinstance(item, dict):
                            self.on_event(item, now)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def request(self, op: str, *, timeout_s: float = 10.0, **fields: Any) -> Frame:
        """Send one op and wait for its reply; raise RequestError on `error`, TimeoutError."""
        self._rid += 1
        rid = self._rid
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send(encode({"op": op, "rid": rid, **fields}, SUBPROTOCOL_MSGPACK))
        except ConnectionClosed as exc:
            self._pending.pop(rid, None)
            raise ConnectionError("connection closed") from exc
        try:
            reply = await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(rid, None)
        if reply["op"] == Op.ERROR:
            raise RequestError(str(reply.get("code")), str(reply.get("message", "")))
        return reply

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
