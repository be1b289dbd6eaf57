"""MediaRelay: the SFU. One publisher per room, many viewers, packets forwarded, never decoded.

Signalling is the caller's business (the gateway's ``publish``/``watch``/``ice`` ops): this
class takes SDP offers and returns SDP answers plus the ``iceServers`` the client should use.
It knows nothing of commerce and owns no global state; a process may hold several relays as
long as they agree on ``rtc_host`` (aioice's host-address function is process-wide).

Lifecycle of a room: the first ``publish`` creates it; a later ``publish`` replaces the
publisher connection (a streamer reconnecting) and the viewers' streams continue with the same
SSRC and continuous sequence numbers and timestamps, so no viewer renegotiates; ``unpublish``
drops the publisher but keeps the viewers waiting for the next one; ``close_room`` ends all.

A room is fed by one upstream *source*: either a local publisher (``publish``: the relay
answers the streamer's offer) or an edge pull (``pull``: the relay offers, as a recvonly
viewer of the same room on another relay, the origin, and the caller carries the offer there).
Both end in the same receivers, RTP tap and forwarders, so keyframe caching, PLI to the
upstream and NACK repair work the same for a cascaded stream; a pull replaced by another
(the origin moved) keeps the viewers' numbering exactly as a publisher reconnect does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription, candidate_from_sdp

from client_sdk.protocol import Code
from media import codecs, hooks, ice
from media.errors import MediaError
from media.forwarder import ParkedTrack, StreamForwarder, ViewerStream

log = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
MAX_ID = 128
KINDS = ("audio", "video")


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or not value.isprintable():
        raise MediaError(Code.INVALID, f"{what} must be a printable string of 1..{MAX_ID} characters")
    return value


def _offer_kinds(sdp: object) -> list[str]:
    """Validate an SDP offer from a client and return the kinds of its m-sections in order."""
    if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
        raise MediaError(Code.INVALID, f"sdp must be a non-empty string of at most {MAX_SDP} bytes")
    if not sdp.startswith("v=0"):
        raise MediaError(Code.INVALID, "sdp is not a session description")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # hostile input: the parser raises whatever it trips on
        raise MediaError(Code.INVALID, "sdp could not be parsed") from exc
    kinds = [m.kind for m in parsed.media]
    if any(k not in KINDS for k in kinds):
        raise MediaError(Code.INVALID, "only audio and video m-sections are relayed")
    if not kinds or any(kinds.count(k) > 1 for k in KINDS):
        raise MediaError(Code.INVALID, "the offer needs at most one audio and one video m-section")
    return kinds


@dataclass(eq=False)
class _Viewer:
    viewer_id: str
    pc: RTCPeerConnection
    streams: list[tuple[StreamForwarder, ViewerStream]] = field(default_factory=list)
    deadline: asyncio.Future[Any] | None = None
    edge: bool = False  # another node's pull (it follows the origin itself), not an end user


PUBLISHER = "publisher"
EDGE = "edge"

Signal = Callable[[str], Awaitable[str]]
"""Carries a pull's SDP offer to the origin and returns the origin's answer."""


@dataclass(eq=False)
class _Source:
    """What feeds a room's forwarders: a local publisher or a pull from an origin relay."""

    source_id: str
    pc: RTCPeerConnection
    kind: str = PUBLISHER  # PUBLISHER or EDGE


@dataclass(eq=False)
class _Room:
    name: str
    source: _Source | None = None
    forwarders: dict[str, StreamForwarder] = field(default_factory=dict)
    viewers: dict[str, _Viewer] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MediaRelay:
    """Forwarding WebRTC relay. See docs/media.md for the design and its limits.

    No simulcast or SVC: every viewer gets the publisher's one encoding. Bandwidth estimation
    is aiortc's REMB on the uplink only; there is no per-viewer congestion control.
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
    ) -> None:
        self.rtc_host = ice.validate_host(rtc_host)
        self.stun_urls = ice.validate_urls(stun_urls, "stun")
        self.turn_urls = ice.validate_urls(turn_urls, "turn")
        if self.turn_urls and not turn_secret:
            raise MediaError(Code.INVALID, "turn_urls need a turn_secret")
        self.turn_secret = turn_secret
        if not 0.0 <= pli_interval_s <= 10.0:
            raise MediaError(Code.INVALID, "pli_interval_s must be within 0..10 s")
        self.pli_interval_ms = int(pli_interval_s * 1000)
        self.max_viewers_per_room = max_viewers_per_room
        self.connect_timeout_s = connect_timeout_s
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False
        self._retired: dict[str, int] = {}  # counters of closed rooms, so totals never drop
        hooks.HostPin.acquire(self.rtc_host)

    # ------------------------------------------------------------------ helpers

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ice_servers(self, user: str) -> list[dict[str, Any]]:
        return ice.client_ice_servers(
            self.stun_urls, self.turn_urls, self.turn_secret, user, int(time.time() * 1000)
        )

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError(Code.UNAVAILABLE, "the media relay is shut down")

    @staticmethod
    async def _answer(pc: RTCPeerConnection, offer_sdp: str) -> str:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except MediaError:
            raise
        except Exception as exc:  # aiortc raises several types on offers it cannot answer
            raise MediaError(Code.INVALID, f"cannot answer this offer: {exc}") from exc
        return str(pc.localDescription.sdp)

    # ------------------------------------------------------------------ publish

    async def publish(self, room: str, publisher_id: str, offer_sdp: str) -> dict[str, Any]:
        """Accept (or replace) the room's publisher. Returns ``{"sdp", "ice_servers"}``.

        A local publisher also replaces an edge pull of the room: the stream is here now.
        """
        self._check_open()
        _check_id(room, "room")
        _check_id(publisher_id, "publisher_id")
        kinds = _offer_kinds(offer_sdp)
        state = self._room(room)
        async with state.lock:
            pc, transceivers = self._receiving_pc(state, kinds)
            try:
                try:
                    answer = await self._answer(pc, offer_sdp)
                except MediaError as exc:
                    if any(f.viewers for f in state.forwarders.values()):
                        raise MediaError(
                            Code.CONFLICT,
                            f"viewers are watching; publish the same codec ({exc.message})",
                        ) from exc
                    raise
                self._attach(state, pc, transceivers)
            except BaseException:
                await self._discard(state, pc)
                raise
            await self._install(state, _Source(publisher_id, pc, PUBLISHER))
        return {"sdp": answer, "ice_servers": self._ice_servers(publisher_id)}

    async def pull(self, room: str, source_id: str, signal: Signal) -> None:
        """Feed ``room`` from another relay (the origin): an edge pull.

        The relay makes a recvonly offer for audio and video, ``signal`` carries it to the
        origin as a ``watch`` and returns the origin's answer; the origin then sends this
        relay the same forwarded packets it sends any viewer, and they enter the forwarders
        as a local publisher's would. A pull replaces an earlier pull (the origin moved), but
        never a local publisher (Code.CONFLICT): a stream published here is the better source.
        """
        self._check_open()
        _check_id(room, "room")
        _check_id(source_id, "source_id")
        state = self._room(room)
        async with state.lock:
            if state.source is not None and state.source.kind == PUBLISHER:
                raise MediaError(Code.CONFLICT, f"room {room!r} is published on this relay")
            pc, transceivers = self._receiving_pc(state, list(KINDS))
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
            await self._install(state, _Source(source_id, pc, EDGE))

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
        transceivers: dict[str, RTCRtpTransceiver] = {}
        for kind in kinds:
            t = pc.addTransceiver(kind, direction="recvonly")
            existing = state.forwarders.get(kind)
            if existing is not None and existing.viewers:
                t.setCodecPreferences(codecs.preferences_like(kind, existing.codec))
            else:
                t.setCodecPreferences(codecs.publisher_preferences(kind))
            hooks.skip_decoding(t.receiver)
            transceivers[kind] = t
        return pc, transceivers

    async def _discard(self, state: _Room, pc: RTCPeerConnection) -> None:
        """A source that failed to set up: close it, and forget a room it alone created."""
        await pc.close()
        if state.source is None and not state.viewers and not state.forwarders:
            if self._rooms.get(state.name) is state:
                del self._rooms[state.name]

    async def _install(self, state: _Room, source: _Source) -> None:
        """Make ``source`` the room's upstream (its receivers are already attached)."""
        old = state.source
        state.source = source
        pc = source.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and state.source is source:
                log.info("%s of %s went away (%s)", source.kind, state.name, pc.connectionState)
                for forwarder in state.forwarders.values():
                    forwarder.detach_source()

        if old is not None:
            await old.pc.close()

    def _attach(
        self, state: _Room, pc: RTCPeerConnection, transceivers: dict[str, RTCRtpTransceiver]
    ) -> None:
        """Connect the new source's receivers to the room's forwarders."""
        if not transceivers:
            raise MediaError(Code.INVALID, "the source offers no audio or video")
        for kind, t in transceivers.items():
            negotiated = hooks.negotiated_codecs(t)
            if not negotiated or not codecs.is_forwarded(negotiated[0]):
                raise MediaError(Code.INVALID, f"no forwardable {kind} codec in the offer")
            codec = negotiated[0]
            assert codec.payloadType is not None
            forwarder = state.forwarders.get(kind)
            if forwarder is None or not codecs.same_codec(forwarder.codec, codec):
                if forwarder is not None:
                    for viewer in list(forwarder.viewers):
                        forwarder.remove_viewer(viewer)
                forwarder = _new_forwarder(kind, codec, self.pli_interval_ms)
                state.forwarders[kind] = forwarder
            receiver = t.receiver

            def send_pli(ssrc: int, receiver: Any = receiver) -> None:
                self._spawn(hooks.send_pli(receiver, ssrc))

            forwarder.attach_source(
                codec.payloadType, codecs.rtx_payload_type(negotiated), send_pli
            )

            def tap(
                packet: RtpPacket, f: StreamForwarder = forwarder, epoch: int = forwarder.epoch
            ) -> None:
                # a replaced publisher keeps sending until it is closed: ignore it
                if f.epoch == epoch:
                    f.on_rtp(packet)

            hooks.tap_rtp(receiver, tap)

    async def unpublish(self, room: str) -> None:
        """Drop the room's publisher; viewers stay connected, waiting for the next one."""
        _check_id(room, "room")
        state = self._rooms.get(room)
        if state is None:
            return
        async with state.lock:
            if state.source is None or state.source.kind != PUBLISHER:
                return  # an edge pull is ended by end_pull, not by a streamer's unpublish
            source, state.source = state.source, None
            for forwarder in state.forwarders.values():
                forwarder.detach_source()
            await source.pc.close()

    async def end_pull(self, room: str, source_id: str) -> None:
        """Stop pulling ``room`` (the edge's last viewer left): close the pull and, with no
        viewer left, the room. A pull already replaced (other id, or a local publisher)
        is left alone."""
        _check_id(room, "room")
        state = self._rooms.get(room)
        if state is None:
            return
        async with state.lock:
            source = state.source
            if source is None or source.kind != EDGE or source.source_id != source_id:
                return
            state.source = None
            for forwarder in state.forwarders.values():
                forwarder.detach_source()
            await source.pc.close()
        if not state.viewers and state.source is None:
            await self.close_room(room)

    # ------------------------------------------------------------------ room queries

    def source_of(self, room: str) -> tuple[str, str] | None:
        """``(kind, source_id)`` of what feeds ``room`` now (PUBLISHER or EDGE), or None."""
        state = self._rooms.get(room)
        if state is None or state.source is None:
            return None
        return state.source.kind, state.source.source_id

    def source_state(self, room: str) -> str | None:
        """The upstream peer connection's state (``connected``, ``failed``, ...), or None."""
        state = self._rooms.get(room)
        if state is None or state.source is None:
            return None
        return str(state.source.pc.connectionState)

    def published_rooms(self) -> list[str]:
        """Rooms with a local publisher (the ones this relay is the origin of)."""
        return [
            name
            for name, state in self._rooms.items()
            if state.source is not None and state.source.kind == PUBLISHER
        ]

    def viewer_count(self, room: str) -> int:
        state = self._rooms.get(room)
        return 0 if state is None else len(state.viewers)

    def stranded_rooms(self) -> list[str]:
        """Rooms whose end-user viewers are connected but nothing feeds them (the publisher
        left, and may have republished on another node). Edge pulls of other nodes do not
        count: they follow the origin themselves."""
        return [
            name
            for name, state in self._rooms.items()
            if state.source is None and any(not v.edge for v in state.viewers.values())
        ]

    # ------------------------------------------------------------------ watch

    async def watch(
        self, room: str, viewer_id: str, offer_sdp: str, *, edge: bool = False
    ) -> dict[str, Any]:
        """Add a viewer from its recvonly offer. Returns ``{"sdp", "ice_servers"}``.

        A viewer id already watching this room is replaced (a client that reconnects).
        ``edge``: the viewer is another relay's pull (see ``stranded_rooms``).
        """
        self._check_open()
        _check_id(room, "room")
        _check_id(viewer_id, "viewer_id")
        kinds = _offer_kinds(offer_sdp)
        state = self._rooms.get(room)
        if state is None or state.source is None or not state.forwarders:
            raise MediaError(Code.NOT_FOUND, f"nothing is published in room {room!r}")
        if viewer_id in state.viewers:
            await self.unwatch(room, viewer_id)
        elif len(state.viewers) >= self.max_viewers_per_room:
            raise MediaError(Code.UNAVAILABLE, "this room has reached its viewer limit")
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
                wanted.append((forwarder, t))
            if not wanted:
                raise MediaError(Code.INVALID, "the offer asks for no published kind")
            answer = await self._answer(pc, offer_sdp)
            for forwarder, t in wanted:
                negotiated = hooks.negotiated_codecs(t)
                if not negotiated or not codecs.same_codec(negotiated[0], forwarder.codec):
                    raise MediaError(
                        Code.INVALID, f"the viewer cannot receive {forwarder.codec.mimeType}"
                    )
                if t.mid is None or negotiated[0].payloadType is None:
                    raise MediaError(Code.INVALID, "the offer left a media section unnegotiated")
                stream = ViewerStream(t.sender, negotiated[0].payloadType, t.mid, forwarder.step)
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

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._spawn(self._drop_viewer(state, viewer))

        viewer.deadline = self._spawn(self._connect_deadline(state, viewer))
        return {"sdp": answer, "ice_servers": self._ice_servers(viewer_id)}

    async def _connect_deadline(self, state: _Room, viewer: _Viewer) -> None:
        """A viewer that never connects (client gone mid-signalling) must not leak."""
        await asyncio.sleep(self.connect_timeout_s)
        if viewer.pc.connectionState != "connected":
            await self._drop_viewer(state, viewer)

    async def _drop_viewer(self, state: _Room, viewer: _Viewer) -> None:
        if viewer.deadline is not None and viewer.deadline is not asyncio.current_task():
            viewer.deadline.cancel()
        if state.viewers.get(viewer.viewer_id) is viewer:
            del state.viewers[viewer.viewer_id]
        for forwarder, stream in viewer.streams:
            forwarder.remove_viewer(stream)
        viewer.streams.clear()
        await viewer.pc.close()

    async def unwatch(self, room: str, viewer_id: str) -> None:
        """Remove a viewer and close its connection (no-op if it is not watching)."""
        _check_id(room, "room")
        _check_id(viewer_id, "viewer_id")
        state = self._rooms.get(room)
        if state is None:
            return
        viewer = state.viewers.get(viewer_id)
        if viewer is not None:
            await self._drop_viewer(state, viewer)

    # ------------------------------------------------------------------ trickle ICE

    async def add_ice(self, room: str, peer_id: str, candidate: dict[str, Any]) -> None:
        """Add a trickled remote candidate (``RTCIceCandidate.toJSON()`` shape) to a peer.

        ``peer_id`` is the publisher's or a viewer's id (an edge pull never trickles). An
        empty ``candidate`` string means end of candidates.
        """
        _check_id(room, "room")
        _check_id(peer_id, "peer_id")
        if not isinstance(candidate, dict):
            raise MediaError(Code.INVALID, "candidate must be a map")
        line = candidate.get("candidate")
        mid = candidate.get("sdpMid")
        index = candidate.get("sdpMLineIndex")
        if not isinstance(line, str) or len(line) > 512:
            raise MediaError(Code.INVALID, "candidate.candidate must be a string of at most 512 bytes")
        if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
            raise MediaError(Code.INVALID, "candidate.sdpMid must be a short string")
        if index is not None and (
            not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 16
        ):
            raise MediaError(Code.INVALID, "candidate.sdpMLineIndex must be a small integer")
        if mid is None and index is None:
            raise MediaError(Code.INVALID, "candidate needs sdpMid or sdpMLineIndex")
        state = self._rooms.get(room)
        pc: RTCPeerConnection | None = None
        if state is not None:
            if (
                state.source is not None
                and state.source.kind == PUBLISHER
                and state.source.source_id == peer_id
            ):
                pc = state.source.pc
            elif peer_id in state.viewers:
                pc = state.viewers[peer_id].pc
        if pc is None:
            raise MediaError(Code.NOT_FOUND, f"no media session for {peer_id!r} in room {room!r}")
        if not line:
            await pc.addIceCandidate(None)
            return
        text = line[len("candidate:") :] if line.startswith("candidate:") else line
        try:
            parsed = candidate_from_sdp(text)
        except Exception as exc:
            raise MediaError(Code.INVALID, "candidate could not be parsed") from exc
        parsed.sdpMid = mid
        parsed.sdpMLineIndex = index
        try:
            await pc.addIceCandidate(parsed)
        except Exception as exc:
            raise MediaError(Code.INVALID, f"candidate rejected: {exc}") from exc

    # ------------------------------------------------------------------ teardown

    async def close_room(self, room: str) -> None:
        """End a room: close the publisher and every viewer."""
        _check_id(room, "room")
        state = self._rooms.pop(room, None)
        if state is None:
            return
        for viewer in list(state.viewers.values()):
            await self._drop_viewer(state, viewer)
        if state.source is not None:
            await state.source.pc.close()
            state.source = None
        for forwarder in state.forwarders.values():
            forwarder.detach_source()
            for key, value in _counters(forwarder).items():
                self._retired[key] = self._retired.get(key, 0) + value

    async def close(self) -> None:
        """Close every room and release the host-candidate pin. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for room in list(self._rooms):
            await self.close_room(room)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        hooks.HostPin.release()

    # ------------------------------------------------------------------ metrics

    def stats(self) -> dict[str, int]:
        """Counters for Prometheus (monotonic ones end in ``_total``)."""
        out = {
            "rooms": len(self._rooms),
            "publishers": 0,
            "edge_pulls": 0,
            "viewers": 0,
            "packets_in_total": 0,
            "packets_out_total": 0,
            "retransmits_total": 0,
            "pli_requested_total": 0,
            "pli_sent_total": 0,
            "keyframes_in_total": 0,
        }
        for key, value in self._retired.items():
            out[key] += value
        for state in self._rooms.values():
            if state.source is not None:
                out["publishers" if state.source.kind == PUBLISHER else "edge_pulls"] += 1
            out["viewers"] += len(state.viewers)
            for forwarder in state.forwarders.values():
                for key, value in _counters(forwarder).items():
                    out[key] += value
        return out

    def room_codecs(self, room: str) -> dict[str, str]:
        """The mime type forwarded per kind in a room (for the gateway and tests)."""
        state = self._rooms.get(room)
        if state is None:
            return {}
        return {kind: f.codec.mimeType for kind, f in state.forwarders.items()}


def _new_forwarder(
    kind: str, codec: RTCRtpCodecParameters, pli_interval_ms: int
) -> StreamForwarder:
    return StreamForwarder(kind, codec, pli_interval_ms)


def _counters(forwarder: StreamForwarder) -> dict[str, int]:
    return {
        "packets_in_total": forwarder.packets_in,
        "packets_out_total": forwarder.packets_out,
        "retransmits_total": forwarder.retransmits,
        "pli_requested_total": forwarder.pli.requested,
        "pli_sent_total": forwarder.pli.sent,
        "keyframes_in_total": forwarder.keyframe_starts,
    }
