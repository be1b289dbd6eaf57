"""Demo mode (`souk serve --demo`): a seeded room and group, and tokens for anyone who asks.

Why a module of its own: the demo is what a first-time user sees (`make run`, the pages'
"try it" links), and it must never leak into a real deployment: everything that exists only
in demo mode is here, called only when `--demo` is on (`GET /api/demo/token` answers 404
otherwise, server/http.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Role
from client_sdk.tokens import mint_token
from server.errors import SoukError
from server.ops import fields

if TYPE_CHECKING:
    from server.commerce import Commerce
    from server.community import Community
    from server.domain.room import Room
    from server.rooms import Rooms

DEMO_ROOM = "demo"
DEMO_PRODUCTS: tuple[dict[str, Any], ...] = (
    {"id": "demo-serum", "title": "Hydrating serum 30 ml", "price": 12900, "stock": 500,
     "image": "/static/products/serum.svg"},
    {"id": "demo-mask", "title": "Sheet masks x10", "price": 5900, "stock": 1000,
     "image": "/static/products/mask.svg"},
)
TOKEN_TTL_S = 12 * 3600


def demo_token(secret: str, query: dict[str, list[str]], connections: int) -> dict[str, Any]:
    """`GET /api/demo/token?role=&room=&name=&sub=`: a token for the demo room (admins: every
    room). Without `sub`, a fresh user id (`connections` keeps two at once apart)."""
    role = (query.get("role") or ["viewer"])[0]
    if role not in Role.ALL:
        raise SoukError(Code.INVALID, f"role must be one of {', '.join(Role.ALL)}")
    room = (query.get("room") or [DEMO_ROOM])[0]
    if not fields.ID_RE.fullmatch(room):
        raise SoukError(Code.INVALID, "bad room id")
    name = (query.get("name") or [""])[0][:32]
    sub = (query.get("sub") or [""])[0][:64]
    if not sub or not fields.ID_RE.fullmatch(sub):
        sub = f"{role}-{int(time.time() * 1000) % 10_000_000:07d}-{connections}"
    token = mint_token(secret, sub, name=name or sub, role=role,
                       rooms=[room, "*"] if role == Role.ADMIN else [room], groups=["*"],
                       ttl_s=TOKEN_TTL_S)
    return {"token": token, "user": {"id": sub, "name": name or sub, "role": role}, "room": room}


async def seed(rooms: Rooms, commerce: Commerce, community: Community,
               save_room: Callable[[Room], Awaitable[None]], clock_ms: Callable[[], int]) -> None:
    """A demo room linked to a demo core group whose demo member is already in it."""
    room = rooms.room(DEMO_ROOM)
    if not room.title:
        room.title = "Souk demo live room"
        for product in DEMO_PRODUCTS:
            if commerce.product(str(product["id"])) is None:
                await commerce.product_create("default", dict(product))
        room.pinned = commerce.product("demo-serum")
        await save_room(room)
    if "demo-core" not in community.directory.groups:
        group = community.directory.create_group(
            "demo-core", "default", {"tier": "core", "topic": "demo", "title": "Demo core fans"},
            clock_ms())
        await community.store.create_group(group)
        await community.link_groups(DEMO_ROOM, ["demo-core"], shop="default")
        await community.group_join({"id": "demo-member", "name": "Demo member", "role": "member"},
                                   "demo-core", None, None, shop="default")
