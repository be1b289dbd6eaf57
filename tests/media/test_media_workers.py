"""Media workers: viewers served by worker processes, over real sockets and real aiortc peers.

What is proven here: the server routes each watch to a worker and the worker's answer works
(frames flow through the ingest -> worker socket -> viewer); the viewers are spread over the
workers; trickled ICE and unwatch reach the right worker; a worker killed with SIGKILL is
restarted and exactly its viewers are told (``rewatch`` on their websocket) and watch again
through the SDK; the workers die with the server, however it dies, and none is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import psutil
import pytest
from aiortc import RTCRtpSender

from client_sdk import Client
from media import MediaError, MediaRelay
from media.testing import PublisherPeer, loopback
from media.testing.peers import RtpSinkViewer, ViewerPeer, publish_to, wait_until, watch_from
from media.workers import WorkerPool
from tests.conftest import Running, ServerProcess, token

pytestmark = pytest.mark.media


def pool_of(relay: MediaRelay) -> WorkerPool:
    assert isinstance(relay.viewers, WorkerPool)
    return relay.viewers


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    """An in-process relay whose viewers live in two worker processes."""
    lost: list[tuple[str, list[str]]] = []
    with loopback():
        r = MediaRelay(rtc_host="127.0.0.1", media_workers=2,
                       on_rewatch=lambda room, ids: lost.append((room, ids)))
        r.lost = lost  # type: ignore[attr-defined]
        try:
            yield r
        finally:
            pids = pool_of(r).pids()
            await r.close()
            await wait_until(lambda: not any(alive(p) for p in pids), 10, "workers gone")


async def test_viewers_spread_over_workers_get_every_frame(relay: MediaRelay) -> None:
    publisher = PublisherPeer(fps=20)
    viewers = [ViewerPeer(read_every=4) for _ in range(2)] + [RtpSinkViewer() for _ in range(4)]
    try:
        await publish_to(relay, "room", publisher)
        pool = pool_of(relay)
        await wait_until(lambda: len(pool.pids()) == 2, 20, "both workers up")
        for i, v in enumerate(viewers):
            await watch_from(relay, "room", f"v{i}", v)
        assert sorted(w.viewers for w in pool._workers) == [3, 3]  # least-loaded routing
        await wait_until(
            lambda: all(v.sink.frames >= 20 for v in viewers[:2])
            and all(v.video_frames >= 20 for v in viewers[2:]),  # type: ignore[union-attr]
            20, "frames at every viewer",
        )
        # decoded pictures carry readable stamps: whole frames crossed both sockets
        assert all(v.sink.stamped > 0 for v in viewers[:2])  # type: ignore[union-attr]
        # the workers report their counters to the ingest about once a second
        await wait_until(lambda: relay.stats()["packets_out_total"] > 100, 5, "worker stats")
        stats = relay.stats()
        assert (stats["viewers"], stats["media_workers"], stats["publishers"]) == (6, 2, 1)
        # trickle and unwatch are routed to the worker that owns the viewer
        await relay.add_ice("room", "v0", {"candidate": "", "sdpMid": "0"})
        with pytest.raises(MediaError, match="no media session"):
            await relay.add_ice("room", "nobody", {"candidate": "", "sdpMid": "0"})
        await relay.unwatch("room", "v0")
        assert relay.viewer_count("room") == 5
        await wait_until(
            lambda: viewers[0].pc.connectionState in ("closed", "failed"), 10, "v0 closed"
        )
        assert relay.first_keyframe_samples(), "the workers measured each join"
    finally:
        for p in (publisher, *viewers):
            await p.close()


async def test_a_killed_worker_is_restarted_and_only_its_viewers_rewatch(
    relay: MediaRelay,
) -> None:
    publisher = PublisherPeer(fps=20)
    viewers = {f"v{i}": RtpSinkViewer() for i in range(4)}
    try:
        await publish_to(relay, "room", publisher)
        pool = pool_of(relay)
        await wait_until(lambda: len(pool.pids()) == 2, 20, "both workers up")
        for vid, v in viewers.items():
            await watch_from(relay, "room", vid, v)
        await wait_until(lambda: all(v.video_frames > 5 for v in viewers.values()), 20, "frames")
        victim = pool._workers[0]
        assert victim.proc is not None
        doomed = {vid for vid, route in pool._routes["room"].items() if route.worker is victim}
        assert len(doomed) == 2
        os.kill(victim.proc.pid, signal.SIGKILL)
        lost: list[tuple[str, list[str]]] = relay.lost  # type: ignore[attr-defined]
        await wait_until(lambda: bool(lost), 10, "the relay telling who must rewatch")
        assert [(room, set(ids)) for room, ids in lost] == [("room", doomed)]
        assert relay.viewer_count("room") == 2
        # the survivors never stopped
        survivors = [v for vid, v in viewers.items() if vid not in doomed]
        before = [v.video_frames for v in survivors]
        await asyncio.sleep(1.0)
        assert all(v.video_frames > b + 5 for v, b in zip(survivors, before, strict=True))
        # a fresh worker takes over; the lost viewers watch again with fresh peers
        await wait_until(lambda: len(pool.pids()) == 2 and victim.ready, 20, "the restart")
        assert relay.stats()["media_worker_restarts_total"] == 1
        for vid in doomed:
            await viewers[vid].close()
            viewers[vid] = RtpSinkViewer()
            await watch_from(relay, "room", vid, viewers[vid])
        await wait_until(lambda: all(viewers[vid].video_frames > 5 for vid in doomed), 20,
                         "frames after the rewatch")
        assert relay.viewer_count("room") == 4
    finally:
        for p in (publisher, *viewers.values()):
            await p.close()


async def test_the_sdk_rewatches_when_its_worker_dies(server_factory: object) -> None:
    """Over the real websocket: the viewer's connection gets `rewatch`, and `Client.watch`
    (client_sdk.watch) makes a fresh peer and watches again by itself."""
    server: Running = await server_factory(media_workers=1)  # type: ignore[operator]
    with loopback():
        publisher = PublisherPeer(fps=20)
        async with server.client("s", "streamer") as st, server.client("v") as viewer:
            reply = await st.request("publish", room="tv", sdp=await publisher.offer())
            await publisher.accept(reply["sdp"])
            notices = viewer.events(ch="room:tv", types=["rewatch"])
            watch = await viewer.watch("tv", RtpSinkViewer)
            first = watch.peer
            assert isinstance(first, RtpSinkViewer)
            await wait_until(lambda: first.video_frames > 5, 20, "frames before")
            pool = pool_of(server.app.media)
            (pid,) = pool.pids()
            os.kill(pid, signal.SIGKILL)
            notice = await notices.next(timeout=10)
            assert (notice["room"], notice["reason"]) == ("tv", "media_worker_restarted")
            await wait_until(
                lambda: watch.rewatches == 1 and watch.peer not in (None, first), 30,
                "the SDK watching again",
            )
            again = watch.peer
            assert isinstance(again, RtpSinkViewer)
            await wait_until(lambda: again.video_frames > 5, 20, "frames after the rewatch")
            assert server.app.media.stats()["viewers"] == 1
            await watch.stop()
            assert server.app.media.stats()["viewers"] == 0
        await publisher.close()


async def test_the_sdk_watches_again_after_its_websocket_reconnects(server_factory: object) -> None:
    """The server drops a connection's media sessions when the connection goes: after the
    client's websocket comes back, `Client.watch` offers again with a fresh peer, and the
    frames flow on the new one (the old viewer is gone from the relay)."""
    server: Running = await server_factory(media_workers=1)  # type: ignore[operator]
    with loopback():
        publisher = PublisherPeer(fps=20)
        async with server.client("s", "streamer") as st, server.client("v") as viewer:
            reply = await st.request("publish", room="tr", sdp=await publisher.offer())
            await publisher.accept(reply["sdp"])
            watch = await viewer.watch("tr", RtpSinkViewer)
            first = watch.peer
            assert isinstance(first, RtpSinkViewer)
            await wait_until(lambda: first.video_frames > 5, 20, "frames before")
            assert viewer._ws is not None
            viewer._ws.transport.abort()  # the network drops the socket under the client
            await wait_until(
                lambda: watch.reconnects == 1 and watch.peer not in (None, first), 30,
                "the SDK watching again on the new connection",
            )
            again = watch.peer
            assert isinstance(again, RtpSinkViewer)
            await wait_until(lambda: again.video_frames > 5, 20, "frames after the reconnect")
            await wait_until(lambda: server.app.media.stats()["viewers"] == 1, 10,
                             "only the new viewer left on the relay")
            assert watch.rewatches == 0
            await watch.stop()
        await publisher.close()


def workers_of(server: psutil.Process) -> list[int]:
    """The pids of the server's children that run the media worker (exec done)."""
    pids = []
    for child in server.children():
        try:
            if "media.worker" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@contextlib.asynccontextmanager
async def media_workers_of(node: ServerProcess, count: int) -> AsyncIterator[list[int]]:
    """Publish on a `souk serve` child process (workers start with the first stream) and
    yield the pids of its media workers."""
    with loopback():
        publisher = PublisherPeer(fps=10)
        try:
            async with Client(node.url, token("s", "streamer"), reconnect=False) as st:
                reply = await st.request("publish", room="tv", sdp=await publisher.offer())
                await publisher.accept(reply["sdp"])
                assert node.proc is not None
                server = psutil.Process(node.proc.pid)
                # a child seen between fork and exec still shows the server's command line
                await wait_until(lambda: len(workers_of(server)) == count, 20, "media workers")
                pids = workers_of(server)
                assert len(server.children()) == count, "no child of the server but its workers"
                yield pids
        finally:
            await publisher.close()


async def test_media_workers_die_with_a_killed_server(server_process: object) -> None:
    node: ServerProcess = server_process("--media-workers", "2")  # type: ignore[operator]
    async with media_workers_of(node, 2) as workers:
        node.kill9()
        await wait_until(lambda: not any(alive(p) for p in workers), 10,
                         "no media worker outliving its server")


async def test_media_workers_stop_with_a_draining_server(server_process: object) -> None:
    node: ServerProcess = server_process("--media-workers", "1")  # type: ignore[operator]
    async with media_workers_of(node, 1) as workers:
        assert node.terminate() in (0, -signal.SIGTERM)
        await wait_until(lambda: not any(alive(p) for p in workers), 10, "the worker stopping")


async def test_watch_refusals_come_back_from_the_worker(relay: MediaRelay) -> None:
    publisher = PublisherPeer(codec="VP8", fps=10)
    try:
        await publish_to(relay, "room", publisher)
        # an offer the worker cannot answer with the published codec: its MediaError crosses
        h264_only = RtpSinkViewer()
        caps = [c for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType.lower() == "video/h264"]
        h264_only._video.setCodecPreferences(caps)
        with pytest.raises(MediaError) as err:
            await watch_from(relay, "room", "h", h264_only)
        assert err.value.code == "invalid"
        assert relay.viewer_count("room") == 0  # the refused watch left no route behind
        await h264_only.close()
        other = RtpSinkViewer()
        with pytest.raises(MediaError, match="nothing is published"):
            await relay.watch("other", "v", await other.offer())
        await other.close()
    finally:
        await publisher.close()
