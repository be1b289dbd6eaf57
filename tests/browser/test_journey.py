"""The whole journey as people live it, on a phone (390×844, in Chinese) and on a desktop
(1280×800, in English): the studio goes live → two viewers watch → a product is pinned → a
flash sale → a buy with a quantity → a team buy joined through a shared link → a question →
answered in the linked community group → the merchant's numbers. Every page is checked for
console errors, failed requests and raw ids, and screenshots of each step go to
reports/screens/ for a person to look at."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, require_media, screenshot, tid
from tests.browser.test_commerce import add_product, start_sale
from tests.browser.test_media import FRAMES_JS, wait_playing
from tests.browser.test_pages import RAW_ID, visible_text
from tests.conftest import token

pytestmark = [*BROWSER, pytest.mark.timeout(240)]

TEXT = {
    "zh": {"product": "龙井明前茶 250 克", "team": "帆布托特包", "question": "这个茶是今年的新茶吗？",
           "answer": "是的，四月初采摘", "chat": "主播好！👋", "ordered": "已下单", "done": "拼团成功"},
    "en": {"product": "Longjing spring tea 250 g", "team": "Canvas tote bag", "question": "Is this year's harvest?",
           "answer": "Yes, picked in early April", "chat": "Hello from Berlin 👋", "ordered": "Ordered", "done": "complete"},
}


@pytest.mark.parametrize("device", ["phone-zh", "desktop-en"])
async def test_the_whole_journey(pages: Pages, device: str) -> None:
    await require_media(pages)
    phone = device.startswith("phone")
    lang = device.split("-")[1]
    locale = "zh-CN" if lang == "zh" else "en-US"
    words = TEXT[lang]
    room = f"journey-{device}"
    shot = f"journey-{device}"

    async def open_page(path: str, **kw: object) -> Page:
        return await pages.open(path, phone=phone, locale=locale, **kw)  # type: ignore[arg-type]

    # A community group linked to the room, for the questions.
    async with Client(pages.server.url, token(f"boss-{device}", "streamer", rooms=[room])) as boss:
        group = (await boss.request("group_create", tier="core", topic="tea",
                                    title="茶友核心群" if lang == "zh" else "Tea lovers"))["group"]["id"]

    # 1. The studio goes live.
    studio = await open_page(f"/studio/{room}", sub=f"host-{device}", role="streamer", rooms=[room],
                             name="主播小美" if lang == "zh" else "Mia")
    await studio.fill(tid("title-input"), "春茶上新专场" if lang == "zh" else "Spring tea special")
    await studio.locator(tid("title-form")).locator("button").click()
    await studio.fill(tid("link-input"), group)
    await studio.locator(tid("link-form")).locator("button").click()
    await expect(studio.locator(tid("link-status"))).not_to_be_empty()
    await expect(studio.locator(tid("preview-status"))).to_be_hidden()
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected", timeout=20_000)
    await screenshot(studio, f"{shot}-1-studio-live")
    member = await open_page(f"/group/{group}?room={room}", sub=f"m-{device}", role="member", rooms=[room],
                             name="茶友阿梅" if lang == "zh" else "Mei")

    # 2. Two viewers watch.
    viewer_a = await open_page(f"/live/{room}", sub=f"a-{device}", rooms=[room], name="王小刚" if lang == "zh" else "Tom")
    viewer_b = await open_page(f"/live/{room}", sub=f"b-{device}", rooms=[room], name="李娜" if lang == "zh" else "Lily")
    for viewer in (viewer_a, viewer_b):
        await wait_playing(viewer)
        assert (await viewer.evaluate(FRAMES_JS))["frames"] >= 10
        await expect(viewer.locator(tid("title"))).to_have_text("春茶上新专场" if lang == "zh" else "Spring tea special")
    await viewer_b.fill(tid("chat-input"), words["chat"])
    await viewer_b.click(tid("chat-send"))
    await expect(viewer_a.locator(tid("chat-text"), has_text=words["chat"])).to_be_visible()
    for _ in range(4):
        await viewer_a.click(tid("heart"))
    await expect(studio.locator(tid("likes"))).to_have_text("4", timeout=5000)
    await expect(studio.locator(tid("fan"))).not_to_have_count(0)

    # 3. A product with a picture is pinned: it shows over the video.
    await add_product(studio, words["product"], "128", "50", "/static/products/tea.svg")
    await studio.locator(tid("product"), has_text=words["product"]).locator(tid("pin")).click()
    await expect(viewer_a.locator(tid("pinned-title"))).to_have_text(words["product"])
    await screenshot(viewer_a, f"{shot}-2-viewer-pinned")

    # 4. A flash sale: the pop-up with its countdown and stock.
    await start_sale(studio, "99", "20", "3", duration="300")
    flash = viewer_a.locator(tid("flash-card"))
    await expect(flash).to_be_visible()
    await expect(flash.locator(tid("sale-countdown"))).to_have_text(re.compile(r"\d:\d\d"))
    await screenshot(viewer_a, f"{shot}-3-viewer-flash-sale")

    # 5. Buy two with the stepper.
    await flash.locator(tid("qty-plus")).click()
    await flash.locator(tid("buy")).click()
    await expect(flash.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered")
    await expect(flash.locator(tid("sale-stock"))).to_have_attribute("data-left", "18")
    await expect(viewer_a.locator(tid("order"))).to_have_count(1)
    await expect(viewer_a.locator(tid("order-status"))).to_have_text(words["ordered"])
    await expect(viewer_b.locator(f'{tid("bag")} {tid("sale-stock")}')).to_have_attribute("data-left", "18")
    await screenshot(viewer_a, f"{shot}-4-viewer-bought")

    # 6. A team buy: A opens a team and shares the link; a friend follows it and joins.
    await add_product(studio, words["team"], "60", "20", "/static/products/tote.svg")
    await studio.fill(tid("teambuy-price"), "39.90")
    await studio.fill(tid("teambuy-size"), "2")
    await studio.click(tid("teambuy-start"))
    if phone:
        await viewer_a.click(tid("flash-close"))
        await viewer_a.click(tid("bag-open"))
        await screenshot(viewer_a, f"{shot}-5-viewer-bag")
    await viewer_a.locator(tid("team-open")).click()
    link = await viewer_a.locator(tid("share-link")).input_value()
    assert "token" not in link, link
    await screenshot(viewer_a, f"{shot}-6-viewer-share")
    await viewer_a.click(tid("modal-close"))
    friend = await open_page("/" + link.split("//", 1)[1].split("/", 1)[1])  # demo mode: a token of its own
    await expect(friend.locator(tid("join-sheet-body"))).to_have_attribute("data-state", "open")
    await screenshot(friend, f"{shot}-7-friend-join")
    await friend.click(tid("join-team"))
    await expect(friend.locator(tid("join-result"))).to_have_attribute("data-status", "confirmed")
    team = viewer_a.locator(tid("team-result"))
    await expect(team).to_have_attribute("data-status", "confirmed")
    await expect(team).to_contain_text(words["done"])
    if phone:
        await viewer_a.click(tid("bag-close"))

    # 7. A question from viewer B, answered in the linked group, back on the viewer page.
    if phone:
        await viewer_b.click(tid("qa-open"))
    await viewer_b.fill(tid("ask-input"), words["question"])
    await viewer_b.click(tid("ask-send"))
    mirrored = member.locator(tid("question"), has_text=words["question"])
    await mirrored.locator(tid("reply")).click()
    await member.fill(tid("chat-input"), words["answer"])
    await member.click(tid("chat-send"))
    answer = viewer_b.locator(tid("question"), has_text=words["question"]).locator(tid("q-answer"))
    await expect(answer).to_contain_text(words["answer"])
    await expect(studio.locator(tid("question"), has_text=words["question"])).to_have_attribute("data-status", "answered")
    await expect(member.locator(tid("notice"))).not_to_have_count(0)  # the sale's notice reached the group
    await screenshot(member, f"{shot}-8-group")
    await screenshot(viewer_b, f"{shot}-9-viewer-answered")
    await screenshot(studio, f"{shot}-10-studio", full_page=True)

    # 8. The merchant's numbers: the orders, by title.
    dash = await open_page(f"/dashboard?room={room}&group={group}&token={token(f'host-{device}', 'streamer', rooms=[room])}",
                           wait_conn=False)
    await dash.wait_for_function("() => document.body.dataset.loaded === '1'", timeout=15_000)
    await expect(dash.locator('[data-metric="orders"]')).to_have_attribute("data-value", "3")
    await expect(dash.locator(tid("sales-chart"))).to_contain_text(words["product"][:8])
    await screenshot(dash, f"{shot}-11-dashboard", full_page=True)

    for page in (studio, viewer_a, viewer_b, friend, member, dash):
        assert not RAW_ID.search(await visible_text(page)), page.url
    pages.assert_clean()
