"""Q&A across the pages: a question asked on the viewer page reaches the studio's queue and a
linked group page; the studio's answer reaches both; a group member answers another question
by replying in the group, and that answer flows back to the room. Upvotes, notices, members."""

from __future__ import annotations

from playwright.async_api import expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, require_op, screenshot, tid
from tests.conftest import token

pytestmark = BROWSER


def question(page, text: str):  # type: ignore[no-untyped-def]
    return page.locator(tid("question"), has_text=text)


async def test_question_flows_between_viewer_studio_and_group(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("boss", "streamer", rooms=["qa1"])) as boss:
        await require_op(boss, "group_create", tier="core", topic="tea")
        gid = (await boss.request("group_create", tier="core", topic="tea", title="Tea lovers"))["group"]["id"]
        await boss.request("link_groups", room="qa1", groups=[gid])

        studio = await pages.open("/studio/qa1", sub="streamer-qa", role="streamer", rooms=["qa1"], name="Host")
        viewer = await pages.open("/live/qa1", sub="asker", rooms=["qa1"], name="Asker", phone=True)
        group = await pages.open(f"/group/{gid}?room=qa1", sub="m-web", role="member", rooms=["qa1"],
                                 groups=[], name="Member Mei")
        await expect(group.locator(tid("title"))).to_have_text("Tea lovers")
        await expect(group.locator(tid("member"), has_text="Member Mei")).to_have_count(1)

        # Asked on the viewer page (the Q&A sheet of a phone): in the studio's queue and mirrored
        # into the group.
        await viewer.click(tid("qa-open"))
        await viewer.fill(tid("ask-input"), "Is it organic?")
        await viewer.click(tid("ask-send"))
        await expect(question(viewer, "Is it organic?")).to_have_attribute("data-status", "open")
        in_studio = question(studio, "Is it organic?")
        await expect(in_studio).to_have_count(1)
        in_group = question(group, "Is it organic?")
        await expect(in_group).to_have_count(1)
        await expect(in_group.locator(tid("q-origin"))).to_contain_text("from the live")  # never the room's id
        assert "qa1" not in await in_group.inner_text()

        # The studio answers: the answer shows on the viewer page and in the group.
        await in_studio.locator(tid("answer-input")).fill("Yes, certified organic")
        await in_studio.locator(tid("answer-send")).click()
        for page in (viewer, group, studio):
            await expect(question(page, "Is it organic?").locator(tid("q-answer"))).to_contain_text(
                "Yes, certified organic")
        await screenshot(studio, "studio-questions", full_page=True)

        # Answered in the group by replying to the mirrored question: flows back to the room.
        await viewer.fill(tid("ask-input"), "Does it ship abroad?")
        await viewer.click(tid("ask-send"))
        mirrored = question(group, "Does it ship abroad?")
        await mirrored.locator(tid("reply")).click()
        await expect(group.locator(tid("chat-replying"))).to_contain_text("Does it ship abroad?")
        await group.fill(tid("chat-input"), "Yes, to most countries")
        await group.click(tid("chat-send"))
        answer = question(viewer, "Does it ship abroad?").locator(tid("q-answer"))
        await expect(answer).to_contain_text("Yes, to most countries")
        await expect(answer).to_contain_text("(in a group)")
        await expect(question(studio, "Does it ship abroad?")).to_have_attribute("data-status", "answered")
        await expect(mirrored).to_have_attribute("data-status", "answered")
        await expect(group.locator(tid("chat-reply-to"))).to_contain_text("Does it ship abroad?")

        # Upvote someone else's question from the page; dismiss from the studio.
        async with Client(url, token("other", "viewer", rooms=["qa1"])) as other:
            await other.join("qa1")
            await other.ask("qa1", "What size is the tin?")
        tin = question(viewer, "What size is the tin?")
        await tin.locator(tid("upvote")).click()
        await expect(tin.locator(tid("q-votes"))).to_have_text("▲1")
        await expect(question(studio, "What size is the tin?").locator(tid("q-votes"))).to_have_text("▲1")
        await question(studio, "What size is the tin?").locator(tid("dismiss")).click()
        await expect(tin).to_have_attribute("data-status", "dismissed")

        # A sale notice from the streamer reaches the group page.
        await boss.request("notice", group=gid, kind="sale", text="Flash sale at 8 pm")
        await expect(group.locator(tid("notice"), has_text="Flash sale at 8 pm")).to_have_count(1)
        await screenshot(group, "group", full_page=True)
        await screenshot(viewer, "live-questions-phone")
    pages.assert_clean()


async def test_studio_answer_being_typed_survives_new_questions_and_votes(pages: Pages) -> None:
    url = pages.server.url
    async with Client(url, token("asker2", "viewer", rooms=["qa2"])) as asker, \
            Client(url, token("voter2", "viewer", rooms=["qa2"])) as voter:
        await require_op(asker, "ask", room="qa2", text="")
        await asker.join("qa2")
        await voter.join("qa2")
        studio = await pages.open("/studio/qa2", sub="streamer-qa2", role="streamer", rooms=["qa2"])
        first = await asker.ask("qa2", "How long does shipping take?")
        row = question(studio, "How long does shipping take?")
        await row.locator(tid("answer-input")).click()
        await studio.keyboard.type("Two to three ")
        # While the streamer types: an upvote on this question and a new question arrive.
        await voter.upvote("qa2", first["id"])
        await asker.ask("qa2", "Is there a warranty?")
        await expect(row.locator(tid("q-votes"))).to_have_text("▲1")
        await expect(question(studio, "Is there a warranty?")).to_have_count(1)
        await studio.keyboard.type("days")
        await expect(row.locator(tid("answer-input"))).to_have_value("Two to three days")
        await studio.keyboard.press("Enter")
        await expect(row.locator(tid("q-answer"))).to_contain_text("Two to three days")
    pages.assert_clean()


async def test_a_late_group_member_sees_the_recent_notices(pages: Pages) -> None:
    async with Client(pages.server.url, token("boss-n", "streamer", rooms=["qa3"])) as boss:
        gid = (await boss.request("group_create", tier="normal", topic="tea", title="Late fans"))["group"]["id"]
        await boss.request("link_groups", room="qa3", groups=[gid])
        product = (await boss.request("product_create", title="Notice tea", price=1000, stock=10))["product"]
        await boss.request("sale_create", room="qa3", product=product["id"], price=500, stock=5,
                           duration_s=600, per_user_limit=1)
        # The sale's notice went to the group before this member opened the page.
        group = await pages.open(f"/group/{gid}?room=qa3", sub="late-m", role="member", rooms=["qa3"], groups=[])
        await expect(group.locator(tid("notice"))).to_contain_text("Notice tea", timeout=3000)
