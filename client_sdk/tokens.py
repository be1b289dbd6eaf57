"""Mint Souk access tokens (JWT, HS256) so a merchant's backend can sign them without Souk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt


def mint_token(
    secret: str,
    sub: str,
    *,
    name: str | None = None,
    role: str = "viewer",
    rooms: Sequence[str] = ("*",),
    groups: Sequence[str] = (),
    ttl_s: int = 3600,
    shop: str | None = None,
    now: float | None = None,
) -> str:
    """Return a signed token; `rooms`/`groups` list the ids it may enter (`["*"]` for all)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "name": name or sub,
        "role": role,
        "rooms": list(rooms),
        "groups": list(groups),
        "iat": issued,
        "exp": issued + ttl_s,
    }
    if shop is not None:
        claims["shop"] = shop
    return jwt.encode(claims, secret, algorithm="HS256")
