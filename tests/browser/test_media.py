"""Video in the pages: the studio goes live with Chromium's fake camera (publish over the
websocket), shows its stream health from getStats, and a viewer page on another browser
context plays it: "waiting for the streamer" before, frames advancing after, an end card at
the end."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.browser.conftest import BROWSER, Pages, require_media, screenshot, tid

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
    await page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=\"video\"]');"
        " return v && v.readyState >= 2 && v.currentTime > 0; }", timeout=15_000)


async def test_studio_goes_live_and_viewer_sees_frames_advance(pages: Pages) -> None:
    await require_media(pages)
    studio = await pages.open("/studio/tv1", sub="anchor", role="streamer", rooms=["tv1"], name="Anchor")
    await expect(studio.locator(tid("preview-status"))).to_be_hidden()
    viewer = await pages.open("/live/tv1", sub="watcher", rooms=["tv1"], name="Watcher", phone=True)
    # Before the live: a poster that says so, not a black frame.
    poster = viewer.locator(tid("video-status"))
    await expect(poster).to_have_attribute("data-state", "waiting")
    await expect(viewer.locator(tid("video-status-text"))).to_have_text("Waiting for the streamer…")
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("room-state"))).to_have_attribute("data-state", "live")
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=15_000)
    await expect(viewer.locator(tid("room-state"))).to_have_attribute("data-state", "live")

    await wait_playing(viewer)
    seen = await viewer.evaluate(FRAMES_JS)
    assert seen["frames"] >= 10, seen
    assert seen["advanced"] > 0.2, seen  # ~0.5 s of video at the fake camera's 20 fps
    assert seen["width"] > 0 and seen["height"] > 0 and not seen["paused"]
    assert seen["height"] > seen["width"], seen  # the studio sends portrait, as phones watch
    await expect(poster).to_have_attribute("data-state", "playing")
    await expect(poster).to_be_hidden()
    await screenshot(viewer, "live-phone-video")

    # The studio's stream health: what the browser's own getStats() says it sends.
    await expect(studio.locator(tid("health-bitrate"))).not_to_have_text("–", timeout=10_000)
    bitrate = float(await studio.locator(tid("health-bitrate")).get_attribute("data-value") or 0)
    fps = float(await studio.locator(tid("health-fps")).get_attribute("data-value") or 0)
    assert bitrate > 20 and fps > 0, (bitrate, fps)
    await expect(studio.locator(tid("health-size"))).to_have_text("360×640")
    await expect(studio.locator(tid("health-loss"))).to_contain_text("%")
    await screenshot(studio, "studio-live", full_page=True)

    # A second viewer joins late, with trickle ICE (candidates after the offer, `ice` op),
    # and plays too (the relay asks the publisher for a keyframe).
    late = await pages.open("/live/tv1?trickle=1", sub="latecomer", rooms=["tv1"])
    await wait_playing(late)
    assert (await late.evaluate(FRAMES_JS))["frames"] >= 10
    trickled = await late.evaluate("() => ({sent: window.souk.iceSent || 0, refused: !!window.souk._noTrickle})")
    assert trickled["sent"] >= 1 and not trickled["refused"], trickled
    # The studio shows how many viewers receive the video (the relay's count, `video_viewers`).
    await expect(studio.locator(tid("health-viewers"))).to_have_attribute("data-value", "2", timeout=5000)
    await screenshot(late, "live-desktop-video")

    # End: the room state reaches the viewers, who see the end card.
    await studio.click(tid("end"))
    await expect(viewer.locator(tid("room-state"))).to_have_attribute("data-state", "ended")
    await expect(viewer.locator(tid("endcard"))).to_be_visible()
    await expect(poster).to_have_attribute("data-state", "ended")
    await expect(studio.locator(tid("media-status"))).not_to_have_attribute("data-state", "failed")
    pages.assert_clean()


STREAM_MARK_JS = """() => {
    const v = document.querySelector('[data-testid="video"]');
    window.__markedStream = v.srcObject;
    return v.srcObject ? v.srcObject.id : null;
}"""

FRESH_FRAMES_JS = """() => new Promise((resolve) => {
    // frames decoded from now on, and whether they come from a new peer's stream
    const v = document.querySelector('[data-testid="video"]');
    let frames = 0;
    const step = () => { frames += 1; if (frames < 5) v.requestVideoFrameCallback(step); };
    v.requestVideoFrameCallback(step);
    setTimeout(() => resolve({frames, replaced: v.srcObject !== window.__markedStream}), 1500);
})"""


async def test_viewers_of_a_killed_media_worker_watch_again_at_once(pages: Pages) -> None:
    """The server restarts a media worker that died and tells only its viewers (`rewatch`);
    the browser SDK offers again at once, so the viewer of the killed worker has new frames
    within seconds instead of a frozen picture until ICE gives up."""
    import os
    import signal
    import time

    import psutil

    await require_media(pages)
    studio = await pages.open("/studio/tvw", sub="w-anchor", role="streamer", rooms=["tvw"])
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=15_000)
    viewers = [await pages.open("/live/tvw", sub=f"w-viewer-{i}", rooms=["tvw"], phone=True)
               for i in range(2)]
    for v in viewers:
        await wait_playing(v)
    server = psutil.Process(pages.server.proc.pid)  # type: ignore[union-attr]
    workers = [c for c in server.children() if "media.worker" in " ".join(c.cmdline())]
    assert len(workers) == 2, workers  # two viewers, two workers: the least loaded takes each
    for v in viewers:
        await v.evaluate(STREAM_MARK_JS)
    os.kill(workers[0].pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 5.0
    results: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        results = [await v.evaluate(FRESH_FRAMES_JS) for v in viewers]
        if all(int(r["frames"]) >= 5 for r in results) and any(r["replaced"] for r in results):  # type: ignore[call-overload]
            break
    assert all(int(r["frames"]) >= 5 for r in results), results  # type: ignore[call-overload]
    assert sum(bool(r["replaced"]) for r in results) == 1, results  # only its viewer re-watched
    await screenshot(viewers[0], "live-after-worker-restart")
    await studio.click(tid("end"))
