"""The cluster seen from the browser: two real `souk serve --redis ... --postgres ...` nodes on
127.0.0.1 (a PostgreSQL database and a Redis prefix of this module's own), the streamer's
studio page on node A, viewers' live pages on node B, one headless Chromium.

What the aiortc and websocket cluster tests cannot show: that the pages themselves work when
the streamer and the viewer are served by different nodes — Chromium's fake camera published
on A plays in a `<video>` on B (through B's edge pull), chat, a flash sale and Q&A cross the
nodes in the DOM, and each page's stock follows the cluster's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from client_sdk import Client
from tests.browser.conftest import BROWSER, Pages, screenshot, tid
from tests.browser.test_media import FRAMES_JS, wait_playing
from tests.conftest import REDIS_URL, ServerProcess, scratch_database, scratch_prefix, token
from tests.media.test_media_cascade import stats, wait_stat

pytestmark = [*BROWSER, pytest.mark.scaleout, pytest.mark.timeout(120)]

# Generous: a 2-core machine shared with other engineers' test runs.
SLOW_MS = 20_000


class Cluster:
    """Two nodes of one cluster and the database they commit to."""

    def __init__(self, a: ServerProcess, b: ServerProcess, dsn: str) -> None:
        self.a = a
        self.b = b
        self.dsn = dsn


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Started once for the module (each test uses rooms of its own): two server processes
    cost seconds to start on a busy machine, and the file must stay fast."""
    tmp = tmp_path_factory.mktemp("cluster-pages")
    with scratch_database() as dsn, scratch_prefix() as prefix:
        flags = ("--redis", REDIS_URL, "--redis-prefix", prefix, "--postgres", dsn)
        grace = {"SOUK_EDGE_GRACE_S": "1"}  # an idle edge pull ends after 1 s, not 5
        a = ServerProcess(tmp / "a", None, *flags, env=grace)
        b = ServerProcess(tmp / "b", None, *flags, env=grace)
        try:
            a.start(timeout=60)
            b.start(timeout=60)
            yield Cluster(a, b, dsn)
        finally:
            b.stop()
            a.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser, cluster: Cluster) -> AsyncIterator[Pages]:
    """Pages open on node A unless a test names node B."""
    p = Pages(browser, cluster.a)
    try:
        yield p
    finally:
        await p.close()


async def studio_and_viewer(pages: Pages, cluster: Cluster, room: str) -> tuple[Page, Page]:
    """The streamer's studio on A and a viewer's live page on B, both connected and wired."""
    studio = await pages.open(f"/studio/{room}", sub=f"host-{room}", role="streamer", rooms=[room],
                              name="Host A")
    viewer = await pages.open(f"/live/{room}", sub=f"fan-{room}", rooms=[room], name="Fan B",
                              server=cluster.b)
    return studio, viewer


async def test_camera_published_on_a_plays_on_b(pages: Pages, cluster: Cluster) -> None:
    room = "cl-video"
    studio, viewer = await studio_and_viewer(pages, cluster, room)
    await expect(studio.locator(tid("preview-status"))).to_be_hidden(timeout=SLOW_MS)
    await studio.click(tid("go-live"))
    await expect(studio.locator(tid("media-status"))).to_have_attribute("data-state", "connected",
                                                                          timeout=SLOW_MS)
    # The room state crosses the bus; B's page then watches, B pulls from A (the origin).
    await expect(viewer.locator(tid("room-state"))).to_have_attribute("data-state", "live", timeout=SLOW_MS)
    await wait_playing(viewer)
    seen = await viewer.evaluate(FRAMES_JS)
    assert seen["frames"] >= 10, seen
    assert seen["advanced"] > 0.2, seen  # ~0.5 s of the fake camera's 20 fps
    assert seen["width"] > 0 and seen["height"] > 0 and not seen["paused"], seen
    await expect(viewer.locator(tid("video-status"))).to_be_hidden()
    # Through the cascade: B holds one edge pull and no publisher; A's one viewer is that pull
    # (the page on B never talks to A: its websocket and peer connection are B's).
    b_stats = await stats(cluster.b)
    assert b_stats.get("edge_pulls") == 1 and b_stats.get("publishers") == 0, b_stats
    a_stats = await stats(cluster.a)
    assert a_stats.get("publishers") == 1 and a_stats.get("viewers") == 1, a_stats
    await screenshot(viewer, "cluster-live-video-on-b")

    # The streamer ends on A: B's page hears it and B lets its pull go.
    await studio.click(tid("end"))
    await expect(viewer.locator(tid("room-state"))).to_have_attribute("data-state", "ended", timeout=SLOW_MS)
    await expect(viewer.locator(tid("endcard"))).to_be_visible()
    await wait_stat(cluster.b, "edge_pulls", 0, "B ends its pull once the stream is gone")


async def test_streamer_moving_to_b_keeps_viewers_on_both_nodes_playing(
        pages: Pages, cluster: Cluster) -> None:
    """The streamer's page reloads and the load balancer sends it to node B: B's viewer
    switches from the pull to B's own publisher, and A's viewer — left on A, which has no
    publisher any more — gets the stream pulled back from B, without re-watching."""
    room = "cl-move"
    studio, on_b = await studio_and_viewer(pages, cluster, room)
    on_a = await pages.open(f"/live/{room}", sub=f"fan-a-{room}", rooms=[room], name="Fan A")
    await expect(studio.locator(tid("preview-status"))).to_be_hidden(timeout=SLOW_MS)
    await studio.click(tid("go-live"))
    for viewer in (on_a, on_b):
        await wait_playing(viewer)
    await wait_stat(cluster.b, "edge_pulls", 1, "B pulls from A")

    await studio.context.close()  # the streamer's page goes away: A's publisher with it
    moved = await pages.open(f"/studio/{room}", sub=f"host-{room}", role="streamer", rooms=[room],
                             name="Host A", server=cluster.b)
    await expect(moved.locator(tid("room-state"))).to_have_attribute("data-state", "live")
    await expect(moved.locator(tid("preview-status"))).to_be_hidden(timeout=SLOW_MS)
    await moved.click(tid("go-live"))
    await expect(moved.locator(tid("media-status"))).to_have_attribute("data-state", "connected",
                                                                         timeout=SLOW_MS)
    await wait_stat(cluster.b, "publishers", 1, "B is the origin now")
    await wait_stat(cluster.a, "edge_pulls", 1, "A pulls for its waiting viewer from B")
    for viewer in (on_a, on_b):
        seen = await viewer.evaluate(FRAMES_JS)  # frames presented from now on: the new stream
        assert seen["frames"] >= 10 and seen["width"] > 0, seen
    assert (await stats(cluster.b)).get("edge_pulls") == 0  # B's own publisher replaced its pull


async def test_chat_and_flash_sale_across_nodes(pages: Pages, cluster: Cluster) -> None:
    room = "cl-sale"
    studio, viewer = await studio_and_viewer(pages, cluster, room)
    # Presence summed over the nodes: a second viewer on A and the viewer on B are 2 watching
    # for both pages (each node alone has 1; the studio is staff, not counted).
    second = await pages.open(f"/live/{room}", sub="second-a", rooms=[room], name="Fan A")
    for page in (studio, viewer, second):
        await expect(page.locator(tid("viewers"))).to_have_text("2", timeout=SLOW_MS)
    # Hearts tapped on B add up in the studio on A.
    for _ in range(3):
        await viewer.click(tid("heart"))
    await expect(studio.locator(tid("likes"))).to_have_text("3", timeout=SLOW_MS)

    # Chat both ways: typed on B's live page, shown on A's studio; and back.
    await viewer.fill(tid("chat-input"), "hello from node B")
    await viewer.click(tid("chat-send"))
    await expect(studio.locator(tid("chat-msg"), has_text="hello from node B")).to_have_count(
        1, timeout=SLOW_MS)
    await expect(studio.locator(tid("chat-msg"), has_text="hello from node B")).to_contain_text("Fan B")
    await studio.fill(tid("chat-input"), "welcome, says node A")
    await studio.click(tid("chat-send"))
    await expect(viewer.locator(tid("chat-msg"), has_text="welcome, says node A")).to_have_count(
        1, timeout=SLOW_MS)

    # A flash sale started in the studio on A: 3 units, one per person.
    await studio.fill(tid("product-title"), "Oolong 100 g")
    await studio.fill(tid("product-price"), "30.00")
    await studio.fill(tid("product-stock"), "10")
    await studio.click(tid("product-create"))
    await expect(studio.locator(f'{tid("sale-product")} option:checked')).to_have_text(
        "Oolong 100 g", timeout=SLOW_MS)
    await studio.fill(tid("sale-price"), "12.50")
    await studio.fill(tid("sale-stock"), "3")
    await studio.fill(tid("sale-duration"), "120")
    await studio.fill(tid("sale-limit"), "1")
    await studio.click(tid("sale-start"))
    on_a = studio.locator(tid("sale-card"))
    on_b = viewer.locator(f'{tid("bag")} {tid("sale-card")}')
    await expect(on_a.locator(tid("sale-stock"))).to_have_attribute("data-left", "3", timeout=SLOW_MS)
    await expect(on_b).to_have_count(1, timeout=SLOW_MS)
    await expect(on_b).to_have_attribute("data-phase", "live")
    await expect(on_b.locator(tid("sale-stock"))).to_have_attribute("data-left", "3")
    await expect(on_b.locator(tid("sale-price"))).to_contain_text("12.50")
    sale_id = await on_b.get_attribute("data-sale")
    assert sale_id and sale_id == await on_a.get_attribute("data-sale")

    # Bought from B's page: ordered, and the stock drops on both pages.
    await on_b.locator(tid("buy")).click()
    await expect(on_b.locator(tid("buy-result"))).to_have_attribute("data-outcome", "ordered",
                                                                     timeout=SLOW_MS)
    for card in (on_b, on_a):
        await expect(card.locator(tid("sale-stock"))).to_have_attribute("data-left", "2", timeout=SLOW_MS)
    await expect(viewer.locator(tid("order"))).to_have_count(1, timeout=SLOW_MS)
    page_order = await viewer.locator(tid("order")).get_attribute("data-order")
    # The per-person limit holds on the page too: no second buy is offered.
    await expect(on_b.locator(tid("buy"))).to_be_disabled()
    await expect(on_b.locator(tid("buy"))).to_have_attribute("data-reason", "limit")
    await screenshot(viewer, "cluster-live-sale-on-b")

    # Two buyers on node A take the rest: both pages count down to zero and sold out.
    for who in ("a-buyer-1", "a-buyer-2"):
        async with Client(cluster.a.url, token(who, "viewer", rooms=[room]), reconnect=False) as c:
            await c.join(room)
            await c.buy(sale_id, 1)
    for card in (on_b, on_a):
        await expect(card.locator(tid("sale-stock"))).to_have_attribute("data-left", "0", timeout=SLOW_MS)
        await expect(card).to_have_attribute("data-phase", "sold_out", timeout=SLOW_MS)
    await expect(on_b.locator(tid("buy"))).to_be_disabled()
    # The studio's live sales panel counts the cluster's orders (two on A, one on B).
    await expect(studio.locator(tid("stat-orders"))).to_have_text("3", timeout=SLOW_MS)
    await expect(studio.locator(tid("stat-units"))).to_have_text("3")
    await expect(studio.locator(tid("stat-revenue"))).to_contain_text("37.50")
    await screenshot(studio, "cluster-studio-sale-on-a")

    # The record is PostgreSQL's: exactly the three acknowledged orders, the page's among them.
    conn = await asyncpg.connect(cluster.dsn)
    try:
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders WHERE sale = $1", sale_id)}
        left = await conn.fetchval("SELECT stock_left FROM sales WHERE id = $1", sale_id)
    finally:
        await conn.close()
    assert len(ids) == 3 and page_order in ids and left == 0, (ids, page_order, left)


async def test_question_asked_on_b_answered_on_a(pages: Pages, cluster: Cluster) -> None:
    room = "cl-qa"
    studio, viewer = await studio_and_viewer(pages, cluster, room)
    await viewer.fill(tid("ask-input"), "Is the oolong roasted?")
    await viewer.click(tid("ask-send"))
    asked = viewer.locator(tid("question"), has_text="Is the oolong roasted?")
    await expect(asked).to_have_attribute("data-status", "open", timeout=SLOW_MS)

    queued = studio.locator(tid("question"), has_text="Is the oolong roasted?")
    await expect(queued).to_have_count(1, timeout=SLOW_MS)
    await expect(queued).to_have_attribute("data-status", "open")
    await queued.locator(tid("answer-input")).fill("Lightly, over charcoal")
    await queued.locator(tid("answer-send")).click()
    await expect(queued).to_have_attribute("data-status", "answered", timeout=SLOW_MS)

    await expect(asked).to_have_attribute("data-status", "answered", timeout=SLOW_MS)
    await expect(asked.locator(tid("q-answer"))).to_contain_text("Lightly, over charcoal")
    # Once on each page: the bus delivers one copy, whichever node served the op.
    await expect(viewer.locator(tid("question"))).to_have_count(1)
    await expect(studio.locator(tid("question"))).to_have_count(1)
    await screenshot(viewer, "cluster-live-questions-on-b")
