"""HTTP on the websocket port: health, metrics, pages, the SDK file and read-only JSON API.

The websockets server parses GET requests only; `process_request` answers every path but
`/ws` here, so the path from an event to a socket stays inside one small library.
"""

from __future__ import annotations

import http
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from client_sdk.protocol import Code
from server.auth import Identity, verify_token
from server.errors import SoukError

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger("souk.http")

WEB_DIR = Path(__file__).parent / "web"
SDK_DIR = Path(__file__).parent.parent / "client_sdk" / "js"

STATUS_FOR_CODE = {
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.INVALID: 400,
    Code.BAD_FRAME: 400,
    Code.RATE_LIMITED: 429,
    Code.CONFLICT: 409,
    Code.UNAVAILABLE: 503,
}

Route = Callable[["App", Request, dict[str, list[str]], list[str]], Awaitable[Response]]


def response(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(doc: Any, status: int = 200) -> Response:
    return response(status, orjson.dumps(doc), "application/json")


def error_response(err: SoukError) -> Response:
    return json_response({"error": err.code, "message": err.message}, STATUS_FOR_CODE.get(err.code, 400))


def bearer(app: App, request: Request, query: dict[str, list[str]]) -> Identity:
    """The caller's identity from `Authorization: Bearer <token>` (or `?token=` for pages)."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else (query.get("token") or [""])[0]
    if not token:
        raise SoukError(Code.UNAUTHORIZED, "send Authorization: Bearer <token>")
    return verify_token(token, app.cfg.secret)


def static_file(base: Path, rel: str) -> Response:
    path = (base / rel).resolve()
    if not path.is_file() or base.resolve() not in path.parents:
        return json_response({"error": "not_found", "message": "no such file"}, 404)
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        ctype = "text/javascript"
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return response(200, path.read_bytes(), ctype)


class HttpRoutes:
    """Dispatch by path prefix; each handler returns a complete Response."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.api: dict[str, Callable[[Request, dict[str, list[str]], list[str]], Awaitable[Response]]] = {}

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == "/ws":
            if "upgrade" in request.headers.get("Connection", "").lower():
                if self.app.draining:
                    return json_response({"error": "unavailable", "message": "server draining"}, 503)
                return None
            return json_response({"error": "invalid", "message": "websocket upgrade expected"}, 426)
        query = parse_qs(url.query)
        try:
            return await self.route(request, path, query)
        except SoukError as err:
            return error_response(err)
        except Exception:
            log.exception("http route failed", extra={"path": path})
            return json_response({"error": "internal", "message": "internal error"}, 500)

    async def route(self, request: Request, path: str, query: dict[str, list[str]]) -> Response:
        app = self.app
        if path == "/healthz":
            return json_response({"status": "ok" if not app.draining else "draining"},
                                 200 if not app.draining else 503)
        if path == "/metrics":
            app.refresh_metrics()
            return response(200, app.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path.startswith("/sdk/"):
            return static_file(SDK_DIR, path[5:])
        if path.startswith("/static/"):
            return static_file(WEB_DIR, path[8:])
        if path.startswith("/api/"):
            parts = [p for p in path[5:].split("/") if p]
            return await self.route_api(request, parts, query)
        page = app.page_for(path)
        if page is not None:
            return static_file(WEB_DIR, page)
        return json_response({"error": "not_found", "message": "no such page"}, 404)

    async def route_api(self, request: Request, parts: list[str], query: dict[str, list[str]]) -> Response:
        app = self.app
        if parts == ["demo", "token"]:
            if not app.cfg.demo:
                raise SoukError(Code.NOT_FOUND, "demo mode is off")
            return json_response(app.demo_token(query))
        key = "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts))
        handler = self.api.get(key)
        if handler is None:
            raise SoukError(Code.NOT_FOUND, "no such API endpoint")
        return await handler(request, query, parts)
