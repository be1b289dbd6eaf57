"""One media packet as the relay passes it on, and its form on a media worker's socket.

The ingest (where the publisher's RTP enters the relay) turns every RTP packet it receives
into a :class:`MediaPacket`: RTX already unwrapped, keyframe starts already spotted, the
payload shared (never copied) by every viewer's send, the keyframe cache and the NACK history.
A recorder tapping the ingest gets the same objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator


class MediaPacket:
    """An RTP media packet in the source's numbering (``seq``, ``timestamp``)."""

    __slots__ = ("audio_level", "keyframe", "marker", "payload", "seq", "timestamp")

    def __init__(
        self,
        seq: int,
        timestamp: int,
        marker: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None = None,
        keyframe: bool = False,
    ) -> None:
        self.seq = seq
        self.timestamp = timestamp
        self.marker = marker
        self.payload = payload
        self.audio_level = audio_level  # (voice activity, level) of Opus packets, if sent
        self.keyframe = keyframe  # first packet of a keyframe (video)

    def __repr__(self) -> str:
        return (
            f"MediaPacket(seq={self.seq}, ts={self.timestamp}, marker={self.marker}, "
            f"{len(self.payload)} bytes{', keyframe' if self.keyframe else ''})"
        )


# On a media worker's socket: the tag (``PACKET_TAG``), the stream id, seq, timestamp, flags
# (marker, keyframe, audio level present, voice activity), audio level; then the payload.
PACKET_TAG = 0x50
_WIRE = struct.Struct("!BIHIBB")
WIRE_HEADER = _WIRE.size
_MARKER, _KEYFRAME, _LEVEL, _VOICE = 1, 2, 4, 8


def pack(stream: int, packet: MediaPacket) -> bytes:
    """``packet`` of stream ``stream`` as one message (header and payload)."""
    flags = packet.marker & 1 | (_KEYFRAME if packet.keyframe else 0)
    level = 0
    if packet.audio_level is not None:
        voice, level = packet.audio_level
        flags |= _LEVEL | (_VOICE if voice else 0)
    header = _WIRE.pack(PACKET_TAG, stream, packet.seq, packet.timestamp, flags, level & 0x7F)
    return header + packet.payload


def unpack(data: bytes | memoryview) -> tuple[int, MediaPacket]:
    """The inverse of :func:`pack`; raises ``struct.error`` on a short message."""
    _, stream, seq, timestamp, flags, level = _WIRE.unpack_from(data)
    audio_level = (bool(flags & _VOICE), level) if flags & _LEVEL else None
    return stream, MediaPacket(
        seq,
        timestamp,
        flags & _MARKER,
        bytes(data[WIRE_HEADER:]),
        audio_level,
        bool(flags & _KEYFRAME),
    )


# Several packets in one message (what arrived in one turn of the ingest's event loop: the
# packets of a video frame come together): the tag, then each packed packet after its length.
BATCH_TAG = 0x42
_LENGTH = struct.Struct("!H")
MAX_BATCH = 60 * 1024


def pack_batch(packed: list[bytes]) -> bytes:
    """One message carrying ``packed`` (each from :func:`pack`)."""
    parts = [bytes([BATCH_TAG])]
    for data in packed:
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def unpack_batch(data: memoryview) -> Iterator[memoryview]:
    """The packed packets of a batch message, in order."""
    at, end = 1, len(data)
    while at + 2 <= end:
        (size,) = _LENGTH.unpack_from(data, at)
        at += 2
        yield data[at : at + size]
        at += size
