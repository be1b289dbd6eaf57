"""Browser and aiortc peers on the same relay: Chromium publishes to an aiortc viewer, and an
aiortc publisher reaches a Chromium viewer page. Both directions over the Souk websocket."""

from __future__ import annotations

import asyncio
import time

from playwright.async_api import expect

from client_sdk import Client
from media.testing import loopback
from media.testing.peers import PublisherPeer, ViewerPeer
from tests.browser.conftest import BROWSER, Pages, screenshot, tid
from tests.browser.test_media import FRAMES_JS, wait_playing
from tests.conftest import token

pytestmark = BROWSER


async def test_chromium_publisher_to_aiortc_viewer(pages: Pages) -> None:
    studio = await pages.open("/studio/x1", sub="anchor-x1", role="streamer", rooms=["x1"], name="Anchor")
    await expect(studio.locator(tid("preview-status"))).to_be_hidden()
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=15_000)
    with loopback():
        viewer = ViewerPeer()
        async with Client(pages.server.url, token("aiortc-viewer", rooms=["x1"])) as c:
            reply = await c.request("watch", room="x1", sdp=await viewer.offer())
            await viewer.accept(reply["sdp"])
            deadline = time.monotonic() + 15
            while viewer.sink.frames < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert viewer.sink.frames >= 20  # Chromium's fake camera (VP8) decoded by aiortc
            await c.request("unwatch", room="x1")
        await viewer.close()
    await studio.click(tid("end"))


async def test_aiortc_publisher_to_chromium_viewer(pages: Pages) -> None:
    with loopback():
        pub = PublisherPeer(codec="VP8", width=320, height=240)
        async with Client(pages.server.url, token("aiortc-pub", "streamer", rooms=["x2"])) as st:
            await st.request("room_state", room="x2", state="live")
            reply = await st.request("publish", room="x2", sdp=await pub.offer())
            await pub.accept(reply["sdp"])
            viewer = await pages.open("/live/x2", sub="chromium-viewer", rooms=["x2"])
            await wait_playing(viewer)
            seen = await viewer.evaluate(FRAMES_JS)
            assert seen["frames"] >= 10 and seen["advanced"] > 0.2, seen
            assert (seen["width"], seen["height"]) == (320, 240)
            await screenshot(viewer, "live-from-aiortc")
            await st.request("unpublish", room="x2")
        await pub.close()
