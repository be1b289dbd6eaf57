"""HTTP/1.1 on the websocket port: request heads, routes by path and method, responses.

The connection layer (server/listener.py) reads a request head, asks `HttpRoutes.plan` what
the route accepts (which methods, how large a body) before it reads a single byte of body,
then calls the route. Every path but `/ws` is answered here; `/ws` with an upgrade becomes a
websocket (server/handshake.py). See docs/wire.md for the rules a route can rely on.

Routes under `/api/` are keyed by their path with every second segment a wildcard:
`rooms/*/sales` matches `/api/rooms/r1/sales`. GET routes go in `HttpRoutes.api`; a route for
another method (an upload, a deletion) is added with `HttpRoutes.add(method, key, handler,
max_body=...)` and gets the body read for it, bounded by `max_body`, with a deadline.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http
import logging
import mimetypes
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response

from client_sdk.protocol import Code
from server.auth import Identity
from server.errors import SoukError

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger("souk.http")

WEB_DIR = Path(__file__).parent / "web"
SDK_DIR = Path(__file__).parent.parent / "client_sdk" / "js"

MAX_HEAD_BYTES = 16 * 1024  # request line + headers; above: 431
MAX_HEADERS = 100
# Pages load no script, style, font or media from anywhere but this origin; websockets may
# reach this server (ws:/wss:); nothing may frame the pages (clickjacking on a buy button).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
GET_METHODS = ("GET", "HEAD")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # a body needs a Content-Length

STATUS_FOR_CODE = {
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.INVALID: 400,
    Code.BAD_FRAME: 400,
    Code.TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Code.CONFLICT: 409,
    Code.UNAVAILABLE: 503,
}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field lines: name, colon, a value of visible characters, spaces and tabs; CRLF between
_FIELDS = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*"
                     rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)*")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_DIGITS = re.compile(r"[0-9]{1,15}")


@dataclasses.dataclass
class Request(WsRequest):
    """A request as routes see it: websockets' Request (path with query, headers, method)
    plus the body (read before the route runs, bounded by the route) and the peer's address."""

    body: bytes = b""
    peer: str = ""


ApiHandler = Callable[[Request, dict[str, list[str]], list[str]], Awaitable[Response]]
# a GET route needs no body: it takes websockets' Request (server/api.py's routes)
GetHandler = Callable[[WsRequest, dict[str, list[str]], list[str]], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """A non-GET route: its handler and the largest body it accepts (bytes; 0: none)."""

    handler: ApiHandler
    max_body: int = 0


class HttpError(Exception):
    """A request refused before any route ran (malformed, too large, wrong method)."""

    def __init__(self, status: int, code: str, message: str, *, allow: tuple[str, ...] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.allow = allow
        self.headers = dict(headers or {})

    def response(self) -> Response:
        extra = dict(self.headers)
        if self.allow:
            extra["Allow"] = ", ".join(self.allow)
        return json_response({"error": self.code, "message": self.message}, self.status, extra)


@dataclass(slots=True)
class Head:
    """A parsed request head. `fields` holds lower-cased names (repeated fields joined with
    ", ", so a repeated Content-Length or Sec-WebSocket-Key is invalid by construction);
    `pairs()` gives the fields as sent, for the Headers a route receives."""

    method: str
    target: str
    version: str
    fields: dict[str, str]
    lines: list[str]

    @property
    def path(self) -> str:
        q = self.target.find("?")
        return self.target if q < 0 else self.target[:q]

    def pairs(self) -> list[tuple[str, str]]:
        out = []
        for line in self.lines:
            name, _, value = line.partition(":")
            out.append((name, value.strip(" \t")))
        return out

    def keep_alive(self) -> bool:
        conn = self.fields.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return "close" not in conn
        return "keep-alive" in conn

    def content_length(self) -> int | None:
        """The declared body length; None when absent. Raises HttpError when it is not one
        plain decimal number, or when Transfer-Encoding is used (bodies must be sized)."""
        if "transfer-encoding" in self.fields:
            raise HttpError(411, Code.INVALID, "send the body with a Content-Length (no chunked bodies)")
        raw = self.fields.get("content-length")
        if raw is None:
            return None
        if not _DIGITS.fullmatch(raw):
            raise HttpError(400, Code.INVALID, "bad Content-Length")
        return int(raw)


def parse_head(raw: bytes) -> Head:
    """Parse a request line and header fields (without the blank line that ends them).

    One regular expression checks every field line at once (a token, a colon, a value
    without control characters; obsolete line folding is refused), then the head is decoded
    once and split with str methods: a join's handshake is parsed in a few microseconds."""
    eol = raw.find(b"\r\n")
    request_line = raw if eol < 0 else raw[:eol]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HttpError(400, Code.INVALID, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(505, Code.INVALID, "HTTP/1.1 only")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, Code.INVALID, "the request target must be a path")
    fields: dict[str, str] = {}
    lines: list[str] = []
    if eol >= 0:
        block = raw[eol + 2 :]
        if not _FIELDS.fullmatch(block):
            raise HttpError(400, Code.INVALID, "malformed header field")
        lines = block.decode("latin-1").split("\r\n")
        if len(lines) > MAX_HEADERS:
            raise HttpError(431, Code.TOO_LARGE, "too many header fields")
        for line in lines:
            name, _, value = line.partition(":")
            key = name.lower()
            value = value.strip(" \t")
            old = fields.get(key)
            fields[key] = value if old is None else f"{old}, {value}"
    return Head(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), fields, lines)


def response(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    for k, v in (extra or {}).items():
        if k in headers:  # one value: the route's (e.g. a cacheable picture's Cache-Control)
            del headers[k]
        headers[k] = v
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


@dataclass
class FileResponse(Response):
    """A response whose body is ``length`` bytes of ``path`` from ``start``: the connection
    streams it in chunks (server/listener.py), never reading the file whole into memory."""

    path: Path = Path()
    start: int = 0
    length: int = 0


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """A ``Range`` header against a file of ``size`` bytes (RFC 9110 §14): the first and last
    byte asked for, None to send the whole file (no header, another unit, several ranges or
    a syntax error: a server may ignore those), or False when it cannot be satisfied (416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


def file_response(path: Path, range_header: str | None, content_type: str) -> Response:
    """``path`` as a 200, or the part a Range asks for as a 206, or a 416."""
    try:
        size = path.stat().st_size
    except OSError:
        return json_response({"error": "not_found", "message": "no such file"}, 404)
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Accept-Ranges"] = "bytes"
    headers["Cache-Control"] = "private, max-age=60"
    headers["X-Content-Type-Options"] = "nosniff"
    wanted = byte_range(range_header, size)
    if wanted is None:
        return FileResponse(200, "OK", headers, b"", None, path, 0, size)
    if not isinstance(wanted, tuple):  # False: nothing of the file is in the range
        return response(416, b"", "text/plain", {"Content-Range": f"bytes */{size}",
                                                 "Accept-Ranges": "bytes"})
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return FileResponse(206, "Partial Content", headers, b"", None, path, start, end - start + 1)


def json_response(doc: Any, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    return response(status, orjson.dumps(doc), "application/json", extra)


def error_response(err: SoukError) -> Response:
    return json_response({"error": err.code, "message": err.message}, STATUS_FOR_CODE.get(err.code, 400))


class _Clock:
    """The Date header, formatted once a second (formatting costs more than the rest)."""

    second = -1
    text = ""

    @classmethod
    def date(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.text = now, email.utils.formatdate(now, usegmt=True)
        return cls.text


def serialize(resp: Response, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """Status line, the route's headers plus the ones every answer carries, then the body
    (a FileResponse: only the head, its body is streamed after it)."""
    headers = resp.headers
    body = bytes(resp.body)
    length = resp.length if isinstance(resp, FileResponse) else len(body)
    out = [f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n"]
    for name, value in headers.raw_items():
        if name.lower() not in ("connection", "content-length", "date", "server"):
            out.append(f"{name}: {value}\r\n")
    if "Content-Security-Policy" not in headers:
        out.append(f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n")
    if "Referrer-Policy" not in headers:  # page URLs carry ?token=: never to another origin
        out.append("Referrer-Policy: same-origin\r\n")
    out.append(f"Content-Length: {length}\r\nDate: {_Clock.date()}\r\nServer: Souk\r\n"
               f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    head = "".join(out).encode("latin-1")
    return head if head_only else head + body


def bearer(app: App, request: WsRequest, query: dict[str, list[str]]) -> Identity:
    """The caller's identity from `Authorization: Bearer <token>` (or `?token=` for pages)."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else (query.get("token") or [""])[0]
    if not token:
        raise SoukError(Code.UNAUTHORIZED, "send Authorization: Bearer <token>")
    return app.services.tokens.verify(token)  # the websocket's `auth` remembers the same tokens


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


def api_key(parts: list[str]) -> str:
    """`["rooms", "r1", "sales"]` -> `rooms/*/sales`: every second segment is an id."""
    return "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts))


def api_parts(path: str) -> list[str]:
    return [p for p in path[5:].split("/") if p]


class HttpRoutes:
    """Dispatch by path prefix; each handler returns a complete Response."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.api: dict[str, GetHandler] = {}  # GET (and HEAD) routes under /api/
        self.routes: dict[str, dict[str, Route]] = {}  # key -> method -> route, other methods

    def add(self, method: str, key: str, handler: ApiHandler, *, max_body: int = 0) -> None:
        """A route under /api/ for `method` (POST, PUT, PATCH, DELETE; GET routes go in
        `api`). Its body is read before the handler runs: Content-Length required for POST,
        PUT and PATCH, at most `max_body` bytes (else 413 before a byte is read), within the
        body deadline (docs/wire.md)."""
        method = method.upper()
        if method in GET_METHODS or not _TOKEN.fullmatch(method.encode()):
            raise ValueError(f"add() is for methods with a body, not {method!r}: GET routes go in api")
        self.routes.setdefault(key, {})[method] = Route(handler, max_body)

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods a path answers to (empty: no such path)."""
        if path.startswith("/api/"):
            key = api_key(api_parts(path))
            methods = (*GET_METHODS,) if key in self.api or key == "demo/token" else ()
            return methods + tuple(sorted(self.routes.get(key, {})))
        return GET_METHODS

    def plan(self, head: Head) -> int:
        """Before the body is read: the largest body this request may carry, or HttpError
        (405 with Allow for a method the path does not take, 411/413 for its body)."""
        method = head.method
        declared = head.content_length()
        allowed = self.allowed(head.path)
        if method in GET_METHODS:
            if declared:
                raise HttpError(400, Code.INVALID, "a GET request carries no body")
            if allowed and method not in allowed:  # an API path for other methods only
                raise HttpError(405, Code.INVALID, f"{method} is not allowed here", allow=allowed)
            return 0
        if method not in allowed:
            if not allowed:
                raise HttpError(404, Code.NOT_FOUND, "no such API endpoint")
            raise HttpError(405, Code.INVALID, f"{method} is not allowed here", allow=allowed)
        route = self.routes[api_key(api_parts(head.path))][method]
        if declared is None:
            if method in BODY_METHODS:
                raise HttpError(411, Code.INVALID, "a Content-Length is required")
            return 0
        if declared > route.max_body:
            raise HttpError(413, Code.TOO_LARGE, f"the body may be at most {route.max_body} bytes")
        return declared

    async def __call__(self, request: Request) -> Response:
        url = urlsplit(request.path)
        path = url.path
        if path == "/ws":
            return json_response({"error": "invalid", "message": "websocket upgrade expected"}, 426,
                                 {"Upgrade": "websocket"})
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
        if request.method not in GET_METHODS:
            if not path.startswith("/api/"):
                raise SoukError(Code.NOT_FOUND, "no such resource")
            route = self.routes[api_key(api_parts(path))][request.method]
            return await route.handler(request, query, api_parts(path))
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
        if path.startswith("/images/"):
            return await self.image(path[8:])
        if path.startswith("/api/"):
            return await self.route_api(request, api_parts(path), query)
        page = app.page_for(path)
        if page is not None:
            return static_file(WEB_DIR, page)
        return json_response({"error": "not_found", "message": "no such page"}, 404)

    async def image(self, name: str) -> Response:
        """An uploaded picture: named by its content hash, so cached for a year."""
        found = await self.app.images.read(name)
        if found is None:
            return json_response({"error": "not_found", "message": "no such picture"}, 404)
        data, ctype = found
        return response(200, data, ctype, {"Cache-Control": "public, max-age=31536000, immutable"})

    async def route_api(self, request: Request, parts: list[str], query: dict[str, list[str]]) -> Response:
        app = self.app
        if parts == ["demo", "token"]:
            if not app.cfg.demo:
                raise SoukError(Code.NOT_FOUND, "demo mode is off")
            return json_response(app.demo_token(query))
        handler = self.api.get(api_key(parts))
        if handler is None:
            raise SoukError(Code.NOT_FOUND, "no such API endpoint")
        return await handler(request, query, parts)
