"""The viewers of every room in one process: their peer connections and the forwarders.

An :class:`Audience` is the viewers' half of the relay. It runs inside the relay's own
process (``--media-workers 0``) or inside each media worker (``media.worker``); either way
it is fed the same way: ``open_stream`` when a source starts a new epoch of a room's stream
(with the codec the viewers must negotiate), then every :class:`MediaPacket` of that stream
through the forwarder it returns.

Per process, all viewers share one DTLS certificate (``hooks.LeanPeers``, held by whoever
runs the relay) and one RTCP sender-report timer (``media.rtcp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from client_sdk.protocol import Code
from media import codecs, hooks, ice, offers
from media.errors import MediaError
from media.forwarder import ParkedTrack, StreamForwarder, ViewerStream
from media.ingest import Feed
from media.packet import MediaPacket
from media.rtcp import SenderReports

log = logging.getLogger(__name__)

JOIN_SAMPLES = 4096  # first-keyframe delays kept for stats (the latest ones)


@dataclass(eq=False)
class _Viewer:
    viewer_id: str
    pc: RTCPeerConnection
    streams: list[tuple[StreamForwarder, ViewerStream]] = field(default_factory=list)
    deadline: asyncio.Future[Any] | None = None
    edge: bool = False  # another node's pull (it follows the origin itself), not an end user
    dropped: bool = False  # being closed: an unwatch and a failed connection may race


@dataclass(eq=False)
class _Room:
    name: str
    forwarders: dict[str, StreamForwarder] = field(default_factory=dict)
    viewers: dict[str, _Viewer] = field(default_factory=dict)


class Audience:
    """The viewers' side of a relay in one process.

    ``on_gone(room, viewer_id)`` is called when a viewer leaves on its own (its connection
    failed or never came up), so that whoever routes viewers here can forget it.
    """

    def __init__(
        self,
        connect_timeout_s: float = 20.0,
        on_gone: Callable[[str, str], None] | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.on_gone = on_gone
        self.reports = SenderReports()
        self.first_keyframe_ms: deque[float] = deque(maxlen=JOIN_SAMPLES)
        self.joins = 0
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        # answers are made one at a time: under a burst of joins, interleaving them would
        # finish every answer late instead of the first ones early (their handshakes then
        # overlap the next answers' work)
        self._answering = asyncio.Lock()
        self._retired = {"packets_out_total": 0, "retransmits_total": 0}

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ streams

    def open_stream(
        self,
        room: str,
        kind: str,
        codec: RTCRtpCodecParameters,
        epoch: int,
        request_keyframe: Callable[[], None],
    ) -> Callable[[MediaPacket], None]:
        """A source starts epoch ``epoch`` of ``room``'s ``kind`` stream; returns where its
        packets go. A codec other than the viewers' drops their stream of that kind (the
        ingest refuses such a source while anyone watches)."""
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room(room)
        forwarder = state.forwarders.get(kind)
        if forwarder is None or not codecs.same_codec(forwarder.codec, codec):
            if forwarder is not None:
                self._retire(forwarder)
                for stream in list(forwarder.viewers):
                    forwarder.remove_viewer(stream)
            forwarder = state.forwarders[kind] = StreamForwarder(kind, codec, request_keyframe)
            forwarder.first_keyframe = self._first_keyframe
        forwarder.ask_source = request_keyframe
        forwarder.attach_source(epoch)
        return forwarder.forward

    def close_stream(self, room: str, kind: str | None = None) -> None:
        """The source went away (``kind`` None: every kind); viewers wait for the next."""
        state = self._rooms.get(room)
        if state is None:
            return
        for k, forwarder in state.forwarders.items():
            if kind is None or k == kind:
                forwarder.detach_source()

    def forwarder(self, room: str, kind: str) -> StreamForwarder | None:
        state = self._rooms.get(room)
        return None if state is None else state.forwarders.get(kind)

    def _first_keyframe(self, delay_s: float) -> None:
        self.first_keyframe_ms.append(delay_s * 1000)

    def first_keyframe_samples(self) -> list[float]:
        """Watch-to-first-keyframe delays (ms) recorded since the last call."""
        samples = list(self.first_keyframe_ms)
        self.first_keyframe_ms.clear()
        return samples

    # the ingest's listener, when the viewers live in the relay's own process

    def feed_attached(self, feed: Feed) -> None:
        output = self.open_stream(
            feed.room, feed.kind, feed.codec, feed.epoch, feed.request_keyframe
        )
        if output not in feed.outputs:
            feed.outputs.insert(0, output)

    def feed_detached(self, feed: Feed) -> None:
        self.close_stream(feed.room, feed.kind)

    def feed_closed(self, feed: Feed) -> None:
        self.close_stream(feed.room, feed.kind)

    # ------------------------------------------------------------------ viewers

    async def watch(
        self,
        room: str,
        viewer_id: str,
        offer_sdp: str,
        *,
        edge: bool = False,
        arrived: float | None = None,
        kinds: list[str] | None = None,
    ) -> str:
        """Add a viewer from its recvonly offer; returns the answer.

        ``arrived``: ``time.monotonic()`` when the watch reached the server, for the
        first-keyframe delay. ``kinds``: the offer's kinds if the caller already checked it
        (``offers.offer_kinds``: parsing an SDP is a visible share of a join). A viewer id
        already watching this room is replaced.
        """
        if kinds is None:
            kinds = offers.offer_kinds(offer_sdp)
        state = self._rooms.get(room)
        if state is None or not any(f.attached for f in state.forwarders.values()):
            raise MediaError(Code.NOT_FOUND, f"nothing is published in room {room!r}")
        if viewer_id in state.viewers:
            await self.unwatch(room, viewer_id)
        arrived = time.monotonic() if arrived is None else arrived
        pc = RTCPeerConnection(ice.server_configuration())
        viewer = _Viewer(viewer_id, pc, edge=edge)
        state.viewers[viewer_id] = viewer
        try:
            wanted: list[tuple[StreamForwarder, RTCRtpTransceiver]] = []
            for kind in kinds:
                forwarder = state.forwarders.get(kind)
                if forwarder is None:
                    continue
                t = pc.addTransceiver(ParkedTrack(kind), direction="sendonly")
                # before setRemoteDescription: aiortc fixes the codecs in there
                t.setCodecPreferences(codecs.preferences_like(kind, forwarder.codec))
                hooks.park_rtcp(t.sender)
                wanted.append((forwarder, t))
            if not wanted:
                raise MediaError(Code.INVALID, "the offer asks for no published kind")
            async with self._answering:
                answer = await offers.answer(pc, offer_sdp)
            for forwarder, t in wanted:
                negotiated = hooks.negotiated_codecs(t)
                if not negotiated or not codecs.same_codec(negotiated[0], forwarder.codec):
                    raise MediaError(
                        Code.INVALID, f"the viewer cannot receive {forwarder.codec.mimeType}"
                    )
                if t.mid is None or negotiated[0].payloadType is None:
                    raise MediaError(Code.INVALID, "the offer left a media section unnegotiated")
                stream = ViewerStream(t.sender, negotiated[0].payloadType, t.mid, forwarder.step)
                if forwarder.video:
                    stream.joined_at = arrived
                hooks.intercept_feedback(
                    t.sender,
                    on_nack=functools.partial(forwarder.on_nack, stream),
                    on_keyframe_request=forwarder.request_keyframe,
                )
                viewer.streams.append((forwarder, stream))
            if state.viewers.get(viewer_id) is not viewer:
                raise MediaError(Code.CONFLICT, "replaced by a newer watch of the same viewer")
            for forwarder, stream in viewer.streams:
                forwarder.add_viewer(stream)
        except BaseException:
            viewer.streams.clear()
            if state.viewers.get(viewer_id) is viewer:
                del state.viewers[viewer_id]
            await pc.close()
            raise
        self.joins += 1
        self.reports.add(
            viewer, [(s, functools.partial(f.report, s)) for f, s in viewer.streams]
        )

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                for forwarder, stream in viewer.streams:
                    forwarder.kick(stream)
            elif pc.connectionState in ("failed", "closed"):
                self._spawn(self._drop(state, viewer, gone=True))

        viewer.deadline = self._spawn(self._connect_deadline(state, viewer))
        return answer

    async def _connect_deadline(self, state: _Room, viewer: _Viewer) -> None:
        """A viewer that never connects (client gone mid-signalling) must not leak."""
        await asyncio.sleep(self.connect_timeout_s)
        if viewer.pc.connectionState != "connected":
            await self._drop(state, viewer, gone=True)

    async def _drop(self, state: _Room, viewer: _Viewer, gone: bool = False) -> None:
        if viewer.dropped:
            return
        viewer.dropped = True
        if viewer.deadline is not None and viewer.deadline is not asyncio.current_task():
            viewer.deadline.cancel()
        known = state.viewers.get(viewer.viewer_id) is viewer
        if known:
            del state.viewers[viewer.viewer_id]
        self.reports.remove(viewer)
        for forwarder, stream in viewer.streams:
            forwarder.remove_viewer(stream)
        viewer.streams.clear()
        await viewer.pc.close()
        if gone and known and self.on_gone is not None:
            self.on_gone(state.name, viewer.viewer_id)

    async def unwatch(self, room: str, viewer_id: str) -> bool:
        """Remove a viewer and close its connection; False if it was not watching."""
        state = self._rooms.get(room)
        viewer = None if state is None else state.viewers.get(viewer_id)
        if state is None or viewer is None:
            return False
        await self._drop(state, viewer)
        return True

    async def add_ice(self, room: str, viewer_id: str, candidate: dict[str, Any]) -> bool:
        """Add a checked trickled candidate to a viewer; False if it is not watching."""
        state = self._rooms.get(room)
        viewer = None if state is None else state.viewers.get(viewer_id)
        if viewer is None:
            return False
        await offers.add_candidate(viewer.pc, candidate)
        return True

    # ------------------------------------------------------------------ queries

    def viewer_count(self, room: str) -> int:
        state = self._rooms.get(room)
        return 0 if state is None else len(state.viewers)

    def has_viewer(self, room: str, viewer_id: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and viewer_id in state.viewers

    def end_users(self) -> dict[str, int]:
        """End users watching (not other nodes' pulls), per room that has any."""
        counts = {name: sum(not v.edge for v in state.viewers.values())
                  for name, state in self._rooms.items()}
        return {name: n for name, n in counts.items() if n}

    def room_codecs(self, room: str) -> dict[str, str]:
        state = self._rooms.get(room)
        if state is None:
            return {}
        return {kind: f.codec.mimeType for kind, f in state.forwarders.items()}

    def stats(self) -> dict[str, int]:
        out = dict(self._retired)
        out["viewers"] = 0
        for state in self._rooms.values():
            out["viewers"] += len(state.viewers)
            for forwarder in state.forwarders.values():
                out["packets_out_total"] += forwarder.packets_out
                out["retransmits_total"] += forwarder.retransmits
        return out

    # ------------------------------------------------------------------ teardown

    def _retire(self, forwarder: StreamForwarder) -> None:
        self._retired["packets_out_total"] += forwarder.packets_out
        self._retired["retransmits_total"] += forwarder.retransmits

    async def close_room(self, room: str) -> None:
        """Close every viewer of ``room`` and forget its streams."""
        state = self._rooms.pop(room, None)
        if state is None:
            return
        for viewer in list(state.viewers.values()):
            await self._drop(state, viewer)
        for forwarder in state.forwarders.values():
            forwarder.detach_source()
            self._retire(forwarder)

    async def close(self) -> None:
        for room in list(self._rooms):
            await self.close_room(room)
        await self.reports.close()
        for _ in range(10):  # closing connections may start a drop or two more
            if not self._tasks:
                break
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let the finished tasks' callbacks forget them
