"""Time to first frame in a real browser: open the viewer page, see the first video frame.

Run: `python bench/bench_ttff_browser.py [--loads 50] [--server-cpu 0]` (Debian's
/usr/bin/chromium; needs the media ops on the server). It starts `python -m server serve
--demo` on 127.0.0.1 pinned to one core with `taskset` (the browser gets the other cores),
opens the studio with Chromium's fake camera and goes live, then opens the viewer page
`--loads` times, each in a fresh browser context (no cache, a new websocket and peer
connection), and reads inside the page:

- `page_to_frame_ms`: navigation start → the first `requestVideoFrameCallback` (the first
  frame composited): what a viewer waits for after clicking a link: the number that matters to a shopper.
- `watch_to_frame_ms`: the `watch` frame leaving the page → the same first frame (the
  "first signalling frame to first decoded frame" of docs/loadtest.md "Metrics").
- `page_to_watch_ms`: the page's own start-up (module load, token, connect, auth, join).

Prints JSON with p50/p90/p95/min/max of each and whether page → frame p50 meets the 300 ms
goal. Not part of `make test`; `make bench` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ports import free_port, wait_listening  # noqa: E402
from client_sdk.tokens import mint_token  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-abcdef"
CHROMIUM = os.environ.get("SOUK_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--disable-background-networking",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]

# Installed before any page script: timestamps of the first `watch` frame sent and the first
# video frame shown, on the page's own clock (performance.now(), 0 = navigation start).
PROBE = """
(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (window.__watchAt === undefined && typeof data === "string" && data.includes('"op":"watch"')) {
      window.__watchAt = performance.now();
    }
    return send.call(this, data);
  };
  const arm = () => {
    const v = document.querySelector('video[data-testid="video"]');
    if (!v) { requestAnimationFrame(arm); return; }
    v.requestVideoFrameCallback((now) => { window.__frameAt = now; });
  };
  document.addEventListener("DOMContentLoaded", arm);
})();
"""


async def wait_until(page: Any, expression: str, *, timeout: float = 10_000) -> None:
    """`page.wait_for_function` without eval inside the page: the pages' Content-Security-
    Policy forbids it; `page.evaluate` goes through the DevTools protocol instead."""
    deadline = time.monotonic() + timeout / 1000
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:.0f} ms: {expression}")
        await asyncio.sleep(0.02)


def pct(s: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (a sample that was measured, not interpolated)."""
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 1)


def summary(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {
        "p50": round(statistics.median(s), 1),
        "p90": pct(s, 0.90),
        "p95": pct(s, 0.95),
        "min": round(s[0], 1),
        "max": round(s[-1], 1),
    }


async def run(loads: int, room: str, base: str, trickle: int = 0) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    def url(page: str, sub: str, role: str) -> str:
        tok = mint_token(SECRET, sub, name=sub, role=role, rooms=[room], groups=[], ttl_s=3600)
        return f"{base}/{page}/{room}?token={tok}"

    results: list[dict[str, float]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        studio_ctx = await browser.new_context()
        studio = await studio_ctx.new_page()
        await studio.goto(url("studio", "bench-anchor", "streamer"))
        await wait_until(studio, "document.body.dataset.ready === '1'")
        await studio.wait_for_selector('[data-testid="preview-status"]', state="hidden")
        await studio.click('[data-testid="go-live"]')
        await studio.wait_for_selector('[data-testid="media-status"][data-state="connected"]', timeout=20_000)
        await asyncio.sleep(1.0)  # the stream settles (first keyframes through the relay)
        for i in range(loads):
            ctx = await browser.new_context()
            await ctx.add_init_script(PROBE)
            page = await ctx.new_page()
            await page.goto(url("live", f"bench-viewer-{i}", "viewer") + f"&trickle={trickle}")
            await wait_until(page, "window.__frameAt !== undefined", timeout=20_000)
            t = await page.evaluate("({frame: window.__frameAt, watch: window.__watchAt})")
            results.append({"page_to_frame_ms": t["frame"], "watch_to_frame_ms": t["frame"] - t["watch"],
                            "page_to_watch_ms": t["watch"]})
            await ctx.close()
        await browser.close()
    return {
        "loads": loads,
        "trickle": bool(trickle),
        **{k: summary([r[k] for r in results]) for k in results[0]},
        "samples_page_to_frame_ms": [round(r["page_to_frame_ms"], 1) for r in results],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=50)
    ap.add_argument("--server-cpu", default="0",
                    help="taskset CPU list for the server ('' to not pin); the browser uses the rest")
    ap.add_argument("--room", default="ttff")
    ap.add_argument("--trickle", type=int, choices=(0, 1), default=0,
                    help="0: full offers (the page's default); 1: trickle ICE with the ice op")
    args = ap.parse_args()
    port = free_port()
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"souk-ttff-{port}"
    env = {**os.environ, "SOUK_SECRET": SECRET}
    cmd = [sys.executable, "-m", "server", "serve", "--demo", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data)]
    if args.server_cpu and shutil.which("taskset"):
        cmd = ["taskset", "-c", args.server_cpu, *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, timeout_s=20)
        report = asyncio.run(run(args.loads, args.room, f"http://127.0.0.1:{port}", args.trickle))
        report["server_cpu"] = args.server_cpu or "not pinned"
        report["goal_p50_ms"] = 300
        report["goal_met"] = report["page_to_frame_ms"]["p50"] < 300
        print(json.dumps(report, indent=2))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
