"""Pictures that carry their capture time, so latency is read from pixels, not guessed.

The top of every frame is a grid of large black/white blocks encoding the wall-clock capture
time in ms (40 bits) and an 8-bit checksum. Blocks are 40x24 px: far bigger than a VP8 or
H.264 macroblock, so they survive lossy compression at any sane bitrate. The rest of the
picture moves, so the encoder does real work (and frames differ).
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import os
import time
from dataclasses import dataclass, field

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

WIDTH = 320
HEIGHT = 240
COLS = 8
ROWS = 6
BLOCK_W = WIDTH // COLS
BLOCK_H = 24
VALUE_BITS = 40
BITS = COLS * ROWS  # 40 value bits + 8 checksum bits
BLACK = 16
WHITE = 235
VIDEO_CLOCK = 90000


def _checksum(value: int) -> int:
    return (sum(value.to_bytes(5, "big")) & 0xFF) ^ 0xA5  # all-black or all-grey never passes


def encode_bits(stamp_ms: int) -> list[int]:
    """The 48 bits drawn for ``stamp_ms``: 40 bits of value (MSB first), then a checksum."""
    value = stamp_ms & ((1 << VALUE_BITS) - 1)
    word = (value << 8) | _checksum(value)
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def draw(frame: av.VideoFrame, stamp_ms: int, index: int, noise: bool = False) -> None:
    """Paint ``stamp_ms`` (and a bar that moves with ``index``) into a yuv420p frame.

    ``noise`` fills the area below the stamp with random bytes, so an encoder spends its
    whole bitrate budget (load tests want a realistic ~1 Mbit/s, not a static picture).
    """
    width, height = frame.width, frame.height
    luma = frame.planes[0]
    stride = luma.line_size
    top = (ROWS * BLOCK_H + 8) * stride
    if noise:
        y = bytearray(b"\x60" * top) + bytearray(os.urandom(stride * height - top))
    else:
        y = bytearray(b"\x60" * (stride * height))
    x0 = (index * 4) % max(width - 24, 1)
    bar = b"\xc8" * 24
    for row in range(ROWS * BLOCK_H + 8, height):
        y[row * stride + x0 : row * stride + x0 + 24] = bar
    white, black = bytes([WHITE]) * BLOCK_W, bytes([BLACK]) * BLOCK_W
    for i, bit in enumerate(encode_bits(stamp_ms)):
        r, c = divmod(i, COLS)
        block = white if bit else black
        for row in range(r * BLOCK_H, (r + 1) * BLOCK_H):
            y[row * stride + c * BLOCK_W : row * stride + (c + 1) * BLOCK_W] = block
    luma.update(bytes(y))
    for plane in frame.planes[1:]:
        plane.update(b"\x80" * plane.buffer_size)


def read_stamp(frame: av.VideoFrame) -> int | None:
    """The capture time stamped into a decoded frame, or None if it cannot be read."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    luma = frame.planes[0]
    stride = luma.line_size
    data = bytes(luma)
    sx, sy = frame.width / WIDTH, frame.height / HEIGHT
    word = 0
    for i in range(BITS):
        r, c = divmod(i, COLS)
        cy = int((r * BLOCK_H + BLOCK_H / 2) * sy)
        cx = int((c * BLOCK_W + BLOCK_W / 2) * sx)
        total = count = 0
        for row in range(max(cy - 4, 0), cy + 4):
            chunk = data[row * stride + max(cx - 8, 0) : row * stride + cx + 8]
            total += sum(chunk)
            count += len(chunk)
        word = (word << 1) | int(count > 0 and total / count > 128)
    value, check = word >> 8, word & 0xFF
    if _checksum(value) != check:
        return None
    return value


def latency_ms(stamp: int, now_ms: int) -> int:
    """``now - stamp`` on the 40-bit stamp clock."""
    return (now_ms - stamp) & ((1 << VALUE_BITS) - 1)


class StampedVideoTrack(MediaStreamTrack):
    """A synthetic camera at ``fps`` whose every frame shows its capture time."""

    kind = "video"

    def __init__(
        self, fps: int = 30, width: int = WIDTH, height: int = HEIGHT, noise: bool = False
    ) -> None:
        super().__init__()
        if not 1 <= fps <= 120:
            raise ValueError("fps must be within 1..120")
        self.fps = fps
        self.width = width
        self.height = height
        self.noise = noise
        self.frames_sent = 0
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = int(time.time() * 1000)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        draw(frame, stamp, self._index, self.noise)
        frame.pts = self._index * (VIDEO_CLOCK // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._index += 1
        self.frames_sent += 1
        return frame


@dataclass
class FrameSink:
    """Consumes a received video track: frame count, first-frame time, pixel latencies."""

    frames: int = 0
    stamped: int = 0
    first_frame_at: float | None = None  # time.time()
    last_frame_at: float | None = None
    latencies_ms: list[int] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    read_every: int = 1  # read the stamp of every n-th frame (CPU on busy machines)

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.time()
            if self.first_frame_at is None:
                self.first_frame_at = now
            self.last_frame_at = now
            self.frames += 1
            self.frame_times.append(now)
            if isinstance(frame, av.VideoFrame) and self.frames % self.read_every == 0:
                stamp = read_stamp(frame)
                if stamp is not None:
                    self.stamped += 1
                    self.latencies_ms.append(latency_ms(stamp, int(now * 1000)))

    def frames_since(self, since: float) -> int:
        """Frames received at or after ``since`` (time.time())."""
        return sum(1 for t in self.frame_times if t >= since)

    def longest_gap_s(self, since: float) -> float:
        """Longest pause between two frames after ``since``: a freeze shows up here."""
        times = [t for t in self.frame_times if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
