"""The pages over a real server: the viewer page chats and sends hearts that a Python SDK
client sees; the studio shows a viewer's chat and mutes, deletes and bans; demo tokens."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from client_sdk import Client, SoukError
from tests.browser.conftest import BROWSER, Pages, screenshot, tid
from tests.conftest import token

pytestmark = BROWSER


async def test_viewer_page_chats_and_hearts_reach_a_python_client(pages: Pages) -> None:
    async with Client(pages.server.url, token("py-viewer", "viewer", rooms=["shop1"])) as py:
        await py.join("shop1")
        events = py.events(ch="room:shop1")
        page = await pages.open("/live/shop1", sub="v-web", name="Web Viewer", rooms=["shop1"], phone=True)
        await expect(page.locator(tid("me"))).to_have_text("Web Viewer · viewer")

        await page.fill(tid("chat-input"), "hello from the browser")
        await page.click(tid("chat-send"))
        ev = await events.wait_for(lambda e: e.get("type") == "chat", timeout=5)
        assert ev["text"] == "hello from the browser" and ev["user"] == "v-web" and ev["name"] == "Web Viewer"
        await expect(page.locator(tid("chat-input"))).to_have_value("")

        for _ in range(5):
            await page.click(tid("heart"))
        likes = await events.wait_for(lambda e: e.get("type") == "likes" and e["total"] >= 5, timeout=5)
        assert likes["total"] == 5
        await expect(page.locator(tid("likes"))).to_have_text("5")

        # And the other way: the Python client's chat shows on the page.
        await py.chat("shop1", "hi from python")
        await expect(page.locator(tid("chat-text"), has_text="hi from python")).to_be_visible()
        await expect(page.locator(tid("viewers"))).to_have_text("2", timeout=5000)
        await screenshot(page, "live-phone-chat")


async def test_studio_shows_viewer_chat_and_moderates(pages: Pages) -> None:
    studio = await pages.open("/studio/shop2", sub="streamer-1", role="streamer", rooms=["shop2"],
                              name="Streamer")
    async with Client(pages.server.url, token("rude", "viewer", rooms=["shop2"], name="Rude")) as rude:
        await rude.join("shop2")
        events = rude.events(ch="room:shop2")
        msg_id = await rude.chat("shop2", "first message")
        row = studio.locator(f'{tid("chat-msg")}[data-id="{msg_id}"]')
        await expect(row).to_contain_text("first message")

        await row.locator(tid("delete")).click()
        deleted = await events.wait_for(lambda e: e.get("type") == "message_deleted", timeout=5)
        assert deleted["id"] == msg_id
        await expect(row).to_have_count(0)

        second = await rude.chat("shop2", "second message")
        row2 = studio.locator(f'{tid("chat-msg")}[data-id="{second}"]')
        await row2.locator(tid("mute")).click()
        muted = await events.wait_for(lambda e: e.get("type") == "muted", timeout=5)
        assert muted["user"] == "rude"
        with pytest.raises(SoukError) as err:
            await rude.chat("shop2", "am I muted?")
        assert err.value.code == "muted"
        await expect(studio.locator(tid("chat-system"), has_text="rude is muted")).to_be_visible()
        await screenshot(studio, "studio-moderation")

        await row2.locator(tid("ban")).click()
        banned = await events.wait_for(lambda e: e.get("type") in ("banned", "expelled"), timeout=5)
        assert banned["type"] in ("banned", "expelled")
        await expect(studio.locator(f'{tid("chat-msg")}[data-user="rude"]')).to_have_count(0)


async def test_demo_mode_pages_fetch_their_own_tokens(pages: Pages) -> None:
    viewer = await pages.open("/live/demo")
    await expect(viewer.locator(tid("me"))).to_contain_text("· viewer")
    await expect(viewer.locator(tid("title"))).to_have_text("Souk demo live room")
    studio = await pages.open("/studio/demo", phone=True)
    await expect(studio.locator(tid("me"))).to_contain_text("· streamer")
    await expect(studio.locator(tid("viewers"))).to_have_text("2", timeout=5000)
    group = await pages.open("/group/demo-core")
    await expect(group.locator(tid("me"))).to_contain_text("· member")
    await expect(group.locator(tid("title"))).to_have_text("Demo core fans")
    await expect(group.locator(tid("member")).first).to_be_visible()
    await screenshot(studio, "studio-demo-phone")
    await screenshot(group, "group-demo")
    index = await pages.open("/", wait_conn=False)
    await expect(index.locator(tid("link-studio"))).to_be_visible()
    await screenshot(viewer, "live-demo-desktop")
    await screenshot(index, "index")
    await asyncio.sleep(0)
    assert not [c for c in pages.console if c.startswith("pageerror")], pages.console


async def test_a_bad_token_shows_why_instead_of_a_blank_page(pages: Pages) -> None:
    page = await pages.open("/live/shop3?token=not-a-jwt", wait_conn=False)
    fatal = page.locator(tid("fatal"))
    await expect(fatal).to_be_visible()
    await expect(fatal).to_contain_text("Could not start")
    assert await page.evaluate("document.body.dataset.ready") is None
