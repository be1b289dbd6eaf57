"""The websocket gateway: decode, limit, authorize, dispatch; never a traceback to a client.

Frames of one connection are handled in order, one at a time, so a client's ops take effect
in the order it sent them. Refusals that smell of abuse (undecodable or oversized frames,
unknown ops, rate limits, auth failures) count as strikes; too many in the window and the
connection is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import Close, Code, DecodeError, decode
from server.errors import SoukError
from server.ops.registry import OPS
from server.session import Session

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger("souk.gateway")

STRIKE_CODES = frozenset(
    {Code.BAD_FRAME, Code.TOO_LARGE, Code.UNKNOWN_OP, Code.RATE_LIMITED, Code.UNAUTHORIZED, Code.FORBIDDEN}
)


class Gateway:
    def __init__(self, app: App) -> None:
        self.app = app

    async def handle(self, ws: ServerConnection) -> None:
        app = self.app
        s = Session(ws, app.cfg)
        s.on_overflow = app.evict
        app.sessions.add(s)
        app.metrics.connections.inc()
        app.metrics.connections_total.inc()
        loop = asyncio.get_running_loop()
        deadline: asyncio.TimerHandle | None = loop.call_later(app.cfg.auth_timeout_s, self._auth_deadline, s)
        try:
            async for message in ws:
                await self.dispatch(s, message)
                if s.identity is not None and deadline is not None:
                    deadline.cancel()
                    deadline = None
                if s.closing:
                    break
        except ConnectionClosed:
            pass
        finally:
            if deadline is not None:
                deadline.cancel()
            if s.close_task is not None:  # our close code, not the library's 1000 on return
                with contextlib.suppress(Exception):
                    await s.close_task
            app.sessions.discard(s)
            app.metrics.connections.dec()
            await app.disconnect(s)

    def _auth_deadline(self, s: Session) -> None:
        if s.identity is None and not s.closing:
            self.app.metrics.closed.labels(str(Close.AUTH_TIMEOUT)).inc()
            s.error(None, Code.UNAUTHORIZED, "no valid auth in time")
            s.close(Close.AUTH_TIMEOUT, "no valid auth in time")

    async def dispatch(self, s: Session, message: bytes | str) -> None:
        app = self.app
        now = app.clock_ms()
        rid = None
        op_name = "?"
        try:
            if len(message) > app.cfg.max_frame_bytes:
                raise SoukError(Code.TOO_LARGE, f"frame larger than {app.cfg.max_frame_bytes} bytes")
            try:
                frame = decode(message, s.subprotocol)
            except DecodeError as exc:
                raise SoukError(Code.BAD_FRAME, str(exc)) from None
            rid = frame.get("rid")
            if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2**53):
                rid = None
                raise SoukError(Code.BAD_FRAME, "'rid' must be a non-negative integer")
            op_name = frame["op"]
            spec = OPS.get(op_name)
            if spec is None:
                op_name = "?"
                raise SoukError(Code.UNKNOWN_OP, f"unknown op {frame['op'][:32]!r}")
            if not s.bucket.take(now, spec.cost):
                raise SoukError(Code.RATE_LIMITED, "too many ops per second")
            if spec.auth:
                if s.identity is None:
                    raise SoukError(Code.UNAUTHORIZED, "send auth first")
                if s.identity.role not in spec.roles:
                    raise SoukError(Code.FORBIDDEN, f"role {s.identity.role} may not {op_name}")
            frames_in, op_seconds = app.metrics.op_children(op_name)
            frames_in.inc()
            started = time.perf_counter()
            result = await spec.handler(app.services, s, frame)
            op_seconds.observe(time.perf_counter() - started)
            if rid is not None:
                s.reply(rid, result)
        except SoukError as err:
            app.metrics.errors.labels(err.code).inc()
            s.error(rid, err.code, err.message, **err.extra)
            if err.code in STRIKE_CODES and s.strikes.strike(now):
                app.metrics.closed.labels(str(Close.POLICY)).inc()
                s.close(Close.POLICY, "too many refused frames")
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("op failed", extra={"op": op_name})
            app.metrics.errors.labels(Code.INTERNAL).inc()
            s.error(rid, Code.INTERNAL, "internal error")
