"""Per-stream RTP fan-out: one publisher track in, N viewer streams out, no decoding.

For every packet from the publisher, and for every viewer of that stream: rewrite sequence
number, timestamp and SSRC into the viewer's own numbering, SRTP-protect with the viewer's
context and ``sendto`` on its nominated ICE pair, synchronously, in one loop. The RTP header
with extensions is serialized once per (payload type, mid, extension ids) and shared, so the
per-viewer cost is a 10-byte patch, one SRTP protect and one syscall.

A viewer's numbering survives a change of publisher (reconnect): on a new source "epoch" the
offsets are re-anchored so that its sequence numbers and timestamps continue where they
stopped; the viewer's decoder sees a new keyframe, never a renegotiation.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from enum import Enum

from aiortc import clock
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, RtpPacket, unwrap_rtx
from av.frame import Frame

from media import hooks
from media.keyframes import KeyframeCache, PliThrottle, is_keyframe_start
from media.nack import SentHistory

SOURCE_RING = 1024  # source packets kept per stream for late joiners' NACKs of the burst
_HEADER = struct.Struct("!HII")


class SourcePacket:
    """One media packet from the publisher, shared by every viewer's send and history."""

    __slots__ = ("audio_level", "marker", "payload", "templates", "timestamp")

    def __init__(
        self, payload: bytes, marker: int, timestamp: int, audio_level: tuple[bool, int] | None
    ) -> None:
        self.payload = payload
        self.marker = marker
        self.timestamp = timestamp
        self.audio_level = audio_level
        self.templates: dict[tuple[int, str, bytes], bytes] = {}

    def template(self, out: ViewerStream) -> bytes:
        """Serialized packet for this viewer's (pt, mid, extension ids), seq/ts/ssrc zeroed."""
        key = out.template_key
        data = self.templates.get(key)
        if data is None:
            packet = RtpPacket(
                payload_type=out.payload_type, marker=self.marker, payload=self.payload
            )
            packet.extensions.mid = out.mid
            packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            if self.audio_level is not None:
                packet.extensions.audio_level = self.audio_level
            assert out.outlet is not None
            data = self.templates[key] = packet.serialize(out.outlet.extensions)
        return data


class ViewerState(Enum):
    CONNECTING = "connecting"  # DTLS not up yet: no outlet
    STARTING = "starting"  # waiting for a frame boundary / keyframe to (re)start on
    LIVE = "live"


class ViewerStream:
    """One viewer's copy of one stream (audio or video): its numbering, outlet and history."""

    def __init__(self, sender: RTCRtpSender, payload_type: int, mid: str, step: int) -> None:
        self.sender = sender
        self.payload_type = payload_type
        self.mid = mid
        self.step = step  # timestamp distance inserted between two sources (one frame)
        self.state = ViewerState.CONNECTING
        self.outlet: hooks.Outlet | None = None
        self.template_key: tuple[int, str, bytes] = (payload_type, mid, b"")
        self.seq_off = 0
        self.ts_off = 0
        self.last_seq: int | None = None  # last outgoing seq / ts, survives source changes
        self.last_ts: int | None = None
        self.epoch = -1
        self.history: SentHistory[SourcePacket] = SentHistory()
        self.packets = 0
        self.octets = 0
        self.retransmits = 0
        self.drop: Callable[[], bool] | None = None  # loss injection (tests/bench only)

    def connect(self) -> bool:
        """Pick up the SRTP context and ICE pair once DTLS is up; False while not yet."""
        outlet = hooks.outlet(self.sender)
        if outlet is None:
            return False
        self.outlet = outlet
        probe = HeaderExtensions()
        probe.mid = self.mid
        probe.abs_send_time = 0
        _, ids = outlet.extensions.set(probe)
        self.template_key = (self.payload_type, self.mid, ids)
        self.state = ViewerState.STARTING
        return True

    def anchor(self, in_seq: int, in_ts: int, epoch: int, extra_packets: int = 0) -> None:
        """Map the source's ``in_seq``/``in_ts`` to continue this viewer's numbering.

        ``extra_packets`` leaves room for a keyframe burst sent just before ``in_seq``.
        """
        if self.last_seq is None or self.last_ts is None:
            next_seq = random.getrandbits(15)
            next_ts = random.getrandbits(32)
        else:
            next_seq = (self.last_seq + 1) & 0xFFFF
            next_ts = (self.last_ts + self.step) & 0xFFFFFFFF
        if extra_packets:
            next_ts = (next_ts + self.step) & 0xFFFFFFFF
        self.seq_off = (next_seq + extra_packets - in_seq) & 0xFFFF
        self.ts_off = (next_ts - in_ts) & 0xFFFFFFFF
        self.epoch = epoch
        self.state = ViewerState.LIVE

    def send(self, packet: SourcePacket, out_seq: int, out_ts: int, ntp: int) -> None:
        outlet = self.outlet
        assert outlet is not None
        self.history.record(out_seq, packet, out_ts)
        if self.last_seq is None or ((out_seq - self.last_seq) & 0xFFFF) < 0x8000:
            self.last_seq = out_seq
            self.last_ts = out_ts
        if self.drop is not None and self.drop():
            return
        data = bytearray(packet.template(self))
        _HEADER.pack_into(data, 2, out_seq, out_ts, outlet.ssrc)
        outlet.sendto(outlet.protect(bytes(data)), outlet.addr)
        self.packets += 1
        self.octets += len(packet.payload)
        hooks.record_sent(self.sender, ntp, out_ts, len(packet.payload))

    def retransmit(self, out_seq: int) -> bool:
        """Answer one NACKed sequence number from this viewer's history."""
        found = self.history.lookup(out_seq)
        if found is None or self.outlet is None:
            return False
        packet, out_ts = found
        data = bytearray(packet.template(self))
        _HEADER.pack_into(data, 2, out_seq, out_ts, self.outlet.ssrc)
        self.outlet.sendto(self.outlet.protect(bytes(data)), self.outlet.addr)
        self.retransmits += 1
        return True


class StreamForwarder:
    """The fan-out of one kind (audio or video) of one room.

    ``attach_source`` is called once per publisher connection; the viewers stay attached
    across publishers. ``request_pli`` is the relay's way to reach the current publisher.
    """

    def __init__(self, kind: str, codec: RTCRtpCodecParameters, pli_interval_ms: int) -> None:
        self.kind = kind
        self.codec = codec
        self.codec_name = codec.mimeType.split("/", 1)[-1]
        self.clock_rate = codec.clockRate
        self.viewers: list[ViewerStream] = []
        self.epoch = 0
        self.payload_type = -1
        self.rtx_payload_type: int | None = None
        self.media_ssrc: int | None = None
        self.keyframes = KeyframeCache()
        self.pli = PliThrottle(interval_ms=pli_interval_ms)
        self.send_pli: Callable[[int], None] | None = None
        self._last_in_ts: int | None = None
        self._pending = 0  # viewers not LIVE: the fast path skips the state checks when 0
        self.packets_in = 0
        self.packets_out = 0
        self.retransmits = 0
        self.keyframe_starts = 0

    @property
    def step(self) -> int:
        """Timestamp gap used between sources and before a keyframe burst: one 30 fps frame
        for video, one 20 ms Opus frame for audio."""
        return self.clock_rate // 30 if self.kind == "video" else self.clock_rate // 50

    def attach_source(
        self, payload_type: int, rtx_payload_type: int | None, send_pli: Callable[[int], None]
    ) -> None:
        """A (new) publisher connection feeds this stream from now on."""
        self.epoch += 1
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.send_pli = send_pli
        self.media_ssrc = None
        self._last_in_ts = None
        self.keyframes.clear()
        for viewer in self.viewers:
            if viewer.state is ViewerState.LIVE:
                viewer.state = ViewerState.STARTING
        self._pending = sum(1 for v in self.viewers if v.state is not ViewerState.LIVE)

    def detach_source(self) -> None:
        self.send_pli = None
        self.media_ssrc = None

    def add_viewer(self, viewer: ViewerStream) -> None:
        self.viewers.append(viewer)
        self._pending += 1
        self.request_keyframe()

    def remove_viewer(self, viewer: ViewerStream) -> None:
        try:
            self.viewers.remove(viewer)
        except ValueError:
            return
        viewer.history.clear()
        self._pending = sum(1 for v in self.viewers if v.state is not ViewerState.LIVE)

    def request_keyframe(self) -> None:
        """Throttled PLI to the publisher's media SSRC (never the RTX one)."""
        if self.kind != "video":
            return
        if self.pli.request(int(time.monotonic() * 1000)):
            self._send_pli()

    def _send_pli(self) -> None:
        if self.media_ssrc is not None and self.send_pli is not None:
            self.send_pli(self.media_ssrc)

    def on_nack(self, viewer: ViewerStream, out_seq: int) -> None:
        if viewer.retransmit(out_seq):
            self.retransmits += 1

    # ----------------------------------------------------------------- the hot path

    def on_rtp(self, packet: RtpPacket) -> None:
        """Forward one packet from the publisher to every viewer (called by the RTP tap)."""
        pt = packet.payload_type
        if pt == self.rtx_payload_type and self.rtx_payload_type is not None:
            if self.media_ssrc is None or len(packet.payload) < 2:
                return
            packet = unwrap_rtx(packet, payload_type=self.payload_type, ssrc=self.media_ssrc)
        elif pt != self.payload_type or not packet.payload:
            return  # unknown payload type or padding-only probe
        self.packets_in += 1
        self.media_ssrc = packet.ssrc
        in_seq = packet.sequence_number
        in_ts = packet.timestamp
        new_frame = in_ts != self._last_in_ts
        self._last_in_ts = in_ts
        source = SourcePacket(packet.payload, packet.marker, in_ts, packet.extensions.audio_level)
        keyframe = self.kind == "video" and is_keyframe_start(self.codec_name, packet.payload)
        if keyframe:
            self.keyframe_starts += 1
        if self.kind == "video":
            self.keyframes.add(in_seq, in_ts, bool(packet.marker), keyframe, source)
            if new_frame and self.pli.due(int(time.monotonic() * 1000)):
                self._send_pli()
        if not self.viewers:
            return
        ntp = clock.current_ntp_time()
        if self._pending:
            self._start_pending(source, in_seq, in_ts, new_frame, keyframe, ntp)
        for viewer in self.viewers:
            if viewer.state is not ViewerState.LIVE or viewer.epoch != self.epoch:
                continue
            try:
                viewer.send(
                    source,
                    (in_seq + viewer.seq_off) & 0xFFFF,
                    (in_ts + viewer.ts_off) & 0xFFFFFFFF,
                    ntp,
                )
            except (OSError, RuntimeError, ValueError):
                continue  # a viewer's socket or SRTP context went away: unwatch cleans up
            self.packets_out += 1

    def _start_pending(
        self,
        source: SourcePacket,
        in_seq: int,
        in_ts: int,
        new_frame: bool,
        keyframe: bool,
        ntp: int,
    ) -> None:
        pending = 0
        for viewer in self.viewers:
            if viewer.state is ViewerState.LIVE and viewer.epoch == self.epoch:
                continue
            if viewer.state is ViewerState.CONNECTING and not viewer.connect():
                pending += 1
                continue
            if self.kind != "video":
                if new_frame:
                    viewer.anchor(in_seq, in_ts, self.epoch)
                else:
                    pending += 1
                continue
            if keyframe:
                viewer.anchor(in_seq, in_ts, self.epoch)
                continue
            cached = self.keyframes.latest()
            if new_frame and cached:
                self._start_on_cached(viewer, cached, in_seq, in_ts, ntp)
                continue
            pending += 1
            self.request_keyframe()
        self._pending = pending

    def _start_on_cached(
        self, viewer: ViewerStream, cached: tuple[object, ...], in_seq: int, in_ts: int, ntp: int
    ) -> None:
        """Send the cached keyframe just before the current frame, then go live.

        The burst takes the sequence numbers right before the live stream's and a timestamp
        one frame earlier, so the viewer sees one continuous stream starting on a keyframe.
        The live frames that follow reference pictures the viewer never got until the PLI
        we also send yields a fresh keyframe: a short smear, instead of a black screen.
        """
        viewer.anchor(in_seq, in_ts, self.epoch, extra_packets=len(cached))
        first_seq = (in_seq + viewer.seq_off - len(cached)) & 0xFFFF
        burst_ts = (in_ts + viewer.ts_off - viewer.step) & 0xFFFFFFFF
        for i, item in enumerate(cached):
            assert isinstance(item, SourcePacket)
            try:
                viewer.send(item, (first_seq + i) & 0xFFFF, burst_ts, ntp)
            except (OSError, RuntimeError, ValueError):
                break
            self.packets_out += 1
        self.request_keyframe()


class ParkedTrack(MediaStreamTrack):
    """The track a viewer's RTCRtpSender is given: it never yields a frame.

    The sender exists for negotiation and RTCP (SR, NACK, PLI); the forwarder sends the
    media around it. Its RTP task waits here until the sender is stopped.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Frame:
        await asyncio.Future()
        raise MediaStreamError  # pragma: no cover - the future never completes
