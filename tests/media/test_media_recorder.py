"""The recorder over a real relay and a real aiortc publisher (the stamped synthetic camera)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import av

from media import MediaRelay
from media.packet import MediaPacket
from media.recorder import Recorder
from media.recording import Timeline, VideoAssembler
from media.testing import PublisherPeer
from media.testing.peers import publish_to, wait_until
from server.domain.replay import expired, recording_id, valid_recording_id


async def test_records_across_a_reconnect(relay: MediaRelay, tmp_path: Path) -> None:
    """8 s recorded, the publisher reconnecting half-way: one file, ≥ 95 % of the frames the
    publishers sent (less the reconnect's set-up), its duration the recording's within 0.5 s,
    times monotonic. (The 20 s recording through a real server: tests/media/test_replays.py.)"""
    recorder = Recorder(tmp_path)
    relay.ingest.listen(recorder)
    first = PublisherPeer(codec="VP8")
    await publish_to(relay, "r1", first)
    await wait_until(lambda: relay.stats()["frames_in_total"] > 5, 10, "frames in")
    started = time.monotonic()
    path = recorder.start("r1", recording_id("r1", 1), 1)
    await asyncio.sleep(4)
    sent_before = first.video.frames_sent
    second = PublisherPeer(codec="VP8")
    await publish_to(relay, "r1", second)  # a reconnect: the same recording goes on
    await first.close()
    await asyncio.sleep(4)
    info = await recorder.stop("r1")
    wall = time.monotonic() - started
    sent = sent_before + second.video.frames_sent
    await second.close()
    assert info is not None and info.failed is None and info.path == path
    assert info.size == path.stat().st_size > 0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times = [float(f.time) for f in c.decode(stream)]
    # the first keyframe comes up to a PLI round trip after the start, the reconnect costs
    # one connection set-up: both are a fraction of a second of 30 fps
    assert len(times) >= 0.95 * sent - 30, (len(times), sent)
    assert times == sorted(times)
    assert abs(info.duration_s - wall) < 0.5, (info, wall)
    assert abs(times[-1] - wall) < 0.5
    assert info.frames == len(times)


async def test_a_full_disk_fails_the_recording_not_the_live(
    relay: MediaRelay, tmp_path: Path
) -> None:
    failures: list[tuple[str, str]] = []
    recorder = Recorder(tmp_path, on_failed=lambda room, why: failures.append((room, why)))
    relay.ingest.listen(recorder)
    rid = recording_id("r2", 2)
    os.symlink("/dev/full", tmp_path / f"{rid}.webm")  # every write: ENOSPC
    peer = PublisherPeer(codec="VP8")
    await publish_to(relay, "r2", peer)
    recorder.start("r2", rid, 2)
    await wait_until(lambda: bool(failures), 10, "recording_failed")
    assert failures[0][0] == "r2" and "write error" in failures[0][1]
    assert not recorder.recording("r2")
    before = relay.stats()["frames_in_total"]
    await wait_until(lambda: relay.stats()["frames_in_total"] > before + 30, 5, "the live goes on")
    info = await recorder.stop("r2")
    assert info is not None and info.failed
    await peer.close()


def test_assembler_reorders_and_skips_to_the_next_keyframe() -> None:
    a = VideoAssembler()
    p = MediaPacket
    assert a.add(p(10, 100, 0, b"a", keyframe=False)) == []  # no keyframe yet
    assert a.add(p(12, 100, 1, b"c")) == []
    assert a.add(p(11, 100, 0, b"b", keyframe=True)) == []  # its end (12) came too early
    a = VideoAssembler()
    assert a.add(p(11, 100, 0, b"k", keyframe=True)) == []
    frames = a.add(p(12, 100, 1, b"e"))
    assert [f.payloads for f in frames] == [[b"k", b"e"]] and frames[0].keyframe
    assert a.add(p(14, 200, 1, b"y")) == []  # 13 missing
    frames = a.add(p(13, 200, 0, b"x"))  # repaired (a NACK's retransmission)
    assert [f.payloads for f in frames] == [[b"x", b"y"]]
    assert a.add(p(13, 200, 0, b"x")) == []  # a late duplicate


def test_timeline_continues_across_epochs_and_wraps() -> None:
    t = Timeline(90000)
    assert t.pts(1, 2**32 - 3000, 0.0) == 0
    assert t.pts(1, 0, 0.0) == 3000  # the 32-bit wrap
    assert t.pts(2, 5, 2.0) == 180000  # a reconnect: anchored at its arrival
    assert t.pts(2, 5 + 90000, 0.0) == 270000
    assert t.pts(3, 0, 0.5) == 270001  # never backwards


def test_ids_and_retention() -> None:
    rid = recording_id("room/../x", 1234)
    assert valid_recording_id(rid) and "/" not in rid
    assert not valid_recording_id("../etc") and not valid_recording_id(3)
    assert expired([("a", 0), ("b", 86_400_000 * 9)], 86_400_000 * 10, 7) == ["a"]
    assert expired([("a", 0)], 86_400_000 * 10, 0) == []


async def test_h264_goes_to_fragmented_mp4_playable_while_written(
        relay: MediaRelay, tmp_path: Path) -> None:
    """An H.264 stream: fragmented MP4, whose bytes at any moment (what kill -9 leaves)
    decode up to the last fragment, and the whole file after a clean stop."""
    recorder = Recorder(tmp_path)
    relay.ingest.listen(recorder)
    peer = PublisherPeer(codec="H264")
    await publish_to(relay, "r3", peer)
    before = peer.video.frames_sent
    recorder.start("r3", recording_id("r3", 3), 3)
    mp4 = tmp_path / f"{recording_id('r3', 3)}.mp4"
    await wait_until(lambda: mp4.exists() and mp4.stat().st_size > 20_000, 10, "fragments")
    await asyncio.sleep(3)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(mp4.read_bytes())  # the file as a crash would leave it
    await asyncio.sleep(1)
    info = await recorder.stop("r3")
    sent = peer.video.frames_sent - before
    await peer.close()
    assert info is not None and info.failed is None and info.path == mp4
    with av.open(str(cut)) as c:
        cut_frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(mp4)) as c:
        assert c.streams.audio
        times = [float(f.time) for f in c.decode(video=0)]
    assert cut_frames >= 60, cut_frames  # ~3 s of fragments
    assert len(times) > cut_frames and times == sorted(times)
    assert len(times) >= 0.95 * sent - 30, (len(times), sent)  # less the wait for a keyframe
    assert abs(times[-1] - info.duration_s) < 0.5
