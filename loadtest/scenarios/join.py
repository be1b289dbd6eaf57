"""`join`: viewers arrive (ramp, steady, flash-crowd spike); time from scheduled arrival to snapshot."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat


class JoinScenario(Scenario):
    name = "join"
    summary = "N viewers join at an arrival rate: ramp, steady, then a flash-crowd spike"
    metrics = ("join",)
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 30, "rate": 60, "duration_s": 0.5, "probes": 3},
        "full": {"viewers": 5000, "rate": 500, "duration_s": 2, "probes": 20, "workers": 2},
    }

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        pool = await seat(ctx, cfg.viewers, cfg.probes, cfg.rate, shape="mixed")
        ctx.phase = "holding"
        await asyncio.sleep(cfg.duration_s)
        await ctx.finish_crowd(pool, {})
        joined = ctx.metrics.summary("join")
        ctx.check("every viewer answered", joined.attempts == cfg.viewers,
                  f"{joined.attempts} of {cfg.viewers} joins resolved")
