"""Tokens for the generated users: signed locally with the server's secret, or fetched.

With `--secret` (or SOUK_SECRET) the generator mints its own HS256 tokens, which costs nothing
per user and works against any server that shares the secret. Without it, it asks a demo-mode
server for them (`GET /api/demo/token?role=...&room=...`), one HTTP request per user.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from client_sdk.tokens import mint_token


class TokenError(Exception):
    """No way to obtain tokens (no secret, and the demo endpoint is unavailable)."""


def http_base(ws_url: str) -> str:
    """`ws://h:p/ws` -> `http://h:p` (wss -> https): the same server's HTTP side."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


@dataclass(frozen=True)
class TokenSource:
    url: str
    room: str
    secret: str | None = None
    run_id: str = "lt"

    def sub(self, role: str, index: int) -> str:
        return f"{self.run_id}-{role}-{index}"

    def mint(self, role: str, index: int) -> str:
        assert self.secret is not None
        return mint_token(
            self.secret,
            self.sub(role, index),
            role=role,
            rooms=["*"],
            groups=["*"],
            ttl_s=6 * 3600,
        )

    async def tokens(self, role: str, count: int, first: int = 0) -> list[str]:
        """`count` distinct users' tokens for `role`."""
        if self.secret is not None:
            return [self.mint(role, first + i) for i in range(count)]
        return await self._fetch(role, count)

    async def _fetch(self, role: str, count: int) -> list[str]:
        url = f"{http_base(self.url)}/api/demo/token"
        sem = asyncio.Semaphore(32)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def one() -> str:
                async with sem, http.get(url, params={"role": role, "room": self.room}) as resp:
                    if resp.status != 200:
                        raise TokenError(f"{url} answered HTTP {resp.status}: pass --secret")
                    body = await resp.json(content_type=None)
                token = body.get("token") if isinstance(body, dict) else None
                if not isinstance(token, str):
                    raise TokenError(f"{url} returned no token")
                return token

            try:
                return list(await asyncio.gather(*(one() for _ in range(count))))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TokenError(f"cannot fetch demo tokens from {url}: {exc}") from exc
