"""The pure parts of recording a stream: frames from RTP packets, and their times in the file.

No I/O here (the writer thread in :mod:`media.recorder` does it). A recording never decodes:
the packets of one video frame are put back in order, depacketized with aiortc's own
depacketizers (``aiortc.codecs.depayload``: the VP8 payload descriptor or the H.264 FU-A/STAP-A
framing removed) and the encoded frame goes to the muxer as it is. A frame with a hole (a
packet lost for good) is dropped with every frame after it up to the next keyframe, since a
decoder could not use them; audio (Opus) is one frame per packet.

Times: every stream's RTP clock starts at an arbitrary value and a publisher that reconnects
starts a new one (a new *epoch*). :class:`Timeline` maps each epoch's RTP time onto the
recording's time, anchored at the moment the epoch's first packet arrived, so a reconnect
continues the file with a gap the length of the outage and audio and video stay aligned;
times never go backwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.packet import MediaPacket

_SEQ = 1 << 16
_TS = 1 << 32
MAX_PENDING = 1024  # packets held while waiting for a hole to be repaired


def seq_after(a: int, b: int) -> int:
    """How far sequence number ``a`` is after ``b`` (negative if before), modulo 2^16."""
    d = (a - b) % _SEQ
    return d - _SEQ if d >= _SEQ // 2 else d


@dataclass(slots=True)
class Frame:
    """One encoded frame: the RTP timestamp of its packets, their joined payloads, keyframe."""

    timestamp: int
    payloads: list[bytes]
    keyframe: bool


class VideoAssembler:
    """RTP packets of one video stream, in any order, to complete frames in order.

    A frame is the packets from the one after the previous frame's marker up to the next
    marker, all present. The first frame must be a keyframe; after a hole that is not repaired
    within ``MAX_PENDING`` packets, frames are skipped up to the next keyframe start.
    """

    def __init__(self) -> None:
        self._next: int | None = None  # the first sequence number of the next frame
        self._pending: dict[int, MediaPacket] = {}
        self.dropped_frames = 0

    def reset(self) -> None:
        """A new source (epoch): its numbering has nothing to do with the last one's."""
        self._next = None
        self._pending.clear()

    def add(self, packet: MediaPacket) -> list[Frame]:
        if self._next is None:
            if not packet.keyframe:
                return []
            self._next = packet.seq
        elif seq_after(packet.seq, self._next) < 0:
            return []  # a late duplicate of a frame already written (or given up)
        self._pending[packet.seq] = packet
        out = self._drain()
        if len(self._pending) > MAX_PENDING:
            self._skip_to_keyframe()
            out += self._drain()
        return out

    def _drain(self) -> list[Frame]:
        out: list[Frame] = []
        while self._next is not None:
            seq = self._next
            run: list[MediaPacket] = []
            while True:
                packet = self._pending.get(seq)
                if packet is None:
                    return out
                run.append(packet)
                if packet.marker:
                    break
                seq = (seq + 1) % _SEQ
            for p in run:
                del self._pending[p.seq]
            self._next = (seq + 1) % _SEQ
            out.append(Frame(run[0].timestamp, [p.payload for p in run], run[0].keyframe))
        return out

    def _skip_to_keyframe(self) -> None:
        assert self._next is not None
        starts = [p for p in self._pending.values() if p.keyframe]
        base = self._next
        ahead = sorted((seq_after(p.seq, base), p.seq) for p in starts if p.seq != base)
        self.dropped_frames += 1
        if not ahead:
            self._next = None
            self._pending.clear()
            return
        new = ahead[-1][1]  # the latest keyframe start: everything before it is stale
        self._pending = {s: p for s, p in self._pending.items() if seq_after(s, new) >= 0}
        self._next = new


class Timeline:
    """One stream's RTP timestamps to times in the recording, in units of ``clock`` Hz."""

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self._epoch: int | None = None
        self._anchor_rtp = 0  # the epoch's first RTP timestamp (unwrapped)
        self._anchor_pts = 0  # ... and its time in the recording
        self._last_rtp = 0
        self._unwrapped = 0
        self.last_pts = -1

    def pts(self, epoch: int, rtp_ts: int, arrived_s: float) -> int:
        """The time of a frame with RTP timestamp ``rtp_ts`` of source ``epoch``.

        ``arrived_s``: when its first packet arrived, in seconds since the recording started
        (used only at the first packet of an epoch).
        """
        if epoch != self._epoch:
            self._epoch = epoch
            self._last_rtp = rtp_ts
            self._unwrapped = 0
            self._anchor_pts = max(int(arrived_s * self.clock), self.last_pts + 1)
        else:
            d = (rtp_ts - self._last_rtp) % _TS
            if d >= _TS // 2:
                d -= _TS
            self._unwrapped += d
            self._last_rtp = rtp_ts
        pts = self._anchor_pts + self._unwrapped
        if pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        return pts


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe's header (RFC 6386 §9.1), None otherwise."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def opus_head(channels: int = 2, rate: int = 48000) -> bytes:
    """The Opus identification header (RFC 7845 §5.1) a WebM Opus track carries."""
    return (
        b"OpusHead"
        + bytes([1, channels])
        + (312).to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + b"\x00\x00\x00"
    )
