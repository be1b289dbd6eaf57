"""Video in the pages: the studio goes live with Chromium's fake camera (publish over the
websocket), and a viewer page on another browser context plays it: frames advance."""

from __future__ import annotations

from playwright.async_api import Page, expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, require_op, screenshot, tid, wait_until
from tests.conftest import token

pytestmark = BROWSER

FRAMES_JS = """async () => {
    const v = document.querySelector('[data-testid="video"]');
    const t0 = v.currentTime;
    let frames = 0;
    await new Promise((resolve) => {
        const step = () => { frames += 1; if (frames >= 10) resolve(); else v.requestVideoFrameCallback(step); };
        v.requestVideoFrameCallback(step);
        setTimeout(resolve, 5000);
    });
    return {frames, advanced: v.currentTime - t0, width: v.videoWidth, height: v.videoHeight,
            paused: v.paused};
}"""


async def wait_playing(page: Page) -> None:
    await wait_until(
        page, "(() => { const v = document.querySelector('[data-testid=\"video\"]');"
        " return v && v.readyState >= 2 && v.currentTime > 0; })()", timeout=15_000)


async def test_studio_goes_live_and_viewer_sees_frames_advance(pages: Pages) -> None:
    async with Client(pages.server.url, token("probe-m", "viewer", rooms=["tv1"])) as probe:
        await require_op(probe, "watch", room="tv1", sdp="")
    studio = await pages.open("/studio/tv1", sub="anchor", role="streamer", rooms=["tv1"], name="Anchor")
    await expect(studio.locator(tid("preview-status"))).to_be_hidden()
    viewer = await pages.open("/live/tv1", sub="watcher", rooms=["tv1"], name="Watcher")
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("room-state"))).to_have_text("live")
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=15_000)
    await expect(viewer.locator(tid("room-state"))).to_have_text("live")

    await wait_playing(viewer)
    seen = await viewer.evaluate(FRAMES_JS)
    assert seen["frames"] >= 10, seen
    assert seen["advanced"] > 0.2, seen  # ~0.5 s of video at the fake camera's 20 fps
    assert seen["width"] > 0 and seen["height"] > 0 and not seen["paused"]
    await expect(viewer.locator(tid("video-status"))).to_be_hidden()
    await screenshot(viewer, "live-video")
    await screenshot(studio, "studio-live")

    # A second viewer joins late, with trickle ICE (candidates after the offer, `ice` op),
    # and plays too (the relay asks the publisher for a keyframe).
    late = await pages.open("/live/tv1?trickle=1", sub="latecomer", rooms=["tv1"], phone=True)
    await wait_playing(late)
    assert (await late.evaluate(FRAMES_JS))["frames"] >= 10
    trickled = await late.evaluate("({sent: window.souk.iceSent || 0, refused: !!window.souk._noTrickle})")
    assert trickled["sent"] >= 1 and not trickled["refused"], trickled

    # End: the room state reaches the viewers.
    await studio.click(tid("end"))
    await expect(viewer.locator(tid("room-state"))).to_have_text("ended")
    await expect(viewer.locator(tid("video-status"))).to_have_text("the live has ended")
