"""Where a room's stream enters the relay: the publisher's (or an edge pull's) peer connection.

A room is fed by one upstream *source*: a local publisher (``publish``: the relay answers the
streamer's offer) or an edge pull (``pull``: the relay offers, as a recvonly viewer of the
same room on another relay, the origin, and the caller carries the offer there). Both end in
the same receivers: each kind (audio, video) of the room has one :class:`Feed`, and every RTP
packet a receiver gets goes through ``Feed.on_rtp`` before aiortc's own handler (which keeps
repairing the uplink with NACKs, receiver reports and REMB).

**The tap point.** ``Feed.on_rtp`` turns each packet into a :class:`MediaPacket` (RTX
unwrapped, keyframe starts marked) and hands it to every callable in ``Feed.outputs``, in
order, synchronously. The viewers' side (forwarders in this process, or the media workers'
sockets) is one output; a recorder would be another: register a :class:`FeedListener` with
:meth:`Ingest.listen` and append to ``feed.outputs`` in ``feed_attached``. An output must not
block and should not raise (an exception is logged and the others still run).

A later source (a streamer reconnecting, an origin that moved) starts a new *epoch* of the
same feed: the viewers' numbering continues across it (see ``media.forwarder``). PLIs to the
source are throttled here, once for every viewer of every process: a joiner's request, a
viewer's PLI and a forwarder's wait for a keyframe all end in :meth:`Feed.request_keyframe`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from client_sdk.protocol import Code
from media import codecs, hooks, ice, offers
from media.errors import MediaError
from media.keyframes import PliThrottle, is_keyframe_start
from media.packet import MediaPacket

log = logging.getLogger(__name__)

PUBLISHER = "publisher"
EDGE = "edge"

Signal = Callable[[str], Awaitable[str]]
"""Carries a pull's SDP offer to the origin and returns the origin's answer."""

Output = Callable[[MediaPacket], None]
_OSN = struct.Struct("!H")


class Feed:
    """One kind of one room's source stream, in the ingest process."""

    def __init__(
        self, room: str, kind: str, codec: RTCRtpCodecParameters, pli_interval_ms: int
    ) -> None:
        self.room = room
        self.kind = kind
        self.video = kind == "video"
        self.codec = codec
        self.codec_name = codec.mimeType.split("/", 1)[-1]
        self.epoch = 0
        self.attached = False
        self.payload_type = -1
        self.rtx_payload_type: int | None = None
        self.media_ssrc: int | None = None
        self.outputs: list[Output] = []
        self.pli = PliThrottle(interval_ms=pli_interval_ms)
        self._send_pli: Callable[[int], None] | None = None
        self._last_ts: int | None = None
        self.packets_in = 0
        self.frames_in = 0
        self.keyframes_in = 0

    def attach(
        self,
        epoch: int,
        payload_type: int,
        rtx_payload_type: int | None,
        send_pli: Callable[[int], None],
    ) -> None:
        """A (new) source connection feeds this stream from now on, as epoch ``epoch``."""
        self.epoch = epoch
        self.attached = True
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self._send_pli = send_pli
        self.media_ssrc = None
        self._last_ts = None

    def detach(self) -> None:
        self.attached = False
        self._send_pli = None
        self.media_ssrc = None

    def on_rtp(self, packet: RtpPacket) -> None:
        """Every RTP packet of the source connection (the receiver's tap)."""
        pt = packet.payload_type
        payload = packet.payload
        if pt == self.rtx_payload_type and self.rtx_payload_type is not None:
            if self.media_ssrc is None or len(payload) < 2:
                return
            seq = _OSN.unpack_from(payload)[0]
            payload = payload[2:]
        elif pt != self.payload_type or not payload:
            return  # unknown payload type or padding-only probe
        else:
            seq = packet.sequence_number
            self.media_ssrc = packet.ssrc
        ts = packet.timestamp
        keyframe = self.video and is_keyframe_start(self.codec_name, payload)
        media = MediaPacket(seq, ts, packet.marker, payload, packet.extensions.audio_level, keyframe)
        self.packets_in += 1
        if keyframe:
            self.keyframes_in += 1
        if self.video:
            self.frames_in += packet.marker
        if self.video and ts != self._last_ts:
            self._last_ts = ts
            if self.pli.due(int(time.monotonic() * 1000)):
                self._pli()
        for output in self.outputs:
            try:
                output(media)
            except Exception:
                log.exception("a feed output failed")

    def request_keyframe(self) -> None:
        """Throttled PLI to the source's media SSRC (never the RTX one)."""
        if self.video and self.pli.request(int(time.monotonic() * 1000)):
            self._pli()

    def _pli(self) -> None:
        if self.media_ssrc is not None and self._send_pli is not None:
            self._send_pli(self.media_ssrc)


class FeedListener(Protocol):
    """Told about a room's feeds: the viewers' side of the relay, or a recorder."""

    def feed_attached(self, feed: Feed) -> None:
        """A (new) source feeds ``feed`` (``feed.epoch`` is new): connect outputs here,
        idempotently (a feed keeps its outputs from one epoch to the next)."""

    def feed_detached(self, feed: Feed) -> None:
        """The source went away; the feed may get a new one later."""

    def feed_closed(self, feed: Feed) -> None:
        """The feed is gone: its room closed, or a new source brought another codec."""


@dataclass(eq=False)
class Source:
    """What feeds a room: a local publisher or a pull from an origin relay."""

    source_id: str
    pc: RTCPeerConnection
    kind: str = PUBLISHER  # PUBLISHER or EDGE


@dataclass(eq=False)
class _Room:
    name: str
    source: Source | None = None
    feeds: dict[str, Feed] = field(default_factory=dict)
    epochs: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Ingest:
    """The sources of every room of a relay.

    ``watched(room)`` says whether viewers watch ``room`` (anywhere): while they do, a new
    source must send the codec they negotiated. ``spawn`` runs a fire-and-forget coroutine
    (PLIs) under the owner's task set.
    """

    def __init__(
        self,
        pli_interval_ms: int,
        watched: Callable[[str], bool],
        spawn: Callable[[Awaitable[Any]], object],
    ) -> None:
        self.pli_interval_ms = pli_interval_ms
        self._watched = watched
        self._spawn = spawn
        self._rooms: dict[str, _Room] = {}
        self._listeners: list[FeedListener] = []
        self._retired: dict[str, int] = {}

    def listen(self, listener: FeedListener) -> None:
        """Tell ``listener`` about every feed from now on (and the ones already attached)."""
        self._listeners.append(listener)
        for state in self._rooms.values():
            for feed in state.feeds.values():
                if feed.attached:
                    listener.feed_attached(feed)

    # ------------------------------------------------------------------ sources

    async def publish(self, room: str, publisher_id: str, offer_sdp: str, kinds: list[str]) -> str:
        """Accept (or replace) the room's publisher; returns the answer's SDP.

        A local publisher also replaces an edge pull of the room: the stream is here now.
        """
        state = self._room(room)
        async with state.lock:
            pc, transceivers = self._receiving_pc(state, kinds)
            try:
                try:
                    answer = await offers.answer(pc, offer_sdp)
                except MediaError as exc:
                    if self._watched(room):
                        raise MediaError(
                            Code.CONFLICT,
                            f"viewers are watching; publish the same codec ({exc.message})",
                        ) from exc
                    raise
                self._attach(state, pc, transceivers)
            except BaseException:
                await self._discard(state, pc)
                raise
            await self._install(state, Source(publisher_id, pc, PUBLISHER))
        return answer

    async def pull(self, room: str, source_id: str, signal: Signal) -> None:
        """Feed ``room`` from another relay (the origin): see ``MediaRelay.pull``."""
        state = self._room(room)
        async with state.lock:
            if state.source is not None and state.source.kind == PUBLISHER:
                raise MediaError(Code.CONFLICT, f"room {room!r} is published on this relay")
            pc, transceivers = self._receiving_pc(state, list(offers.KINDS))
            try:
                try:
                    await pc.setLocalDescription(await pc.createOffer())
                    answer = await signal(str(pc.localDescription.sdp))
                    if not isinstance(answer, str) or not answer.startswith("v=0"):
                        raise MediaError(Code.INVALID, "the origin's answer is not an SDP")
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                except MediaError:
                    raise
                except Exception as exc:  # aiortc raises several types on bad answers
                    raise MediaError(Code.INVALID, f"cannot apply the origin's answer: {exc}") from exc
                if state.source is not None and state.source.kind == PUBLISHER:
                    raise MediaError(Code.CONFLICT, f"room {room!r} was published here meanwhile")
                # the origin may serve only some kinds (a video-only publisher): it answers
                # the others inactive
                served = {
                    k: t
                    for k, t in transceivers.items()
                    if t.currentDirection == "recvonly" and hooks.negotiated_codecs(t)
                }
                self._attach(state, pc, served)
            except BaseException:
                await self._discard(state, pc)
                raise
            await self._install(state, Source(source_id, pc, EDGE))

    async def unpublish(self, room: str) -> None:
        """Drop the room's publisher; its feeds wait for the next source."""
        state = self._rooms.get(room)
        if state is None:
            return
        async with state.lock:
            if state.source is None or state.source.kind != PUBLISHER:
                return  # an edge pull is ended by end_pull, not by a streamer's unpublish
            source, state.source = state.source, None
            self._detach(state)
            await source.pc.close()

    async def end_pull(self, room: str, source_id: str) -> bool:
        """Stop pulling ``room`` if ``source_id`` is still its source; True if it was."""
        state = self._rooms.get(room)
        if state is None:
            return False
        async with state.lock:
            source = state.source
            if source is None or source.kind != EDGE or source.source_id != source_id:
                return False
            state.source = None
            self._detach(state)
            await source.pc.close()
        return True

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room(room)
        return state

    def _receiving_pc(
        self, state: _Room, kinds: list[str]
    ) -> tuple[RTCPeerConnection, dict[str, RTCRtpTransceiver]]:
        """A peer connection with one recvonly, non-decoding transceiver per kind.

        While viewers watch, only the codec they negotiated is accepted: a new source must
        send it too, since the viewers' decoders were set up for it.
        """
        pc = RTCPeerConnection(ice.server_configuration())
        watched = self._watched(state.name)
        transceivers: dict[str, RTCRtpTransceiver] = {}
        for kind in kinds:
            t = pc.addTransceiver(kind, direction="recvonly")
            existing = state.feeds.get(kind)
            if existing is not None and watched:
                t.setCodecPreferences(codecs.preferences_like(kind, existing.codec))
            else:
                t.setCodecPreferences(codecs.publisher_preferences(kind))
            hooks.skip_decoding(t.receiver)
            transceivers[kind] = t
        return pc, transceivers

    async def _discard(self, state: _Room, pc: RTCPeerConnection) -> None:
        """A source that failed to set up: close it, and forget a room it alone created."""
        await pc.close()
        if state.source is None and not state.feeds and self._rooms.get(state.name) is state:
            del self._rooms[state.name]

    def _attach(
        self, state: _Room, pc: RTCPeerConnection, transceivers: dict[str, RTCRtpTransceiver]
    ) -> None:
        """Connect the new source's receivers to the room's feeds (a new epoch of each)."""
        if not transceivers:
            raise MediaError(Code.INVALID, "the source offers no audio or video")
        chosen: dict[str, tuple[RTCRtpTransceiver, RTCRtpCodecParameters, int | None]] = {}
        for kind, t in transceivers.items():
            negotiated = hooks.negotiated_codecs(t)
            if not negotiated or not codecs.is_forwarded(negotiated[0]):
                raise MediaError(Code.INVALID, f"no forwardable {kind} codec in the offer")
            chosen[kind] = (t, negotiated[0], codecs.rtx_payload_type(negotiated))
        state.epochs += 1
        for kind, (t, codec, rtx) in chosen.items():
            assert codec.payloadType is not None
            feed = state.feeds.get(kind)
            if feed is None or not codecs.same_codec(feed.codec, codec):
                if feed is not None:
                    self._close_feed(feed)
                feed = state.feeds[kind] = Feed(state.name, kind, codec, self.pli_interval_ms)
            receiver = t.receiver

            def send_pli(ssrc: int, receiver: Any = receiver) -> None:
                self._spawn(hooks.send_pli(receiver, ssrc))

            feed.attach(state.epochs, codec.payloadType, rtx, send_pli)

            def tap(packet: RtpPacket, feed: Feed = feed, epoch: int = state.epochs) -> None:
                # a replaced source keeps sending until it is closed: ignore it
                if feed.epoch == epoch and feed.attached:
                    feed.on_rtp(packet)

            hooks.tap_rtp(receiver, tap)
            for listener in self._listeners:
                listener.feed_attached(feed)

    async def _install(self, state: _Room, source: Source) -> None:
        """Make ``source`` the room's upstream (its receivers are already attached)."""
        old = state.source
        state.source = source
        pc = source.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and state.source is source:
                log.info("%s of %s went away (%s)", source.kind, state.name, pc.connectionState)
                self._detach(state)

        if old is not None:
            await old.pc.close()

    def _detach(self, state: _Room) -> None:
        for feed in state.feeds.values():
            if feed.attached:
                feed.detach()
                for listener in self._listeners:
                    listener.feed_detached(feed)

    def _close_feed(self, feed: Feed) -> None:
        feed.detach()
        for key, value in _counters(feed).items():
            self._retired[key] = self._retired.get(key, 0) + value
        for listener in self._listeners:
            listener.feed_closed(feed)

    # ------------------------------------------------------------------ queries

    def feeds(self, room: str) -> dict[str, Feed]:
        """The room's feeds by kind (empty if nothing was ever published there)."""
        state = self._rooms.get(room)
        return {} if state is None else dict(state.feeds)

    def source(self, room: str) -> Source | None:
        state = self._rooms.get(room)
        return None if state is None else state.source

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def publisher_pc(self, room: str, peer_id: str) -> RTCPeerConnection | None:
        source = self.source(room)
        if source is not None and source.kind == PUBLISHER and source.source_id == peer_id:
            return source.pc
        return None

    # ------------------------------------------------------------------ teardown

    async def close_room(self, room: str) -> None:
        state = self._rooms.pop(room, None)
        if state is None:
            return
        if state.source is not None:
            await state.source.pc.close()
            state.source = None
        for feed in state.feeds.values():
            self._close_feed(feed)
        state.feeds.clear()

    def stats(self) -> dict[str, int]:
        out = {
            "rooms": len(self._rooms),
            "publishers": 0,
            "edge_pulls": 0,
            "packets_in_total": 0,
            "frames_in_total": 0,
            "keyframes_in_total": 0,
            "pli_requested_total": 0,
            "pli_sent_total": 0,
        }
        for key, value in self._retired.items():
            out[key] += value
        for state in self._rooms.values():
            if state.source is not None:
                out["publishers" if state.source.kind == PUBLISHER else "edge_pulls"] += 1
            for feed in state.feeds.values():
                for key, value in _counters(feed).items():
                    out[key] += value
        return out


def _counters(feed: Feed) -> dict[str, int]:
    return {
        "packets_in_total": feed.packets_in,
        "frames_in_total": feed.frames_in,
        "keyframes_in_total": feed.keyframes_in,
        "pli_requested_total": feed.pli.requested,
        "pli_sent_total": feed.pli.sent,
    }
