"""Browser fixtures: Debian's Chromium driven by Playwright against a real `souk serve`.

Chromium is never downloaded (`playwright install` is not used): the tests drive
/usr/bin/chromium, and fail loudly when it is missing, so a machine without it can never
report these tests as passed or skipped.

Every page opened through `Pages` is served with the Content-Security-Policy the server
sends for pages (added here by route interception until the server sends it itself), and
every console error, uncaught exception, failed request and HTTP error status of the page is
recorded: `Pages.assert_clean()` fails the test on any of them, and the fixture's teardown
checks again, so a CSP violation or a 404 can never pass unnoticed.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    ViewportSize,
    async_playwright,
)

from tests.conftest import ROOT, ServerProcess, token

CHROMIUM = os.environ.get("SOUK_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "reports" / "screens"
# What the server sends with every page (the pages keep to it: no inline script or style, no
# third-party origin).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
PAGE_PREFIXES = ("live", "studio", "group", "dashboard", "replay")
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=800)
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
    # LocalNetworkAccessChecks: a page fulfilled by route interception (to add the CSP header)
    # counts as public to Chromium, which would then block its websocket to 127.0.0.1.
    "--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks",
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


def is_page(url: str) -> bool:
    """A URL of one of Souk's HTML pages (what gets the CSP header)."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return not parts or parts[0] in PAGE_PREFIXES or parts == ["index.html"]


async def with_csp(route: Route) -> None:
    """Serve a page with the server's Content-Security-Policy (unless it sends one itself)."""
    response = await route.fetch()
    headers = dict(response.headers)
    if "content-security-policy" not in {k.lower() for k in headers}:
        headers["content-security-policy"] = CSP
    await route.fulfill(response=response, headers=headers)


class Pages:
    """Open Souk pages in fresh browser contexts (one per user, like separate devices), each
    watched for console errors, page errors, failed requests and HTTP errors."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []
        self.console: list[str] = []
        self.problems: list[str] = []
        # Messages a test expects (a deliberate restart: refused reconnects), as regexes.
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def _problem(self, text: str) -> None:
        if not any(p.search(text) for p in self.allowed):
            self.problems.append(text)

    def _watch(self, page: Page, label: str) -> None:
        def console(m: ConsoleMessage) -> None:
            self.console.append(f"{label} {m.type}: {m.text}")
            if m.type == "error":
                self._problem(f"{label} console error: {m.text}")

        def failed(r: Request) -> None:
            self._problem(f"{label} request failed: {r.method} {r.url} {r.failure}")

        def response(r: Response) -> None:
            if r.status >= 400:
                self._problem(f"{label} HTTP {r.status}: {r.request.method} {r.url}")

        page.on("console", console)
        page.on("pageerror", lambda e: self._problem(f"{label} uncaught: {e}"))
        page.on("requestfailed", failed)
        page.on("response", response)

    async def open(self, path: str, *, sub: str | None = None, role: str = "viewer",
                   rooms: list[str] | None = None, groups: list[str] | None = None,
                   name: str | None = None, phone: bool = False, wait_conn: bool = True,
                   server: ServerProcess | None = None, locale: str = "en-US",
                   label: str | None = None) -> Page:
        """Open `path` on `server` (default: this fixture's server; a cluster test names the
        node, so pages on different nodes share one browser), at a phone's 390×844 or a
        desktop's 1280×800, in `locale` (what navigator.languages and Accept-Language say)."""
        ctx = await self.browser.new_context(viewport=PHONE if phone else DESKTOP, locale=locale)
        await ctx.route(is_page, with_csp)
        self.contexts.append(ctx)
        page = await ctx.new_page()
        self._watch(page, label or f"{path.split('?')[0]}[{sub or role}]")
        url = (server or self.server).http + path
        if sub is not None:
            tok = token(sub, role, rooms=rooms, groups=groups if groups is not None else ["*"], name=name)
            url += ("&" if "?" in url else "?") + "token=" + tok
        await page.goto(url)
        if wait_conn:
            await page.wait_for_function(  # a function, not a string: the CSP forbids eval
                "() => document.body.dataset.conn === 'open' && document.body.dataset.ready === '1'",
                timeout=15_000)
        return page

    def assert_clean(self) -> None:
        """No console error, uncaught exception, failed request or HTTP error on any page."""
        problems, self.problems = self.problems, []
        assert not problems, "\n".join(problems)

    async def close(self) -> None:
        for ctx in self.contexts:
            await ctx.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item: the `pages` teardown checks a passed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser, souk: ServerProcess, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    p = Pages(browser, souk)
    try:
        yield p
        call = getattr(request.node, "report_call", None)
        if call is not None and call.passed:
            p.assert_clean()  # also what a passed test did after its last explicit check
    finally:
        await p.close()


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save a screenshot for a person to look at (reports/screens/, gitignored): the viewport
    as a phone or desktop shows it, or the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_timeout(400)  # sheets and pop-ups finish sliding in
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


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


async def require_media(pages: Pages) -> None:
    """Fail loudly when the server under test has no media ops (the video tests need them)."""
    from client_sdk import Client

    async with Client(pages.server.url, token("probe-media", "viewer", rooms=["probe-media"])) as c:
        await require_op(c, "watch", room="probe-media", sdp="")


# Counts the frames the <video> presents (requestVideoFrameCallback) from when it is installed:
# window.__frames (count) and window.__lastFrame (Date.now() of the latest).
COUNT_FRAMES_JS = """() => {
    const v = document.querySelector('[data-testid="video"]');
    window.__frames = 0;
    window.__lastFrame = 0;
    const step = () => { window.__frames += 1; window.__lastFrame = Date.now(); v.requestVideoFrameCallback(step); };
    v.requestVideoFrameCallback(step);
}"""
