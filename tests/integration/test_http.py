"""HTTP on the websocket port: health, metrics, pages, demo tokens, the read-only API."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from tests.conftest import Running, token


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def aget(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(get, url, headers)


async def test_health_and_metrics(server: Running) -> None:
    status, _, body = await aget(server.http + "/healthz")
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    async with server.client("m") as c:
        await c.join("met")
        await c.chat("met", "hi")
    status, headers, body = await aget(server.http + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'souk_frames_in_total{op="chat"} 1.0' in text
    assert "souk_op_seconds_bucket" in text


async def test_metrics_report_how_late_the_loop_ran(server: Running) -> None:
    """`souk_loop_lag_seconds`: a loop held for 450 ms (here by the test, which shares the
    in-process server's loop) shows as one wake-up 350–450 ms late (the probe's timer fell due
    in the first 100 ms), in the 0.5 s bucket."""
    def bucket(text: str, le: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f'souk_loop_lag_seconds_bucket{{le="{le}"}}'))
        return float(line.split()[-1])

    await asyncio.sleep(0.25)  # a few timely wake-ups first
    text = (await aget(server.http + "/metrics"))[2].decode()
    late_before = bucket(text, "0.5") - bucket(text, "0.25")
    assert bucket(text, "0.25") >= 1  # timely wake-ups were counted
    time.sleep(0.45)  # noqa: ASYNC251 - holding the loop is the point
    await asyncio.sleep(0.15)
    text = (await aget(server.http + "/metrics"))[2].decode()
    assert bucket(text, "0.5") - bucket(text, "0.25") - late_before == 1, text


async def test_pages_and_sdk_are_served(server: Running) -> None:
    for path in ("/", "/studio/demo", "/live/demo", "/group/g1", "/dashboard"):
        status, headers, _ = await aget(server.http + path)
        assert status == 200, path
        assert headers["Content-Type"].startswith("text/html")
    status, _, _ = await aget(server.http + "/static/../app.py")
    assert status == 404
    status, _, _ = await aget(server.http + "/nope")
    assert status == 404


async def test_demo_token_only_in_demo_mode(server: Running, server_factory: Any) -> None:
    status, _, _ = await aget(server.http + "/api/demo/token?role=viewer&room=demo")
    assert status == 404
    demo: Running = await server_factory(demo=True)
    status, _, body = await aget(demo.http + "/api/demo/token?role=streamer&room=demo")
    doc = orjson.loads(body)
    assert status == 200 and doc["user"]["role"] == "streamer"
    from client_sdk import Client

    async with Client(demo.url, doc["token"]) as c:
        assert (await c.join("demo"))["id"] == "demo"
    status, _, _ = await aget(demo.http + "/api/demo/token?role=pirate")
    assert status == 400


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), ("Bearer nonsense", 401), (f"Bearer {token('x', rooms=['other'])}", 403),
     (f"Bearer {token('x', rooms=['api'])}", 200)],
)
async def test_api_room_needs_a_token_for_that_room(server: Running, auth: str | None, status: int) -> None:
    async with server.client("s", "streamer") as st:
        await st.join("api")
        await st.chat("api", "hello")
        headers = {"Authorization": auth} if auth else {}
        got, _, body = await aget(server.http + "/api/rooms/api", headers)
        assert got == status
        if status == 200:
            assert orjson.loads(body)["chat"][0]["text"] == "hello"
    got, _, _ = await aget(server.http + "/api/rooms/none", {"Authorization": f"Bearer {token('x')}"})
    assert got == 404
