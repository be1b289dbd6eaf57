"""MediaRelay.pull in one process: an edge relay fed by an origin relay, and its refusals.

The cross-node behaviour (Redis claims, websockets, grace) is in test_media_cascade.py; this
is the relay's own contract: a pull feeds the same forwarders a publisher does, never
replaces a local publisher, and a bad answer leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from media import MediaError, MediaRelay
from media.relay import EDGE, PUBLISHER
from media.testing import PublisherPeer, ViewerPeer
from media.testing.peers import publish_to, wait_until, watch_from

pytestmark = pytest.mark.media


@pytest.fixture
async def edge(relay: MediaRelay) -> AsyncIterator[MediaRelay]:
    r = MediaRelay(rtc_host="127.0.0.1")  # same host pin as the origin fixture
    try:
        yield r
    finally:
        await r.close()


async def test_an_edge_relay_fans_out_what_it_pulls(relay: MediaRelay, edge: MediaRelay) -> None:
    pub, viewer = PublisherPeer(), ViewerPeer()
    try:
        await publish_to(relay, "r", pub)

        async def signal(offer: str) -> str:
            return str((await relay.watch("r", "edge-1", offer))["sdp"])

        await edge.pull("r", "e1", signal)
        assert edge.source_of("r") == (EDGE, "e1")
        assert relay.source_of("r") == (PUBLISHER, "streamer")
        await watch_from(edge, "r", "v", viewer)
        await wait_until(lambda: viewer.sink.frames >= 15 and bool(viewer.sink.latencies_ms),
                         30, "stamped frames through origin and edge")
        assert relay.viewer_count("r") == 1 and edge.viewer_count("r") == 1
        assert edge.stats()["edge_pulls"] == 1 and edge.stats()["publishers"] == 0
        # a streamer's unpublish on the edge does not end a pull; end_pull does, and with no
        # viewer left closes the room
        await edge.unpublish("r")
        assert edge.source_of("r") == (EDGE, "e1")
        await edge.unwatch("r", "v")
        await edge.end_pull("r", "e1")
        assert edge.source_of("r") is None and edge.stats()["rooms"] == 0
    finally:
        for p in (pub, viewer):
            await p.close()


async def test_pull_refusals_leave_nothing_behind(relay: MediaRelay, edge: MediaRelay) -> None:
    async def garbage(offer: str) -> str:
        return "this is not sdp"

    async def unreachable(offer: str) -> str:
        raise MediaError("unavailable", "origin gone")

    with pytest.raises(MediaError) as err:
        await edge.pull("r", "e1", garbage)
    assert err.value.code == "invalid"
    with pytest.raises(MediaError) as err:
        await edge.pull("r", "e1", unreachable)
    assert err.value.code == "unavailable"
    assert edge.stats()["rooms"] == 0 and edge.source_of("r") is None
    # a local publisher is never replaced by a pull
    pub = PublisherPeer(audio=False)
    try:
        await publish_to(edge, "r", pub)
        with pytest.raises(MediaError) as err:
            await edge.pull("r", "e2", garbage)
        assert err.value.code == "conflict"
        assert edge.source_of("r") == (PUBLISHER, "streamer")
    finally:
        await pub.close()
