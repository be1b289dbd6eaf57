"""Browser fixtures: Debian's Chromium driven by Playwright against a real `souk serve`.

Chromium is never downloaded (`playwright install` is not used): the tests drive
/usr/bin/chromium, and fail loudly when it is missing, so a machine without it can never
report these tests as passed or skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import ROOT, ServerProcess, token

CHROMIUM = os.environ.get("SOUK_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
# Every browser test module: `pytestmark = BROWSER` (marked, and run on the session's loop,
# where the shared Chromium lives).
BROWSER = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]


def require_chromium() -> None:
    """Fail (not skip) without Chromium: a missing browser must never look like a pass."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install -y chromium); browser tests never download a browser",
            pytrace=False,
        )


async def launch(pw: Any) -> Browser:
    require_chromium()
    browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                headless=True)
    return browser


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the session; each page gets its own context (cookies, storage)."""
    async with async_playwright() as pw:
        b = await launch(pw)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="session")
def souk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server child process in demo mode for the browser suite (its secret is the
    tests' SECRET); every test uses its own rooms and users, so tests do not see each other."""
    proc = ServerProcess(tmp_path_factory.mktemp("browser") / "data", None, "--demo").start()
    try:
        yield proc
    finally:
        proc.stop()


class Pages:
    """Open Souk pages in fresh browser contexts (one per user, like separate devices)."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []
        self.console: list[str] = []

    async def open(self, path: str, *, sub: str | None = None, role: str = "viewer",
                   rooms: list[str] | None = None, groups: list[str] | None = None,
                   name: str | None = None, phone: bool = False, wait_conn: bool = True,
                   server: ServerProcess | None = None) -> Page:
        """Open `path` on `server` (default: this fixture's server; a cluster test names the
        node, so pages on different nodes share one browser)."""
        ctx = await self.browser.new_context(
            viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 860})
        self.contexts.append(ctx)
        page = await ctx.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        url = (server or self.server).http + path
        if sub is not None:
            tok = token(sub, role, rooms=rooms, groups=groups if groups is not None else ["*"], name=name)
            url += ("&" if "?" in url else "?") + "token=" + tok
        await page.goto(url)
        if wait_conn:
            await wait_until(
                page, "document.body.dataset.conn === 'open' && document.body.dataset.ready === '1'",
                timeout=10_000)
        return page

    async def close(self) -> None:
        for ctx in self.contexts:
            await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser, souk: ServerProcess) -> AsyncIterator[Pages]:
    p = Pages(browser, souk)
    try:
        yield p
    finally:
        await p.close()


async def wait_until(page: Page, expression: str, *, timeout: float = 10_000) -> None:
    """`page.wait_for_function` without evaluating a string inside the page: the pages'
    Content-Security-Policy has no 'unsafe-eval', and Playwright's polling builds its
    predicate with eval. `page.evaluate` goes through the DevTools protocol instead."""
    deadline = time.monotonic() + timeout / 1000
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:.0f} ms: {expression}")
        await asyncio.sleep(0.02)


async def screenshot(page: Page, name: str) -> None:
    """Save a screenshot as a test artifact (artifacts/ is gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def tid(id_: str) -> str:
    """Playwright selector for a data-testid."""
    return f'[data-testid="{id_}"]'


async def require_op(client: Any, op: str, **fields: Any) -> None:
    """Fail loudly when the server under test lacks an op the page relies on.

    Any other answer (ok or a refusal of the fields) means the op exists.
    """
    from client_sdk import SoukError

    try:
        await client.request(op, **fields)
    except SoukError as err:
        if err.code == "unknown_op":
            pytest.fail(f"the server has no op {op!r}")
