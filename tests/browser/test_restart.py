"""A server restart with the pages open (SIGTERM, then the same port and data dir again), as
people would live it: the studio republishes by itself, every viewer's video comes back (new
decoded frames within 5 s of the republish), a chat typed while the server was down arrives
once; and — once the server keeps them — the chat history and the likes total are back.

One restart (module fixture) serves every test here: the scenario costs seconds of CPU.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import BROWSER, COUNT_FRAMES_JS, Pages, screenshot, tid
from tests.browser.test_media import wait_playing
from tests.conftest import ServerProcess, free_port

pytestmark = [*BROWSER, pytest.mark.timeout(180)]

OFFLINE_TEXT = "typed while the server was down"
BEFORE_TEXT = "said before the restart"
# While the server is down the SDK's reconnect attempts are refused: Chromium logs each one.
REFUSED = r"WebSocket connection to '.*' failed"


@dataclass
class Restart:
    pages: Pages
    studio: Page
    viewers: list[Page]
    down_ms: int = 0  # when the old process had exited (ms since the epoch)
    republished_ms: int = 0  # when the studio's stream was connected again
    notes: dict[str, object] = field(default_factory=dict)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def restart(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Restart]:
    data: Path = tmp_path_factory.mktemp("restart") / "data"
    port = free_port()
    first = ServerProcess(data, port).start()
    pages = Pages(browser, first)
    pages.allow(REFUSED)
    second: ServerProcess | None = None
    try:
        studio = await pages.open("/studio/rs1", sub="rs-host", role="streamer", rooms=["rs1"], name="Host")
        phone = await pages.open("/live/rs1", sub="rs-a", rooms=["rs1"], name="Ann", phone=True)
        desk = await pages.open("/live/rs1", sub="rs-b", rooms=["rs1"], name="Bo", locale="zh-CN")
        await expect(studio.locator(tid("preview-status"))).to_be_hidden()
        await studio.click(tid("go-live"))
        await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=20_000)
        await studio.evaluate("""() => {
            window.__published = [];
            window.souk.on("media", (ev) => {
                if (ev.kind === "publish" && ev.state === "connected") window.__published.push(Date.now());
            });
        }""")
        for viewer in (phone, desk):
            await wait_playing(viewer)
            await viewer.evaluate(COUNT_FRAMES_JS)
            await viewer.evaluate("""() => {
                window.__frameTimes = [];
                const v = document.querySelector('[data-testid="video"]');
                const step = () => { window.__frameTimes.push(Date.now()); v.requestVideoFrameCallback(step); };
                v.requestVideoFrameCallback(step);
            }""")
        await phone.fill(tid("chat-input"), BEFORE_TEXT)
        await phone.click(tid("chat-send"))
        for _ in range(3):
            await desk.click(tid("heart"))
        await expect(studio.locator(tid("likes"))).to_have_text("3", timeout=5000)
        await expect(desk.locator(tid("chat-text"), has_text=BEFORE_TEXT)).to_have_count(1)

        # SIGTERM: the server drains and exits; every page notices and waits.
        assert first.terminate(timeout=20) == 0
        r = Restart(pages, studio, [phone, desk], down_ms=now_ms())
        for page in (studio, phone, desk):
            await page.wait_for_function("() => document.body.dataset.conn !== 'open'", timeout=10_000)
        # A chat typed while the server is down: shown as being sent, not lost.
        await phone.fill(tid("chat-input"), OFFLINE_TEXT)
        await phone.click(tid("chat-send"))
        await expect(phone.locator(tid("chat-msg"), has_text=OFFLINE_TEXT)).to_have_attribute("data-state", "sending")
        await screenshot(phone, "restart-phone-while-down")

        second = ServerProcess(data, port).start(timeout=30)
        pages.server = second
        await studio.wait_for_function("(t) => window.__published.some((x) => x > t)", arg=r.down_ms, timeout=40_000)
        r.republished_ms = min(x for x in await studio.evaluate("() => window.__published") if x > r.down_ms)
        yield r
    finally:
        await pages.close()
        for proc in (first, second):
            if proc is not None:
                proc.stop()


async def test_video_comes_back_on_every_viewer_within_5s_of_the_republish(restart: Restart) -> None:
    for viewer in restart.viewers:
        await viewer.wait_for_function("(t) => window.__frameTimes.some((x) => x > t)", arg=restart.republished_ms,
                                       timeout=15_000)
        first_new = min(x for x in await viewer.evaluate("() => window.__frameTimes") if x > restart.down_ms)
        assert first_new - restart.republished_ms < 5000, (first_new - restart.republished_ms)
        await expect(viewer.locator(tid("video-status"))).to_have_attribute("data-state", "playing")
    # The studio never said "failed" while it was publishing again by itself.
    await expect(restart.studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected")
    # Its stream health counts the new connection from its start: never a negative bitrate.
    await expect(restart.studio.locator(tid("health-bitrate"))).not_to_have_text("–", timeout=5000)
    bitrate = float(await restart.studio.locator(tid("health-bitrate")).get_attribute("data-value") or 0)
    assert bitrate > 0, bitrate
    await screenshot(restart.viewers[0], "restart-phone-back")
    await screenshot(restart.studio, "restart-studio-back", full_page=True)
    restart.pages.assert_clean()


async def test_a_chat_typed_while_down_arrives_once(restart: Restart) -> None:
    phone, desk = restart.viewers
    mine = phone.locator(tid("chat-msg"), has_text=OFFLINE_TEXT)
    await expect(mine).to_have_attribute("data-state", "sent", timeout=15_000)
    await expect(mine).to_have_count(1)
    for page in (desk, restart.studio):
        await expect(page.locator(tid("chat-msg"), has_text=OFFLINE_TEXT)).to_have_count(1, timeout=10_000)
    await restart.studio.wait_for_timeout(1000)  # a second copy would have come by now
    for page in (phone, desk, restart.studio):
        await expect(page.locator(tid("chat-msg"), has_text=OFFLINE_TEXT)).to_have_count(1)
    restart.pages.assert_clean()


async def test_chat_history_and_likes_are_back_on_every_page(restart: Restart) -> None:
    for page in [*restart.viewers, restart.studio]:
        await expect(page.locator(tid("chat-msg"), has_text=BEFORE_TEXT)).to_have_count(1, timeout=5000)
        await expect(page.locator(tid("likes"))).to_have_text("3")
