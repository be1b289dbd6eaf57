"""The op table: each op names its handler and the roles that may call it.

Handlers live in modules named after what they act on (channels, room, commerce, ...) and
register themselves with `@op`. The gateway looks ops up here and checks auth and role
before calling, so a handler starts from a verified identity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Frame

if TYPE_CHECKING:
    from server.app import App
    from server.session import Session

Result = dict[str, Any] | None
Handler = Callable[["App", "Session", Frame], Awaitable[Result]]

VIEWERS = frozenset({"viewer", "member", "moderator", "streamer", "admin"})
MEMBERS = frozenset({"member", "moderator", "streamer", "admin"})
MODERATORS = frozenset({"moderator", "streamer", "admin"})
STREAMERS = frozenset({"streamer", "admin"})
ADMINS = frozenset({"admin"})


@dataclass(frozen=True)
class OpSpec:
    name: str
    handler: Handler
    roles: frozenset[str]
    auth: bool = True
    cost: float = 1.0


OPS: dict[str, OpSpec] = {}


def op(
    name: str, *, roles: frozenset[str] = VIEWERS, auth: bool = True, cost: float = 1.0
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = OpSpec(name, fn, roles, auth, cost)
        return fn

    return register
