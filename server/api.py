"""The app's HTTP routes: the pages' paths, and the read-only JSON API under `/api/` (a
room's snapshot, sales, orders, stats and the merchant's numbers), each behind the bearer
token. (The server's own paths, `/healthz`, `/metrics`, static files, are server/http.py's.)

Why declared like the ops: who may read what is a role rule, and every role rule lives in the
registry (server/ops/registry.py). Each route is registered with `@route` (path, roles,
scope, the refusal a wrong role gets); `install` puts them behind one guard that checks the
path's literal segments, then the token, then the role, before the route runs with a
verified identity. The routes then check the scope (the room the token lists, the group's
shop). Paths: `*` stands for one id segment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from websockets.http11 import Request, Response

from client_sdk.protocol import Code, room_channel
from server import images
from server.domain.replay import valid_recording_id
from server.errors import SoukError
from server.http import file_response, json_response
from server.ops import fields
from server.ops.access import authorize_route
from server.ops.registry import (
    ANY_SHOP,
    MODERATORS,
    OWN_SHOP,
    ROUTES,
    STREAMERS,
    VIEWERS,
    Query,
    RouteSpec,
    Scope,
    Target,
    may,
    route,
)

if TYPE_CHECKING:
    from server.auth import Identity
    from server.services import Services

Identify = Callable[[Request, Query], "Identity"]
Route = Callable[[Request, Query, list[str]], Awaitable[Response]]


class AddRoute(Protocol):
    def __call__(self, method: str, key: str, handler: Any, *, max_body: int = 0) -> None: ...

ROOM_IN_PATH = (Scope(Target.ROOM, "path[1]"),)
GROUP_IN_PATH = (Scope(Target.GROUP, "path[1]"),)
NOT_ADMITTED = "your token does not admit you to this room"
SALES_STAFF = "sales and orders are for the room's streamer and admins"
MERCHANTS = "the numbers are for the shop's streamers and admins"
PAGES = {"studio": "studio.html", "live": "live.html", "group": "group.html",
         "dashboard": "dashboard.html", "replay": "replay.html"}


def page_for(path: str) -> str | None:
    """The page file for a path: `/`, or `/<page>` and `/<page>/<id>` (the page reads the
    id from its own URL)."""
    if path in ("/", "/index.html"):
        return "index.html"
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] in PAGES and len(parts) <= 2:
        return PAGES[parts[0]]
    return None


def install(api: dict[str, Route], sv: Services, identify: Identify,
            add: AddRoute | None = None) -> None:
    """Register every declared route into the HTTP router: GET routes in its table
    (`HttpRoutes.api`), the others (uploads) with `add` (`HttpRoutes.add`), which reads
    their body first, bounded by the route's `max_body`."""
    for spec in ROUTES.values():
        if spec.method == "GET":
            api[router_key(spec.path)] = _guarded(spec, sv, identify)
        elif add is not None:
            add(spec.method, router_key(spec.path), _guarded(spec, sv, identify),
                max_body=spec.max_body)


def router_key(path: str) -> str:
    """The router matches literal segments at even places and one id at odd places."""
    return "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(path.split("/")))


def _guarded(spec: RouteSpec, sv: Services, identify: Identify) -> Route:
    literal = [(i, p) for i, p in enumerate(spec.path.split("/")) if p != "*"]

    async def guarded(request: Request, query: Query, parts: list[str]) -> Response:
        if any(parts[i] != p for i, p in literal):
            raise SoukError(Code.NOT_FOUND, "no such resource")
        ident = identify(request, query)
        if not may(ident.role, spec.roles):
            raise SoukError(Code.FORBIDDEN, spec.refusal)
        await authorize_route(sv, ident, spec, parts)
        return await spec.handler(sv, ident, request, query, parts)

    return guarded


# ---- rooms -------------------------------------------------------------------------------
@route("rooms/*", roles=VIEWERS, scope=ROOM_IN_PATH, refusal=NOT_ADMITTED)
async def room_info(sv: Services, ident: Identity, request: Request, query: Query,
                    parts: list[str]) -> Response:
    key = parts[1]
    if sv.rooms.get(room_channel(key)) is None:
        raise SoukError(Code.NOT_FOUND, "no such room")
    await sv.rooms.ensure(room_channel(key))  # its kept chat and likes, after a restart too
    return json_response(await sv.channels.snapshot(room_channel(key)))


@route("rooms/*/stats", roles=MODERATORS, scope=ROOM_IN_PATH,
       refusal="stats are for the room's streamer, moderators and admins")
async def room_stats(sv: Services, ident: Identity, request: Request, query: Query,
                     parts: list[str]) -> Response:
    return json_response(await sv.community.room_stats(parts[1]))


@route("rooms/*/sales", roles=STREAMERS, scope=ROOM_IN_PATH, refusal=SALES_STAFF)
async def room_sales(sv: Services, ident: Identity, request: Request, query: Query,
                     parts: list[str]) -> Response:
    return json_response(await sv.commerce.sales_stats(parts[1]))


@route("rooms/*/orders", roles=STREAMERS, scope=ROOM_IN_PATH, refusal=SALES_STAFF)
async def room_orders(sv: Services, ident: Identity, request: Request, query: Query,
                      parts: list[str]) -> Response:
    after: str | None = (query.get("after") or [""])[0] or None
    raw_limit = (query.get("limit") or ["1000"])[0]
    if not raw_limit.isdigit():
        raise SoukError(Code.INVALID, "limit must be a positive integer")
    limit = min(5000, max(1, int(raw_limit)))
    orders = await sv.commerce.store.orders_of_room(parts[1], limit, after)
    return json_response({"room": parts[1], "orders": orders,
                          "next": orders[-1]["id"] if len(orders) == limit else None})


# ---- products --------------------------------------------------------------------------
PRODUCT_IN_PATH = (Scope(Target.SHOP, "path[1]", via="product"),)
PICTURE_STAFF = "product pictures are for the shop's streamers and admins"


@route("products/*/image", method="POST", max_body=images.MAX_BYTES, roles=STREAMERS,
       scope=PRODUCT_IN_PATH, refusal=PICTURE_STAFF)
async def product_image(sv: Services, ident: Identity, request: Request, query: Query,
                        parts: list[str]) -> Response:
    """A product's picture: PNG, JPEG or WebP by its bytes (never by the Content-Type sent;
    never SVG, which would be script served from this origin), at most 2 MB (413 before the
    body is read), stored by content hash and served at `/images/<hash>.<ext>`. Viewers of
    the rooms that sell or pin the product see it at once."""
    product = await sv.commerce.find_product(parts[1])
    if product is None:
        raise SoukError(Code.NOT_FOUND, f"no product {parts[1]}")
    if product["shop"] != ident.shop and not may(ident.role, ANY_SHOP):
        raise SoukError(Code.FORBIDDEN, PICTURE_STAFF)
    if sv.images is None:
        raise SoukError(Code.UNAVAILABLE, "this server takes no uploads")
    data = bytes(getattr(request, "body", b""))
    if not data:
        raise SoukError(Code.INVALID, "send the picture's bytes as the request body")
    ext = images.sniff(data)
    if ext is None:
        return json_response({"error": Code.INVALID, "message":
                              "the file is not a PNG, JPEG or WebP picture"}, 415)
    name = await sv.images.save(data, ext)
    url = f"/images/{name}"
    card = await sv.commerce.set_image(product["id"], url)
    for room in list(sv.rooms.by_channel.values()):  # the rooms that show it pinned
        if room.kind == "room" and room.pinned and room.pinned.get("id") == card["id"]:
            room.pinned = card
            await sv.save_room(room)
            sv.bus.publish(room_channel(room.id), "pinned", {"product": card})
    return json_response({"product": card, "image": url})


def _admits(ident: Identity, room: str, refusal: str) -> None:
    if not ident.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, refusal)


# ---- lucky draws ---------------------------------------------------------------------------
DRAW_IN_PATH = (Scope(Target.ROOM, "path[1]", via="draw"), Scope(Target.GROUP, "path[1]", via="draw"))


@route("draws/*/entrants", roles=VIEWERS, scope=DRAW_IN_PATH,
       refusal="the entrant list is for the draw's room or group")
async def draw_entrants(sv: Services, ident: Identity, request: Request, query: Query,
                        parts: list[str]) -> Response:
    """The closed entrant list as hashes, the seed and the winners: what `souk draw-verify`
    checks (docs/draws.md)."""
    d = await sv.draws.find(parts[1])
    if d.scope == "room":
        _admits(ident, d.target, NOT_ADMITTED)
    elif not (ident.token_lists_group(d.target) or may(ident.role, MODERATORS)
              or await sv.community.is_member_fresh(ident.id, d.target)):
        raise SoukError(Code.FORBIDDEN, ROUTES["draws/*/entrants"].refusal)
    return json_response(await sv.draws.entrants(d))


@route("rooms/*/draws", roles=STREAMERS, scope=ROOM_IN_PATH, refusal=MERCHANTS)
async def room_draws(sv: Services, ident: Identity, request: Request, query: Query,
                     parts: list[str]) -> Response:
    """The dashboard's draws: how many, their entrants, the viewers present at each close."""
    if not fields.ID_RE.fullmatch(parts[1]):
        raise SoukError(Code.FORBIDDEN, NOT_ADMITTED)
    return json_response(await sv.draws.room_stats(parts[1]))


# ---- the merchant's numbers ----------------------------------------------------------------
@route("rooms/*/metrics", roles=STREAMERS, scope=ROOM_IN_PATH, refusal=MERCHANTS)
async def room_insights(sv: Services, ident: Identity, request: Request, query: Query,
                        parts: list[str]) -> Response:
    if not fields.ID_RE.fullmatch(parts[1]):
        raise SoukError(Code.FORBIDDEN, NOT_ADMITTED)
    room = sv.rooms.get(room_channel(parts[1]))
    shop = room.shop if room is not None else None  # cluster: else the record's room_shops
    return json_response(await sv.insights.for_room(parts[1], shop))


@route("groups/*/metrics", roles=STREAMERS, scope=GROUP_IN_PATH, refusal=MERCHANTS)
async def group_insights(sv: Services, ident: Identity, request: Request, query: Query,
                         parts: list[str]) -> Response:
    if not fields.ID_RE.fullmatch(parts[1]):  # an id is known and the caller's shop's by now
        raise SoukError(Code.NOT_FOUND, "no such group")
    return json_response(await sv.insights.for_group(parts[1]))


@route("shop/metrics", roles=STREAMERS, scope=OWN_SHOP, refusal=MERCHANTS)
async def shop_insights(sv: Services, ident: Identity, request: Request, query: Query,
                        parts: list[str]) -> Response:
    return json_response(await sv.insights.for_shop(ident.shop))


# ---- replays -------------------------------------------------------------------------------
REPLAY_TYPE = "video/webm"


@route("rooms/*/replays", roles=VIEWERS, scope=ROOM_IN_PATH, refusal=NOT_ADMITTED)
async def room_replays(sv: Services, ident: Identity, request: Request, query: Query,
                       parts: list[str]) -> Response:
    """The room's past lives, newest first, each with its chapters."""
    return json_response([] if sv.replays is None else await sv.replays.replays(parts[1]))


@route("replays/*/file", roles=VIEWERS, scope=(Scope(Target.ROOM, "path[1]", via="replay"),),
       refusal=NOT_ADMITTED)
async def replay_file(sv: Services, ident: Identity, request: Request, query: Query,
                      parts: list[str]) -> Response:
    """The recording, streamed from disk; `Range` requests get 206 (a player seeks so)."""
    rid = parts[1]
    row = await sv.replays.replay(rid) if sv.replays is not None and valid_recording_id(rid) \
        else None
    if row is None or row["status"] == "recording":
        raise SoukError(Code.NOT_FOUND, "no such replay")
    if not ident.may_enter_room(str(row["room"])):
        raise SoukError(Code.FORBIDDEN, NOT_ADMITTED)
    assert sv.replays is not None
    path = sv.replays.path(row)
    kind = "video/mp4" if path.suffix == ".mp4" else REPLAY_TYPE
    return file_response(path, request.headers.get("Range"), kind)
