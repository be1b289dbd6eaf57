"""The port: accepting connections, per-address caps, HTTP requests, the websocket upgrade;
and the URL other nodes reach this process at.

Each accepted connection starts as an `HttpConnection` (an asyncio Protocol, no task): it
reads a request head with a deadline, reads the request line first so that any method can be
answered (405 with Allow, or a route that takes a body), and either answers over HTTP
(keep-alive) or validates the websocket upgrade and hands its transport to a `Session`
(server/session.py). See docs/wire.md.

Per client address (IP), two caps keep one host from taking the process's file descriptors:
open connections, and new connections per second (a token bucket). Loopback is exempt unless
`--limit-loopback`: a reverse proxy on the same host, and the load tests, connect from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers

from client_sdk.protocol import Code
from server import handshake
from server.domain.ratelimit import UserBuckets
from server.http import (
    MAX_HEAD_BYTES,
    FileResponse,
    Head,
    HttpError,
    Request,
    json_response,
    parse_head,
    serialize,
)
from server.session import Session

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger("souk.listener")
STREAM_CHUNK = 256 * 1024  # bytes read and written at a time when a file is streamed

BODY_BUDGET = 64 * 1024 * 1024  # request bodies held in memory at once, all connections
REFUSED_LINGER_S = 1.0
_TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1" or ip.startswith("::ffff:127.")


class PeerLimits:
    """Open connections and new connections per second, per client address (sans-I/O: the
    caller passes the time)."""

    def __init__(self, max_open: int, per_s: float, *, loopback: bool = False) -> None:
        self.max_open = max_open
        self.per_s = per_s
        self.loopback = loopback
        self.open: dict[str, int] = {}
        self.buckets = UserBuckets(per_s, 2 * per_s) if per_s > 0 else None

    def admit(self, ip: str, now_ms: int) -> bool:
        """Count a new connection from `ip`, or refuse it (then nothing is counted)."""
        if not self.loopback and is_loopback(ip):
            return True
        n = self.open.get(ip, 0)
        if self.max_open and n >= self.max_open:
            return False
        if self.buckets is not None and not self.buckets.of(ip).take(now_ms):
            return False
        self.open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self.open.get(ip)
        if n is None:
            return
        if n <= 1:
            del self.open[ip]
        else:
            self.open[ip] = n - 1


class Listener:
    """One listening port of an App (`App._listen`): the asyncio server, its HTTP
    connections, the caps. Websocket sessions are registered with the gateway."""

    def __init__(self, app: App) -> None:
        self.app = app
        cfg = app.cfg
        self.limits = PeerLimits(cfg.max_conns_per_ip, cfg.handshakes_per_ip_s, loopback=cfg.limit_loopback)
        self.http_conns: set[HttpConnection] = set()
        self.body_bytes = 0  # bytes of request bodies being read or handled
        self.server: asyncio.Server | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self.loop = self.app.gateway.loop = loop
        self.server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_port=reuse_port,
            # a join burst must queue, not overflow: a dropped SYN costs the client 1 s+
            backlog=4096,
        )

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self.server.sockets) if self.server is not None else ()

    def port(self) -> int:
        sock = next(iter(self.server.sockets)) if self.server is not None else None
        return int(sock.getsockname()[1]) if sock is not None else 0

    def close(self, close_connections: bool = True) -> None:
        """Stop accepting; with `close_connections`, close every connection too (websockets
        with 1001 going away)."""
        if self.server is not None:
            self.server.close()
        if close_connections:
            for conn in list(self.http_conns):
                conn.abort()
            for s in list(self.app.sessions):
                s.close(1001, "server shutting down")
            self.app.gateway.stop()

    async def wait_closed(self) -> None:
        """Until every connection is gone; one that has not answered its close frame within
        a second is cut off."""
        deadline = time.monotonic() + 1.0
        while self.app.sessions or self.http_conns:
            if time.monotonic() > deadline:
                for s in list(self.app.sessions):
                    s.abort()
                for conn in list(self.http_conns):
                    conn.abort()
            await asyncio.sleep(0.02)
        if self.server is not None:
            await self.server.wait_closed()


class HttpConnection(asyncio.Protocol):
    """A connection until it is upgraded: request heads, bodies, responses, keep-alive."""

    __slots__ = ("body_held", "buf", "head", "listener", "need", "peer", "refused", "task", "timer",
                 "transport", "writable")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None  # counted against the per-address caps while set
        self.buf = bytearray()
        self.head: Head | None = None  # parsed, its body still arriving
        self.need = 0
        self.body_held = 0
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False  # over its address's caps: answered 429, never served
        self.writable: asyncio.Future[None] | None = None  # set while the kernel's buffer is full

    # ---- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tr
        peername = tr.get_extra_info("peername")
        ip = str(peername[0]) if peername else ""
        listener = self.listener
        if not listener.limits.admit(ip, time.monotonic_ns() // 1_000_000):
            # answered once its request arrives (a client may not expect an answer before it
            # has asked), or dropped after a second: a refused connection holds its fd briefly
            self.refused = True
            self._arm(REFUSED_LINGER_S)
            return
        self.peer = ip
        listener.http_conns.add(self)
        self._arm(listener.app.cfg.http_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._disarm()
            self.transport.write(_TOO_MANY)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        self.buf += data
        if self.task is None:
            self._advance()
        elif len(self.buf) > MAX_HEAD_BYTES:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.listener.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.writable = self.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()  # a file being streamed sees the transport gone and stops
        self._disarm()
        self._release_body()
        self.listener.http_conns.discard(self)
        if self.peer is not None:
            self.listener.limits.release(self.peer)
            self.peer = None
        self.transport = None

    # ---- requests -------------------------------------------------------------------
    def _advance(self) -> None:
        """Parse what the buffer holds: a head, then its body, then hand it to a route."""
        try:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD_BYTES:
                        raise HttpError(431, Code.TOO_LARGE, "request head too large")
                    return
                if end > MAX_HEAD_BYTES:
                    raise HttpError(431, Code.TOO_LARGE, "request head too large")
                head = parse_head(bytes(self.buf[:end]))
                del self.buf[: end + 4]
                if head.path == "/ws" and handshake.wants_upgrade(head):
                    self._upgrade(head)
                    return
                need = self.listener.app.http.plan(head)
                if need:
                    self._hold_body(need)
                    if head.fields.get("expect", "").lower() == "100-continue" and len(self.buf) < need:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
                    self._arm(self.listener.app.cfg.http_body_timeout_s)
                self.head, self.need = head, need
            if len(self.buf) < self.need:
                return
        except HttpError as err:
            self._respond_error(err)
            return
        head, need = self.head, self.need
        body = bytes(self.buf[:need])
        del self.buf[:need]
        self.head, self.need = None, 0
        self._disarm()
        request = Request(head.target, Headers(head.pairs()), method=head.method,
                          protocol=head.version, body=body, peer=self.peer or "")
        self.task = self.listener.loop.create_task(self._serve(request, head.keep_alive()))

    async def _serve(self, request: Request, keep_alive: bool) -> None:
        listener = self.listener
        try:
            resp = await listener.app.http(request)
        except Exception:
            log.exception("http request failed")
            resp = json_response({"error": "internal", "message": "internal error"}, 500)
        finally:
            self.task = None
            self._release_body()
        tr = self.transport
        if tr is None:
            return
        keep_alive = keep_alive and not listener.app.draining
        head_only = request.method == "HEAD"
        tr.write(serialize(resp, keep_alive=keep_alive, head_only=head_only))
        if isinstance(resp, FileResponse) and not head_only:
            self.task = asyncio.current_task()  # no next request is read while the file goes
            try:
                await self._stream(tr, resp)
            except Exception as exc:  # the file went away, the client left: cut the answer
                log.info("streaming a file stopped: %s", exc)
                keep_alive = False
            finally:
                self.task = None
            if self.transport is None:
                return
        if not keep_alive:
            tr.close()
            return
        self._arm(listener.app.cfg.http_timeout_s)
        if tr.is_reading() is False:
            tr.resume_reading()
        if self.buf:
            self._advance()

    async def _stream(self, tr: asyncio.Transport, resp: FileResponse) -> None:
        """The file's bytes in chunks read off the loop, each written once the client has
        taken the last ones (the transport's flow control): memory stays a chunk or two per
        download whatever the file's size. A client that stops reading is cut off."""
        loop = self.listener.loop
        stall_s = self.listener.app.cfg.http_body_timeout_s
        fd = await loop.run_in_executor(None, os.open, str(resp.path), os.O_RDONLY)
        try:
            at, left = resp.start, resp.length
            while left > 0:
                chunk = await loop.run_in_executor(None, os.pread, fd, min(STREAM_CHUNK, left), at)
                if not chunk:
                    raise OSError("the file is shorter than it was")
                if self.transport is None:
                    raise ConnectionError("the client went away")
                tr.write(chunk)
                at += len(chunk)
                left -= len(chunk)
                if self.writable is not None:
                    try:
                        await asyncio.wait_for(asyncio.shield(self.writable), stall_s)
                    except TimeoutError:
                        tr.abort()
                        raise ConnectionError("the client stopped reading") from None
        finally:
            os.close(fd)

    def _upgrade(self, head: Head) -> None:
        """Validate the handshake, answer 101 and hand the transport to a Session; frames
        the client sent right behind its request are the session's first bytes."""
        listener = self.listener
        app = listener.app
        if app.draining:
            self._respond_error(HttpError(503, Code.UNAVAILABLE, "server draining"))
            return
        response, subprotocol = handshake.accept(head)  # HttpError: answered by the caller
        tr = self.transport
        assert tr is not None
        self._disarm()
        listener.http_conns.discard(self)
        peer, self.peer = self.peer, None  # the session releases the count from now on
        release = (lambda: listener.limits.release(peer)) if peer is not None else None
        session = Session(app.gateway, tr, subprotocol, peer or "", release)
        tr.write(response)
        tr.set_protocol(session)
        app.gateway.opened(session)
        rest, self.buf = bytes(self.buf), bytearray()
        self.transport = None
        if rest:
            session.data_received(rest)

    def _respond_error(self, err: HttpError) -> None:
        """A request refused before any route ran: answer and close (its body, if any, was
        not read, so the connection cannot carry another request)."""
        tr = self.transport
        if tr is None:
            return
        self._disarm()
        tr.write(serialize(err.response(), keep_alive=False))
        tr.close()

    # ---- limits ---------------------------------------------------------------------
    def _hold_body(self, need: int) -> None:
        listener = self.listener
        if listener.body_bytes + need > BODY_BUDGET:
            raise HttpError(503, Code.UNAVAILABLE, "too many uploads at once: retry shortly")
        listener.body_bytes += need
        self.body_held = need

    def _release_body(self) -> None:
        self.listener.body_bytes -= self.body_held
        self.body_held = 0

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.listener.loop.call_later(seconds, self._timeout)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        """Slowloris: a head or body not complete in time. An idle keep-alive connection is
        closed quietly; one caught mid-request is told 408."""
        self.timer = None
        tr = self.transport
        if tr is None:
            return
        if self.refused:
            tr.abort()
            return
        if self.buf or self.head is not None:
            tr.write(serialize(json_response({"error": "invalid", "message": "request timeout"}, 408),
                               keep_alive=False))
        tr.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def listen(app: App, port: int, *, reuse_port: bool) -> Listener:
    """HTTP and websockets at `/ws` on one port (`port` 0: any free one)."""
    listener = Listener(app)
    await listener.start(app.cfg.host, port, reuse_port=reuse_port)
    return listener


def port_of(listener: Listener) -> int:
    return listener.port()
