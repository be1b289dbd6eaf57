"""The asyncio Python SDK: one websocket, requests with replies, a live event stream.

Reconnection is the SDK's job, not the caller's: when the connection drops the client
reconnects with exponential backoff, authenticates again and sends `resume` for every
channel it had, with the last `seq` it saw, so nothing the server's history still holds is
lost and nothing is delivered twice (events with a seq already seen are dropped here).
A gap in `seq` (the server skipped droppable events for a slow reader) triggers the same
resume without a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from client_sdk.errors import ConnectionLost, SoukError, error_from_frame
from client_sdk.protocol import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Frame,
    decode,
    encode,
    group_channel,
    room_channel,
)
from client_sdk.watch import MediaPeer, Watch

log = logging.getLogger("souk.client")

Event = dict[str, Any]


@dataclass
class ChannelState:
    """Where this client is in a channel: what `resume` needs after a drop or a gap."""

    seq: int = 0
    epoch: str | None = None
    resuming: bool = False


class EventStream:
    """Events of this client from the moment the stream was created, optionally filtered."""

    def __init__(self, client: Client, ch: str | None, types: Iterable[str] | None, maxsize: int) -> None:
        self._client = client
        self.ch = ch
        self.types = frozenset(types) if types is not None else None
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.overflowed = 0

    def _offer(self, ev: Event) -> None:
        if self.ch is not None and ev.get("ch") != self.ch:
            return
        if self.types is not None and ev.get("type") not in self.types:
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.overflowed += 1

    async def next(self, timeout: float | None = None) -> Event:
        """The next matching event; TimeoutError if none comes in time."""
        ev = await asyncio.wait_for(self.queue.get(), timeout)
        if ev is None:
            raise ConnectionLost("client closed")
        return ev

    async def wait_for(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Skip events until one matches `pred`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = await self.next(max(0.0, deadline - loop.time()))
            if pred(ev):
                return ev

    def close(self) -> None:
        self._client._streams.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        try:
            while True:
                ev = await self.queue.get()
                if ev is None:
                    return
                yield ev
        finally:
            self.close()


class Client:
    """`async with Client(url, token) as c: snap = await c.join("demo")`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        encoding: str = "msgpack",
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.1, 5.0),
        request_timeout: float = 15.0,
        open_timeout: float = 10.0,
    ) -> None:
        if encoding not in ("msgpack", "json"):
            raise ValueError("encoding must be 'msgpack' or 'json'")
        self.url = url
        self.token = token
        self.subprotocol = SUBPROTOCOL_MSGPACK if encoding == "msgpack" else SUBPROTOCOL_JSON
        self.reconnect = reconnect
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.user: dict[str, Any] | None = None
        self.channels: dict[str, ChannelState] = {}
        self.reconnects = 0
        self._watches: set[Watch] = set()  # re-offered after a reconnect (client_sdk.watch)
        self.server_time_offset_ms = 0
        self._ws: ClientConnection | None = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._streams: set[EventStream] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the socket is open and authenticated (False after a loss, until a
        reconnect has re-authenticated): what a long-lived service peer checks."""
        return self._connected.is_set()

    async def connect(self) -> dict[str, Any]:
        """Open the socket and authenticate; returns the server's `user`."""
        await self._open()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        return await self._authenticate()

    async def _open(self) -> None:
        self._ws = await websockets.connect(
            self.url,
            subprotocols=[Subprotocol(self.subprotocol)],
            compression=None,
            open_timeout=self.open_timeout,
            max_size=2**24,
            max_queue=None,
        )

    async def _authenticate(self) -> dict[str, Any]:
        reply = await self.request("auth", token=self.token)
        self.user = reply["user"]
        ch = reply.get("ch")
        if isinstance(ch, str):
            st = self.channels.setdefault(ch, ChannelState())
            if st.epoch is None:
                st.epoch, st.seq = reply.get("epoch"), int(reply.get("seq", 0))
        if "server_time" in reply:
            self.server_time_offset_ms = int(reply["server_time"]) - time.time_ns() // 1_000_000
        self._connected.set()
        return self.user

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._fail_pending(ConnectionLost("client closed"))
        for st in list(self._streams):
            with contextlib.suppress(asyncio.QueueFull):
                st.queue.put_nowait(None)

    # ---- requests -------------------------------------------------------------------
    async def request(self, op: str, **fields: Any) -> Frame:
        """Send an op and wait for its reply; raise the typed SoukError on an error reply."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        rid = next(self._rids)
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        frame = {"op": op, "rid": rid, **{k: v for k, v in fields.items() if v is not None}}
        try:
            await ws.send(encode(frame, self.subprotocol), text=self.subprotocol == SUBPROTOCOL_JSON)
        except ConnectionClosed:
            self._pending.pop(rid, None)
            raise ConnectionLost("connection closed while sending") from None
        try:
            reply = await asyncio.wait_for(fut, self.request_timeout)
        finally:
            self._pending.pop(rid, None)
        if reply.get("op") == "error":
            raise error_from_frame(reply)
        return reply

    async def send(self, op: str, **fields: Any) -> None:
        """Fire and forget (no rid, so no `ok`; errors still arrive as events of type error)."""
        if self._ws is None:
            raise ConnectionLost("not connected")
        frame = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        await self._ws.send(encode(frame, self.subprotocol), text=self.subprotocol == SUBPROTOCOL_JSON)

    # ---- the ops --------------------------------------------------------------------
    async def join(self, room: str | None = None, *, group: str | None = None) -> dict[str, Any]:
        """Join a room (or a group) and return its snapshot; events follow on the stream."""
        reply = await self.request("join", room=room, group=group)
        snap: dict[str, Any] = reply["snapshot"]
        st = self.channels.setdefault(reply["ch"], ChannelState())
        st.seq, st.epoch = int(snap.get("seq", 0)), snap.get("epoch")
        return snap

    async def leave(self, room: str | None = None, *, group: str | None = None) -> None:
        await self.request("leave", room=room, group=group)
        self.channels.pop(room_channel(room) if room else group_channel(group or ""), None)

    async def chat(self, room: str | None = None, text: str = "", *, group: str | None = None,
                   reply_to: str | None = None, cid: str | None = None) -> str:
        """Post a message; its id. With `cid` (a client message id) a resend after a lost
        reply is answered with the first message's id and posts nothing."""
        reply = await self.request("chat", room=room, group=group, text=text, reply_to=reply_to,
                                   cid=cid)
        return str(reply["id"])

    async def like(self, room: str, count: int = 1) -> None:
        await self.request("like", room=room, count=count)

    async def ping(self) -> int:
        return int((await self.request("ping"))["pong"])

    async def ask(self, room: str, text: str) -> dict[str, Any]:
        return dict((await self.request("ask", room=room, text=text))["question"])

    async def upvote(self, room: str, question: str) -> dict[str, Any]:
        return dict((await self.request("upvote", room=room, question=question)).get("question") or {})

    async def answer(self, room: str, question: str, text: str, *, on_stream: bool = False) -> dict[str, Any]:
        return dict(await self.request("answer", room=room, question=question, text=text, on_stream=on_stream))

    async def unban(self, room: str | None = None, user: str = "", *, group: str | None = None) -> None:
        """Lift a ban (staff; nobody lifts or makes a sanction on a rank at or above theirs)."""
        await self.request("unban", user=user, **({"group": group} if group else {"room": room}))

    async def unmute(self, room: str | None = None, user: str = "", *, group: str | None = None) -> None:
        await self.request("unmute", user=user, **({"group": group} if group else {"room": room}))

    async def buy(self, sale: str, qty: int = 1, key: str | None = None, **extra: Any) -> dict[str, Any]:
        """Buy in a flash sale; `key` makes retries safe (the same key never orders twice)."""
        reply = await self.request("buy", sale=sale, qty=qty, key=key or uuid.uuid4().hex, **extra)
        return dict(reply["order"])

    async def orders_mine(self) -> list[dict[str, Any]]:
        return list((await self.request("orders_mine"))["orders"])

    async def teams_mine(self) -> list[dict[str, Any]]:
        """The caller's open and recent teams, with their members (names masked)."""
        return list((await self.request("teams_mine"))["teams"])

    async def team_open(self, offer: str, key: str | None = None) -> dict[str, Any]:
        return dict((await self.request("team_open", offer=offer, key=key or uuid.uuid4().hex))["team"])

    async def team_join(self, offer: str, team: str | None = None, key: str | None = None) -> dict[str, Any]:
        reply = await self.request("team_join", offer=offer, team=team, key=key or uuid.uuid4().hex)
        return dict(reply["team"])

    async def draw_enter(self, draw: str) -> dict[str, Any]:
        """Enter a lucky draw (its room or group joined first); `entered` once it is durable."""
        return await self.request("draw_enter", draw=draw)

    async def draws(self, room: str | None = None, *, group: str | None = None) -> list[dict[str, Any]]:
        """A room's or group's latest lucky draws, each with `entered` (and `won` once done)."""
        target = {"room": room} if room is not None else {"group": group}
        return list((await self.request("draws", **target))["draws"])

    # ---- events ---------------------------------------------------------------------
    async def watch(self, room: str, make_peer: Callable[[], MediaPeer], **options: Any) -> Watch:
        """Watch a room's stream with a peer from `make_peer()`, and again with a fresh one
        whenever the server says the media was lost (see `client_sdk.watch`)."""
        watch = Watch(self, room, make_peer, **options)
        await watch.start()
        return watch

    def events(self, ch: str | None = None, types: Iterable[str] | None = None, *,
               maxsize: int = 10_000) -> EventStream:
        """A stream of events from now on (registered at once, before you await anything)."""
        stream = EventStream(self, ch, types, maxsize)
        self._streams.add(stream)
        return stream

    def _dispatch_event(self, ev: Event) -> None:
        ch = ev.get("ch")
        seq = ev.get("seq")
        if isinstance(ch, str) and ev.get("type") == "resync":
            st = self.channels.setdefault(ch, ChannelState())
            st.seq, st.epoch = int(ev.get("seq", 0)), ev.get("epoch")
        elif isinstance(ch, str) and isinstance(seq, int):
            known = self.channels.get(ch)
            if known is None:
                known = self.channels[ch] = ChannelState(seq=seq - 1)
            st = known
            if seq <= st.seq:
                return  # already seen (overlap between a snapshot/resume and the stream)
            if seq > st.seq + 1:
                if not st.resuming:  # a hole: the resume delivers it and what follows, in order
                    st.resuming = True
                    asyncio.get_running_loop().create_task(self._resume_gap(ch, st))
                return
            st.seq = seq
        for stream in list(self._streams):
            stream._offer(ev)

    async def _resume(self, ch: str, st: ChannelState) -> None:
        """Ask for what followed `st.seq` (or a resync); the one resume path, for gaps and
        reconnects alike. Raises the server's refusal."""
        st.resuming = True
        try:
            reply = await self.request("resume", ch=ch, seq=st.seq, epoch=st.epoch)
            if reply.get("resync"):
                st.seq, st.epoch = int(reply["seq"]), reply.get("epoch")
        finally:
            st.resuming = False

    async def _resume_gap(self, ch: str, st: ChannelState) -> None:
        try:
            await self._resume(ch, st)
        except SoukError as exc:
            log.warning("resume of %s failed: %s", ch, exc)

    # ---- reading and reconnecting ---------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for data in ws:
                    self._handle(data)
            except ConnectionClosed:
                pass
            self._fail_pending(ConnectionLost("connection closed"))
            self._connected.clear()
            if self._closed or not self.reconnect:
                for st in list(self._streams):
                    with contextlib.suppress(asyncio.QueueFull):
                        st.queue.put_nowait(None)
                return
            await self._reconnect()

    def _handle(self, data: bytes | str) -> None:
        try:
            frame = decode(data, self.subprotocol)
        except ValueError:
            log.warning("undecodable frame from server")
            return
        op = frame.get("op")
        if op in ("ok", "error") and isinstance(frame.get("rid"), int):
            fut = self._pending.get(frame["rid"])
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return
        if op == "event":
            self._dispatch_event(frame)
        elif op == "batch":
            for item in frame.get("items", ()):
                if isinstance(item, dict):
                    self._dispatch_event(item)
        elif op == "error":
            for stream in list(self._streams):
                stream._offer({"type": "error", **frame})

    async def _reconnect(self) -> None:
        delay = self.backoff[0]
        while not self._closed:
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                await self._open()
                await self._reauth_and_resume()
                self.reconnects += 1
                for watch in list(self._watches):  # media sessions died with the old socket
                    watch.reconnected()
                return
            except (TimeoutError, OSError, WebSocketException, SoukError) as exc:
                log.info("reconnect failed: %s", exc)
                delay = min(self.backoff[1], delay * 2)

    async def _reauth_and_resume(self) -> None:
        """Runs while the read loop is paused: read replies inline until auth and resumes end."""
        ws = self._ws
        assert ws is not None
        reader = asyncio.get_running_loop().create_task(self._pump(ws))
        try:
            await self._authenticate()
            for ch, st in list(self.channels.items()):
                await self._resume(ch, st)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _pump(self, ws: ClientConnection) -> None:
        """Feed frames to the handler while reconnecting; the main loop takes over after."""
        async for data in ws:
            self._handle(data)

    def _fail_pending(self, exc: SoukError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
