"""MediaRelay: the SFU. One source per room, many viewers, packets forwarded, never decoded.

Signalling is the caller's business (the gateway's ``publish``/``watch``/``ice`` ops): this
class takes SDP offers and returns SDP answers plus the ``iceServers`` the client should use.
It knows nothing of commerce. A process may hold several relays as long as they agree on
``rtc_host`` (aioice's host-address function is process-wide).

The relay has two halves (see docs/media.md):

- the **ingest** (``media.ingest``), in this process: the publishers' and edge pulls' peer
  connections, one feed per room and kind, the PLI throttle, the tap point;
- the **viewers** (``media.audience``): in this process with ``media_workers=0``, otherwise
  spread over that many worker processes (``media.workers``), each fed every packet once over
  a local socket and answering the watches routed to it.

Lifecycle of a room: the first ``publish`` creates it; a later ``publish`` replaces the
publisher connection (a streamer reconnecting) and the viewers' streams continue with the same
SSRC and continuous sequence numbers and timestamps, so no viewer renegotiates; ``unpublish``
drops the publisher but keeps the viewers waiting for the next one; ``close_room`` ends all.
A room may instead be fed by an edge pull (``pull``) of the same stream from another relay;
a pull replaced by another (the origin moved) keeps the viewers' numbering the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from client_sdk.protocol import Code
from media import hooks, ice, offers
from media.audience import Audience
from media.errors import MediaError
from media.ingest import EDGE, PUBLISHER, FeedListener, Ingest, Signal

__all__ = ["EDGE", "PUBLISHER", "MediaRelay", "Rewatch", "Signal"]

Rewatch = Callable[[str, list[str]], None]
"""``(room, viewer ids)``: these viewers lost their media (their worker died) and must
watch again; the relay has already forgotten them."""


class ViewerSide(FeedListener, Protocol):
    """Where a relay's viewers live: an :class:`Audience` in this process, or the workers."""

    async def watch(
        self,
        room: str,
        viewer_id: str,
        offer_sdp: str,
        *,
        edge: bool,
        arrived: float,
        kinds: list[str] | None = None,
    ) -> str: ...
    async def unwatch(self, room: str, viewer_id: str) -> bool: ...
    async def add_ice(self, room: str, viewer_id: str, candidate: dict[str, Any]) -> bool: ...
    def viewer_count(self, room: str) -> int: ...
    def has_viewer(self, room: str, viewer_id: str) -> bool: ...
    def end_users(self) -> dict[str, int]: ...
    def first_keyframe_samples(self) -> list[float]: ...
    async def close_room(self, room: str) -> None: ...
    async def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...


class MediaRelay:
    """Forwarding WebRTC relay. See docs/media.md for the design and its limits.

    No simulcast or SVC: every viewer gets the publisher's one encoding. Bandwidth estimation
    is aiortc's REMB on the uplink only; there is no per-viewer congestion control.
    ``media_workers``: 0 serves the viewers in this process, N > 0 in N worker processes.
    ``on_rewatch`` is told which viewers lost their media when a worker died.
    """

    def __init__(
        self,
        rtc_host: str = "127.0.0.1",
        stun_urls: tuple[str, ...] = (),
        turn_urls: tuple[str, ...] = (),
        turn_secret: str | None = None,
        pli_interval_s: float = 0.5,
        max_viewers_per_room: int = 2000,
        connect_timeout_s: float = 20.0,
        media_workers: int = 0,
        on_rewatch: Rewatch | None = None,
    ) -> None:
        self.rtc_host = ice.validate_host(rtc_host)
        self.stun_urls = ice.validate_urls(stun_urls, "stun")
        self.turn_urls = ice.validate_urls(turn_urls, "turn")
        if self.turn_urls and not turn_secret:
            raise MediaError(Code.INVALID, "turn_urls need a turn_secret")
        self.turn_secret = turn_secret
        if not 0.0 <= pli_interval_s <= 10.0:
            raise MediaError(Code.INVALID, "pli_interval_s must be within 0..10 s")
        if not 0 <= media_workers <= 256:
            raise MediaError(Code.INVALID, "media_workers must be within 0..256")
        self.pli_interval_ms = int(pli_interval_s * 1000)
        self.max_viewers_per_room = max_viewers_per_room
        self.connect_timeout_s = connect_timeout_s
        self.on_rewatch = on_rewatch
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False
        self.ingest = Ingest(self.pli_interval_ms, self._watched, self._spawn)
        self.viewers: ViewerSide
        if media_workers:
            from media.workers import WorkerPool

            self.viewers = WorkerPool(
                media_workers, self.rtc_host, connect_timeout_s, self.ingest, self._lost
            )
        else:
            self.viewers = Audience(connect_timeout_s)
        self.ingest.listen(self.viewers)  # the viewers come first among the feeds' outputs
        hooks.HostPin.acquire(self.rtc_host)
        hooks.LeanPeers.acquire()

    # ------------------------------------------------------------------ helpers

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _watched(self, room: str) -> bool:
        return self.viewers.viewer_count(room) > 0

    def _lost(self, room: str, viewer_ids: list[str]) -> None:
        if self.on_rewatch is not None and viewer_ids:
            self.on_rewatch(room, viewer_ids)

    def _ice_servers(self, user: str) -> list[dict[str, Any]]:
        return ice.client_ice_servers(
            self.stun_urls, self.turn_urls, self.turn_secret, user, int(time.time() * 1000)
        )

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError(Code.UNAVAILABLE, "the media relay is shut down")

    # ------------------------------------------------------------------ sources

    async def publish(self, room: str, publisher_id: str, offer_sdp: str) -> dict[str, Any]:
        """Accept (or replace) the room's publisher. Returns ``{"sdp", "ice_servers"}``.

        A local publisher also replaces an edge pull of the room: the stream is here now.
        """
        self._check_open()
        offers.check_id(room, "room")
        offers.check_id(publisher_id, "publisher_id")
        kinds = offers.offer_kinds(offer_sdp)
        answer = await self.ingest.publish(room, publisher_id, offer_sdp, kinds)
        return {"sdp": answer, "ice_servers": self._ice_servers(publisher_id)}

    async def pull(self, room: str, source_id: str, signal: Signal) -> None:
        """Feed ``room`` from another relay (the origin): an edge pull.

        The relay makes a recvonly offer for audio and video, ``signal`` carries it to the
        origin as a ``watch`` and returns the origin's answer; the origin then sends this
        relay the same forwarded packets it sends any viewer, and they enter the feeds as a
        local publisher's would. A pull replaces an earlier pull (the origin moved), but
        never a local publisher (CONFLICT): a stream published here is the better source.
        """
        self._check_open()
        offers.check_id(room, "room")
        offers.check_id(source_id, "source_id")
        await self.ingest.pull(room, source_id, signal)

    def publishing(self, room: str) -> bool:
        """True while a publisher of ``room`` is connected to this relay (not an edge pull)."""
        source = self.ingest.source(room)
        return source is not None and source.kind == PUBLISHER

    async def unpublish(self, room: str) -> None:
        """Drop the room's publisher; viewers stay connected, waiting for the next one."""
        offers.check_id(room, "room")
        await self.ingest.unpublish(room)

    async def end_pull(self, room: str, source_id: str) -> None:
        """Stop pulling ``room`` (the edge's last viewer left): close the pull and, with no
        viewer left, the room. A pull already replaced (other id, or a local publisher)
        is left alone."""
        offers.check_id(room, "room")
        if not await self.ingest.end_pull(room, source_id):
            return
        if not self.viewers.viewer_count(room) and self.ingest.source(room) is None:
            await self.close_room(room)

    # ------------------------------------------------------------------ room queries

    def source_of(self, room: str) -> tuple[str, str] | None:
        """``(kind, source_id)`` of what feeds ``room`` now (PUBLISHER or EDGE), or None."""
        source = self.ingest.source(room)
        return None if source is None else (source.kind, source.source_id)

    def source_state(self, room: str) -> str | None:
        """The upstream peer connection's state (``connected``, ``failed``, ...), or None."""
        source = self.ingest.source(room)
        return None if source is None else str(source.pc.connectionState)

    def published_rooms(self) -> list[str]:
        """Rooms with a local publisher (the ones this relay is the origin of)."""
        rooms = self.ingest.rooms()
        return [r for r in rooms if (self.source_of(r) or ("", ""))[0] == PUBLISHER]

    def viewer_count(self, room: str) -> int:
        return self.viewers.viewer_count(room)

    def video_viewers(self) -> dict[str, int]:
        """End users receiving each room's video on this node (what the studio shows; other
        nodes' pulls are not people, and each node counts its own end users)."""
        return self.viewers.end_users()

    def stranded_rooms(self) -> list[str]:
        """Rooms whose end-user viewers are connected but nothing feeds them (the publisher
        left, and may have republished on another node). Edge pulls of other nodes do not
        count: they follow the origin themselves."""
        return [r for r in self.viewers.end_users() if self.ingest.source(r) is None]

    def room_codecs(self, room: str) -> dict[str, str]:
        """The mime type forwarded per kind in a room (for the gateway and tests)."""
        return {kind: f.codec.mimeType for kind, f in self.ingest.feeds(room).items()}

    # ------------------------------------------------------------------ viewers

    async def watch(
        self,
        room: str,
        viewer_id: str,
        offer_sdp: str,
        *,
        edge: bool = False,
        arrived: float | None = None,
    ) -> dict[str, Any]:
        """Add a viewer from its recvonly offer. Returns ``{"sdp", "ice_servers"}``.

        A viewer id already watching this room is replaced (a client that reconnects).
        ``edge``: the viewer is another relay's pull (see ``stranded_rooms``). ``arrived``:
        ``time.monotonic()`` when the request reached the server (default: now), the start
        of the watch-to-first-keyframe delay the relay measures.
        """
        arrived = time.monotonic() if arrived is None else arrived
        self._check_open()
        offers.check_id(room, "room")
        offers.check_id(viewer_id, "viewer_id")
        kinds = offers.offer_kinds(offer_sdp)
        source = self.ingest.source(room)
        if source is None or not any(f.attached for f in self.ingest.feeds(room).values()):
            raise MediaError(Code.NOT_FOUND, f"nothing is published in room {room!r}")
        if (
            not self.viewers.has_viewer(room, viewer_id)
            and self.viewers.viewer_count(room) >= self.max_viewers_per_room
        ):
            raise MediaError(Code.UNAVAILABLE, "this room has reached its viewer limit")
        answer = await self.viewers.watch(
            room, viewer_id, offer_sdp, edge=edge, arrived=arrived, kinds=kinds
        )
        return {"sdp": answer, "ice_servers": self._ice_servers(viewer_id)}

    async def unwatch(self, room: str, viewer_id: str) -> None:
        """Remove a viewer and close its connection (no-op if it is not watching)."""
        offers.check_id(room, "room")
        offers.check_id(viewer_id, "viewer_id")
        await self.viewers.unwatch(room, viewer_id)

    async def add_ice(self, room: str, peer_id: str, candidate: dict[str, Any]) -> None:
        """Add a trickled remote candidate (``RTCIceCandidate.toJSON()`` shape) to a peer.

        ``peer_id`` is the publisher's or a viewer's id (an edge pull never trickles). An
        empty ``candidate`` string means end of candidates.
        """
        offers.check_id(room, "room")
        offers.check_id(peer_id, "peer_id")
        checked = offers.check_candidate(candidate)
        pc = self.ingest.publisher_pc(room, peer_id)
        if pc is not None:
            await offers.add_candidate(pc, checked)
        elif not await self.viewers.add_ice(room, peer_id, checked):
            raise MediaError(Code.NOT_FOUND, f"no media session for {peer_id!r} in room {room!r}")

    # ------------------------------------------------------------------ teardown

    async def close_room(self, room: str) -> None:
        """End a room: close the publisher and every viewer."""
        offers.check_id(room, "room")
        await self.viewers.close_room(room)
        await self.ingest.close_room(room)

    async def close(self) -> None:
        """Close every room, the workers, and release the host-candidate pin. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for room in set(self.ingest.rooms()) | set(self.viewers.end_users()):
            await self.close_room(room)
        await self.viewers.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        hooks.HostPin.release()
        hooks.LeanPeers.release()

    # ------------------------------------------------------------------ metrics

    def stats(self) -> dict[str, int]:
        """Counters for Prometheus (monotonic ones end in ``_total``)."""
        return {**self.ingest.stats(), **self.viewers.stats()}

    def first_keyframe_samples(self) -> list[float]:
        """Delays (ms) from a watch reaching the server to its first keyframe packet sent,
        recorded since the last call."""
        return self.viewers.first_keyframe_samples()
