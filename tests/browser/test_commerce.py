"""Commerce in the pages: the studio creates and pins a product and starts a flash sale; the
viewer sees the card with a countdown that agrees with the server clock, buys, sees the
answers (ordered / limit reached / sold out) and the stock drop; the studio's sales panel
counts the orders; a group buy is opened from the viewer page."""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import expect

from client_sdk import Client, SoukError
from tests.browser.conftest import BROWSER, Pages, require_op, screenshot, tid
from tests.conftest import token

pytestmark = BROWSER


async def test_flash_sale_countdown_buy_and_stock(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("probe", "viewer", rooms=["sale1"])) as probe:
        await require_op(probe, "sale_create", room="sale1")
    studio = await pages.open("/studio/sale1", sub="seller", role="streamer", rooms=["sale1"], name="Seller")
    viewer = await pages.open("/live/sale1", sub="buyer-web", rooms=["sale1"], name="Web Buyer")

    # A product made in the studio, pinned: the viewer's card shows it.
    await studio.fill(tid("product-title"), "Longjing tea 250 g")
    await studio.fill(tid("product-price"), "20.00")
    await studio.fill(tid("product-stock"), "10")
    await studio.click(tid("product-create"))
    product = studio.locator(tid("product"), has_text="Longjing tea 250 g")
    await expect(product).to_have_count(1)
    await expect(studio.locator(f'{tid("sale-product")} option:checked')).to_have_text("Longjing tea 250 g")
    await product.locator(tid("pin")).click()
    await expect(viewer.locator(tid("pinned-title"))).to_have_text("Longjing tea 250 g")
    await expect(viewer.locator(tid("pinned"))).to_contain_text("20.00")
    await expect(viewer.locator(tid("pinned"))).not_to_contain_text("null")

    # A flash sale: 3 units at 9.90, 60 s, one per person.
    await studio.fill(tid("sale-price"), "9.90")
    await studio.fill(tid("sale-stock"), "3")
    await studio.fill(tid("sale-duration"), "60")
    await studio.fill(tid("sale-limit"), "1")
    started_ms = time.time_ns() // 1_000_000
    await studio.click(tid("sale-start"))
    card = viewer.locator(tid("sale-card"))
    await expect(card).to_have_count(1)
    await expect(card.locator(tid("sale-phase"))).to_have_text("live")
    await expect(card.locator(tid("sale-stock"))).to_have_text("3 / 3 left")
    await expect(card.locator(tid("sale-price"))).to_contain_text("9.90")
    # The countdown agrees with the server clock (same machine: within a second) and ticks.
    left1 = int(await card.locator(tid("sale-countdown")).get_attribute("data-ms-left") or 0)
    expected = started_ms + 60_000 - time.time_ns() // 1_000_000
    assert abs(left1 - expected) < 1500, (left1, expected)
    assert re.fullmatch(r"[01]:\d\d", await card.locator(tid("sale-countdown")).inner_text())
    await viewer.wait_for_timeout(1100)
    left2 = int(await card.locator(tid("sale-countdown")).get_attribute("data-ms-left") or 0)
    assert 700 < left1 - left2 < 2500

    # Buy: ordered, then the per-person limit.
    await card.locator(tid("buy")).click()
    await expect(card.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered")
    await expect(card.locator(tid("sale-stock"))).to_have_text("2 / 3 left")
    await expect(card.locator(tid("buy"))).to_be_enabled()
    await card.locator(tid("buy")).click()
    await expect(card.locator(tid("buy-result"))).to_have_attribute("data-outcome", "limit_reached")
    await expect(card.locator(tid("buy-result"))).to_have_text("You reached the per-person limit")
    await expect(viewer.locator(tid("order"))).to_have_count(1)
    await screenshot(viewer, "live-flash-sale")

    # Two other buyers empty it: the viewer sees the stock drop to zero and "sold out".
    sale_id = await card.get_attribute("data-sale")
    assert sale_id
    for who in ("b2", "b3"):
        async with Client(url, token(who, "viewer", rooms=["sale1"])) as c:
            await c.join("sale1")
            await c.buy(sale_id, 1)
    async with Client(url, token("b4", "viewer", rooms=["sale1"])) as late:
        await late.join("sale1")
        with pytest.raises(SoukError) as err:
            await late.buy(sale_id, 1)
        assert err.value.code == "sold_out"
    await expect(card.locator(tid("sale-stock"))).to_have_text("0 / 3 left")
    await expect(card.locator(tid("sale-phase"))).to_have_text("sold out")
    await expect(card.locator(tid("buy"))).to_be_disabled()

    # The studio's live sales panel counts the three orders.
    await expect(studio.locator(tid("stat-orders"))).to_have_text("3", timeout=8000)
    await expect(studio.locator(tid("stat-units"))).to_have_text("3")
    await expect(studio.locator(tid("stat-revenue"))).to_contain_text("29.70")
    await screenshot(studio, "studio-sales")


async def test_group_buy_open_and_join_from_the_viewer_page(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("probe2", "viewer", rooms=["team1"])) as probe:
        await require_op(probe, "teambuy_create", room="team1")
    studio = await pages.open("/studio/team1", sub="seller2", role="streamer", rooms=["team1"])
    viewer = await pages.open("/live/team1", sub="tb-web", rooms=["team1"], phone=True)
    await studio.fill(tid("product-title"), "Dumplings x50")
    await studio.fill(tid("product-price"), "60")
    await studio.fill(tid("product-stock"), "20")
    await studio.click(tid("product-create"))
    await expect(studio.locator(tid("product"), has_text="Dumplings x50")).to_have_count(1)
    await expect(studio.locator(f'{tid("teambuy-product")} option:checked')).to_have_text("Dumplings x50")
    await studio.fill(tid("teambuy-price"), "39.90")
    await studio.fill(tid("teambuy-size"), "2")
    await studio.fill(tid("teambuy-window"), "600")
    await studio.click(tid("teambuy-start"))
    offer = viewer.locator(tid("teambuy-card"))
    await expect(offer).to_have_count(1)
    await offer.locator(tid("team-open")).click()
    await expect(offer.locator(tid("team-result"))).to_contain_text("1/2 — open")
    await expect(offer.locator(tid("team"))).to_have_count(1)
    offer_id = await offer.get_attribute("data-offer")
    team_id = await offer.locator(tid("team")).get_attribute("data-team")
    async with Client(url, token("tb-py", "viewer", rooms=["team1"])) as friend:
        await friend.join("team1")
        team = await friend.team_join(str(offer_id), str(team_id))
    assert team["status"] == "confirmed"
    await expect(offer.locator(f'{tid("team")}[data-status="confirmed"]')).to_have_count(1)
    await expect(offer.locator(tid("team-result"))).to_contain_text("2/2 — confirmed")
    # The leader's order, pending while the team filled, is now confirmed: one line, updated.
    await expect(viewer.locator(tid("order"))).to_have_count(1)
    await expect(viewer.locator(tid("order"))).to_have_attribute("data-status", "confirmed")
    await screenshot(viewer, "live-group-buy-phone")


async def test_scheduled_sale_counts_down_to_its_start_then_sells(pages: Pages) -> None:
    async with Client(pages.server.url, token("probe3", "viewer", rooms=["sale2"])) as probe:
        await require_op(probe, "sale_create", room="sale2")
    studio = await pages.open("/studio/sale2", sub="seller3", role="streamer", rooms=["sale2"])
    viewer = await pages.open("/live/sale2", sub="early-bird", rooms=["sale2"], phone=True)
    await studio.fill(tid("product-title"), "Jasmine tea 100 g")
    await studio.fill(tid("product-price"), "15")
    await studio.fill(tid("product-stock"), "5")
    await studio.click(tid("product-create"))
    await expect(studio.locator(f'{tid("sale-product")} option:checked')).to_have_text("Jasmine tea 100 g")
    await studio.fill(tid("sale-price"), "5")
    await studio.fill(tid("sale-stock"), "2")
    await studio.fill(tid("sale-starts-in"), "3")
    await studio.click(tid("sale-start"))
    card = viewer.locator(tid("sale-card"))
    await expect(card.locator(tid("sale-phase"))).to_have_text("starting soon")
    await expect(card.locator(tid("sale-countdown"))).to_have_text(re.compile(r"starts in 0:0[1-3]"))
    await expect(card.locator(tid("buy"))).to_be_disabled()
    # The server starts it on its clock; the card turns live and the buy goes through.
    await expect(card.locator(tid("sale-phase"))).to_have_text("live", timeout=8000)
    await card.locator(tid("buy")).click()
    await expect(card.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered")
    await expect(card.locator(tid("sale-stock"))).to_have_text("1 / 2 left")
