"""WebRTC signalling over the Souk websocket: an aiortc publisher and viewers through `/ws`."""

from __future__ import annotations

import asyncio
import time

import pytest

from client_sdk.errors import SoukError
from media.testing import loopback
from media.testing.peers import PublisherPeer, ViewerPeer
from tests.conftest import Running

pytestmark = pytest.mark.media


async def test_publish_and_watch_over_the_websocket(server: Running) -> None:
    with loopback():
        pub = PublisherPeer(codec="VP8")
        viewers = [ViewerPeer() for _ in range(2)]
        async with server.client("s", "streamer") as st:
            reply = await st.request("publish", room="tv", sdp=await pub.offer())
            assert reply["ice_servers"] == []  # no STUN/TURN configured: nothing public
            await pub.accept(reply["sdp"])
            clients = [server.client(f"v{i}") for i in range(2)]
            for c, v in zip(clients, viewers, strict=True):
                await c.connect()
                ans = await c.request("watch", room="tv", sdp=await v.offer())
                await v.accept(ans["sdp"])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and min(v.sink.frames for v in viewers) < 20:
                await asyncio.sleep(0.2)
            assert min(v.sink.frames for v in viewers) >= 20
            lat = [x for v in viewers for x in v.sink.latencies_ms]
            assert lat and sorted(lat)[len(lat) // 2] < 600
            # a dropped websocket releases its media
            assert server.app.media.stats()["viewers"] == 2
            await clients[0].close()
            for _ in range(50):
                if server.app.media.stats()["viewers"] == 1:
                    break
                await asyncio.sleep(0.1)
            assert server.app.media.stats()["viewers"] == 1
            await clients[1].request("unwatch", room="tv")
            with pytest.raises(SoukError) as err:
                await clients[1].request("unwatch", room="tv")
            assert err.value.code == "not_found"
            await clients[1].close()
        for p in (pub, *viewers):
            await p.close()


async def test_signalling_refusals(server: Running) -> None:
    async with server.client("v", "viewer") as v, server.client("s", "streamer", rooms=["mine"]) as st:
        with pytest.raises(SoukError) as err:
            await v.request("publish", room="x", sdp="v=0")
        assert err.value.code == "forbidden"
        with pytest.raises(SoukError) as err:
            await v.request("watch", room="nothing-published", sdp="v=0\r\n")
        assert err.value.code in ("invalid", "not_found")
        with pytest.raises(SoukError) as err:
            await st.request("publish", room="other", sdp="v=0")
        assert err.value.code == "forbidden"
        with pytest.raises(SoukError) as err:
            await st.request("publish", room="mine", sdp="garbage")
        assert err.value.code == "invalid"
        with pytest.raises(SoukError) as err:
            await v.request("ice", room="mine", candidate={"candidate": "x"})
        assert err.value.code == "forbidden" or err.value.code == "not_found"
