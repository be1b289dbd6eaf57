"""Moderation the way staff do it, in the studio: a moderator taps a viewer's name in the chat,
mutes then bans them from the sheet, finds them in the room's muted and banned list (named as
shoppers see each other, never by id), unmutes and unbans them; trying to ban the streamer
shows the refusal in the page's language. On a phone in Chinese and a desktop in English."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, screenshot, tid
from tests.conftest import token

pytestmark = BROWSER

CASES = {
    "phone-zh": dict(phone=True, locale="zh-CN", viewer="小红", streamer="主播阿May",
                     muted="禁言中", banned="已封禁", confirm="再点一次，确认封禁", refusal="不能对同级或更高级别的人这样做"),
    "desktop-en": dict(phone=False, locale="en-US", viewer="Rosa", streamer="Host May",
                       muted="muted ·", banned="banned", confirm="Tap again to ban", refusal="You cannot do that to someone of your rank"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_moderator_mutes_bans_lifts_and_is_refused_on_the_streamer(pages: Pages, case: str) -> None:
    c = CASES[case]
    room = f"mod-{case}"
    url = pages.server.url
    async with Client(url, token(f"host-{case}", "streamer", rooms=[room], name=c["streamer"])) as host, \
            Client(url, token(f"fan-{case}", "viewer", rooms=[room], name=c["viewer"])) as fan:
        await host.join(room)
        await fan.join(room)
        fan_events = fan.events(ch=f"room:{room}")
        await host.chat(room, "welcome!")
        said = await fan.chat(room, "cheap copies at my shop")
        studio = await pages.open(f"/studio/{room}", sub=f"mod-{case}", role="moderator", rooms=[room],
                                  name="Mo", phone=c["phone"], locale=c["locale"])
        row = studio.locator(f'{tid("chat-msg")}[data-id="{said}"]')
        await expect(row).to_contain_text("cheap copies")

        # Tap the author: the sheet, with their name; mute for 5 minutes.
        await row.locator(tid("chat-name")).click()
        sheet = studio.locator(tid("mod-sheet"))
        await expect(sheet).to_be_visible()
        await expect(sheet.locator(tid("mod-name"))).to_have_text(c["viewer"])
        await expect(sheet.locator(tid("mod-empty"))).not_to_be_empty()  # nobody sanctioned yet
        await sheet.locator(tid("mod-mute-300")).click()
        muted = await fan_events.wait_for(lambda e: e.get("type") == "muted", timeout=5)
        assert muted["user"] == f"fan-{case}"
        masked = c["viewer"][0] + "*"
        item = sheet.locator(tid("mod-item"))
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text(masked)
        await expect(item).to_contain_text(c["muted"])
        await expect(item).to_contain_text("4:5", timeout=3000)  # the time left counts down
        await screenshot(studio, f"moderation-muted-{case}")

        # Ban takes two taps: the first only asks again, naming the person; nothing happens yet.
        ban = sheet.locator(tid("mod-ban"))
        bans = fan.events(ch=f"room:{room}", types=["banned", "expelled"])
        await ban.click()
        await expect(ban).to_contain_text(c["confirm"])
        await expect(ban).to_contain_text(c["viewer"])
        await screenshot(studio, f"moderation-ban-confirm-{case}")
        with pytest.raises(TimeoutError):
            await bans.next(0.5)
        await expect(item).to_have_count(1)
        # The second tap bans: out of the room; listed as banned too (the mute still runs).
        await ban.click()
        await bans.next(5)
        await fan_events.wait_for(lambda e: e.get("type") in ("banned", "expelled"), timeout=5)
        await expect(studio.locator(f'{tid("chat-msg")}[data-user="fan-{case}"]')).to_have_count(0)
        await expect(item).to_have_count(2)
        await expect(sheet.locator(f'{tid("mod-item")}[data-kind="ban"]')).to_contain_text(c["banned"])
        listed = await sheet.locator(tid("mod-list")).inner_text()
        assert f"fan-{case}" not in await sheet.inner_text() and c["viewer"] not in listed, listed
        await screenshot(studio, f"moderation-banned-{case}")

        # Closed and opened again from the chat's button: the list came from the server.
        await sheet.locator(tid("mod-close")).click()
        await expect(sheet).to_be_hidden()
        await studio.click(tid("mod-open"))
        await expect(sheet.locator(tid("mod-person"))).to_be_empty()
        await expect(item).to_have_count(2)
        await sheet.locator(tid("mod-unmute")).click()
        await expect(item).to_have_count(1)
        await sheet.locator(tid("mod-unban")).click()
        await expect(item).to_have_count(0)
        await expect(sheet.locator(tid("mod-empty"))).not_to_be_empty()
        async with Client(url, token(f"fan-{case}", "viewer", rooms=[room], name=c["viewer"])) as back:
            await back.join(room)  # unbanned: welcome again
            await back.chat(room, "sorry")  # unmuted: heard again
        await sheet.locator(tid("mod-close")).click()

        # The streamer outranks a moderator: a clear refusal, in the page's language.
        host_row = studio.locator(tid("chat-msg"), has_text="welcome!")
        await host_row.locator(tid("chat-name")).click()
        await expect(sheet.locator(tid("mod-name"))).to_have_text(c["streamer"])
        await sheet.locator(tid("mod-ban")).click()
        await sheet.locator(tid("mod-ban")).click()
        await expect(sheet.locator(tid("mod-error"))).to_contain_text(c["refusal"])
        await expect(item).to_have_count(0)
        await screenshot(studio, f"moderation-refused-{case}")
    pages.assert_clean()


async def test_group_staff_moderate_from_the_group_page(pages: Pages) -> None:
    """The group page gives its staff the same sheet: a member muted from their message is in
    the group's list, and unmuted from it; members see no moderation at all."""
    url = pages.server.url
    async with Client(url, token("gboss", "streamer", rooms=["gmod"], groups=["*"])) as boss:
        group = (await boss.request("group_create", tier="core", topic="tea", title="茶友群"))["group"]["id"]
    async with Client(url, token("gfan", "member", groups=[group], name="阿珍")) as fan:
        await fan.request("group_join", group=group)
        await fan.join(group=group)
        said = await fan.chat(group=group, text="我家店铺更便宜")
        staff = await pages.open(f"/group/{group}", sub="gmod", role="moderator", groups=[group], name="Mo",
                                 phone=True, locale="zh-CN")
        member = await pages.open(f"/group/{group}", sub="gpeer", role="member", groups=[group], name="Peer")
        await expect(member.locator(tid("mod-open"))).to_be_hidden()
        await expect(member.locator(f'{tid("chat-msg")}[data-id="{said}"] button')).to_have_count(0)
        row = staff.locator(f'{tid("chat-msg")}[data-id="{said}"]')
        await row.locator(tid("chat-name")).click()
        sheet = staff.locator(tid("mod-sheet"))
        await sheet.locator(tid("mod-mute-3600")).click()
        item = sheet.locator(tid("mod-item"))
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text("阿*")
        await expect(item).to_contain_text("禁言中")
        await screenshot(staff, "moderation-group-phone-zh")
        await sheet.locator(tid("mod-unmute")).click()
        await expect(item).to_have_count(0)
        await fan.chat(group=group, text="好的")  # heard again
    pages.assert_clean()
