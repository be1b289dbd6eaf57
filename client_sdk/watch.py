"""Watching a room's stream, and watching again when the server asks.

A server serves its WebRTC viewers in media worker processes. If the worker holding a viewer
dies, the server restarts it, forgets the viewer and tells its connection so with an event
on the room's channel, sent to that connection only::

    {"op": "event", "ch": "room:<id>", "type": "rewatch", "room": "<id>",
     "reason": "media_worker_restarted", "ts": <ms>}

The viewer's peer connection is dead by then (its other end is gone): a :class:`Watch`
closes it, makes a fresh one and sends ``watch`` again, retrying with backoff while the
server answers ``unavailable``. The same happens after the client's websocket reconnects:
the server drops a connection's media sessions when the connection goes, so the viewer must
offer again on the new one. The SDK carries no WebRTC stack: the peer is whatever the
caller makes (aiortc in Python), as long as it can make an offer, take an answer and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from client_sdk.errors import ConnectionLost, SoukError
from client_sdk.protocol import Code, room_channel

if TYPE_CHECKING:
    from client_sdk.client import Client

log = logging.getLogger("souk.client.watch")

REWATCH = "rewatch"


class MediaPeer(Protocol):
    """A receive-only WebRTC peer: ``offer()`` returns its SDP offer, ``accept(answer)``
    applies the server's answer, ``close()`` ends it."""

    async def offer(self) -> str: ...
    async def accept(self, answer_sdp: str) -> None: ...
    async def close(self) -> None: ...


class Watch:
    """One viewer of ``room`` on ``client`` that watches again by itself.

    ``make_peer()`` makes a fresh peer for each (re)watch; ``peer`` is the current one.
    ``on_peer(peer)``, if given, is awaited with each new peer once it is answered (to
    attach a renderer, say). ``rewatches`` counts the times the server asked, ``reconnects``
the times the websocket came back.
    """

    def __init__(
        self,
        client: Client,
        room: str,
        make_peer: Callable[[], MediaPeer],
        *,
        on_peer: Callable[[MediaPeer], Awaitable[None]] | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        attempts: int = 8,
    ) -> None:
        self.client = client
        self.room = room
        self.make_peer = make_peer
        self.on_peer = on_peer
        self.backoff = backoff
        self.attempts = attempts
        self.peer: MediaPeer | None = None
        self.rewatches = 0
        self.reconnects = 0
        self.reply: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._events = client.events(ch=room_channel(room), types=[REWATCH])
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> dict[str, Any]:
        """Watch now (raises what the server refuses) and keep watching after."""
        await self._watch()
        self._task = asyncio.get_running_loop().create_task(self._follow())
        self.client._watches.add(self)
        return self.reply

    async def _watch(self) -> None:
        peer = self.make_peer()
        try:
            reply = await self.client.request("watch", room=self.room, sdp=await peer.offer())
            await peer.accept(reply["sdp"])
        except BaseException:
            await peer.close()
            raise
        self.peer, self.reply = peer, dict(reply)
        if self.on_peer is not None:
            await self.on_peer(peer)

    async def _follow(self) -> None:
        async for event in self._events:
            if event.get("room") != self.room or self._stopped:
                continue
            self.rewatches += 1
            await self._replace()

    def reconnected(self) -> None:
        """The client's websocket came back: the server forgot this viewer with the old
        connection, so watch again with a fresh peer (called by the client)."""
        if self._stopped:
            return
        self.reconnects += 1
        task = asyncio.get_running_loop().create_task(self._replace())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _replace(self) -> None:
        async with self._lock:  # a rewatch and a reconnect at once make one new peer each, in turn
            if self._stopped:
                return
            old, self.peer = self.peer, None
            if old is not None:
                await old.close()
            await self._again()

    async def _again(self) -> None:
        delay = self.backoff[0]
        for attempt in range(self.attempts):
            try:
                await self._watch()
                return
            except SoukError as exc:
                if exc.code != Code.UNAVAILABLE and not isinstance(exc, ConnectionLost):
                    log.warning("watching %s again was refused: %s", self.room, exc)
                    return
                log.info("watching %s again failed (attempt %d): %s", self.room, attempt + 1, exc)
            except TimeoutError:  # the request timed out: the server may be restarting workers
                log.info("watching %s again timed out (attempt %d)", self.room, attempt + 1)
            await asyncio.sleep(delay)
            delay = min(self.backoff[1], delay * 2)
        log.warning("gave up watching %s again after %d attempts", self.room, self.attempts)

    async def stop(self) -> None:
        """Stop watching: unwatch (if still connected) and close the peer."""
        self._stopped = True
        self.client._watches.discard(self)
        self._events.close()
        for task in list(self._side_tasks):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.peer is not None:
            with contextlib.suppress(SoukError, asyncio.TimeoutError):
                await self.client.request("unwatch", room=self.room)
            await self.peer.close()
            self.peer = None
