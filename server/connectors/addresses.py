"""Where a connector may send: public addresses only, unless the operator allows private ones.

Why: connector URLs are set by an admin token, and the server POSTs to them. A stolen admin
token (or a careless one) must not turn the server into a client of the services only it can
reach: loopback, the link-local cloud metadata address (169.254.169.254), the private
networks, and the reserved and multicast ranges. The host is resolved and *every* address it
resolves to is checked (a name with one public and one private address is refused), once when
the connector is created (a clear error) and again at each connection (`PublicResolver`: a
name re-pointed at a private address after the check is refused then). `--allow-private-webhooks`
lifts the rule for deployments whose external groups live on the private network (and tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from client_sdk.protocol import Code
from server.errors import SoukError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(ip: IPAddress) -> bool:
    """Not loopback, link-local, private, reserved, multicast or unspecified (an IPv4 address
    mapped into IPv6, or carried by 6to4/Teredo-free NAT64, is judged as its IPv4 self)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
                or ip.is_multicast or ip.is_unspecified or not ip.is_global)


def refused(addresses: list[str]) -> list[str]:
    """The addresses of `addresses` that are not public."""
    return [a for a in addresses if not is_public(ipaddress.ip_address(a.split("%", 1)[0]))]


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SoukError(Code.INVALID, f"connector host {host!r} does not resolve: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


async def check_url_host(host: str, port: int) -> None:
    """Refuse (`forbidden`) a host any of whose addresses is not public."""
    bad = refused(await resolve(host, port))
    if bad:
        raise SoukError(Code.FORBIDDEN,
                        f"connector URL host {host!r} resolves to a non-public address"
                        f" ({', '.join(bad)}): loopback, link-local, private and reserved"
                        " addresses are refused unless the server runs with"
                        " --allow-private-webhooks")


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, refusing a host that resolves to a non-public address at the
    moment of connecting (so a DNS answer changed after the connector's check is caught)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        bad = refused([r["host"] for r in results])
        if bad:
            raise OSError(f"{host} resolves to a non-public address ({', '.join(bad)})")
        return results

    async def close(self) -> None:
        await self._inner.close()


def connector_kwargs(allow_private: bool) -> dict[str, Any]:
    """The aiohttp session's connector: public addresses only unless allowed."""
    if allow_private:
        return {}
    import aiohttp

    return {"connector": aiohttp.TCPConnector(resolver=PublicResolver())}
