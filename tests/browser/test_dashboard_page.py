"""The merchant's numbers in Chinese: the group picker names the shop's groups (never their
ids), the actions list names what the merchant did in the catalog's words (a sale notice with
the product's title, not `notice:sale …`), and the messages figures say whom they count."""

from __future__ import annotations

from playwright.async_api import expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, screenshot, tid
from tests.browser.test_pages import RAW_ID, visible_text
from tests.conftest import token

pytestmark = BROWSER


async def test_dashboard_names_groups_and_actions_in_the_page_language(pages: Pages) -> None:
    async with Client(pages.server.url, token("boss-d", "streamer", rooms=["dash1"])) as boss:
        await boss.request("room_create", room="dash1", title="乌龙专场")
        gid = (await boss.request("group_create", tier="core", topic="tea", title="乌龙茶老粉"))["group"]["id"]
        await boss.request("link_groups", room="dash1", groups=[gid])
        product = (await boss.request("product_create", title="冻顶乌龙", price=1000, stock=10))["product"]
        await boss.request("sale_create", room="dash1", product=product["id"], price=500, stock=5,
                           duration_s=600, per_user_limit=1)
    dash = await pages.open(f"/dashboard?room=dash1&group={gid}&token={token('boss-d', 'streamer', rooms=['dash1'])}",
                            wait_conn=False, locale="zh-CN")
    await dash.wait_for_function("() => document.body.dataset.loaded === '1'", timeout=15_000)
    picker = dash.locator(tid("group-input"))
    await expect(picker).to_have_value(gid)
    assert await picker.evaluate("s => s.options[s.selectedIndex].text") == "乌龙茶老粉"
    await expect(dash.locator("#actions")).to_contain_text("秒杀通知：冻顶乌龙")
    await expect(dash.locator(tid("group-name"))).to_have_text("乌龙茶老粉")
    await expect(dash.locator("#room-kpis")).to_contain_text("不含主播与场控")
    text = await visible_text(dash)
    assert gid not in text and "notice:" not in text and not RAW_ID.search(text), text
    await screenshot(dash, "dashboard-desktop-zh-group", full_page=True)
    pages.assert_clean()
