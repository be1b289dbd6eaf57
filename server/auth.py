"""Token verification: who is this connection, and which rooms and groups may it enter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from client_sdk.protocol import Code, Role
from server.domain.room import Actor
from server.errors import SoukError

MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class Identity:
    """The verified claims of a token."""

    id: str
    name: str
    role: str
    rooms: tuple[str, ...] = ("*",)
    groups: tuple[str, ...] = ()
    shop: str = "default"
    exp: int = 0
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.name, self.role)

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.STREAMER, Role.MODERATOR, Role.ADMIN)

    def may_enter_room(self, room: str) -> bool:
        return self.role == Role.ADMIN or "*" in self.rooms or room in self.rooms

    def token_lists_group(self, group: str) -> bool:
        return self.role == Role.ADMIN or "*" in self.groups or group in self.groups

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role}


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise SoukError(Code.UNAUTHORIZED, f"claim '{name}' must be a list of ids")
    if len(value) > 1000 or not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value):
        raise SoukError(Code.UNAUTHORIZED, f"claim '{name}' must be a list of ids")
    return tuple(value)


def verify_token(token: Any, secret: str, *, leeway_s: int = 5) -> Identity:
    """Check signature, expiry and claims; raise SoukError(unauthorized) with the reason."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise SoukError(Code.UNAUTHORIZED, "token must be a non-empty string")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "exp"]},
            leeway=leeway_s,
        )
    except jwt.ExpiredSignatureError:
        raise SoukError(Code.UNAUTHORIZED, "token expired") from None
    except jwt.InvalidSignatureError:
        raise SoukError(Code.UNAUTHORIZED, "bad token signature") from None
    except jwt.PyJWTError as exc:
        raise SoukError(Code.UNAUTHORIZED, f"invalid token: {exc}") from None
    sub = claims.get("sub")
    role = claims.get("role", Role.VIEWER)
    name = claims.get("name", sub)
    shop = claims.get("shop", "default")
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise SoukError(Code.UNAUTHORIZED, "claim 'sub' must be a user id")
    if role not in Role.ALL:
        raise SoukError(Code.UNAUTHORIZED, f"unknown role {role!r}")
    if not isinstance(name, str) or len(name) > 64:
        raise SoukError(Code.UNAUTHORIZED, "claim 'name' must be a string of at most 64 characters")
    if not isinstance(shop, str) or not 0 < len(shop) <= 64:
        raise SoukError(Code.UNAUTHORIZED, "claim 'shop' must be a shop id")
    return Identity(
        id=sub,
        name=name or sub,
        role=role,
        rooms=_str_list(claims.get("rooms", ["*"]), "rooms"),
        groups=_str_list(claims.get("groups", []), "groups"),
        shop=shop,
        exp=int(claims["exp"]),
        claims=claims,
    )
