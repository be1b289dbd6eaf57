"""The replay page in Chromium: a recorded live plays from the Range-served file, its chapters
are a product list, a tap jumps to when the product was shown, Buy buys the open sale."""

from __future__ import annotations

import asyncio
import time

from playwright.async_api import expect

from client_sdk import Client
from media.testing import loopback
from media.testing.peers import PublisherPeer
from tests.browser.conftest import BROWSER, COUNT_FRAMES_JS, Pages, screenshot, tid
from tests.conftest import token

pytestmark = BROWSER


async def record_a_live(url: str, room: str) -> dict[str, str]:
    """10 s of the stamped camera recorded in ``room``, with a pin at ~2 s and ~6 s; then a
    sale of the second product opens in the room's next live (what the page's Buy button buys)."""
    with loopback():
        pub = PublisherPeer(codec="VP8")
        async with Client(url, token("rp-host", "streamer", rooms=[room])) as st:
            await st.request("room_create", room=room, title="Tea time", record=True)
            tea = (await st.request("product_create", title="Jasmine tea", price=990, stock=9,
                                    image="/static/products/serum.svg"))["product"]
            mask = (await st.request("product_create", title="Silk mask", price=1990, stock=9,
                                     image="/static/products/mask.svg"))["product"]
            await st.request("room_state", room=room, state="live")
            reply = await st.request("publish", room=room, sdp=await pub.offer())
            started = time.monotonic()
            await pub.accept(reply["sdp"])
            await asyncio.sleep(2)
            await st.request("pin", room=room, product=tea["id"])
            await asyncio.sleep(4)
            await st.request("pin", room=room, product=mask["id"])
            await asyncio.sleep(started + 10 - time.monotonic())
            await st.request("room_state", room=room, state="ended")
            # the next live (no camera yet): nothing sells in an ended live, a new one sells
            await st.request("room_state", room=room, state="live")
            await st.request("sale_create", room=room, product=mask["id"], price=990, stock=5,
                             duration_s=600)
        await pub.close()
    return {"tea": tea["id"], "mask": mask["id"]}


async def test_replay_page_plays_jumps_to_chapters_and_buys(pages: Pages) -> None:
    room = "replay-tea"
    await record_a_live(pages.server.url, room)
    page = await pages.open(f"/replay/{room}", sub="rp-viewer", rooms=[room], phone=True)
    chapters = page.locator(tid("chapter"))
    await expect(chapters).to_have_count(2)
    await expect(chapters.nth(0)).to_contain_text("Jasmine tea")
    await expect(page.locator(tid("title"))).to_have_text("Tea time")
    await expect(page.locator(tid("live-item"))).to_have_count(1)
    # only the product with an open sale has a Buy button
    await expect(chapters.nth(0).locator(tid("chapter-buy"))).to_have_count(0)
    await expect(chapters.nth(1).locator(tid("chapter-buy"))).to_have_text("Buy")

    await page.evaluate(COUNT_FRAMES_JS)
    await page.evaluate("() => document.querySelector('[data-testid=\"video\"]').play()")
    await page.wait_for_function("() => window.__frames >= 20", timeout=15_000)
    at = float(await chapters.nth(1).get_attribute("data-at") or -1)
    assert 5.0 < at < 7.5, at
    await page.click(f'{tid("chapter")} >> nth=1 >> {tid("chapter-jump")}')
    before = await page.evaluate("() => window.__frames")
    await page.wait_for_function(f"() => window.__frames >= {before + 10}", timeout=15_000)
    now = await page.evaluate("() => document.querySelector('[data-testid=\"video\"]').currentTime")
    assert at - 0.1 <= now < at + 1.0, (at, now)  # landed there, and plays on from there
    await screenshot(page, "replay-phone")

    await page.click(f'{tid("chapter")} >> nth=1 >> {tid("chapter-buy")}')
    await expect(page.locator(tid("toast"))).to_contain_text("Ordered")
    desk = await pages.open(f"/replay/{room}", sub="rp-viewer2", rooms=[room], locale="zh-CN")
    await expect(desk.locator(tid("chapter")).nth(0)).to_contain_text("讲解")
    await desk.evaluate(COUNT_FRAMES_JS)
    await desk.evaluate("() => document.querySelector('[data-testid=\"video\"]').play()")
    await desk.wait_for_function("() => window.__frames >= 10", timeout=15_000)
    await screenshot(desk, "replay-desktop")
    pages.assert_clean()
