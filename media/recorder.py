"""Records what the relay forwards: one file per recording, written by a thread of its own.

The recorder is one more :class:`media.ingest.FeedListener` of the ingest (the process that
holds the publisher's connection, the origin in a cluster): for each recorded room it appends
an output to the room's feeds. That output runs in the event loop, for every packet, so it
only appends the packet to a bounded queue (a deque: no lock, no wake-up per packet); a thread
per recording takes what gathered every ``DRAIN_EVERY_S``, reassembles
frames (:mod:`media.recording`), and PyAV muxes them, never decoding, into WebM (VP8 + Opus)
or fragmented MP4 (H.264 + Opus).

The file is written for a crash: the Matroska muxer closes a cluster every second (the MP4
muxer a fragment) and every write is flushed, so after ``kill -9`` the file plays up to its
last complete cluster or fragment; a clean stop writes the WebM cues and duration. A queue that backs up (the disk is too slow) or a
write error (a full disk) ends the recording, never the live: ``on_failed(room, reason)`` is
called on the event loop and the packets of that room are no longer queued.

What it does not record: a stream without video (the file opens at the first keyframe).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc.codecs import depayload

from media.ingest import Feed
from media.packet import MediaPacket
from media.recording import Timeline, VideoAssembler, opus_head, vp8_size

log = logging.getLogger(__name__)

EXTENSION = ".webm"
QUEUE_PACKETS = 8192  # ~40 s of a 1.5 Mbit/s stream with audio; more means the disk is stuck
DRAIN_EVERY_S = 0.05  # the writer thread wakes this often (or at once on stop)
KEYFRAME_EVERY_S = 4.0  # the recorder asks the publisher for a keyframe this often: seek points

Failed = Callable[[str, str], None]
_VIDEO_TB = fractions.Fraction(1, 90000)
_AUDIO_TB = fractions.Fraction(1, 48000)


@dataclass(slots=True)
class RecordingInfo:
    """A finished (or failed) recording."""

    id: str
    room: str
    path: Path  # ``<id>.webm`` (VP8) or ``<id>.mp4`` (H.264)
    started_ms: int
    duration_s: float
    size: int
    frames: int
    failed: str | None


class _Recording:
    """One room's file: the queue filled by the loop, the thread that writes it."""

    def __init__(
        self, room: str, rid: str, path: Path, started_ms: int, fail: Callable[[str], None]
    ) -> None:
        self.room = room
        self.id = rid
        self.path = path
        self.started_ms = started_ms
        self.t0 = time.monotonic()
        self.queue: deque[tuple[str, Feed, int, MediaPacket, float]] = deque()
        self.done = threading.Event()
        self.failed: str | None = None
        self.frames = 0
        self.duration_s = 0.0
        self._fail = fail
        self.outputs: dict[Feed, Callable[[MediaPacket], None]] = {}
        self.last_keyframe = 0.0
        self.last_request = 0.0
        self.thread = threading.Thread(target=self._run, name=f"record-{rid}", daemon=True)

    # ---------------------------------------------------------------- event-loop side

    def output(self, feed: Feed) -> Callable[[MediaPacket], None]:
        def put(packet: MediaPacket) -> None:
            if self.failed is not None:
                return
            now = time.monotonic()
            if feed.video:
                if packet.keyframe:
                    self.last_keyframe = now
                elif (
                    now - self.last_keyframe > KEYFRAME_EVERY_S
                    and now - self.last_request > KEYFRAME_EVERY_S
                ):
                    self.last_request = now
                    feed.request_keyframe()
            if len(self.queue) >= QUEUE_PACKETS:
                self._fail("the recording fell behind (the disk is too slow)")
                return
            self.queue.append((feed.kind, feed, feed.epoch, packet, now - self.t0))

        return put

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        try:
            self._write()
        except Exception as exc:  # a full disk, a bad frame the muxer refused, ...
            log.warning("recording %s failed: %s", self.id, exc)
            self._fail(f"write error: {exc}")

    def _next(self) -> tuple[str, Feed, int, MediaPacket, float] | None:
        """The next packet; None once stopped (or failed) and the queue is empty."""
        while self.failed is None:
            if self.queue:
                return self.queue.popleft()
            if self.done.is_set():
                return None
            # what arrives meanwhile waits in the deque: one wake-up per period, not per packet
            self.done.wait(DRAIN_EVERY_S)
        return None

    def _write(self) -> None:

        container: Any = None
        video: Any = None
        audio: Any = None
        assembler = VideoAssembler()
        clocks = {"video": Timeline(90000), "audio": Timeline(48000)}
        epochs = {"video": -1, "audio": -1}
        try:
            while True:
                item = self._next()
                if item is None:
                    break
                kind, feed, epoch, packet, arrived = item
                if kind == "video":
                    codec = feed.codec_name.upper()
                    if codec not in ("VP8", "H264"):
                        raise RuntimeError(f"{feed.codec_name} streams are not recorded")
                    if epoch != epochs["video"]:
                        epochs["video"] = epoch
                        assembler.reset()
                    for frame in assembler.add(packet):
                        data = b"".join(depayload(feed.codec, p) for p in frame.payloads)
                        if container is None:
                            if not frame.keyframe:
                                continue
                            if codec == "VP8":
                                size = vp8_size(data)
                                if size is None:
                                    continue
                                container, video, audio = _open_webm(self.path, size)
                            else:  # fragmented MP4; the SPS and PPS travel in the stream
                                self.path = self.path.with_suffix(".mp4")
                                container, video, audio = _open_fmp4(self.path)
                        pts = clocks["video"].pts(epoch, frame.timestamp, arrived)
                        _mux(container, video, data, pts, _VIDEO_TB, frame.keyframe)
                        self.frames += 1
                elif container is not None and packet.payload:
                    epochs["audio"] = epoch
                    pts = clocks["audio"].pts(epoch, packet.timestamp, arrived)
                    _mux(container, audio, packet.payload, pts, _AUDIO_TB, True)
        finally:
            last = max(clocks["video"].last_pts / 90000, clocks["audio"].last_pts / 48000)
            self.duration_s = max(0.0, last)
            if container is not None:
                container.close()


def _open_fmp4(path: Path) -> tuple[Any, Any, Any]:
    """H.264 (Annex B, as aiortc depacketizes it) and Opus in fragmented MP4: a fragment per
    keyframe or second, each complete on disk (``empty_moov``: no index to write at the end)."""
    import av

    container = av.open(
        str(path),
        "w",
        format="mp4",
        options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": "1000000",
            "flush_packets": "1",
        },
    )
    video = container.add_stream("h264", rate=30)
    video.time_base = fractions.Fraction(1, 90000)
    audio = container.add_stream("opus", rate=48000)
    audio.time_base = fractions.Fraction(1, 48000)
    audio.codec_context.extradata = opus_head()
    return container, video, audio


def _open_webm(path: Path, size: tuple[int, int]) -> tuple[Any, Any, Any]:
    import av

    container = av.open(
        str(path),
        "w",
        format="webm",
        options={"cluster_time_limit": "1000", "flush_packets": "1"},
    )
    video = container.add_stream("vp8", rate=30)
    video.width, video.height = size
    video.time_base = fractions.Fraction(1, 90000)
    audio = container.add_stream("opus", rate=48000)
    audio.time_base = fractions.Fraction(1, 48000)
    audio.codec_context.extradata = opus_head()
    return container, video, audio


def _mux(
    container: Any, stream: Any, data: bytes, pts: int, tb: fractions.Fraction, keyframe: bool
) -> None:
    """One encoded frame; ``pts`` in ``tb`` (the muxer rescales to the file's own units)."""
    import av

    packet = av.Packet(data)
    packet.stream = stream
    packet.pts = packet.dts = pts
    packet.time_base = tb
    packet.is_keyframe = keyframe
    container.mux(packet)


class Recorder:
    """The recordings of one ingest, by room. Lives on the event loop of the ingest.

    ``start`` and ``stop`` are called by the owner (the server: a room that went live and
    ended); ``on_failed`` is told, on the loop, when a recording stops by itself.
    """

    def __init__(self, directory: Path, on_failed: Failed | None = None) -> None:
        self.directory = Path(directory)
        self.on_failed = on_failed
        self._recordings: dict[str, _Recording] = {}
        self._feeds: dict[str, list[Feed]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def recording(self, room: str) -> bool:
        rec = self._recordings.get(room)
        return rec is not None and rec.failed is None

    def elapsed_s(self, room: str) -> float | None:
        """Seconds since ``room``'s recording started (a chapter's time), None if none."""
        rec = self._recordings.get(room)
        return None if rec is None or rec.failed else time.monotonic() - rec.t0

    def start(self, room: str, rid: str, started_ms: int) -> Path:
        """Record ``room`` into ``<directory>/<rid>.webm`` from now until :meth:`stop`."""
        if room in self._recordings:
            return self._recordings[room].path
        self._loop = asyncio.get_running_loop()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{rid}{EXTENSION}"
        rec = _Recording(room, rid, path, started_ms, lambda reason: self._failed(room, reason))
        self._recordings[room] = rec
        rec.thread.start()
        for feed in self._feeds.get(room, []):
            self._connect(rec, feed)
        return path

    async def stop(self, room: str) -> RecordingInfo | None:
        """End ``room``'s recording: the file is closed (cues, duration) when this returns."""
        rec = self._recordings.pop(room, None)
        if rec is None:
            return None
        for feed, output in rec.outputs.items():
            with contextlib.suppress(ValueError):
                feed.outputs.remove(output)
        rec.done.set()
        await asyncio.get_running_loop().run_in_executor(None, rec.thread.join, 30)
        try:
            size = os.stat(rec.path).st_size
        except OSError:
            size = 0
        return RecordingInfo(
            rec.id, room, rec.path, rec.started_ms, rec.duration_s, size, rec.frames, rec.failed
        )

    async def close(self) -> None:
        for room in list(self._recordings):
            await self.stop(room)

    # ------------------------------------------------------------------ FeedListener

    def feed_attached(self, feed: Feed) -> None:
        feeds = self._feeds.setdefault(feed.room, [])
        if feed not in feeds:
            feeds.append(feed)
        rec = self._recordings.get(feed.room)
        if rec is not None:
            self._connect(rec, feed)

    def feed_detached(self, feed: Feed) -> None:
        """Nothing to do: a reconnecting publisher continues the same recording."""

    def feed_closed(self, feed: Feed) -> None:
        feeds = self._feeds.get(feed.room, [])
        if feed in feeds:
            feeds.remove(feed)
        if not feeds:
            self._feeds.pop(feed.room, None)
        rec = self._recordings.get(feed.room)
        if rec is not None:
            output = rec.outputs.pop(feed, None)
            if output is not None:
                with contextlib.suppress(ValueError):
                    feed.outputs.remove(output)

    def _connect(self, rec: _Recording, feed: Feed) -> None:
        if feed in rec.outputs:
            return
        output = rec.output(feed)
        rec.outputs[feed] = output
        feed.outputs.append(output)
        if feed.video:
            feed.request_keyframe()  # the file starts at the next keyframe: ask for one now

    def _failed(self, room: str, reason: str) -> None:
        """From the loop (a backed-up queue) or the writer thread (a write error)."""
        rec = self._recordings.get(room)
        if rec is None or rec.failed is not None:
            return
        rec.failed = reason
        loop = self._loop
        if self.on_failed is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.on_failed, room, reason)
