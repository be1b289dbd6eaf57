"""The websocket gateway: decode, limit, authorize, dispatch; never a traceback to a client.

Frames of one connection are handled in order, one at a time (server/session.py), so a
client's ops take effect in the order it sent them. Refusals that smell of abuse
(undecodable or oversized frames, unknown ops, rate limits, auth failures) count as strikes;
too many in the window and the connection is closed with 1008.

The gateway also keeps the sessions' lifecycle: it registers a session when its handshake
completes, runs the one keepalive sweep over all of them, and releases what a session held
once its connection is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Close, Code, DecodeError, decode_strict
from server.domain.ratelimit import StrikeCounter
from server.errors import SoukError
from server.ops.access import authorize
from server.ops.registry import OPS
from server.session import Session

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger("souk.gateway")

STRIKE_CODES = frozenset(
    {Code.BAD_FRAME, Code.TOO_LARGE, Code.UNKNOWN_OP, Code.RATE_LIMITED, Code.UNAUTHORIZED, Code.FORBIDDEN}
)
SWEEP_SLICES = 20  # each sweep tick visits one slice: pings spread over the interval


class _Resumed:
    """Awaitable: a coroutine already started by hand, driven on from where it waits (the
    future it yielded), the way a task drives it. Used by `Gateway.closed`."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # thrown into the coroutine, as a task would
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class Gateway:
    def __init__(self, app: App) -> None:
        self.app = app
        self.hub = app.hub
        self.hard_limit = app.cfg.hard_limit
        self._tasks: set[asyncio.Task[Any]] = set()
        # the loop, kept: asyncio.get_running_loop() costs a getpid() syscall per call
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by the listener
        self._sweep: asyncio.TimerHandle | None = None
        self._tick = 0
        self._slices: list[set[Session]] = [set() for _ in range(SWEEP_SLICES)]

    # ---- lifecycle ------------------------------------------------------------------
    def opened(self, s: Session) -> None:
        """The handshake is done: count the session and start its auth deadline."""
        app = self.app
        app.sessions.add(s)
        self._slices[s.id % SWEEP_SLICES].add(s)
        app.metrics.connections.inc()
        app.metrics.connections_total.inc()
        loop = self.loop
        s.timer = loop.call_later(app.cfg.auth_timeout_s, self._auth_deadline, s)
        if self._sweep is None:
            self._sweep = loop.call_later(self._sweep_every(), self._keepalive)

    def closed(self, s: Session) -> None:
        """The connection is gone and no op of it runs: release its channels and media.

        The release runs here, synchronously, as far as it goes without waiting (all of it
        for a viewer: channels and presence); only a release that must wait (media) goes on
        in a task. A closing viewer costs no task."""
        app = self.app
        if s not in app.sessions:
            return
        app.sessions.discard(s)
        self._slices[s.id % SWEEP_SLICES].discard(s)
        app.metrics.connections.dec()
        coro = app.disconnect(s)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("releasing a session failed")
            return
        task = self.loop.create_task(self._release(_Resumed(coro, waiting)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, rest: _Resumed) -> None:
        try:
            await rest
        except Exception:
            log.exception("releasing a session failed")

    def overflowed(self, s: Session) -> None:
        """A slow consumer past its bound: out of every channel now (presence included)."""
        self.app.evict(s)

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _sweep_every(self) -> float:
        return max(0.05, self.app.cfg.ping_interval_s / SWEEP_SLICES)

    def _keepalive(self) -> None:
        """Every ping interval, each session is visited once: pinged when it was silent,
        closed when it stayed silent after the ping (server/session.py)."""
        self._tick = (self._tick + 1) % SWEEP_SLICES
        for s in list(self._slices[self._tick]):
            s.keepalive()
        self._sweep = self.loop.call_later(self._sweep_every(), self._keepalive)

    def _auth_deadline(self, s: Session) -> None:
        s.timer = None
        if s.identity is None and not s.closing:
            self.app.metrics.closed.labels(str(Close.AUTH_TIMEOUT)).inc()
            s.error(None, Code.UNAUTHORIZED, "no valid auth in time")
            s.close(Close.AUTH_TIMEOUT, "no valid auth in time")

    # ---- frames ---------------------------------------------------------------------
    async def dispatch(self, s: Session, message: bytes | str) -> None:
        app = self.app
        now = app.clock_ms()
        rid = None
        op_name = "?"
        try:
            if len(message) > app.cfg.max_frame_bytes:
                raise SoukError(Code.TOO_LARGE, f"frame larger than {app.cfg.max_frame_bytes} bytes")
            try:
                frame = decode_strict(message, s.subprotocol)
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
                await authorize(app.services, s, spec, frame)
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
            if err.code in STRIKE_CODES:
                strikes = s.strikes
                if strikes is None:
                    strikes = s.strikes = StrikeCounter(app.cfg.strike_limit, int(app.cfg.strike_window_s * 1000))
                if strikes.strike(now):
                    app.metrics.closed.labels(str(Close.POLICY)).inc()
                    s.close(Close.POLICY, "too many refused frames")
        except Exception:
            log.exception("op failed", extra={"op": op_name})
            app.metrics.errors.labels(Code.INTERNAL).inc()
            s.error(rid, Code.INTERNAL, "internal error")
