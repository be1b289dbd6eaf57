"""The merchant's numbers after a scripted live session: over the API and in the dashboard
page (real Chromium through Playwright), checked against the script's known totals."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, token

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]

# What the script below does, hence what the numbers must say.
EXPECTED_ROOM = {
    "viewers": 3, "peak_viewers": 3, "avg_viewers": 2.5, "watch_time_s": 25, "messages": 3, "likes": 4,
    "questions": 2, "orders": 2, "units": 3, "revenue": 2700, "conversion_rate": 0.6667, "interaction_rate": 1.0,
}


def _get(url: str, tok: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


async def scripted_session(srv: Running) -> str:
    """3 viewers, a bot on the exclusion list, the streamer; chat, likes, questions, a sale with
    a coupon; a group with members, messages and a poll. Returns the group id."""
    insights = srv.app.insights
    async with srv.client("st", "streamer") as st:
        await st.request("room_create", room="r1", title="Spring live")
        await st.request("metrics_exclude", add=["bot"])
        gid = str((await st.request("group_create", tier="normal", topic="skin"))["group"]["id"])
        await st.join("r1")
        p = (await st.request("product_create", title="Serum", price=1000, stock=50))["product"]
        sale = (await st.request("sale_create", room="r1", product=p["id"], price=1000, stock=20,
                                 duration_s=600, per_user_limit=5))["sale"]["id"]
        cid = (await st.request("coupon_issue", user="v2", value=300))["coupons"][0]["id"]
        v1, v2, v3, bot = (srv.client(u, "member") for u in ("v1", "v2", "v3", "bot"))
        for c in (v1, v2, v3, bot):
            await c.connect()
            await c.join("r1")
        insights.sample_presence()  # 3 counted viewers (the streamer and the bot are not)
        await v1.chat("r1", "hi")
        await v1.chat("r1", "love it")
        await v2.chat("r1", "price?")
        await st.chat("r1", "welcome all")  # staff: not counted
        for i in range(5):
            await bot.chat("r1", f"spam {i}")  # excluded
        await v1.like("r1", 4)
        q1 = await v3.ask("r1", "Is it for dry skin?")
        await v3.ask("r1", "Shipping time?")
        await st.answer("r1", q1["id"], "Yes")
        await v1.buy(sale, 2)
        await v2.buy(sale, 1, coupon=cid)
        await bot.buy(sale, 1)  # excluded
        await v3.leave("r1")
        insights.sample_presence()  # 2 viewers
        for c in (v1, v2):
            await c.request("group_join", group=gid)
            await c.join(group=gid)
        m1 = await v1.chat(group=gid, text="my order arrived")
        await v2.chat(group=gid, text="mine too", reply_to=m1)
        poll = (await st.request("poll_create", group=gid, question="A or B?", options=["A", "B"]))["poll"]
        await v1.request("poll_vote", poll=poll["id"], option=0)
        await v2.request("group_leave", group=gid)
        for c in (v1, v2, v3, bot):
            await c.close()
    return gid


async def test_numbers_match_the_script(server: Running) -> None:
    gid = await scripted_session(server)
    tok = token("st", "streamer")
    r = await asyncio.to_thread(_get, f"{server.http}/api/rooms/r1/metrics", tok)
    got = {
        "viewers": r["viewers"]["unique"], "peak_viewers": r["viewers"]["peak"], "avg_viewers": r["viewers"]["average"],
        "watch_time_s": r["watch_time_s"], "messages": r["messages"], "likes": r["likes"],
        "questions": r["questions"]["asked"], "orders": r["orders"], "units": r["units"], "revenue": r["revenue"],
        "conversion_rate": r["conversion_rate"], "interaction_rate": r["interaction_rate"],
    }
    assert got == EXPECTED_ROOM
    assert r["questions"]["answered"] == 1 and r["questions"]["answered_within_5min"] == 0.5
    assert r["discounts"] == 300 and len(r["sales"]) == 1 and r["sales"][0]["units"] == 3
    g = await asyncio.to_thread(_get, f"{server.http}/api/groups/{gid}/metrics", tok)
    assert (g["members"], g["joins"], g["exits"], g["messages"]) == (1, 2, 1, 2)
    assert g["exit_rate"] == 0.5 and g["interaction_rate"] == 1.0  # (1 reply + 1 vote) / 2 messages
    assert g["buyers"] == 1 and g["conversion_rate"] == 1.0 and g["clv"] == 2000
    assert any(a["kind"] == "poll" for w in g["weeks"] for a in w["actions"])
    s = await asyncio.to_thread(_get, f"{server.http}/api/shop/metrics", tok)
    assert s["coupons"] == {"issued": 1, "redeemed": 1, "discounts": 300}
    assert s["revenue"] == 2700 and r["sales"][0]["revenue"] == 2700


@pytest.mark.browser
async def test_dashboard_page_shows_the_scripted_totals(server: Running, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    assert HAVE_CHROMIUM, "Debian chromium missing: apt-get install -y chromium (.ci/ensure-services.sh)"
    gid = await scripted_session(server)
    url = f"{server.http}/dashboard?token={token('st', 'streamer')}&room=r1&group={gid}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 844}):
                page = await browser.new_page(viewport=viewport)
                await page.goto(url)
                await page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
                shown = await page.eval_on_selector_all(
                    "[data-metric]", "els => Object.fromEntries(els.map(e => [e.dataset.metric, e.dataset.value]))")
                for name, want in EXPECTED_ROOM.items():
                    assert float(shown[name]) == pytest.approx(want), name
                assert shown["group_members"] == "1" and shown["group_exits"] == "1"
                assert shown["coupons_redeemed"] == "1"
                assert await page.locator("#sales-chart svg rect").count() == 1
                assert await page.locator("#weeks-chart svg").count() == 1
                await page.screenshot(path=str(tmp_path / f"dashboard-{viewport['width']}.png"), full_page=True)
                await page.close()
        finally:
            await browser.close()
