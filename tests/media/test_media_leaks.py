"""Watch/unwatch cycles leave nothing behind: tasks, sockets/fds, threads, peer connections,
memory. (The 500-cycle version is in bench/media_bench.py.)"""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import psutil
import pytest
from aiortc import RTCPeerConnection

from media import MediaRelay
from media.forwarder import ViewerStream
from media.testing import PublisherPeer
from media.testing.peers import RtpSinkViewer, publish_to, wait_until, watch_from

pytestmark = pytest.mark.media

CYCLES = 60


def _footprint() -> dict[str, int]:
    gc.collect()
    return {
        "viewer_streams": sum(isinstance(o, ViewerStream) for o in gc.get_objects()),
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        # the loop's default executor (aiortc encodes there) grows lazily to its cap: not a leak
        "threads": sum(not t.name.startswith("asyncio_") for t in threading.enumerate()),
        "peer_connections": sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects()),
        "rss": psutil.Process().memory_info().rss,
    }


async def _cycle(relay: MediaRelay, i: int) -> None:
    viewer = RtpSinkViewer()
    try:
        await watch_from(relay, "room", f"v{i}", viewer)
        await wait_until(lambda: viewer.video_frames > 0, 10, "a frame")
        await relay.unwatch("room", f"v{i}")
        # the relay closed its side: the viewer sees the DTLS close, not a timeout
        await wait_until(
            lambda: viewer.pc.connectionState in ("closed", "failed"), 5, "relay-side close"
        )
    finally:
        await viewer.close()


async def test_watch_unwatch_cycles_do_not_leak(relay: MediaRelay) -> None:
    publisher = PublisherPeer(fps=20)
    try:
        await publish_to(relay, "room", publisher)
        for i in range(10):  # warm up caches, codecs, allocator arenas
            await _cycle(relay, i)
        await asyncio.sleep(0.5)
        before = _footprint()
        for i in range(CYCLES):
            await _cycle(relay, 100 + i)
        await asyncio.sleep(0.5)
        after = _footprint()
        assert relay.stats()["viewers"] == 0
        assert after["tasks"] <= before["tasks"] + 2, (before, after)
        assert after["fds"] <= before["fds"] + 4, (before, after)
        # a leak per cycle would show as dozens after 60 cycles; one or two threads started
        # meanwhile by something else in this process (another lazily grown pool) are not it
        assert after["threads"] <= before["threads"] + 2, (
            before, after, [t.name for t in threading.enumerate()])
        assert after["peer_connections"] <= before["peer_connections"], (before, after)
        assert after["viewer_streams"] == 0, (before, after)
        # RSS is loose (the allocator keeps freed arenas, other tests fragment the heap); it
        # still catches a per-cycle leak of a peer connection's native state (~200+ KiB)
        rss_kib = (after["rss"] - before["rss"]) / 1024
        assert rss_kib < 16 * 1024, f"RSS grew {rss_kib:.0f} KiB over {CYCLES} cycles"
    finally:
        await publisher.close()


async def test_a_viewer_that_vanishes_is_cleaned_up(relay: MediaRelay) -> None:
    publisher = PublisherPeer(fps=20)
    viewer = RtpSinkViewer()
    try:
        await publish_to(relay, "room", publisher)
        await watch_from(relay, "room", "gone", viewer)
        await wait_until(lambda: viewer.video_frames > 0, 10, "a frame")
        await viewer.close()  # no unwatch: the tab was closed
        await wait_until(lambda: relay.stats()["viewers"] == 0, 10, "relay-side cleanup")
    finally:
        await publisher.close()


async def test_a_viewer_that_never_connects_is_dropped() -> None:
    from media.testing import loopback

    with loopback():
        relay = MediaRelay(connect_timeout_s=0.5)
        publisher = PublisherPeer(fps=20)
        viewer = RtpSinkViewer()
        try:
            await publish_to(relay, "room", publisher)
            await relay.watch("room", "ghost", await viewer.offer())  # answer never applied
            assert relay.stats()["viewers"] == 1
            await wait_until(lambda: relay.stats()["viewers"] == 0, 5, "deadline cleanup")
        finally:
            await viewer.close()
            await publisher.close()
            await relay.close()
