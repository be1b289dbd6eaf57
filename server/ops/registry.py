"""The op table: each op names its handler, the roles that may call it and what it acts on.

Handlers live in modules named after what they act on (channels, room, commerce, ...) and
register themselves with `@op`. The gateway looks ops up here and checks auth and role
before calling, so a handler starts from a verified identity whose role is allowed. The HTTP
API routes declare theirs the same way (`@route`, checked by server/api.py before the
route runs). **Every role rule lives in this module**: the gates above, and the few rules that
are not gates but still depend on the role (`ANY_SHOP`, `NEED_NOT_JOIN`, `UNLIMITED_CHAT`,
`MODERATES_ANY_GROUP`, `NOT_CUSTOMERS`, `CHANNEL_ROLES`); handlers name these sets, they never compare roles themselves.

Each op also declares its **scope**: what it acts on (a room, a group, a shop, the caller's
own records, the session) and which frame field names the target, directly or through an
object that belongs to it (`buy` names a `sale`, which belongs to a room). The gateway checks
the shop and the token's claims of every room, group and channel an op names directly
(server/ops/access.py); handlers resolve objects named through another and ask the same
module. The declaration is also what the authorization matrix (every op × every role ×
own/other room, group or shop) is derived from (`matrix()`, tests/integration/test_hostile_matrix.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Frame, Role

if TYPE_CHECKING:
    from websockets.http11 import Request, Response

    from server.auth import Identity
    from server.services import Services
    from server.session import Session

Result = dict[str, Any] | None
Handler = Callable[["Services", "Session", Frame], Awaitable[Result]]
Query = dict[str, list[str]]
RouteHandler = Callable[["Services", "Identity", "Request", Query, list[str]], Awaitable["Response"]]

# ---- role sets: the gates ------------------------------------------------------------------
VIEWERS = frozenset({Role.VIEWER, Role.MEMBER, Role.MODERATOR, Role.STREAMER, Role.ADMIN})
MEMBERS = frozenset({Role.MEMBER, Role.MODERATOR, Role.STREAMER, Role.ADMIN})
MODERATORS = frozenset({Role.MODERATOR, Role.STREAMER, Role.ADMIN})
STREAMERS = frozenset({Role.STREAMER, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})

# ---- role rules that are not gates ---------------------------------------------------------
# Acts in every shop's groups, posts and sales, not only its token's shop (the merchant's
# backend).
ANY_SHOP = ADMINS
# Staff act in a group, vote in its polls, post in it without being members of it; they
# moderate the groups, they do not join them.
NEED_NOT_JOIN = MODERATORS
# Staff messages and questions are not rate-limited per user: the streamer answers a rush.
UNLIMITED_CHAT = MODERATORS
# Moderates any group, even one its token does not list and it has not joined.
MODERATES_ANY_GROUP = ADMINS
# The shop's staff are not its customers: a coupon issued to a group's members skips them.
NOT_CUSTOMERS = MODERATORS
# Who may subscribe to each kind of channel (join, resume). A staff member who joins a room
# is also subscribed to its staff channel.
CHANNEL_ROLES: dict[str, frozenset[str]] = {
    "room": VIEWERS,
    "group": VIEWERS,
    "user": VIEWERS,
    "staff": MODERATORS,
}


# ---- scope: what an op acts on -------------------------------------------------------------
class Target(StrEnum):
    """The kinds of thing an op can act on."""

    SESSION = "session"  # the connection itself: no target (auth, ping)
    USER = "user"  # the caller's own records (its orders, coupons, points)
    SHOP = "shop"  # a shop: the caller's own unless `field` names an object of another
    ROOM = "room"
    GROUP = "group"
    CHANNEL = "channel"  # any channel, named by its full name (`room:<id>`, `group:<id>`, ...)


@dataclass(frozen=True)
class Scope:
    """One target an op may act on.

    `field`: the frame field that names the target, or an object that belongs to it; None
    when the target is the caller's own (its session, its records, its token's shop).
    `via`: the kind of object `field` names when it is not the target itself (`sale`,
    `offer`, `poll`, `post`): the target is the room, group or shop that object belongs to.
    """

    target: Target
    field: str | None = None
    via: str | None = None

    def __post_init__(self) -> None:
        if self.target in (Target.SESSION, Target.USER) and self.field is not None:
            raise ValueError(f"a {self.target} scope names no field")
        if self.target in (Target.ROOM, Target.GROUP, Target.CHANNEL) and self.field is None:
            raise ValueError(f"a {self.target} scope must name the field that holds it")
        if self.via is not None and self.field is None:
            raise ValueError("`via` needs the field that names the object")


Scopes = tuple[Scope, ...]

SESSION: Scopes = (Scope(Target.SESSION),)
OWN_USER: Scopes = (Scope(Target.USER),)
OWN_SHOP: Scopes = (Scope(Target.SHOP),)
ROOM: Scopes = (Scope(Target.ROOM, "room"),)
GROUP: Scopes = (Scope(Target.GROUP, "group"),)
ROOM_OR_GROUP: Scopes = (Scope(Target.ROOM, "room"), Scope(Target.GROUP, "group"))


def through(field: str, *targets: Target) -> Scopes:
    """The op names an object (`field`) that belongs to one of `targets`."""
    return tuple(Scope(t, field, via=field) for t in targets)


# ---- the tables ----------------------------------------------------------------------------
@dataclass(frozen=True)
class OpSpec:
    name: str
    handler: Handler
    roles: frozenset[str]
    scope: Scopes
    auth: bool = True
    cost: float = 1.0


@dataclass(frozen=True)
class RouteSpec:
    """An HTTP API route (`GET /api/<path>`, `*` one path segment): who may call it (the
    bearer token's role; `refusal` is the message of the 403 otherwise) and what it reads."""

    path: str
    handler: RouteHandler
    roles: frozenset[str]
    scope: Scopes
    refusal: str
    method: str = "GET"  # another method (an upload) has its body read first, at most max_body
    max_body: int = 0


OPS: dict[str, OpSpec] = {}
ROUTES: dict[str, RouteSpec] = {}


def op(
    name: str, *, roles: frozenset[str], scope: Scopes, auth: bool = True, cost: float = 1.0
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = OpSpec(name, fn, roles, scope, auth, cost)
        return fn

    return register


def route(
    path: str, *, roles: frozenset[str], scope: Scopes, refusal: str, method: str = "GET",
    max_body: int = 0,
) -> Callable[[RouteHandler], RouteHandler]:
    def register(fn: RouteHandler) -> RouteHandler:
        if path in ROUTES:
            raise RuntimeError(f"route {path!r} registered twice")
        ROUTES[path] = RouteSpec(path, fn, roles, scope, refusal, method, max_body)
        return fn

    return register


def may(role: str, roles: frozenset[str]) -> bool:
    """The one role test: is `role` in the declared set."""
    return role in roles


@dataclass(frozen=True)
class MatrixRow:
    """One cell of the authorization matrix: `op` called by `role` on a `target` that is the
    caller's own or another's (`whose`), and whether the role gate lets it through (the
    scope's own check, e.g. "your token lists this room", comes after)."""

    op: str
    role: str
    target: Target
    field: str | None
    via: str | None
    whose: str  # "own" or "other"
    role_allowed: bool


def matrix() -> list[MatrixRow]:
    """Every op × every role × each target it declares × own/other: the rows an
    authorization test walks (the expected outcome of the scope check is the hardening
    task's to state; the role gate's is known here)."""
    rows: list[MatrixRow] = []
    for spec in sorted(OPS.values(), key=lambda s: s.name):
        for role in Role.ALL:
            for scope in spec.scope:
                whose_list = ("own",) if scope.target in (Target.SESSION, Target.USER) else (
                    "own", "other")
                for whose in whose_list:
                    rows.append(MatrixRow(spec.name, role, scope.target, scope.field, scope.via,
                                          whose, not spec.auth or may(role, spec.roles)))
    return rows
