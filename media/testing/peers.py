"""aiortc peers for tests and load tests: a publisher, a decoding viewer, a cheap RTP sink.

Each peer speaks SDP only (``offer()`` returns the offer, ``accept(answer)`` applies the
answer), so the same peer drives the relay in-process or through the websocket ops.
All peers use ``iceServers=[]`` and expect host candidates pinned to loopback (``loopback()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from media import hooks
from media.relay import MediaRelay
from media.testing import hooks as test_hooks
from media.testing.stamp import FrameSink, StampedVideoTrack


@contextlib.contextmanager
def loopback(address: str = "127.0.0.1") -> Iterator[None]:
    """Pin every aiortc peer's host candidates to ``address`` while the block runs."""
    hooks.HostPin.acquire(address)
    try:
        yield
    finally:
        hooks.HostPin.release()


def _config() -> RTCConfiguration:
    # explicit empty list: aiortc otherwise adds a public STUN server
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def _video_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    caps = RTCRtpSender.getCapabilities("video").codecs
    want = f"video/{codec}".lower()
    prefs = [c for c in caps if c.mimeType.lower() == want]
    if want == "video/h264":
        prefs = [c for c in prefs if c.parameters.get("packetization-mode") == "1"] or prefs
    return prefs + [c for c in caps if c.mimeType.lower() == "video/rtx"]


class _Peer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(_config())
        self._tasks: set[asyncio.Task[None]] = set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connected(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline or self.pc.connectionState in ("failed", "closed"):
                raise TimeoutError(f"peer not connected: {self.pc.connectionState}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class PublisherPeer(_Peer):
    """Sends a stamped synthetic camera (and Opus silence) with the chosen video codec.

    ``honour_pli=False`` makes it ignore keyframe requests, so keyframes come only from the
    encoder's natural GOP (aiortc's VP8 encoder: one every 3000 frames): that proves a viewer
    started on the relay's cached keyframe rather than on a fresh one.
    """

    def __init__(
        self,
        codec: str = "VP8",
        audio: bool = True,
        fps: int = 30,
        honour_pli: bool = True,
        width: int = 320,
        height: int = 240,
        noise: bool = False,
    ) -> None:
        super().__init__()
        self.video = StampedVideoTrack(fps=fps, width=width, height=height, noise=noise)
        if audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        transceiver = self.pc.addTransceiver(self.video, direction="sendonly")
        transceiver.setCodecPreferences(_video_preferences(codec))
        self.video_sender = transceiver.sender
        if not honour_pli:
            test_hooks.ignore_keyframe_requests(self.video_sender)


class ViewerPeer(_Peer):
    """A decoding viewer: counts frames and reads the stamps (latency) from the pixels.

    ``loss`` drops that fraction of the SRTP packets it receives (as they come off the ICE
    transport), standing in for a lossy link between relay and this viewer.
    """

    def __init__(
        self, audio: bool = True, loss: float = 0.0, seed: int = 1, read_every: int = 1
    ) -> None:
        super().__init__()
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be within [0, 1)")
        self.sink = FrameSink(read_every=read_every)
        self.audio_frames = 0
        self.loss = loss
        self.dropped = 0
        self.received = 0
        self._rng = random.Random(seed)
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._run(self.sink.consume(track))
            else:
                self._run(self._drain_audio(track))

    async def accept(self, answer_sdp: str) -> None:
        await super().accept(answer_sdp)
        if self.loss:
            ice_transport = self.pc.getTransceivers()[0].receiver.transport.transport
            test_hooks.filter_incoming_datagrams(ice_transport, self._keep)

    def _keep(self, data: bytes) -> bool:
        # SRTP only, and RTP only (RTCP packet types 192..223 in the second byte)
        if not data or not 127 < data[0] < 192 or 192 <= data[1] <= 223:
            return True
        self.received += 1
        if self._rng.random() < self.loss:
            self.dropped += 1
            return False
        return True

    async def _drain_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.audio_frames += 1


class RtpSinkViewer(_Peer):
    """A viewer that never decodes: it counts RTP packets and video frames, then drops them.

    Packets are dropped as aioice receives them, before SRTP: the RTP header
    (payload type, marker) travels in the clear, so frames are counted by the marker bit of
    video packets without decrypting anything. That keeps a load generator's per-viewer cost
    far below the relay's, so the benchmark measures the relay. (It also means no RTCP
    receiver reports or NACKs from sinks.)
    """

    def __init__(self, audio: bool = True) -> None:
        super().__init__()
        self.packets = 0
        self.octets = 0
        self.video_frames = 0
        self.first_frame_at: float | None = None
        self.video_pt: int | None = None
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self._video = self.pc.addTransceiver("video", direction="recvonly")

    async def accept(self, answer_sdp: str) -> None:
        await super().accept(answer_sdp)
        self._intercept()

    async def answer(self, offer_sdp: str) -> str:
        """Answer an offering server (Janus's Streaming plugin offers; Souk answers) and
        return the answer's SDP. The transceivers made in ``__init__`` take the offer's
        sections of their kind."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._intercept()
        return str(self.pc.localDescription.sdp)

    def _intercept(self) -> None:
        codecs = hooks.negotiated_codecs(self._video)
        self.video_pt = codecs[0].payloadType if codecs else None
        test_hooks.intercept_ice_data(self._video.receiver.transport.transport, self._count)

    def _count(self, data: bytes) -> bool:
        if len(data) < 12 or not 127 < data[0] < 192 or 192 <= data[1] <= 223:
            return True  # STUN, DTLS and RTCP go on to aiortc
        self.packets += 1
        self.octets += len(data)
        if len(data) > 1 and data[1] & 0x7F == self.video_pt and data[1] & 0x80:
            self.video_frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = time.time()
        return False


async def publish_to(
    relay: MediaRelay, room: str, peer: PublisherPeer, user: str = "streamer"
) -> None:
    """Publish ``peer`` into ``room`` on an in-process relay and wait until it is connected."""
    reply = await relay.publish(room, user, await peer.offer())
    await peer.accept(reply["sdp"])
    await peer.connected()


async def watch_from(
    relay: MediaRelay, room: str, viewer_id: str, peer: ViewerPeer | RtpSinkViewer
) -> float:
    """Watch ``room`` with ``peer``; returns the time.time() signalling started (for TTFF)."""
    started = time.time()
    reply = await relay.watch(room, viewer_id, await peer.offer())
    await peer.accept(reply["sdp"])
    return started


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
