"""ICE configuration: the server's own (host candidates only) and what clients are handed.

The relay offers exactly one host candidate, ``rtc_host`` (``--rtc-host``): 127.0.0.1 in tests
and load tests, the machine's public (or 1:1-NATed interface) address in production. The
server itself never uses STUN or TURN; clients behind NAT get the configured STUN/TURN URLs in
the ``publish``/``watch`` replies, with time-limited TURN credentials in coturn's REST-API
scheme (``use-auth-secret`` + ``static-auth-secret``): username ``"<expiry>:<user>"``,
credential ``base64(HMAC-SHA1(secret, username))``. The secret never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from typing import Any

from aiortc import RTCConfiguration

from client_sdk.protocol import Code
from media.errors import MediaError

TURN_TTL_S = 24 * 3600
_URL_SCHEMES = {"stun": ("stun:", "stuns:"), "turn": ("turn:", "turns:")}


def validate_host(host: str) -> str:
    """``rtc_host`` must be a literal IP address: aioice binds the host candidate to it."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError as exc:
        raise MediaError(Code.INVALID, f"rtc_host must be an IP address, got {host!r}") from exc


def validate_urls(urls: tuple[str, ...] | list[str], kind: str) -> tuple[str, ...]:
    schemes = _URL_SCHEMES[kind]
    out = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(schemes) or len(url) > 256:
            raise MediaError(Code.INVALID, f"not a {kind} URL: {url!r}")
        out.append(url)
    return tuple(out)


def turn_credentials(
    secret: str, user: str, now_ms: int, ttl_s: int = TURN_TTL_S
) -> tuple[str, str]:
    """coturn REST-API credentials valid until ``now + ttl_s`` (seconds since the epoch)."""
    expiry = now_ms // 1000 + ttl_s
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def client_ice_servers(
    stun_urls: tuple[str, ...],
    turn_urls: tuple[str, ...],
    turn_secret: str | None,
    user: str,
    now_ms: int,
    ttl_s: int = TURN_TTL_S,
) -> list[dict[str, Any]]:
    """The ``iceServers`` list for a browser or SDK peer (W3C RTCIceServer dicts)."""
    servers: list[dict[str, Any]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        username, credential = turn_credentials(turn_secret, user, now_ms, ttl_s)
        servers.append({"urls": list(turn_urls), "username": username, "credential": credential})
    return servers


def server_configuration() -> RTCConfiguration:
    """The relay's own peer connections: host candidate only, never aiortc's default STUN."""
    return RTCConfiguration(iceServers=[])
