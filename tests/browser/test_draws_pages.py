"""Lucky draws (福袋) in the pages: the studio starts one and watches the entrants grow; a viewer
on a phone (Chinese) sees the badge with its countdown, opens it, sends the keyword with one
tap and is in; the result reaches the badge and the sheet (won, with the prize in My orders);
the dashboard counts the draw. On a desktop (English) a watch-time draw asks the viewer to stay,
then lets them join. Screenshots of every step go to reports/screens/."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, require_op, screenshot, tid
from tests.browser.test_pages import RAW_ID, visible_text
from tests.conftest import token

pytestmark = BROWSER


async def short_duration(studio: Page, seconds: int) -> None:
    """The studio offers 1 to 10 minutes; a test adds a shorter choice to the same select."""
    await studio.evaluate("""(s) => {
        const sel = document.querySelector('[data-testid="draw-duration"]');
        const o = document.createElement('option');
        o.value = String(s); o.textContent = s + ' s'; sel.append(o); sel.value = String(s);
    }""", seconds)


async def test_keyword_draw_from_the_studio_to_a_phone_in_chinese(pages: Pages) -> None:
    room = "lucky1"
    async with Client(pages.server.url, token("lucky-seller", "streamer", rooms=[room])) as st:
        await require_op(st, "draws", room=room)
        await st.request("product_create", title="桂花乌龙茶礼盒", price=8800, stock=20,
                         image="/static/products/tea.svg")
    studio = await pages.open(f"/studio/{room}", sub="lucky-seller", role="streamer", rooms=[room],
                              name="Seller")
    viewer = await pages.open(f"/live/{room}", sub="lucky-fan", rooms=[room], name="小红",
                              phone=True, locale="zh-CN")

    # The studio: a product prize for 2 winners, entered by saying "想要" in the chat.
    await studio.fill(tid("draw-title"), "Tea gift bag")
    await studio.select_option(tid("draw-prize-kind"), "product")
    await expect(studio.locator(f'{tid("draw-product")} option:checked')).to_have_text("桂花乌龙茶礼盒")
    await studio.fill(tid("draw-winners"), "2")
    await studio.select_option(tid("draw-condition"), "keyword")
    await studio.fill(tid("draw-keyword"), "想要")
    await short_duration(studio, 20)
    await studio.click(tid("draw-start"))
    card = studio.locator(tid("draw-card"))
    await expect(card.locator(tid("draw-phase"))).to_have_text("Open")
    await expect(card.locator(tid("draw-entrants"))).to_have_text("0")

    # The phone: the badge over the video, with the countdown.
    badge = viewer.locator(tid("draw-badge"))
    await expect(badge).to_be_visible()
    await expect(badge).to_contain_text("福袋")
    await expect(badge.locator(tid("draw-countdown"))).to_have_text(re.compile(r"0:\d\d"))
    await screenshot(viewer, "draw-phone-zh-badge")
    await badge.click()
    sheet = viewer.locator(tid("draw-sheet"))
    await expect(sheet.locator(tid("draw-prize"))).to_have_text("奖品：桂花乌龙茶礼盒")
    await expect(sheet.locator(tid("draw-step-keyword"))).to_contain_text("想要")
    await screenshot(viewer, "draw-phone-zh-sheet")
    await sheet.locator(tid("draw-say")).click()  # one tap sends the keyword as a chat
    await expect(sheet.locator(tid("draw-entered"))).to_have_text("已参与 ✓ 等待开奖")
    await expect(viewer.locator(tid("chat-list"))).to_contain_text("想要")  # still a chat
    await screenshot(viewer, "draw-phone-zh-entered")

    # Another viewer enters by chat from the SDK; the studio sees the entrants grow.
    async with Client(pages.server.url, token("lucky-other", rooms=[room], name="Other")) as other:
        await other.join(room)
        entered = other.events("user:lucky-other", ["draw_entered"])
        await other.chat(room, "我也想要!")
        await entered.next(10)
    await expect(card.locator(tid("draw-entrants"))).to_have_text("2", timeout=5_000)
    await screenshot(studio, "draw-desktop-en-studio-open")

    # The result: both win (2 prizes, 2 entrants); the phone says so and shows My orders.
    await expect(card.locator(tid("draw-phase"))).to_have_text("Drawn", timeout=30_000)
    await expect(card.locator(tid("draw-winners"))).to_contain_text("小*")
    await expect(badge).to_have_attribute("data-won", "1", timeout=5_000)
    await expect(sheet.locator(tid("draw-result"))).to_have_text("🎉 恭喜中奖！奖品已放入我的订单")
    await expect(sheet.locator(tid("draw-winners"))).to_contain_text("小*")
    await screenshot(viewer, "draw-phone-zh-won")
    await screenshot(studio, "draw-desktop-en-studio-done")
    await sheet.locator(tid("draw-orders")).click()
    await expect(viewer.locator(tid("orders"))).to_contain_text("桂花乌龙茶礼盒")
    await screenshot(viewer, "draw-phone-zh-orders")
    for page in (viewer, studio):
        assert not RAW_ID.search(await visible_text(page)), await visible_text(page)

    # The dashboard counts it: one draw, two entrants.
    dash = await pages.open(f"/dashboard?room={room}", wait_conn=False)
    await dash.wait_for_function("() => document.body.dataset.loaded === '1'", timeout=15_000)
    await expect(dash.locator('[data-metric="draws"]')).to_have_attribute("data-value", "1")
    await expect(dash.locator('[data-metric="draw_entrants"]')).to_have_attribute("data-value", "2")
    await expect(dash.locator(tid("draws-chart"))).to_contain_text("Tea gift bag")
    await screenshot(dash, "draw-desktop-en-dashboard", full_page=True)
    pages.assert_clean()


async def test_watch_time_draw_on_a_desktop_in_english(pages: Pages) -> None:
    room = "lucky2"
    viewer = await pages.open(f"/live/{room}", sub="lucky-watcher", rooms=[room], name="Alice")
    async with Client(pages.server.url, token("lucky-host", "streamer", rooms=[room])) as st:
        await require_op(st, "draws", room=room)
        d = (await st.request("draw_create", room=room, title="Stay and win", winners=1, duration_s=9,
                              prize={"coupon": {"kind": "amount", "value": 500, "title": "¥5 off"}},
                              condition={"watch_s": 3}))["draw"]
    badge = viewer.locator(tid("draw-badge"))
    await expect(badge).to_be_visible()
    await badge.click()
    sheet = viewer.locator(tid("draw-sheet"))
    await expect(sheet.locator(tid("draw-prize"))).to_contain_text("5.00 coupon")
    enter = sheet.locator(tid("draw-enter"))
    await expect(sheet.locator(tid("draw-step-watch"))).to_contain_text("Stay in the live for 3 s")
    await screenshot(viewer, "draw-desktop-en-stay")
    await expect(enter).to_have_text("Join the draw", timeout=6_000)  # the server's 3 s have passed
    await expect(enter).to_be_enabled()
    await enter.click()
    await expect(sheet.locator(tid("draw-entered"))).to_have_text("You're in ✓ good luck")
    await expect(sheet.locator(tid("draw-entrants"))).to_have_text("1")
    await screenshot(viewer, "draw-desktop-en-entered")
    await expect(sheet.locator(tid("draw-result"))).to_be_visible(timeout=20_000)
    await expect(sheet.locator(tid("draw-result"))).to_have_text(
        "🎉 You won! Your coupon is ready for your next order")  # the only entrant
    await expect(badge).to_have_attribute("data-phase", "done")
    await screenshot(viewer, "draw-desktop-en-result")
    async with Client(pages.server.url, token("lucky-watcher", rooms=[room])) as me:
        mine = (await me.request("coupons_mine"))["coupons"]
        assert [c["source"] for c in mine] == ["draw"] and d["id"]
    assert not RAW_ID.search(await visible_text(viewer))
    pages.assert_clean()
