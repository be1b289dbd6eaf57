"""Commerce in the pages: the studio creates a product with a picture, pins it and starts a
flash sale; the viewer sees it pinned over the video, in the flash-sale pop-up and in the bag,
with a countdown that agrees with the server clock; buys with a quantity up to the per-person
limit; sees My orders by title; a sold-out sale collapses; a scheduled sale counts down; a team
buy is shared by link and joined from it; a reload mid-sale keeps orders, limits and the team;
the end of the live shows the end card and stops selling."""

from __future__ import annotations

import re
import time

from playwright.async_api import Page, expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, require_op, screenshot, tid
from tests.browser.test_pages import RAW_ID, visible_text
from tests.conftest import token

pytestmark = BROWSER


async def add_product(studio: Page, title: str, price: str, stock: str, image: str = "") -> None:
    """Create a product from the studio's form (the form resets after it) and wait for it."""
    await studio.fill(tid("product-title"), title)
    await studio.fill(tid("product-price"), price)
    await studio.fill(tid("product-stock"), stock)
    if image:
        await studio.fill(tid("product-image-url"), image)
    await studio.click(tid("product-create"))
    await expect(studio.locator(f'{tid("sale-product")} option:checked')).to_have_text(title)
    await expect(studio.locator(tid("product-title"))).to_have_value("")
    await expect(studio.locator(tid("product-image-url"))).to_have_value("")


async def start_sale(studio: Page, price: str, stock: str, limit: str, *, duration: str = "60",
                     starts_in: str = "0") -> None:
    await studio.fill(tid("sale-price"), price)
    await studio.fill(tid("sale-stock"), stock)
    await studio.fill(tid("sale-duration"), duration)
    await studio.fill(tid("sale-limit"), limit)
    await studio.fill(tid("sale-starts-in"), starts_in)
    await studio.click(tid("sale-start"))


async def test_flash_sale_countdown_quantity_limit_and_stock(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("probe", "viewer", rooms=["sale1"])) as probe:
        await require_op(probe, "sale_create", room="sale1")
    studio = await pages.open("/studio/sale1", sub="seller", role="streamer", rooms=["sale1"], name="Seller")
    viewer = await pages.open("/live/sale1", sub="buyer-web", rooms=["sale1"], name="Web Buyer")

    # A product with a picture, pinned: the viewer's overlay card shows it with its price.
    await add_product(studio, "Longjing tea 250 g", "20.00", "10", "/static/products/tea.svg")
    await studio.locator(tid("product"), has_text="Longjing tea 250 g").locator(tid("pin")).click()
    pinned = viewer.locator(tid("pinned"))
    await expect(pinned.locator(tid("pinned-title"))).to_have_text("Longjing tea 250 g")
    await expect(pinned.locator(tid("pinned-price"))).to_contain_text("20.00")
    assert await pinned.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")

    # A flash sale: 5 units at 9.90, 60 s, three per person.
    started_ms = time.time_ns() // 1_000_000
    await start_sale(studio, "9.90", "5", "3")
    flash = viewer.locator(tid("flash-card"))  # pops up over the video
    await expect(flash).to_be_visible()
    await expect(flash.locator(tid("sale-phase"))).to_have_text("on now")
    await expect(flash.locator(tid("sale-stock"))).to_have_attribute("data-left", "5")
    await expect(flash.locator(tid("sale-price"))).to_contain_text("9.90")
    await expect(flash.locator(tid("sale-price"))).to_contain_text("20.00")  # the list price, struck
    # The pinned card now shows the live sale's price and a Buy button.
    await expect(pinned.locator(tid("pinned-price"))).to_contain_text("9.90")
    await expect(pinned.locator(tid("pinned-buy"))).to_have_text("Buy")
    # The countdown agrees with the server clock (same machine: within a second) and ticks.
    countdown = flash.locator(tid("sale-countdown"))
    left1 = int(await countdown.get_attribute("data-ms-left") or 0)
    expected = started_ms + 60_000 - time.time_ns() // 1_000_000
    assert abs(left1 - expected) < 1500, (left1, expected)
    assert re.fullmatch(r"ends in [01]:\d\d", await countdown.inner_text())
    await viewer.wait_for_timeout(1100)
    left2 = int(await countdown.get_attribute("data-ms-left") or 0)
    assert 700 < left1 - left2 < 2500

    # Buy two with the quantity stepper, then the last one the limit allows.
    await flash.locator(tid("qty-plus")).click()
    await expect(flash.locator(tid("qty"))).to_have_text("2")
    await flash.locator(tid("buy")).click()
    await expect(flash.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered")
    await expect(flash.locator(tid("buy-result"))).to_contain_text("×2")
    await expect(flash.locator(tid("sale-stock"))).to_have_attribute("data-left", "3")
    await expect(flash.locator(tid("qty-plus"))).to_be_disabled()  # one left under the limit
    await flash.locator(tid("buy")).click()
    await expect(flash.locator(tid("sale-stock"))).to_have_attribute("data-left", "2")
    await expect(flash.locator(tid("buy"))).to_be_disabled()
    await expect(flash.locator(tid("buy"))).to_have_text("Limit reached")
    # The bag's card says the same; My orders lists both by title, never by id.
    card = viewer.locator(f'{tid("bag")} {tid("sale-card")}')
    await expect(card.locator(tid("buy"))).to_have_text("Limit reached")
    orders = viewer.locator(tid("order"))
    await expect(orders).to_have_count(2)
    await expect(orders.first.locator(tid("order-title"))).to_have_text("Longjing tea 250 g")
    assert not RAW_ID.search(await visible_text(viewer))
    await screenshot(viewer, "live-desktop-flash-sale")

    # Two other buyers empty it: sold out, the bag's card collapses, the pop-up folds away.
    sale_id = await card.get_attribute("data-sale")
    assert sale_id
    async with Client(url, token("b2", "viewer", rooms=["sale1"])) as c:
        await c.join("sale1")
        await c.buy(sale_id, 2)
    await expect(card).to_have_attribute("data-phase", "sold_out")
    await expect(card).to_have_class(re.compile(r"\bgone\b"))
    await expect(viewer.locator(f'{tid("gone-sales")} {tid("sale-card")}')).to_have_count(1)
    await expect(viewer.locator(tid("flash"))).to_be_hidden(timeout=8000)

    # The studio's live sales panel counts the orders.
    await expect(studio.locator(tid("stat-orders"))).to_have_text("3", timeout=8000)
    await expect(studio.locator(tid("stat-units"))).to_have_text("5")
    await expect(studio.locator(tid("stat-revenue"))).to_contain_text("49.50")
    await expect(studio.locator(tid("sale-card")).locator(tid("sale-stock"))).to_have_attribute("data-left", "0")
    await screenshot(studio, "studio-desktop-sales", full_page=True)
    pages.assert_clean()


async def test_scheduled_sale_counts_down_to_its_start_then_sells(pages: Pages) -> None:
    async with Client(pages.server.url, token("probe3", "viewer", rooms=["sale2"])) as probe:
        await require_op(probe, "sale_create", room="sale2")
    studio = await pages.open("/studio/sale2", sub="seller3", role="streamer", rooms=["sale2"])
    viewer = await pages.open("/live/sale2", sub="early-bird", rooms=["sale2"], phone=True, locale="zh-CN")
    await add_product(studio, "Jasmine tea 100 g", "15", "5")
    await start_sale(studio, "5", "2", "1", starts_in="3")
    flash = viewer.locator(tid("flash-card"))
    await expect(flash.locator(tid("sale-phase"))).to_have_text("即将开始")
    await expect(flash.locator(tid("sale-countdown"))).to_have_text(re.compile(r"0:0[1-3] 后开抢"))
    await expect(flash.locator(tid("buy"))).to_be_disabled()
    await expect(flash.locator(tid("stepper"))).to_be_hidden()  # one per person: no quantity
    await screenshot(viewer, "live-phone-zh-sale-soon")
    # The server starts it on its clock; the card turns live and the buy goes through.
    await expect(flash.locator(tid("sale-phase"))).to_have_text("进行中", timeout=8000)
    await flash.locator(tid("buy")).click()
    await expect(flash.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered")
    await expect(flash.locator(tid("sale-stock"))).to_have_attribute("data-left", "1")
    await expect(flash.locator(tid("buy"))).to_have_text("已达限购")
    pages.assert_clean()


async def start_team_buy(studio: Page, title: str) -> None:
    await add_product(studio, title, "60", "20", "/static/products/tote.svg")
    await studio.fill(tid("teambuy-price"), "39.90")
    await studio.fill(tid("teambuy-size"), "2")
    await studio.fill(tid("teambuy-window"), "600")
    await studio.click(tid("teambuy-start"))


async def test_team_buy_shared_by_link_and_joined_from_it(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("probe2", "viewer", rooms=["team1"])) as probe:
        await require_op(probe, "teambuy_create", room="team1")
    studio = await pages.open("/studio/team1", sub="seller2", role="streamer", rooms=["team1"])
    leader = await pages.open("/live/team1", sub="tb-leader", name="王小刚", rooms=["team1"], phone=True,
                              locale="zh-CN")
    await start_team_buy(studio, "帆布托特包")

    # The leader opens a team from the bag: the share sheet offers a link without any token.
    await leader.click(tid("bag-open"))
    offer = leader.locator(tid("teambuy-card"))
    await expect(offer).to_have_count(1)
    await offer.locator(tid("team-open")).click()
    link = await leader.locator(tid("share-link")).input_value()
    assert "token" not in link and re.search(r"/live/team1\?team=t\w+$", link), link
    await screenshot(leader, "live-phone-zh-team-share")
    await leader.click(tid("modal-close"))
    mine = offer.locator(tid("team-result"))
    await expect(mine).to_have_attribute("data-status", "open")
    await expect(mine).to_contain_text("1/2")
    await expect(offer.locator(tid("team-join"))).to_have_count(0)  # no Join on one's own team

    # The leader's own link opens "this is your team", with no Join.
    path = link.split("127.0.0.1", 1)[1].split("/", 1)[1]
    own = await pages.open(f"/{path}", sub="tb-leader", name="王小刚", rooms=["team1"], phone=True, locale="zh-CN")
    await expect(own.locator(tid("join-sheet-body"))).to_have_attribute("data-state", "mine")
    await expect(own.locator(tid("join-team"))).to_have_count(0)

    # A friend follows the link (demo mode: a viewer token of their own): the join sheet names
    # the leader masked, shows who is in and the time left; Join fills the team.
    friend = await pages.open(f"/{path}", phone=True)
    body = friend.locator(tid("join-sheet-body"))
    await expect(body).to_have_attribute("data-state", "open")
    await expect(body).to_contain_text("王* invites you")
    await expect(body.locator(tid("team-member"))).to_have_count(1)
    await expect(body).to_contain_text(re.compile(r"\d+:\d\d left"))
    assert "小刚" not in await body.inner_text()
    await screenshot(friend, "live-phone-en-team-join")
    await friend.click(tid("join-team"))
    await expect(friend.locator(tid("join-result"))).to_have_attribute("data-status", "confirmed")

    # The leader sees the team complete, the order confirmed, by title.
    await expect(mine).to_have_attribute("data-status", "confirmed")
    await expect(mine).to_contain_text("2/2")
    order = leader.locator(tid("order"))
    await expect(order).to_have_count(1)
    await expect(order).to_have_attribute("data-status", "confirmed")
    await expect(order.locator(tid("order-title"))).to_have_text("帆布托特包")
    await screenshot(leader, "live-phone-zh-team-done")
    pages.assert_clean()


async def test_reload_mid_sale_keeps_orders_limits_and_the_team(pages: Pages) -> None:
    async with Client(pages.server.url, token("boss-r", "streamer", rooms=["reload1"])) as boss:
        await require_op(boss, "sale_create", room="reload1")
        studio = await pages.open("/studio/reload1", sub="seller-r", role="streamer", rooms=["reload1"])
        await add_product(studio, "Oolong 100 g", "30", "20", "/static/products/tea.svg")
        await start_sale(studio, "12.50", "10", "2")
        await start_team_buy(studio, "Tote bag")
    viewer = await pages.open("/live/reload1", sub="reloader", rooms=["reload1"], name="Re Loader")
    flash = viewer.locator(tid("flash-card"))
    await flash.locator(tid("qty-plus")).click()
    await flash.locator(tid("buy")).click()
    await expect(flash.locator(tid("buy"))).to_have_text("Limit reached")
    offer = viewer.locator(tid("teambuy-card"))
    await offer.locator(tid("team-open")).click()
    await viewer.click(tid("modal-close"))
    await expect(offer.locator(tid("team-result"))).to_have_attribute("data-status", "open")
    for _ in range(3):
        await viewer.click(tid("heart"))
    await expect(viewer.locator(tid("likes"))).to_have_text("3", timeout=5000)

    await viewer.reload()
    await viewer.wait_for_function("() => document.body.dataset.ready === '1'")
    orders = viewer.locator(tid("order"))
    await expect(orders).to_have_count(2)  # orders_mine: the sale's and the team's
    await expect(viewer.locator(tid("order"), has_text="Oolong 100 g")).to_have_count(1)
    await expect(viewer.locator(tid("order"), has_text="Tote bag")).to_have_attribute("data-status", "pending")
    card = viewer.locator(f'{tid("bag")} {tid("sale-card")}')
    await expect(card.locator(tid("buy"))).to_have_text("Limit reached")
    await expect(card.locator(tid("buy"))).to_be_disabled()
    team = offer.locator(tid("team-result"))
    await expect(team).to_have_attribute("data-status", "open")
    await expect(offer.locator(tid("team-open"))).to_be_disabled()  # one open team at a time
    await expect(viewer.locator(tid("likes"))).to_have_text("3")
    await screenshot(viewer, "live-desktop-after-reload")
    pages.assert_clean()


async def test_reload_shows_a_completed_team_with_its_members(pages: Pages) -> None:
    studio = await pages.open("/studio/reload2", sub="seller-t", role="streamer", rooms=["reload2"])
    await start_team_buy(studio, "Tote bag two")
    viewer = await pages.open("/live/reload2", sub="reloader-t", rooms=["reload2"], name="Te Am")
    offer = viewer.locator(tid("teambuy-card"))
    await offer.locator(tid("team-open")).click()
    await viewer.click(tid("modal-close"))
    team_id = await offer.locator(tid("team-result")).get_attribute("data-team")
    async with Client(pages.server.url, token("friend-t", "viewer", rooms=["reload2"])) as friend:
        await friend.join("reload2")
        await friend.team_join(str(await offer.get_attribute("data-offer")), str(team_id))
    await expect(offer.locator(tid("team-result"))).to_contain_text("2/2")
    await viewer.reload()
    await viewer.wait_for_function("() => document.body.dataset.ready === '1'")
    # A complete team is no longer in the room's snapshot: only teams_mine brings back its
    # members ("2/2"); without it the page knows the status from the order alone.
    result = offer.locator(tid("team-result"))
    await expect(result).to_have_attribute("data-status", "confirmed")
    await expect(result).to_contain_text("2/2", timeout=3000)


async def test_ending_the_live_shows_the_end_card_and_stops_selling(pages: Pages) -> None:
    studio = await pages.open("/studio/end1", sub="seller-e", role="streamer", rooms=["end1"])
    viewer = await pages.open("/live/end1", sub="fan-e", rooms=["end1"], phone=True, locale="zh-CN")
    await add_product(studio, "Silk scarf", "88", "10", "/static/products/tote.svg")
    await start_sale(studio, "66", "5", "1")
    await studio.fill(tid("teambuy-price"), "70")
    await studio.fill(tid("teambuy-size"), "2")
    await studio.click(tid("teambuy-start"))
    await expect(viewer.locator(tid("flash-card"))).to_be_visible()
    await viewer.locator(f'{tid("flash-card")} {tid("buy")}').click()
    await expect(viewer.locator(tid("order"))).to_have_count(1)
    await studio.click(tid("go-live"))
    await expect(viewer.locator(tid("room-state"))).to_have_attribute("data-state", "live")
    await studio.click(tid("end"))
    end = viewer.locator(tid("endcard"))
    await expect(end).to_be_visible()
    await expect(end).to_contain_text("直播已结束")
    await expect(viewer.locator(tid("end-orders"))).to_have_text("1")
    await expect(viewer.locator(tid("flash"))).to_be_hidden()
    await screenshot(viewer, "live-phone-zh-ended")
    # Nothing sells after the end on this page, whatever the server still holds open.
    await expect(viewer.locator(f'{tid("bag")} {tid("sale-card")} {tid("buy")}')).to_be_disabled()
    await expect(viewer.locator(tid("team-open"))).to_be_disabled()
    pages.assert_clean()


async def test_ending_the_live_ends_its_sales_on_the_server(pages: Pages) -> None:
    async with Client(pages.server.url, token("boss-x", "streamer", rooms=["end2"])) as boss:
        product = (await boss.request("product_create", title="Ending test", price=1000, stock=10))["product"]
        sale = (await boss.request("sale_create", room="end2", product=product["id"], price=500, stock=5,
                                   duration_s=600, per_user_limit=1))["sale"]
        viewer = await pages.open("/live/end2", sub="fan-x", rooms=["end2"])
        await boss.request("room_state", room="end2", state="live")
        await boss.request("room_state", room="end2", state="ended")
        card = viewer.locator(f'{tid("bag")} {tid("sale-card")}[data-sale="{sale["id"]}"]')
        await expect(card).to_have_attribute("data-phase", "ended", timeout=3000)


async def test_a_purchase_event_shows_in_the_ticker(pages: Pages) -> None:
    """The page's side of social proof: a `purchase` event (the server's aggregated, masked
    ticker; its shape is the protocol's) shows "小* just bought …" items one at a time."""
    viewer = await pages.open("/live/tick1", sub="fan-t", rooms=["tick1"], phone=True)
    await viewer.evaluate("""() => window.souk._dispatch({op: "event", ch: "room:tick1", type: "purchase",
        items: [{name: "小*", product: "Longjing tea", qty: 2}], count: 3})""")
    item = viewer.locator(tid("ticker-item"))
    await expect(item).to_have_text("🛍 小* just bought Longjing tea ×2")
    await screenshot(viewer, "live-phone-ticker")
    await expect(item).to_have_text("🛍 and 2 more just ordered", timeout=4000)
    pages.assert_clean()


async def test_the_server_sends_purchases_to_the_ticker(pages: Pages) -> None:
    async with Client(pages.server.url, token("boss-p", "streamer", rooms=["tick2"])) as boss:
        product = (await boss.request("product_create", title="Ticker tea", price=1000, stock=10))["product"]
        sale = (await boss.request("sale_create", room="tick2", product=product["id"], price=500, stock=5,
                                   duration_s=600, per_user_limit=2))["sale"]
        viewer = await pages.open("/live/tick2", sub="fan-p", rooms=["tick2"])
        async with Client(pages.server.url, token("buyer-p", "viewer", rooms=["tick2"], name="小刚")) as buyer:
            await buyer.join("tick2")
            await buyer.buy(sale["id"], 2)
        await expect(viewer.locator(tid("ticker-item"))).to_contain_text("小* just bought Ticker tea ×2", timeout=4000)
