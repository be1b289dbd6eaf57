"""A public randomness beacon (drand's HTTP API) for lucky draws: `--draw-beacon-url`.

Why: a draw's seed is committed before anyone enters, so the streamer cannot pick winners
after seeing the entrants; but the operator of the server knows the seed and could add
accounts of its own that it knows will win. Mixing in randomness that nobody knew when the
entrant list was fixed closes that gap: the round used is the first one the beacon publishes
*after* the close (its number follows from the close time and the beacon's genesis and
period), so the operator could not have predicted it (docs/draws.md).

The API (drand's, any server that speaks it): `GET <url>/info` -> `{"period": s,
"genesis_time": s, ...}`, `GET <url>/public/<round>` -> `{"round": n, "randomness": hex, ...}`
(a round not yet published answers an error status; it is asked again until the deadline).
The beacon's signature is not checked here: a verifier who distrusts the beacon server checks
the round with drand's own client. When the beacon cannot be reached the draw goes on with
the seed alone and says so in its result (`beacon.status = "unavailable"`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any, Final

import aiohttp

log = logging.getLogger("souk.beacon")

HEX: Final = re.compile(r"[0-9a-fA-F]{16,256}")
POLL_S: Final = 0.25
MAX_WAIT_S: Final = 40.0  # above a 30 s period: one round, with margin


class BeaconError(Exception):
    """The beacon could not be asked or answered nonsense."""


class HttpBeacon:
    """A drand-style beacon at `url` (no trailing slash needed)."""

    def __init__(self, url: str, *, request_timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self._info: tuple[float, float] | None = None  # (genesis_time s, period s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, path: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        async with self._session.get(self.url + path) as r:
            if r.status != 200:
                raise BeaconError(f"{path}: HTTP {r.status}")
            try:
                return await r.json(content_type=None)
            except ValueError:
                raise BeaconError(f"{path}: not JSON") from None

    async def info(self) -> tuple[float, float]:
        """(genesis_time, period) in seconds, asked once."""
        if self._info is None:
            data = await self._get("/info")
            try:
                genesis, period = float(data["genesis_time"]), float(data["period"])
            except (KeyError, TypeError, ValueError):
                raise BeaconError("/info: no genesis_time and period") from None
            if not (period > 0 and math.isfinite(genesis)):
                raise BeaconError("/info: a period must be positive")
            self._info = (genesis, period)
        return self._info

    def next_round(self, at_ms: int) -> tuple[int, float]:
        """The first round published after `at_ms`, and when it is due (seconds since the
        epoch): round r is published at genesis + (r - 1) * period. Needs `info` had first,
        and does not wait, so a caller takes the time and plans the round in one step."""
        assert self._info is not None, "info() first"
        genesis, period = self._info
        latest = max(0, math.floor((at_ms / 1000 - genesis) / period) + 1)
        nxt = latest + 1
        return nxt, genesis + (nxt - 1) * period

    async def randomness(self, round_: int, due_s: float, wait_s: float) -> str:
        """The round's randomness (lowercase hex), asked from its due time until `wait_s`
        after it; `BeaconError` when it never came."""
        deadline = time.time() + min(MAX_WAIT_S, max(0.0, due_s - time.time()) + wait_s)
        last = "not asked"
        while True:
            early = due_s - time.time()
            if early > 0:
                await asyncio.sleep(min(early, max(0.0, deadline - time.time())))
            try:
                data = await self._get(f"/public/{round_}")
                value = data.get("randomness") if isinstance(data, dict) else None
                if (isinstance(value, str) and HEX.fullmatch(value)
                        and data.get("round") == round_):
                    return value.lower()
                last = "an answer without that round's randomness"
            except (TimeoutError, BeaconError, aiohttp.ClientError, OSError) as exc:
                last = str(exc) or type(exc).__name__
            if time.time() + POLL_S > deadline:
                raise BeaconError(f"round {round_} not had: {last}")
            await asyncio.sleep(POLL_S)
