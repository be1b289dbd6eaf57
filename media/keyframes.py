"""Keyframes: spotting them in RTP payloads, caching the latest one, throttling PLIs.

Sans-I/O: nothing here touches sockets or clocks; the caller passes ``now_ms``.

A joining viewer cannot decode anything before a keyframe. SFUs usually ask the publisher
(PLI) and wait, which makes the time to first frame depend on the publisher's round trip and
encoder. We also keep the packets of the latest keyframe, so a joiner starts on it at once,
and still send one throttled PLI so that a fresh, clean keyframe follows shortly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VP8 = "VP8"
H264 = "H264"

_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


def _vp8_keyframe_start(payload: bytes) -> bool:
    """RFC 7741 payload descriptor, then RFC 6386 frame tag bit P == 0 on partition 0 start."""
    if len(payload) < 1:
        return False
    first = payload[0]
    extended = first & 0x80
    start = first & 0x10
    partition_id = first & 0x07
    pos = 1
    if extended:
        if len(payload) < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id
            if len(payload) <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    if not start or partition_id != 0 or len(payload) <= pos:
        return False
    return (payload[pos] & 0x01) == 0


def _h264_keyframe_start(payload: bytes) -> bool:
    """RFC 6184: an IDR or SPS NAL unit, alone, inside a STAP-A, or starting an FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (_H264_IDR, _H264_SPS):
        return True
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            (size,) = struct.unpack_from("!H", payload, pos)
            if payload[pos + 2] & 0x1F in (_H264_IDR, _H264_SPS):
                return True
            pos += 2 + size
        return False
    if nal_type == _H264_FU_A:
        return len(payload) >= 2 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) == _H264_IDR
    return False


def is_keyframe_start(codec_name: str, payload: bytes) -> bool:
    """True when this RTP payload is the first packet of a keyframe (video codecs only)."""
    name = codec_name.upper()
    if name == VP8:
        return _vp8_keyframe_start(payload)
    if name == H264:
        return _h264_keyframe_start(payload)
    return False


@dataclass(slots=True)
class KeyframeCache:
    """The packets of the latest complete keyframe of one stream.

    A keyframe is every packet carrying the RTP timestamp of a keyframe-start packet, ending
    with the marker bit. It becomes usable only once complete (marker seen with no gap), so
    a viewer is never started on half a picture. ``max_packets`` bounds memory against a
    hostile or broken publisher.
    """

    max_packets: int = 512
    _building: list[object] = field(default_factory=list)
    _building_ts: int | None = None
    _next_seq: int | None = None
    _complete: tuple[object, ...] = ()
    _complete_ts: int | None = None

    def add(
        self, seq: int, timestamp: int, marker: bool, keyframe_start: bool, item: object
    ) -> None:
        """Offer every media packet in arrival order; ``item`` is what :meth:`latest` returns."""
        if keyframe_start:
            self._building = [item]
            self._building_ts = timestamp
            self._next_seq = (seq + 1) & 0xFFFF
        elif self._building_ts is not None:
            if timestamp != self._building_ts or seq != self._next_seq:
                self._abandon()  # gap or reordering: this copy is not trustworthy
                return
            self._building.append(item)
            self._next_seq = (seq + 1) & 0xFFFF
            if len(self._building) > self.max_packets:
                self._abandon()
                return
        else:
            return
        if marker:
            self._complete = tuple(self._building)
            self._complete_ts = self._building_ts
            self._abandon()

    def _abandon(self) -> None:
        self._building = []
        self._building_ts = None
        self._next_seq = None

    def latest(self) -> tuple[object, ...]:
        """The packets of the latest complete keyframe, in order (empty if none yet)."""
        return self._complete

    @property
    def timestamp(self) -> int | None:
        return self._complete_ts

    def clear(self) -> None:
        self._abandon()
        self._complete = ()
        self._complete_ts = None


@dataclass(slots=True)
class PliThrottle:
    """At most one PLI per ``interval_ms``, shared by every reason (joins, viewer PLIs).

    A request inside the quiet window is not dropped but coalesced: :meth:`due` turns True
    once the window ends, so the last joiner of a burst still gets its fresh keyframe.
    """

    interval_ms: int = 500
    _last_ms: int | None = None
    _deferred: bool = False
    requested: int = 0
    sent: int = 0

    def request(self, now_ms: int) -> bool:
        """Record a keyframe request; True when a PLI should go out now."""
        self.requested += 1
        if self._last_ms is not None and now_ms - self._last_ms < self.interval_ms:
            self._deferred = True
            return False
        self._fire(now_ms)
        return True

    def due(self, now_ms: int) -> bool:
        """True (once) when a coalesced request's window has ended and the PLI should go."""
        if not self._deferred or (
            self._last_ms is not None and now_ms - self._last_ms < self.interval_ms
        ):
            return False
        self._fire(now_ms)
        return True

    def _fire(self, now_ms: int) -> None:
        self._last_ms = now_ms
        self._deferred = False
        self.sent += 1
