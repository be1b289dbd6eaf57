"""The browser SDK as a module: loads over /sdk/, connects, replies by rid, typed errors,
clock offset, and reconnect + resume without loss or duplicates."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from tests.browser.conftest import BROWSER, Pages, require_media, tid
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
        await page.wait_for_function("() => window.got.includes('before')", timeout=5000)
        # Drop the socket from the browser side; while it is down, carol talks.
        await page.evaluate("window.souk._ws.close(4000, 'test drop')")
        await page.wait_for_function("() => window.states.includes('reconnecting')", timeout=5000)
        for i in range(3):
            await carol.chat("r2", f"during-{i}")
        await page.wait_for_function("() => window.states.at(-1) === 'open'", timeout=10_000)
        await carol.chat("r2", "after")
        await page.wait_for_function("() => window.got.includes('after')", timeout=5000)
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
            window.dropped = false;
            ws.onmessage = (m) => {
                if (!window.dropped && String(m.data).includes("lost-1")) { window.dropped = true; return; }
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
        # The fan-out coalesces a tick's events into one batch frame: send the second chat only
        # once the first one's frame has been dropped, so that it arrives as a gap.
        await page.wait_for_function("() => window.dropped", timeout=5000)
        await eve.chat("r3", "next-2")
        await page.wait_for_function("() => window.got.length >= 2", timeout=5000)
        assert await page.evaluate("window.got") == ["lost-1", "next-2"]

        # A stale epoch (as after a server restart): the resume answers with a resync snapshot.
        await page.evaluate("""() => {
            window.souk.channels.get("room:r3").epoch = "stale-epoch";
            window.souk._ws.close(4000, "test drop");
        }""")
        await page.wait_for_function("() => window.resyncs.length === 1", timeout=10_000)
        resync = await page.evaluate("window.resyncs[0]")
        assert resync["ch"] == "room:r3" and resync["epoch"] != "stale-epoch"
        assert [m["text"] for m in resync["snapshot"]["chat"]] == ["lost-1", "next-2"]
        await eve.chat("r3", "after-resync")
        await page.wait_for_function("() => window.got.includes('after-resync')", timeout=5000)
        assert await page.evaluate("window.got") == ["lost-1", "next-2", "after-resync"]


async def test_sdk_chat_typed_offline_leaves_once_after_the_reconnect(pages: Pages) -> None:
    """A chat sent while the socket is down waits in the SDK's outbox and goes out once, with
    its client id (`cid`), after the reconnect: the others see it exactly once."""
    page = await sdk_page(pages)
    from client_sdk import Client

    async with Client(pages.server.url, token("frank", "viewer", rooms=["r4"])) as frank:
        await frank.join("r4")
        events = frank.events(ch="room:r4", types=["chat"])
        await page.evaluate(
            """async (tok) => {
                const {Souk} = await import("/sdk/souk.js");
                window.sentFrames = [];
                const send = WebSocket.prototype.send;
                WebSocket.prototype.send = function (data) { window.sentFrames.push(String(data)); return send.call(this, data); };
                const souk = new Souk(null, tok, {backoff: [700, 900]});
                window.states = [];
                souk.on("connection", (ev) => window.states.push(ev.state));
                await souk.connect();
                await souk.join("r4");
                souk._ws.close(4000, "test drop");
                // Typed while reconnecting: resolves with the message id once delivered.
                window.sent = souk.chat("r4", "typed offline").then((id) => (window.sentId = id));
                window.souk = souk;
            }""",
            token("gina", "viewer", rooms=["r4"], name="Gina"),
        )
        await page.wait_for_function("() => window.sentId !== undefined", timeout=10_000)
        await frank.chat("r4", "marker")  # everything sent before it has arrived by then
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["text"] != "marker":
            seen.append(await events.next(timeout=5))
        copies = [e for e in seen if e["text"] == "typed offline"]
        assert len(copies) == 1, seen
        assert copies[0]["user"] == "gina" and copies[0]["id"] == await page.evaluate("window.sentId")
        frames = [f for f in await page.evaluate("window.sentFrames") if '"op":"chat"' in f]
        states = await page.evaluate("window.states")
    assert len(frames) == 1 and '"cid":"' in frames[0], frames
    assert states[-2:] == ["reconnecting", "open"], states


async def test_sdk_watch_waits_for_the_stream_and_plays_when_it_comes(pages: Pages) -> None:
    """A watch refused with not_found (nothing published yet) is not forgotten: the SDK asks
    again with backoff and the video plays once the studio goes live."""
    await require_media(pages)
    page = await sdk_page(pages)
    await page.evaluate(
        """async (tok) => {
            const {Souk} = await import("/sdk/souk.js");
            const souk = new Souk(null, tok, {mediaBackoff: [200, 800]});
            window.media = [];
            souk.on("media", (ev) => window.media.push(ev.state));
            const video = document.createElement("video");
            video.muted = true;
            video.playsInline = true;
            document.body.append(video);
            window.frames = 0;
            const count = () => { window.frames += 1; video.requestVideoFrameCallback(count); };
            video.requestVideoFrameCallback(count);
            await souk.connect();
            window.souk = souk;
            souk.watch(video, "sw1");
        }""",
        token("sw-viewer", "viewer", rooms=["sw1"]),
    )
    await page.wait_for_function("() => window.media.includes('waiting')", timeout=10_000)
    studio = await pages.open("/studio/sw1", sub="sw-host", role="streamer", rooms=["sw1"])
    await expect(studio.locator(tid("preview-status"))).to_be_hidden()
    await studio.click(tid("go-live"))
    await page.wait_for_function("() => window.frames >= 5", timeout=20_000)
    states = await page.evaluate("window.media")
    assert states[0] == "connecting" and "waiting" in states and states[-1] == "connected", states
