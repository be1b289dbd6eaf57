"""Per-stream RTP fan-out: one source stream in, N viewer streams out, no decoding.

For every packet from the source, and for every live viewer of that stream: rewrite sequence
number, timestamp and SSRC into the viewer's own numbering, SRTP-protect it with the viewer's
context and ``sendto`` it on the viewer's nominated ICE pair, synchronously, in one loop.

The per-viewer step is kept as small as Python allows, because it is what a relay pays per
viewer: the RTP header with its extensions is serialized once per packet for each group of
viewers that negotiated the same header extension ids (usually one group); each viewer's
send state is one tuple unpacked into locals; the packet is copied into the viewer's SRTP
buffer, patched (10 bytes), protected in place and sent. Nothing else happens per packet per
viewer: the NACK history is kept once per stream (in the source's numbering, which maps back
from a viewer's by its offset), the sender-report counters are derived from the stream's.

A viewer's numbering survives a change of source (a publisher reconnecting, an edge pull
replaced): on a new source *epoch* its offsets are re-anchored so that its sequence numbers
and timestamps continue where they stopped; the viewer's decoder sees a new keyframe, never
a renegotiation.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap
from av.frame import Frame

from media import hooks
from media.keyframes import KeyframeCache
from media.nack import SentHistory
from media.packet import MediaPacket

_HEADER = struct.Struct("!HII")
MAX_PACKET = hooks.SRTP_BUFFER - hooks.SRTP_TRAILER
KEYFRAME_ASK_MS = 250  # a waiting viewer asks the source for a keyframe at most this often

Wire = tuple[Any, Any, Any, Any, Callable[[bytes, Any], None], Any, int, int, int]
"""A live viewer's send state, unpacked by the hot loop: SRTP buffer, cdata, context, length
cell, sendto, address, seq offset, timestamp offset, SSRC."""


NTP_EPOCH_OFFSET = 2208988800


def abs_send_time(unix_s: float) -> int:
    """The abs-send-time header extension's value: NTP seconds in 6.18 fixed point."""
    return int((unix_s + NTP_EPOCH_OFFSET) * (1 << 18)) & 0xFFFFFF


class HeaderLayout:
    """The RTP header and extensions of one group of viewers, built once, patched per packet.

    aiortc serializes a packet through its general-purpose classes (~15 µs); here the bytes
    come from the same ``HeaderExtensionsMap`` once, and per packet only the marker bit, the
    abs-send-time (3 bytes) and the audio level (1 byte) are written into a copy. Where those
    bytes sit is found by asking the map twice with different values, not by reading aiortc's
    private id table.
    """

    def __init__(
        self, payload_type: int, mid: str, extensions: HeaderExtensionsMap, audio_level: bool
    ) -> None:
        def serialize(abs_value: int, level: int) -> tuple[int, bytes]:
            values = HeaderExtensions()
            values.mid = mid
            values.abs_send_time = abs_value
            if audio_level:
                values.audio_level = (False, level)
            return extensions.set(values)

        def differ(a: bytes, b: bytes) -> list[int]:
            return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]

        profile, base = serialize(0, 0)
        abs_diff = differ(base, serialize(0xFFFFFF, 0)[1])
        level_diff = differ(base, serialize(0, 0x7F)[1])
        prefix = bytearray(12)
        prefix[0] = 0x80
        prefix[1] = payload_type & 0x7F
        if base:
            prefix[0] |= 0x10
            prefix += struct.pack("!HH", profile, len(base) >> 2) + base
        offset = 16 if base else 12
        self.prefix = bytes(prefix)
        self.abs_at = offset + abs_diff[0] if len(abs_diff) == 3 else -1
        self.level_at = offset + level_diff[0] if len(level_diff) == 1 else -1

    def build(
        self, marker: int, abs_value: int, level: tuple[bool, int] | None, payload: bytes
    ) -> bytes:
        header = bytearray(self.prefix)
        if marker:
            header[1] |= 0x80
        if self.abs_at >= 0:
            header[self.abs_at : self.abs_at + 3] = abs_value.to_bytes(3, "big")
        if self.level_at >= 0 and level is not None:
            header[self.level_at] = (0x80 if level[0] else 0) | (level[1] & 0x7F)
        return bytes(header) + payload


class ViewerState(Enum):
    CONNECTING = "connecting"  # DTLS not up yet: no outlet
    STARTING = "starting"  # waiting for a frame boundary / keyframe to (re)start on
    LIVE = "live"


class ViewerStream:
    """One viewer's copy of one stream (audio or video): its numbering and its outlet."""

    def __init__(self, sender: RTCRtpSender, payload_type: int, mid: str, step: int) -> None:
        self.sender = sender
        self.payload_type = payload_type
        self.mid = mid
        self.step = step  # timestamp distance inserted between two sources (one frame)
        self.state = ViewerState.CONNECTING
        self.outlet: hooks.Outlet | None = None
        self.key: tuple[int, str, bytes] = (payload_type, mid, b"")
        self.seq_off = 0
        self.ts_off = 0
        self.epoch = -1
        self.live_from = 0  # source seq of the first live packet of this epoch
        # the last outgoing seq / ts before the current run of live packets (survives sources)
        self.last_seq: int | None = None
        self.last_ts: int | None = None
        # packets/octets sent before the current live run; the run's come from the forwarder
        self.sent_before = 0
        self.octets_before = 0
        self.live_base = 0
        self.octets_base = 0
        self.burst: dict[int, tuple[MediaPacket, int]] = {}  # out seq -> keyframe burst packet
        self.retransmits = 0
        self.joined_at: float | None = None  # time.monotonic() of the watch, until it starts

    def connect(self) -> bool:
        """Pick up the SRTP context and ICE pair once DTLS is up; False while not yet."""
        outlet = hooks.outlet(self.sender)
        if outlet is None:
            return False
        self.outlet = outlet
        probe = HeaderExtensions()
        probe.mid = self.mid
        probe.abs_send_time = 0
        probe.audio_level = (False, 0)
        _, ids = outlet.extensions.set(probe)
        self.key = (self.payload_type, self.mid, ids)
        self.state = ViewerState.STARTING
        return True

    def wire(self) -> Wire:
        outlet = self.outlet
        assert outlet is not None
        return (
            outlet.buffer,
            outlet.cdata,
            outlet.ctx,
            outlet.length,
            outlet.sendto,
            outlet.addr,
            self.seq_off,
            self.ts_off,
            outlet.ssrc,
        )

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
        self.live_from = in_seq
        self.burst = {}
        self.state = ViewerState.LIVE


class StreamForwarder:
    """The fan-out of one kind (audio or video) of one room, in one process.

    ``attach_source`` is called once per source (publisher connection or edge pull) with the
    source's epoch; the viewers stay attached across sources. ``request_keyframe`` reaches
    the source, which throttles PLIs to the publisher for every process at once.
    """

    def __init__(
        self, kind: str, codec: RTCRtpCodecParameters, request_keyframe: Callable[[], None]
    ) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.codec = codec
        self.clock_rate = codec.clockRate
        self.viewers: list[ViewerStream] = []
        self.epoch = 0
        self.attached = False
        self.keyframes = KeyframeCache()
        self.history: SentHistory[MediaPacket] = SentHistory()
        self.ask_source = request_keyframe
        self.first_keyframe: Callable[[float], None] | None = None  # seconds from watch to start
        self._asked_ms = -float(KEYFRAME_ASK_MS)
        self._live: dict[tuple[int, str, bytes], dict[ViewerStream, Wire]] = {}
        self._maps: dict[tuple[int, str, bytes], HeaderExtensionsMap] = {}
        self._layouts: dict[tuple[tuple[int, str, bytes], bool], HeaderLayout] = {}
        self._pending: list[ViewerStream] = []
        self._last_in_ts: int | None = None
        self._frame_done = False  # the last packet forwarded ended a frame (marker)
        # the highest source seq / ts forwarded live in this epoch, and when
        self.live_seq: int | None = None
        self.live_ts: int | None = None
        self.last_sent_at = 0.0  # time.time()
        # every packet forwarded live, whoever was live: a viewer's count is a difference
        self.live_packets = 0
        self.live_octets = 0
        self.packets_out = 0
        self.retransmits = 0

    @property
    def step(self) -> int:
        """Timestamp gap used between sources and before a keyframe burst: one 30 fps frame
        for video, one 20 ms Opus frame for audio."""
        return self.clock_rate // 30 if self.video else self.clock_rate // 50

    # ----------------------------------------------------------------- membership

    def attach_source(self, epoch: int) -> None:
        """A (new) source feeds this stream from now on: every viewer restarts on it."""
        for viewer in self.viewers:
            if viewer.state is ViewerState.LIVE:
                self._leave_live(viewer)
                viewer.state = ViewerState.STARTING
        self._live.clear()
        self._pending = list(self.viewers)
        self.epoch = epoch
        self.attached = True
        self.keyframes.clear()
        self.history.clear()
        self._last_in_ts = None
        self._frame_done = False
        self.live_seq = self.live_ts = None

    def detach_source(self) -> None:
        self.attached = False

    def add_viewer(self, viewer: ViewerStream) -> None:
        self.viewers.append(viewer)
        self._pending.append(viewer)
        self.request_keyframe()

    def remove_viewer(self, viewer: ViewerStream) -> None:
        try:
            self.viewers.remove(viewer)
        except ValueError:
            return
        if viewer in self._pending:
            self._pending.remove(viewer)
        group = self._live.get(viewer.key)
        if group is not None and group.pop(viewer, None) is not None and not group:
            del self._live[viewer.key]
        viewer.burst = {}

    def live_count(self) -> int:
        return sum(len(group) for group in self._live.values())

    def request_keyframe(self) -> None:
        """Ask the source for a keyframe: a joiner, a viewer's PLI/FIR. The source throttles
        PLIs for every joiner of every process and coalesces the ones inside its window."""
        if self.video:
            self.ask_source()

    def _remind_source(self) -> None:
        """A viewer still waits for a keyframe (checked on every packet): ask again, but at
        most every KEYFRAME_ASK_MS, so a waiting viewer costs little."""
        now_ms = time.monotonic() * 1000
        if now_ms - self._asked_ms >= KEYFRAME_ASK_MS:
            self._asked_ms = now_ms
            self.ask_source()

    # ----------------------------------------------------------------- the hot path

    def forward(self, packet: MediaPacket) -> None:
        """Forward one source packet to every live viewer (called by the ingest's tap)."""
        if not self.attached:
            return
        seq = packet.seq
        ts = packet.timestamp
        new_frame = ts != self._last_in_ts
        self._last_in_ts = ts
        if self.video:
            self.keyframes.add(seq, ts, bool(packet.marker), packet.keyframe, packet)
        self.history.record(seq, packet, ts)
        if self._pending:
            self._start_pending(packet, new_frame)
        self._frame_done = bool(packet.marker)
        live_seq = self.live_seq
        if live_seq is None or ((seq - live_seq) & 0xFFFF) < 0x8000:
            self.live_seq = seq
            self.live_ts = ts
        self.live_packets += 1
        self.live_octets += len(packet.payload)
        if not self._live:
            return
        self.last_sent_at = time.time()
        protect = hooks.srtp_protect
        pack_into = _HEADER.pack_into
        for key, wires in self._live.items():
            template = self._template(packet, key)
            n = len(template)
            if n > MAX_PACKET:
                continue
            for buf, cdata, ctx, length, sendto, addr, seq_off, ts_off, ssrc in wires.values():
                buf[0:n] = template
                pack_into(buf, 2, (seq + seq_off) & 0xFFFF, (ts + ts_off) & 0xFFFFFFFF, ssrc)
                length[0] = n
                if not protect(ctx, cdata, length):
                    try:
                        sendto(buf[0 : length[0]], addr)
                    except Exception:
                        continue
            self.packets_out += len(wires)

    def _template(self, packet: MediaPacket, key: tuple[int, str, bytes]) -> bytes:
        """The packet serialized for viewers of ``key`` (pt, mid, extension ids), with
        sequence number, timestamp and SSRC left for each viewer to patch."""
        level = packet.audio_level
        layout = self._layouts.get((key, level is not None))
        if layout is None:
            layout = self._layouts[(key, level is not None)] = HeaderLayout(
                key[0], key[1], self._maps[key], level is not None
            )
        return layout.build(packet.marker, abs_send_time(time.time()), level, packet.payload)

    def _send_one(self, viewer: ViewerStream, packet: MediaPacket, out_seq: int, out_ts: int) -> bool:
        """One packet to one viewer, outside the live loop (keyframe bursts, NACK answers)."""
        outlet = viewer.outlet
        if outlet is None:
            return False
        self._maps.setdefault(viewer.key, outlet.extensions)
        template = self._template(packet, viewer.key)
        n = len(template)
        if n > MAX_PACKET:
            return False
        buf = outlet.buffer
        buf[0:n] = template
        _HEADER.pack_into(buf, 2, out_seq, out_ts, outlet.ssrc)
        outlet.length[0] = n
        if hooks.srtp_protect(outlet.ctx, outlet.cdata, outlet.length):
            return False
        try:
            outlet.sendto(buf[0 : outlet.length[0]], outlet.addr)
        except Exception:
            return False
        self.last_sent_at = time.time()
        return True

    # ----------------------------------------------------------------- joining

    def _go_live(self, viewer: ViewerStream, packet: MediaPacket, extra_packets: int = 0) -> None:
        if viewer.joined_at is not None:
            if self.first_keyframe is not None:
                self.first_keyframe(time.monotonic() - viewer.joined_at)
            viewer.joined_at = None
        viewer.anchor(packet.seq, packet.timestamp, self.epoch, extra_packets)
        viewer.live_base = self.live_packets
        viewer.octets_base = self.live_octets
        assert viewer.outlet is not None
        self._maps.setdefault(viewer.key, viewer.outlet.extensions)
        self._live.setdefault(viewer.key, {})[viewer] = viewer.wire()

    def _leave_live(self, viewer: ViewerStream) -> None:
        """Fold the live run into the viewer's own counters and last seq/ts (before an epoch
        change): what the stream sent while this viewer was live, the viewer got."""
        run = self.live_packets - viewer.live_base
        if run > 0 and self.live_seq is not None and self.live_ts is not None:
            viewer.last_seq = (self.live_seq + viewer.seq_off) & 0xFFFF
            viewer.last_ts = (self.live_ts + viewer.ts_off) & 0xFFFFFFFF
            viewer.sent_before += run
            viewer.octets_before += self.live_octets - viewer.octets_base

    def _start_pending(self, packet: MediaPacket, new_frame: bool) -> None:
        waiting: list[ViewerStream] = []
        for viewer in self._pending:
            if viewer.state is ViewerState.CONNECTING and not viewer.connect():
                waiting.append(viewer)
                continue
            if not self.video:
                if new_frame:
                    self._go_live(viewer, packet)
                else:
                    waiting.append(viewer)
                continue
            if packet.keyframe:
                self._go_live(viewer, packet)
                continue
            cached = self.keyframes.latest()
            if new_frame and cached:
                self._start_on_cached(viewer, cached, packet)
                continue
            waiting.append(viewer)
            self._remind_source()
        self._pending = waiting

    def kick(self, viewer: ViewerStream) -> None:
        """The viewer's connection just came up: if the stream is between two frames, start
        it on the cached keyframe now rather than on the source's next packet (up to a frame
        interval later). The burst is anchored before the next packet in the source's
        numbering, one frame step after the last one."""
        if not (self.video and self.attached and self._frame_done and viewer in self._pending):
            return
        if viewer.state is ViewerState.CONNECTING and not viewer.connect():
            return
        cached = self.keyframes.latest()
        if not cached or self.live_seq is None or self.live_ts is None:
            return
        self._pending.remove(viewer)
        following = MediaPacket((self.live_seq + 1) & 0xFFFF, self.live_ts + self.step, 0, b"")
        self._start_on_cached(viewer, cached, following)

    def _start_on_cached(
        self, viewer: ViewerStream, cached: tuple[object, ...], packet: MediaPacket
    ) -> None:
        """Send the cached keyframe just before the current frame, then go live.

        The burst takes the sequence numbers right before the live stream's and a timestamp
        one frame earlier, so the viewer sees one continuous stream starting on a keyframe.
        The live frames that follow reference pictures the viewer never got until the PLI
        we also send yields a fresh keyframe: a short smear, instead of a black screen.
        """
        self._go_live(viewer, packet, extra_packets=len(cached))
        first_seq = (packet.seq + viewer.seq_off - len(cached)) & 0xFFFF
        burst_ts = (packet.timestamp + viewer.ts_off - viewer.step) & 0xFFFFFFFF
        for i, item in enumerate(cached):
            assert isinstance(item, MediaPacket)
            out_seq = (first_seq + i) & 0xFFFF
            viewer.burst[out_seq] = (item, burst_ts)
            if not self._send_one(viewer, item, out_seq, burst_ts):
                break
            viewer.sent_before += 1
            viewer.octets_before += len(item.payload)
            self.packets_out += 1
        viewer.last_seq = (first_seq + len(cached) - 1) & 0xFFFF
        viewer.last_ts = burst_ts
        self.request_keyframe()

    # ----------------------------------------------------------------- feedback

    def on_nack(self, viewer: ViewerStream, out_seq: int) -> None:
        """Answer one NACKed sequence number (the viewer's numbering) from the history."""
        found = viewer.burst.get(out_seq)
        if found is None:
            if viewer.state is not ViewerState.LIVE or viewer.epoch != self.epoch:
                return
            in_seq = (out_seq - viewer.seq_off) & 0xFFFF
            if ((in_seq - viewer.live_from) & 0xFFFF) >= 0x8000:
                return  # before this viewer went live: never sent to it
            item = self.history.lookup(in_seq)
            if item is None:
                return
            packet, in_ts = item
            found = (packet, (in_ts + viewer.ts_off) & 0xFFFFFFFF)
        packet, out_ts = found
        if self._send_one(viewer, packet, out_seq, out_ts):
            viewer.retransmits += 1
            self.retransmits += 1

    def report(self, viewer: ViewerStream) -> tuple[float, int, int, int]:
        """(time of the last send, the viewer's last RTP timestamp, packets, octets): what a
        sender report for this viewer says."""
        packets, octets, ts = viewer.sent_before, viewer.octets_before, viewer.last_ts or 0
        if viewer.state is ViewerState.LIVE and viewer.epoch == self.epoch:
            run = self.live_packets - viewer.live_base
            if run > 0 and self.live_ts is not None:
                packets += run
                octets += self.live_octets - viewer.octets_base
                ts = (self.live_ts + viewer.ts_off) & 0xFFFFFFFF
        return self.last_sent_at, ts, packets, octets


class ParkedTrack(MediaStreamTrack):
    """The track a viewer's RTCRtpSender is given: it never yields a frame.

    The sender exists for negotiation and RTCP feedback; the forwarder sends the media around
    it. Its RTP task waits here until the sender is stopped.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Frame:
        await asyncio.get_running_loop().create_future()
        raise MediaStreamError  # pragma: no cover - the future never completes
