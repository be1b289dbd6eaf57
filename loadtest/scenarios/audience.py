"""Seating an audience: a crowd of viewers joining the room on an open-loop schedule."""

from __future__ import annotations

import time

from loadtest.run import RunContext
from loadtest.schedule import NS, ramp, spike, steady
from loadtest.workers import CrowdPool


def join_offsets(viewers: int, rate: float, shape: str) -> list[int]:
    """Arrival offsets (ns) for `viewers` joins at `rate`/s.

    `steady`: constant rate. `mixed` (the join scenario): a warming ramp (20 %), a steady
    stretch (50 %), then a flash crowd (30 %) arriving within 100 ms, as when a sale is
    announced.
    """
    if shape == "steady":
        return steady(viewers, rate)
    n_ramp = viewers // 5
    n_spike = (viewers * 3) // 10
    n_steady = viewers - n_ramp - n_spike
    a = ramp(n_ramp, rate)
    start = (a[-1] / NS + 1.0 / rate) if a else 0.0
    b = steady(n_steady, rate, start_s=start)
    start = (b[-1] / NS + 0.5) if b else start
    c = spike(n_spike, 0.1, start_s=start)
    return a + b + c


async def seat(
    ctx: RunContext,
    viewers: int,
    probes: int,
    rate: float,
    shape: str = "steady",
    target: dict[str, str] | None = None,
    *,
    wait: bool = True,
) -> CrowdPool:
    """Start the crowd joining; with `wait`, return once every scheduled join has resolved."""
    offsets = join_offsets(viewers, rate, shape)
    ctx.phase = f"joining {viewers} viewers"
    pool = await ctx.start_crowd(target or {"room": ctx.config.room}, viewers, probes, offsets)
    if wait:
        left = (pool.started_ns - time.monotonic_ns()) / NS
        await ctx.wait_joined(pool, (max(offsets) if offsets else 0) / NS + left)
    return pool
