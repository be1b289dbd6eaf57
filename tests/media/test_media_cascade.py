"""Media origin → edge cascade between real `souk serve --redis` processes on 127.0.0.1.

A stamped aiortc publisher publishes to node A; aiortc viewers watch on node B; B pulls the
stream from A once and fans it out. Decoded stamped frames at B's viewers prove real media
crossed A → B → viewer; A's and B's relay counters (their /metrics, over HTTP) prove the pull
is shared and ends after the grace; the studio on A is told the viewers receiving video on
every node (`video_viewers`), B's pull not counted as one.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from client_sdk import Client
from client_sdk.errors import SoukError
from media.testing import loopback
from media.testing.peers import PublisherPeer, ViewerPeer, wait_until
from tests.conftest import ServerProcess, token

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.media, pytest.mark.scaleout, pytest.mark.timeout(120)]


@pytest.fixture
def nodes(server_process: Callable[..., ServerProcess], prefix: str,
          tmp_path: Path) -> Callable[[int], list[ServerProcess]]:
    def start(n: int) -> list[ServerProcess]:
        return [server_process("--redis", REDIS_URL, "--redis-prefix", prefix,
                               data_dir=tmp_path / f"node{i}", env={"SOUK_EDGE_GRACE_S": "1"})
                for i in range(n)]

    return start


def client(node: ServerProcess, sub: str, role: str = "viewer") -> Client:
    return Client(node.url, token(sub, role), reconnect=False)


def media_stats(node: ServerProcess) -> dict[str, float]:
    """The node's `souk_media{stat=...}` gauges, read from its /metrics over HTTP."""
    with urllib.request.urlopen(node.http + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^souk_media\{stat="(\w+)"\} (\S+)$', text, re.M)}


async def stats(node: ServerProcess) -> dict[str, float]:
    return await asyncio.to_thread(media_stats, node)


async def wait_stat(node: ServerProcess, stat: str, value: float, what: str,
                    timeout_s: float = 30.0, above: bool = False) -> None:
    """Poll the node's /metrics until ``stat`` equals ``value`` (or exceeds it: ``above``)."""
    deadline = time.monotonic() + timeout_s
    last: float | None = None
    while time.monotonic() < deadline:
        last = (await stats(node)).get(stat)
        if last is not None and (last > value if above else last == value):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: {stat} stayed {last}, wanted {'>' if above else ''}{value}")


async def origin_of(prefix: str, room: str) -> str | None:
    r = Redis.from_url(REDIS_URL)
    try:
        value = await r.get(f"{prefix}{{media:{room}}}:origin")
        return None if value is None else value.decode()
    finally:
        await r.aclose()


async def publish(node: ServerProcess, streamer: Client, room: str) -> PublisherPeer:
    pub = PublisherPeer(codec="VP8")
    reply = await streamer.request("publish", room=room, sdp=await pub.offer())
    await pub.accept(reply["sdp"])
    await pub.connected(timeout_s=30)
    return pub


async def watch(viewer: Client, room: str) -> ViewerPeer:
    peer = ViewerPeer(read_every=3)
    reply = await viewer.request("watch", room=room, sdp=await peer.offer())
    await peer.accept(reply["sdp"])
    return peer


async def test_edge_viewers_share_one_pull_that_ends_after_the_grace(
    nodes: Callable[[int], list[ServerProcess]], prefix: str
) -> None:
    a, b = nodes(2)
    peers: list[PublisherPeer | ViewerPeer] = []
    with loopback():
        async with client(a, "s1", "streamer") as st:
            peers.append(await publish(a, st, "live"))
            assert await origin_of(prefix, "live") == a.url  # A claims the room
            await st.join("live")
            counts = st.events("room:live", types=["viewers"])
            viewers = [client(b, f"v{i}") for i in range(2)]
            try:
                for v in viewers:
                    await v.connect()
                    await v.join("live")  # as the viewer page does: chat beside the video
                watching = [await watch(v, "live") for v in viewers]
                peers += watching
                # real media crossed A -> B -> viewer: decoded frames with readable stamps
                await wait_until(lambda: min(w.sink.frames for w in watching) >= 20, 40,
                                 "frames at both viewers on the edge")
                assert all(w.sink.latencies_ms for w in watching)
                # one pull, shared: A has exactly one viewer peer (B), B has both viewers
                sa, sb = await stats(a), await stats(b)
                assert (sa["publishers"], sa["viewers"], sa["edge_pulls"]) == (1, 1, 0), sa
                assert (sb["publishers"], sb["viewers"], sb["edge_pulls"]) == (0, 2, 1), sb
                assert sb["edge_pulls_started_total"] == 1
                # the studio on A hears how many people receive the video on any node: B's two,
                # not B's pull from A as a third
                await counts.wait_for(lambda e: e.get("video_viewers") == 2, timeout=10)
                # a late viewer on B: its keyframe request travels B -> A (PLI, throttled)
                late = client(b, "late")
                viewers.append(late)
                await late.connect()
                await late.join("live")
                late_peer = await watch(late, "live")
                peers.append(late_peer)
                await wait_until(lambda: late_peer.sink.frames >= 5, 40, "the late viewer's frames")
                await counts.wait_for(lambda e: e.get("video_viewers") == 3, timeout=10)
                await wait_stat(a, "pli_requested_total", sa["pli_requested_total"], "A's PLIs",
                                above=True)
                assert (await stats(b))["pli_sent_total"] > sb["pli_sent_total"]
                assert (await stats(b))["edge_pulls_started_total"] == 1
                await late.close()
                await wait_stat(b, "viewers", 2, "B after the late viewer left")
                # one viewer leaves: the pull stays for the other
                await viewers[0].close()
                await wait_stat(b, "viewers", 1, "B after one viewer left")
                await asyncio.sleep(1.5)  # longer than the grace: the pull must still be there
                assert (await stats(b))["edge_pulls"] == 1
                assert (await stats(a))["viewers"] == 1
                # the last viewer leaves: after the grace B drops the pull, A sees it go
                await viewers[1].request("unwatch", room="live")
                await wait_stat(b, "edge_pulls", 0, "B's pull after its last viewer left")
                await wait_stat(a, "viewers", 0, "A's edge viewer after B's pull ended")
                assert (await stats(b))["edge_pulls_ended_total"] == 1
            finally:
                for v in viewers:
                    await v.close()
                for p in peers:
                    await p.close()
            await st.request("unpublish", room="live")
            assert await origin_of(prefix, "live") is None  # the claim goes with the stream


async def test_watch_on_an_edge_of_nothing_published_is_not_found(
    nodes: Callable[[int], list[ServerProcess]], prefix: str
) -> None:
    a, b = nodes(2)
    async with client(b, "v") as v, client(a, "w") as w:
        for x in (v, w, v):  # twice on B: a refusal leaves nothing behind
            with pytest.raises(SoukError) as err:
                await x.request("watch", room="nowhere", sdp="v=0\r\n")
            assert err.value.code == "not_found"
        with pytest.raises(SoukError) as err:
            await v.request("watch", room="nowhere", sdp="v=0\r\n", local="yes")
        assert err.value.code == "invalid"
    assert (await stats(b))["edge_pulls_started_total"] == 0
    assert (await stats(a))["edge_pulls_started_total"] == 0
    assert await origin_of(prefix, "nowhere") is None


async def test_edge_viewer_keeps_watching_when_the_origin_moves(
    nodes: Callable[[int], list[ServerProcess]], prefix: str
) -> None:
    """The streamer moves from A to C: B re-pulls from C, its viewer's connection stays."""
    a, b, c = nodes(3)
    peers: list[PublisherPeer | ViewerPeer] = []
    with loopback():
        st_a, st_c, viewer = client(a, "s1", "streamer"), client(c, "s1", "streamer"), client(b, "v")
        try:
            for x in (st_a, st_c, viewer):
                await x.connect()
            peers.append(await publish(a, st_a, "move"))
            peer = await watch(viewer, "move")
            peers.append(peer)
            await wait_until(lambda: peer.sink.frames >= 10, 40, "frames from origin A")
            # the streamer republishes on C (its link to A is gone a moment later)
            peers.append(await publish(c, st_c, "move"))
            assert await origin_of(prefix, "move") == c.url
            await st_a.close()
            await wait_stat(c, "viewers", 1, "C serving B's re-pull")
            await wait_stat(a, "viewers", 0, "A no longer serving B")
            assert (await stats(b))["edge_pulls_started_total"] == 2
            before = peer.sink.frames
            await wait_until(lambda: peer.sink.frames >= before + 20, 40,
                             "frames from origin C at the same viewer")
            assert peer.pc.connectionState == "connected"  # never renegotiated
            assert await origin_of(prefix, "move") == c.url  # A's drop did not take C's claim
            # B's pull was A's only viewer: an edge follows the origin itself, so A (without a
            # publisher now) never pulled from C on its behalf
            assert (await stats(a))["edge_pulls_started_total"] == 0
        finally:
            for x in (st_a, st_c, viewer):
                await x.close()
            for p in peers:
                await p.close()


async def test_viewer_on_the_former_origin_keeps_watching_when_the_streamer_moves(
    nodes: Callable[[int], list[ServerProcess]], prefix: str
) -> None:
    """The streamer publishes on A, then moves to B (A's socket drops): A's own viewer, whose
    connection to A never fails, gets the stream pulled from B without re-watching."""
    a, b = nodes(2)
    peers: list[PublisherPeer | ViewerPeer] = []
    with loopback():
        st_a, st_b, viewer = client(a, "s1", "streamer"), client(b, "s1", "streamer"), client(a, "v")
        try:
            for x in (st_a, st_b, viewer):
                await x.connect()
            peers.append(await publish(a, st_a, "back"))
            peer = await watch(viewer, "back")
            peers.append(peer)
            await wait_until(lambda: peer.sink.frames >= 10, 40, "frames from origin A")
            await st_a.close()  # A's publisher goes with the streamer's socket
            await wait_stat(a, "publishers", 0, "A without its publisher")
            peers.append(await publish(b, st_b, "back"))
            await wait_stat(a, "edge_pulls", 1, "A pulling for its waiting viewer")
            await wait_stat(b, "viewers", 1, "B serving A's pull")
            before = peer.sink.frames
            await wait_until(lambda: peer.sink.frames >= before + 20, 40,
                             "frames from B at the viewer on A")
            assert peer.pc.connectionState == "connected"  # never renegotiated
        finally:
            for x in (st_a, st_b, viewer):
                await x.close()
            for p in peers:
                await p.close()


async def test_workers_on_one_port_pull_from_each_other(
    server_process: Callable[..., ServerProcess], prefix: str, tmp_path: Path
) -> None:
    """`--workers 2`: the kernel spreads connections over the workers, so each worker
    advertises a private port; a viewer on the other worker gets the stream through it."""
    import psutil

    node = server_process("--redis", REDIS_URL, "--redis-prefix", prefix, "--workers", "2",
                          data_dir=tmp_path / "w", env={"SOUK_EDGE_GRACE_S": "1"})
    assert node.proc is not None
    parent = psutil.Process(node.proc.pid)

    def private_ports() -> dict[int, int]:
        """worker pid -> its private listening port (the one that is not the shared one)."""
        out = {}
        for p in parent.children():
            for x in p.net_connections():
                if x.status == "LISTEN" and x.laddr.port != node.port:
                    out[p.pid] = x.laddr.port
        return out

    await wait_until(lambda: len(private_ports()) == 2, 30, "both workers' private ports")
    ports = set(private_ports().values())
    peers: list[PublisherPeer | ViewerPeer] = []
    with loopback():
        async with client(node, "s1", "streamer") as st:  # lands on either worker
            peers.append(await publish(node, st, "wk"))
            origin = await origin_of(prefix, "wk")
            assert origin is not None
            origin_port = int(origin.rsplit(":", 1)[1].split("/")[0])
            assert origin_port in ports
            (other_port,) = ports - {origin_port}
            other = ServerProcess(node.data_dir, other_port)  # just the address of the other
            origin_worker = ServerProcess(node.data_dir, origin_port)
            async with client(other, "v1") as v:
                peer = await watch(v, "wk")
                peers.append(peer)
                await wait_until(lambda: peer.sink.frames >= 10, 40, "frames across workers")
                assert (await stats(other))["edge_pulls"] == 1
                assert (await stats(origin_worker))["viewers"] == 1
            for p in peers:
                await p.close()
