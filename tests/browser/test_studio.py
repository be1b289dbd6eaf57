"""The studio's product pictures: by address (this server's own: the pages' CSP loads images
from their origin only) or by upload (PNG, JPEG or WebP up to 2 MB, sent to
`POST /api/products/<id>/image`); what cannot work is refused with a clear message before
anything is created."""

from __future__ import annotations

import asyncio

from playwright.async_api import FilePayload, expect

from tests.browser.conftest import BROWSER, Pages, tid
from tests.conftest import png

pytestmark = BROWSER


async def test_pictures_that_cannot_work_are_refused_before_anything_is_made(pages: Pages) -> None:
    studio = await pages.open("/studio/pic1", sub="pic-host", role="streamer", rooms=["pic1"])
    before = await studio.locator(tid("product")).count()
    await studio.fill(tid("product-title"), "Picture from elsewhere")
    await studio.fill(tid("product-price"), "10")
    await studio.fill(tid("product-stock"), "5")
    # Another origin: the viewers' pages could not show it (CSP img-src 'self').
    await studio.fill(tid("product-image-url"), "https://cdn.example.com/tea.jpg")
    await studio.click(tid("product-create"))
    await expect(studio.locator(tid("sell-error"))).to_contain_text("Use a picture from this server")
    # An SVG upload (a picture that can carry script): refused in the page already.
    await studio.fill(tid("product-image-url"), "")
    await studio.locator(tid("product-image-file")).set_input_files(
        files=[FilePayload(name="x.svg", mimeType="image/svg+xml", buffer=b"<svg xmlns='http://www.w3.org/2000/svg'/>")])
    await studio.click(tid("product-create"))
    await expect(studio.locator(tid("sell-error"))).to_contain_text("PNG, JPEG or WebP")
    # Too big.
    await studio.locator(tid("product-image-file")).set_input_files(
        files=[FilePayload(name="big.png", mimeType="image/png", buffer=png() + b"\0" * (2 * 1024 * 1024))])
    await studio.click(tid("product-create"))
    await expect(studio.locator(tid("sell-error"))).to_contain_text("2 MB")
    assert await studio.locator(tid("product")).count() == before
    pages.assert_clean()


async def test_an_uploaded_picture_shows_in_the_studio_and_the_bag(pages: Pages) -> None:
    studio = await pages.open("/studio/pic2", sub="pic-host2", role="streamer", rooms=["pic2"])
    viewer = await pages.open("/live/pic2", sub="pic-fan", rooms=["pic2"])
    await studio.fill(tid("product-title"), "Uploaded picture tea")
    await studio.fill(tid("product-price"), "10")
    await studio.fill(tid("product-stock"), "5")
    await studio.locator(tid("product-image-file")).set_input_files(
        files=[FilePayload(name="tea.png", mimeType="image/png", buffer=png())])
    await studio.click(tid("product-create"))
    row = studio.locator(tid("product"), has_text="Uploaded picture tea")
    await expect(row.locator("img")).to_have_count(1)
    for _ in range(100):  # the picture shows once loaded (complete, its own width)
        if await row.locator("img").evaluate("i => i.complete && i.naturalWidth === 8"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the uploaded picture never loaded in the studio")
    await studio.locator(tid("product"), has_text="Uploaded picture tea").locator(tid("pin")).click()
    await expect(viewer.locator(f'{tid("pinned")} img')).to_have_count(1)
    pages.assert_clean()

