"""Token verification: who is this connection, and which rooms and groups may it enter."""

from __future__ import annotations

import binascii
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from client_sdk.protocol import Code, Role
from server.domain.room import Actor
from server.errors import SoukError

MAX_TOKEN_CHARS = 4096
# A token's `exp` may lie at most this far ahead: a week. An `exp` of 1e300, or one written in
# milliseconds by mistake, would otherwise make a token that never expires (`--max-token-ttl`).
DEFAULT_MAX_TOKEN_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified claims of a token (slots: one lives as long as each connection)."""

    id: str
    name: str
    role: str
    rooms: tuple[str, ...] = ("*",)
    groups: tuple[str, ...] = ()
    shop: str = "default"
    exp: int = 0

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
    """A JSON array of ids (claims come from orjson: a list, never another sequence)."""
    if value is None:
        return ()
    if type(value) is not list or len(value) > 1000:
        raise SoukError(Code.UNAUTHORIZED, f"claim '{name}' must be a list of ids")
    for v in value:
        if type(v) is not str or not 0 < len(v) <= 128:
            raise SoukError(Code.UNAUTHORIZED, f"claim '{name}' must be a list of ids")
    return tuple(value)


_B64URL = re.compile(rb"^[A-Za-z0-9_-]+$")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_HEADER_CACHE: dict[bytes, bool] = {}


def _b64url(segment: bytes) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise SoukError(Code.UNAUTHORIZED, "invalid token: bad base64url segment")
    # the alphabet is checked above: translate to the standard one and decode in C
    return binascii.a2b_base64(segment.translate(_URLSAFE) + b"=" * (-len(segment) % 4))


def decode_hs256(token: str, secret: str, *, leeway_s: int = 5, now: float | None = None,
                 max_ttl_s: float = DEFAULT_MAX_TOKEN_TTL_S) -> dict[str, Any]:
    """Verify a compact JWS signed with HS256 and return its claims.

    Why not PyJWT here: its decoder checks base64url character by character in Python, which
    cost ~0.3 ms per token — a quarter of a core at 500 joins/s. This is the same check with
    a compiled regex; PyJWT still mints tokens (client_sdk.tokens) and the tests cross-check
    both. Only HS256 is accepted (never `none`, never an algorithm the header chooses).
    """
    raw = token.encode("ascii", "strict") if token.isascii() else b""
    parts = raw.split(b".")
    if len(parts) != 3:
        raise SoukError(Code.UNAUTHORIZED, "invalid token: not a compact JWS")
    header_b64, payload_b64, sig_b64 = parts
    ok = _HEADER_CACHE.get(header_b64)
    if ok is None:
        try:
            header = orjson.loads(_b64url(header_b64))
        except orjson.JSONDecodeError:
            raise SoukError(Code.UNAUTHORIZED, "invalid token: header is not JSON") from None
        ok = isinstance(header, dict) and header.get("alg") == "HS256" and "crit" not in header
        if len(_HEADER_CACHE) < 64:
            _HEADER_CACHE[header_b64] = ok
    if not ok:
        raise SoukError(Code.UNAUTHORIZED, "invalid token: only HS256 tokens are accepted")
    expected = hmac.digest(secret.encode(), header_b64 + b"." + payload_b64, "sha256")
    if not hmac.compare_digest(expected, _b64url(sig_b64)):
        raise SoukError(Code.UNAUTHORIZED, "bad token signature")
    try:
        claims = orjson.loads(_b64url(payload_b64))
    except orjson.JSONDecodeError:
        raise SoukError(Code.UNAUTHORIZED, "invalid token: payload is not JSON") from None
    if not isinstance(claims, dict):
        raise SoukError(Code.UNAUTHORIZED, "invalid token: claims must be an object")
    t = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise SoukError(Code.UNAUTHORIZED, "invalid token: claim 'exp' is required")
    if exp + leeway_s < t:
        raise SoukError(Code.UNAUTHORIZED, "token expired")
    if exp - t > max_ttl_s + leeway_s:
        raise SoukError(Code.UNAUTHORIZED,
                        f"token lifetime too long: exp may be at most {int(max_ttl_s)} s ahead")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf - leeway_s > t):
        raise SoukError(Code.UNAUTHORIZED, "invalid token: not valid yet")
    return claims


def verify_token(token: Any, secret: str, *, leeway_s: int = 5,
                 max_ttl_s: float = DEFAULT_MAX_TOKEN_TTL_S, now: float | None = None) -> Identity:
    """Check signature, expiry (not past, not more than `max_ttl_s` ahead) and claims; raise
    SoukError(unauthorized) with the reason."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise SoukError(Code.UNAUTHORIZED, "token must be a non-empty string")
    claims = decode_hs256(token, secret, leeway_s=leeway_s, max_ttl_s=max_ttl_s, now=now)
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
    )


class VerifiedTokens:
    """`verify_token` with a bounded memory of the tokens it verified recently.

    Why: a flash crowd reconnecting (a node restarted, a network blip) presents the tokens it
    presented minutes ago; each costs an HMAC, two base64 decodes and a JSON parse (~10-25 us).
    A token is remembered only after it passed every check, under its exact string, signature
    included: a forged or altered token is a different key and is verified in full. A hit is
    answered only while the token is still inside its `exp` (with the same leeway); past it,
    the entry is dropped and the token verified again, which refuses it. Neither `nbf` nor the
    lifetime bound can turn a token that passed into one that fails as time goes on, so a hit
    answers what a full check would. At most `size` entries; the oldest goes first.
    """

    __slots__ = ("_seen", "clock", "leeway_s", "max_ttl_s", "secret", "size")

    def __init__(self, secret: str, *, max_ttl_s: float = DEFAULT_MAX_TOKEN_TTL_S, leeway_s: int = 5,
                 size: int = 4096, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.max_ttl_s = max_ttl_s
        self.leeway_s = leeway_s
        self.size = size
        self.clock = clock
        self._seen: dict[str, Identity] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, token: Any) -> Identity:
        seen = self._seen
        if type(token) is str:
            ident = seen.get(token)
            if ident is not None:
                if ident.exp + self.leeway_s >= self.clock():
                    return ident
                del seen[token]
        ident = verify_token(token, self.secret, leeway_s=self.leeway_s, max_ttl_s=self.max_ttl_s,
                             now=self.clock())
        if len(seen) >= self.size:
            del seen[next(iter(seen))]
        seen[token] = ident
        return ident
