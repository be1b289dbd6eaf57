"""Connectors against a real HTTP receiver on 127.0.0.1 that plays each platform.

Covers: signed generic delivery verified by the receiver, the documented payloads of Slack,
Discord, Telegram and WeCom, retries with backoff (5xx, 429 + Retry-After, WeCom's errcode),
pacing to a rate limit, dead letters (persisted and published to staff), signature rejection
both ways, and a signed inbound answer flowing into the room's question and its group copies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from server.community import Community
from server.connectors.signing import Verifier, signed_headers
from server.store.community import SqlCommunityStore
from server.store.stores import open_db

STREAMER = {"id": "s1", "name": "Host", "role": "streamer"}
ADMIN = {"id": "a1", "name": "Admin", "role": "admin"}
SECRET = "receiver-shared-secret-0123456789"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(
        self, ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False
    ) -> None:
        self.events.append((ch, type, fields))

    def on(self, ch: str, type: str) -> list[dict[str, Any]]:
        return [f for c, t, f in self.events if c == ch and t == type]


class Platform:
    """A real aiohttp server standing in for Slack, Discord, Telegram, WeCom and a generic hook."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[float, dict[str, Any], dict[str, str]]]] = {}
        self.fail_first: dict[str, int] = {}
        self.verifier = Verifier()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def got(self, name: str) -> list[dict[str, Any]]:
        return [body for _, body, _ in self.received.get(name, [])]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/generic/{name}", self.generic)
        app.router.add_post("/slack", self.slack)
        app.router.add_post("/discord", self.discord)
        app.router.add_post("/tg/{bot}/sendMessage", self.telegram)
        app.router.add_post("/wecom/send", self.wecom)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _record(self, name: str, request: web.Request) -> tuple[bytes, int]:
        raw = await request.read()
        self.received.setdefault(name, []).append(
            (time.monotonic(), orjson.loads(raw), dict(request.headers))
        )
        left = self.fail_first.get(name, 0)
        if left:
            self.fail_first[name] = left - 1
        return raw, left

    async def generic(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        try:  # the receiver verifies Souk's signature with the secret it shares
            self.verifier.verify(SECRET, raw, request.headers, now_ms())
        except Exception as exc:
            self.received.setdefault(name + ":rejected", []).append(
                (time.monotonic(), {"error": str(exc)}, {})
            )
            return web.Response(status=401, text=str(exc))
        self.received.setdefault(name, []).append(
            (time.monotonic(), orjson.loads(raw), dict(request.headers))
        )
        left = self.fail_first.get(name, 0)
        if name == "always500" or left:
            self.fail_first[name] = max(0, left - 1)
            return web.Response(status=500, text="down")
        if name == "limited" and len(self.received[name]) == 1:
            return web.Response(status=429, headers={"Retry-After": "0.3"}, text="slow down")
        return web.json_response({"ok": True})

    async def slack(self, request: web.Request) -> web.Response:
        await self._record("slack", request)
        return web.Response(text="ok")

    async def discord(self, request: web.Request) -> web.Response:
        await self._record("discord", request)
        return web.Response(status=204)

    async def telegram(self, request: web.Request) -> web.Response:
        await self._record("telegram:" + request.match_info["bot"], request)
        return web.json_response({"ok": True, "result": {"message_id": 1}})

    async def wecom(self, request: web.Request) -> web.Response:
        _, failing = await self._record("wecom:" + request.query.get("key", ""), request)
        if failing:
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    p = Platform()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def community(tmp_path: Path) -> AsyncIterator[tuple[Community, Collector]]:
    pub = Collector()
    db = await open_db(tmp_path / "souk.db")
    c = Community(
        SqlCommunityStore(db),
        pub,
        now_ms,
        webhook_port=0,
        overdue_check_s=3600,
        connector_max_attempts=3,
        connector_backoff_s=0.05,
        connector_max_backoff_s=0.5,
        allow_private_webhooks=True,  # the receivers listen on 127.0.0.1
    )
    await c.start()
    yield c, pub
    await c.stop()
    await db.close()


async def wait_for(cond: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_generic_signed_delivery_with_retries(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, pub = community
    platform.fail_first["flaky"] = 2
    await c.connector_create(
        "shop",
        {
            "room": "r1",
            "platform": "generic",
            "url": platform.url("/generic/flaky"),
            "secret": SECRET,
        },
        ADMIN,
    )
    q = await c.ask("r1", {"id": "v1", "name": "Viewer", "role": "viewer"}, "is it organic?")
    await wait_for(lambda: c.delivery.stats.delivered == 1)
    bodies = platform.got("flaky")
    assert len(bodies) == 3  # two 500s, then delivered
    assert all(b == bodies[0] for b in bodies)  # the same item each time
    assert bodies[0]["type"] == "question" and bodies[0]["question"] == q["id"]
    assert bodies[0]["text"] == "is it organic?" and bodies[0]["room"] == "r1"
    assert c.delivery.stats.retries == 2 and pub.on("staff:r1", "connector_dead_letter") == []


async def test_429_retry_after_is_honoured(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, _ = community
    await c.connector_create(
        "shop", {"room": "r1", "url": platform.url("/generic/limited"), "secret": SECRET}, ADMIN
    )
    await c.ask("r1", {"id": "v1", "name": "V", "role": "viewer"}, "when?")
    await wait_for(lambda: c.delivery.stats.delivered == 1)
    (t1, _, _), (t2, _, _) = platform.received["limited"]
    assert t2 - t1 >= 0.28


async def test_dead_letter_persisted_and_published(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, pub = community
    conn = await c.connector_create(
        "shop", {"room": "r1", "url": platform.url("/generic/always500"), "secret": SECRET}, ADMIN
    )
    q = await c.ask("r1", {"id": "v1", "name": "V", "role": "viewer"}, "anyone?")
    await wait_for(lambda: pub.on("staff:r1", "connector_dead_letter") != [])
    flag = pub.on("staff:r1", "connector_dead_letter")[0]
    assert flag["connector"] == conn["id"] and flag["attempts"] == 3 and "500" in flag["error"]
    assert flag["item"]["question"] == q["id"]
    stored = await c.store.dead_letters(conn["id"])
    assert (
        len(stored) == 1
        and stored[0]["item"]["question"] == q["id"]
        and stored[0]["id"] == flag["id"]
    )
    assert len(platform.got("always500")) == 3


async def test_outbound_signature_rejected_by_receiver_becomes_dead_letter(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, pub = community
    await c.connector_create(
        "shop",
        {"room": "r1", "url": platform.url("/generic/strict"), "secret": "a-different-secret-9999"},
        ADMIN,
    )
    await c.ask("r1", {"id": "v1", "name": "V", "role": "viewer"}, "signed?")
    await wait_for(lambda: pub.on("staff:r1", "connector_dead_letter") != [])
    assert platform.got("strict") == []
    assert platform.got("strict:rejected")[0]["error"] == "bad signature"
    flag = pub.on("staff:r1", "connector_dead_letter")[0]
    assert flag["attempts"] == 1 and "401" in flag["error"]  # a 401 is permanent: no retry storm


async def test_platform_formats(platform: Platform, community: tuple[Community, Collector]) -> None:
    c, _ = community
    platform.fail_first["wecom:K1"] = 1
    await c.connector_create(
        "shop", {"room": "r1", "platform": "slack", "url": platform.url("/slack")}, ADMIN
    )
    await c.connector_create(
        "shop",
        {"room": "r1", "platform": "discord", "url": platform.url("/discord"), "username": "Souk"},
        ADMIN,
    )
    await c.connector_create(
        "shop",
        {
            "room": "r1",
            "platform": "telegram",
            "url": platform.url("/tg"),
            "bot_token": "123:abc",
            "chat_id": -100,
        },
        ADMIN,
    )
    await c.connector_create(
        "shop",
        {
            "room": "r1",
            "platform": "wecom",
            "url": platform.url("/wecom/send?key=K1"),
            "rate": [20, 1],
        },
        ADMIN,
    )
    await c.ask("r1", {"id": "v1", "name": "Ann", "role": "viewer"}, "红茶还有货吗？")
    await wait_for(lambda: c.delivery.stats.delivered == 4)
    slack = platform.got("slack")[0]
    assert set(slack) == {"text"} and "红茶还有货吗？" in slack["text"] and "Ann" in slack["text"]
    discord = platform.got("discord")[0]
    assert discord["username"] == "Souk" and discord["allowed_mentions"] == {"parse": []}
    assert "红茶还有货吗？" in discord["content"] and len(discord["content"]) <= 2000
    tg = platform.got("telegram:bot123:abc")[0]
    assert tg["chat_id"] == -100 and "红茶还有货吗？" in tg["text"]
    wecom = platform.got("wecom:K1")
    assert len(wecom) == 2  # errcode 45009 (rate limited) was retried
    assert wecom[1]["msgtype"] == "text" and "红茶还有货吗？" in wecom[1]["text"]["content"]


async def test_pacing_to_the_rate_limit(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, _ = community
    await c.connector_create(
        "shop",
        {"room": "r1", "url": platform.url("/generic/paced"), "secret": SECRET, "rate": [2, 0.4]},
        ADMIN,
    )
    for i in range(5):
        await c.ask("r1", {"id": f"v{i}", "name": "V", "role": "viewer"}, f"q{i}?")
    await wait_for(lambda: c.delivery.stats.delivered == 5)
    times = [t for t, _, _ in platform.received["paced"]]
    for i in range(2, 5):  # never more than 2 in any 0.4 s window
        assert times[i] - times[i - 2] >= 0.38


async def post_answer(
    url: str, secret: str, body: dict[str, Any], *, ts: int | None = None, sig: str | None = None
) -> tuple[int, dict[str, Any]]:
    raw = orjson.dumps(body)
    headers = signed_headers(secret, raw, ts if ts is not None else now_ms())
    if sig is not None:
        headers["X-Souk-Signature"] = sig
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status, await r.json()


async def test_inbound_answer_flows_into_room_and_groups(
    platform: Platform, community: tuple[Community, Collector]
) -> None:
    c, pub = community
    core = await c.group_create("shop", {"tier": "core", "topic": "tea"})
    await c.link_groups("r1", [core["id"]])
    other = await c.connector_create(
        "shop", {"room": "r1", "url": platform.url("/generic/other"), "secret": SECRET}, ADMIN
    )
    conn = await c.connector_create(
        "shop", {"room": "r1", "url": platform.url("/generic/ext"), "secret": SECRET}, ADMIN
    )
    assert other["inbound_url"].startswith("http://127.0.0.1:")
    url = conn["inbound_url"]
    q = await c.ask("r1", {"id": "v1", "name": "Ann", "role": "viewer"}, "does it ship today?")
    await wait_for(lambda: len(platform.got("ext")) == 1 and len(platform.got("other")) == 1)

    body = {"type": "answer", "question": q["id"], "text": "Yes, before 5pm", "name": "Li (WeCom)"}
    # forged signature, stale timestamp, wrong secret: all 401, nothing answered
    assert (await post_answer(url, SECRET, body, sig="sha256=" + "0" * 64))[0] == 401
    assert (await post_answer(url, SECRET, body, ts=now_ms() - 301_000))[0] == 401
    assert (await post_answer(url, "not-the-secret-at-all!!", body))[0] == 401
    assert c.room_snapshot("r1")["questions"][0]["status"] == "open"
    # bad bodies: 400; unknown connector: 404
    assert (await post_answer(url, SECRET, {"type": "answer", "question": q["id"], "text": ""}))[
        0
    ] == 400
    assert (
        await post_answer(
            url, SECRET, {"type": "answer", "question": q["id"], "text": "x", "name": 5}
        )
    )[0] == 400
    assert (await post_answer(url.rsplit("/", 1)[0] + "/cnope", SECRET, body))[0] == 404
    assert (await post_answer(url, SECRET, {**body, "question": "qnope"}))[0] == 404

    raw = orjson.dumps(body)
    headers = signed_headers(conn["secret"], raw, now_ms())
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=raw, headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["question"]["status"] == "answered"
        async with s.post(url, data=raw, headers=headers) as r:  # the very same request again
            assert r.status == 401  # replay refused
        async with s.post(
            url, data=b"not json", headers=signed_headers(SECRET, b"not json", now_ms())
        ) as r:
            assert r.status == 400
    room = pub.on("room:r1", "question")[-1]
    assert room["status"] == "answered" and room["answered_by"]["name"] == "Li (WeCom)"
    assert room["answered_by"]["connector"] == conn["id"]
    copy = pub.on(f"group:{core['id']}", "question")[-1]
    assert copy["status"] == "answered" and copy["origin"]["question"] == q["id"]
    # the other connector hears of the answer, the one it came from does not (no echo)
    await wait_for(lambda: len(platform.got("other")) == 2)
    assert platform.got("other")[1]["type"] == "answer"
    await asyncio.sleep(0.1)
    assert len(platform.got("ext")) == 1
    assert (await post_answer(url, SECRET, {**body, "text": "again"}))[0] == 409


async def test_connector_fields_validated(community: tuple[Community, Collector]) -> None:
    c, _ = community
    from server.errors import SoukError

    for fields in (
        {"room": "r1", "url": "ftp://x"},
        {"room": "r1", "url": "http://x", "platform": "myspace"},
        {"room": "r1", "url": "http://x", "platform": "telegram"},
        {"url": "http://x"},
        {"room": "r1", "url": "http://x", "secret": "short"},
    ):
        with pytest.raises(SoukError) as err:
            await c.connector_create("shop", fields, ADMIN)
        assert err.value.code == "invalid"
    with pytest.raises(SoukError) as forb:
        await c.connector_create(
            "shop", {"room": "r1", "url": "http://x"}, {"id": "v", "role": "viewer"}
        )
    assert forb.value.code == "forbidden"


async def test_shutdown_turns_undelivered_items_into_dead_letters(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: every attempt is refused
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    pub = Collector()
    db = await open_db(tmp_path / "souk.db")
    c = Community(SqlCommunityStore(db), pub, now_ms, overdue_check_s=3600, connector_backoff_s=5.0,
                  allow_private_webhooks=True)
    await c.start()
    try:
        conn = await c.connector_create(
            "shop",
            {"room": "r1", "url": f"http://127.0.0.1:{dead_port}/x", "max_attempts": 20},
            ADMIN,
        )
        q1 = await c.ask("r1", {"id": "v1", "name": "V", "role": "viewer"}, "first?")
        q2 = await c.ask("r1", {"id": "v2", "name": "W", "role": "viewer"}, "second?")
        await wait_for(lambda: c.delivery.stats.attempts >= 1)
        await c.stop()
        stored = await c.store.dead_letters(conn["id"])
        assert sorted(d["item"]["question"] for d in stored) == sorted([q1["id"], q2["id"]])
        assert all(d["error"] == "not delivered before shutdown" for d in stored)
        assert len(pub.on("staff:r1", "connector_dead_letter")) == 2
    finally:
        await c.stop()
        await db.close()
