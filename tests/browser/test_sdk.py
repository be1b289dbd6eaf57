"""The browser SDK as a module: loads over /sdk/, connects, replies by rid, typed errors,
clock offset, and reconnect + resume without loss or duplicates."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import BROWSER, Pages, tid, wait_until
from tests.conftest import token

pytestmark = BROWSER


async def sdk_page(pages: Pages) -> Page:
    page = await pages.open("/", wait_conn=False)
    await page.wait_for_selector(tid("link-live"))
    return page


async def test_sdk_loads_connects_and_types_errors(pages: Pages) -> None:
    page = await sdk_page(pages)
    tok = token("alice", "viewer", rooms=["r1"], name="Alice")
    result = await page.evaluate(
        """async (tok) => {
            const {Souk, SoukError} = await import("/sdk/souk.js");
            const souk = new Souk(null, tok);
            const states = [];
            souk.on("connection", (ev) => states.push(ev.state));
            const user = await souk.connect();
            const pong = await souk.ping();
            const snap = await souk.join("r1");
            const errors = {};
            for (const [name, call] of [
                ["unknown", () => souk.request("no_such_op")],
                ["forbidden", () => souk.join("other-room")],
                ["invalid", () => souk.chat("r1", "")],
            ]) {
                try { await call(); errors[name] = "no error"; }
                catch (e) { errors[name] = {code: e.code, typed: e instanceof SoukError, message: e.message}; }
            }
            const skew = Math.abs(souk.serverNow() - pong);
            souk.close();
            return {user, pong, snap, errors, states, skew, offset: souk.serverOffsetMs};
        }""",
        tok,
    )
    assert result["user"] == {"id": "alice", "name": "Alice", "role": "viewer"}
    assert isinstance(result["pong"], int) and result["pong"] > 1_700_000_000_000
    assert result["snap"]["id"] == "r1" and "seq" in result["snap"] and "epoch" in result["snap"]
    assert result["errors"]["unknown"]["code"] == "unknown_op" and result["errors"]["unknown"]["typed"]
    assert result["errors"]["forbidden"]["code"] == "forbidden"
    assert result["errors"]["invalid"]["code"] == "invalid"
    assert result["states"][:2] == ["connecting", "open"] and result["states"][-1] == "closed"
    # One machine, one clock: the estimated server clock is within a few ms of the server's.
    assert abs(result["offset"]) < 50 and result["skew"] < 1000


async def test_sdk_reconnects_and_resumes_without_loss_or_duplicates(pages: Pages) -> None:
    page = await sdk_page(pages)
    tok = token("bob", "viewer", rooms=["r2"])
    await page.evaluate(
        """async (tok) => {
            const {Souk} = await import("/sdk/souk.js");
            const souk = new Souk(null, tok, {backoff: [600, 1200]});
            window.got = [];
            window.states = [];
            souk.on("chat", (ev) => window.got.push(ev.text));
            souk.on("connection", (ev) => window.states.push(ev.state));
            await souk.connect();
            await souk.join("r2");
            window.souk = souk;
        }""",
        tok,
    )
    other = pages.server
    from client_sdk import Client

    async with Client(other.url, token("carol", "viewer", rooms=["r2"])) as carol:
        await carol.join("r2")
        await carol.chat("r2", "before")
        await wait_until(page, "window.got.includes('before')", timeout=5000)
        # Drop the socket from the browser side; while it is down, carol talks.
        await page.evaluate("window.souk._ws.close(4000, 'test drop')")
        await wait_until(page, "window.states.includes('reconnecting')", timeout=5000)
        for i in range(3):
            await carol.chat("r2", f"during-{i}")
        await wait_until(page, "window.states.at(-1) === 'open'", timeout=10_000)
        await carol.chat("r2", "after")
        await wait_until(page, "window.got.includes('after')", timeout=5000)
        got = await page.evaluate("window.got")
        reconnects = await page.evaluate("window.souk.reconnects")
    assert got == ["before", "during-0", "during-1", "during-2", "after"]
    assert reconnects == 1


async def test_sdk_gap_triggers_resume_and_stale_epoch_gets_resync(pages: Pages) -> None:
    page = await sdk_page(pages)
    await page.evaluate(
        """async (tok) => {
            const {Souk} = await import("/sdk/souk.js");
            const souk = new Souk(null, tok, {backoff: [100, 200]});
            window.got = [];
            window.resyncs = [];
            souk.on("chat", (ev) => window.got.push(ev.text));
            souk.on("resync", (ev) => window.resyncs.push(ev));
            await souk.connect();
            await souk.join("r3");
            // Lose exactly one frame on the wire: the one carrying "lost-1".
            const ws = souk._ws, deliver = ws.onmessage;
            let dropped = false;
            ws.onmessage = (m) => {
                if (!dropped && String(m.data).includes("lost-1")) { dropped = true; return; }
                deliver(m);
            };
            window.souk = souk;
        }""",
        token("dora", "viewer", rooms=["r3"]),
    )
    from client_sdk import Client

    async with Client(pages.server.url, token("eve", "viewer", rooms=["r3"])) as eve:
        await eve.join("r3")
        await eve.chat("r3", "lost-1")
        await eve.chat("r3", "next-2")
        await wait_until(page, "window.got.length >= 2", timeout=5000)
        assert await page.evaluate("window.got") == ["lost-1", "next-2"]

        # A stale epoch (as after a server restart): the resume answers with a resync snapshot.
        await page.evaluate("""() => {
            window.souk.channels.get("room:r3").epoch = "stale-epoch";
            window.souk._ws.close(4000, "test drop");
        }""")
        await wait_until(page, "window.resyncs.length === 1", timeout=10_000)
        resync = await page.evaluate("window.resyncs[0]")
        assert resync["ch"] == "room:r3" and resync["epoch"] != "stale-epoch"
        assert [m["text"] for m in resync["snapshot"]["chat"]] == ["lost-1", "next-2"]
        await eve.chat("r3", "after-resync")
        await wait_until(page, "window.got.includes('after-resync')", timeout=5000)
        assert await page.evaluate("window.got") == ["lost-1", "next-2", "after-resync"]
