"""Inbound answers from external groups: a small aiohttp listener, `POST /hooks/<connector>`.

Why a second listener: the websocket server parses only GET upgrades, so signed POSTs are
served here, on `--webhook-port`, started only when a connector exists. Every request is
verified (HMAC over timestamp + body, ±300 s, no replays) before its body is even parsed.

Body (JSON): `{"type": "answer", "question": <room question id>, "text": str,
"name": str?, "user": str?}`. Replies: 200 `{"ok": true, "question": {...}}`; 400 bad body;
401 bad or missing signature; 404 unknown connector or question; 409 already answered;
413 body above 64 KiB.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from server.connectors.formats import Connector
from server.connectors.signing import SignatureError, Verifier
from server.errors import SoukError

MAX_BODY = 64 * 1024
AnswerHook = Callable[[Connector, dict[str, Any]], Awaitable[dict[str, Any]]]
_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409, "forbidden": 403, "filtered": 422}


def _json(status: int, data: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class InboundListener:
    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Connector | None]],
        on_answer: AnswerHook,
        clock_ms: Callable[[], int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.lookup = lookup
        self.on_answer = on_answer
        self.clock_ms = clock_ms
        self.host = host
        self.port = port
        self.verifier = Verifier()
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0 in tests)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/hooks/{cid}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        conn = await self.lookup(request.match_info["cid"])  # a cluster may load it first
        if conn is None:
            return _json(404, {"error": "not_found", "message": "no such connector"})
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json(413, {"error": "too_large", "message": "body above 64 KiB"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": "too_large", "message": "body above 64 KiB"})
        try:
            self.verifier.verify(conn.secret, body, request.headers, self.clock_ms())
        except SignatureError as exc:
            return _json(401, {"error": "unauthorized", "message": str(exc)})
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _json(400, {"error": "invalid", "message": "body is not JSON"})
        if not isinstance(data, dict) or data.get("type", "answer") != "answer":
            return _json(400, {"error": "invalid", "message": "expected an answer object"})
        try:
            question = await self.on_answer(conn, data)
        except SoukError as exc:
            return _json(_STATUS.get(exc.code, 400), {"error": exc.code, "message": exc.message})
        return _json(200, {"ok": True, "question": question})
