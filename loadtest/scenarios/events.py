"""`events`: viewers connected, the streamer publishes chat at a fixed rate; every delivery timed."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from client_sdk.protocol import Op
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat
from loadtest.scenarios.storm import stamped_storm


class EventsScenario(Scenario):
    name = "events"
    summary = "viewers connected; the streamer publishes at --rate events/s; probes time each delivery"
    metrics = ("join", "event", "publish")
    default_slos: ClassVar[tuple[str, ...]] = ("publish.p99<600ms",)
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 30, "rate": 10, "duration_s": 1.5, "probes": 5, "join_rate": 100},
        "full": {"viewers": 10000, "rate": 1, "duration_s": 30, "probes": 50, "join_rate": 500,
                 "workers": 2},
    }

    def actor_sockets(self, config: object) -> int:
        return 4

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        publishers = max(1, int(ctx.knob("publishers", 1)))
        streamers = [await ctx.session("streamer", i) for i in range(publishers)]
        for s in streamers:
            await s.request(Op.JOIN, room=cfg.room)
        pool = await seat(ctx, cfg.viewers, cfg.probes, ctx.knob("join_rate", 200))
        ctx.phase = f"publishing {cfg.rate:g} events/s"
        count = max(1, int(cfg.rate * cfg.duration_s))
        expected = await stamped_storm(
            ctx, streamers, op=Op.CHAT, kind="event", ack_metric="publish", count=count,
            rate=cfg.rate, fields=lambda i: {"room": cfg.room},
        )
        ctx.phase = "draining"
        await asyncio.sleep(ctx.drain_s())
        await ctx.finish_crowd(pool, {"event": expected})
        ctx.check("every publish accepted", len(expected) == count,
                  f"{len(expected)} of {count} chat events acknowledged")
        ctx.check("no seq gap at any viewer", ctx.metrics.counters["seq_gaps"] == 0,
                  f"{ctx.metrics.counters['seq_gaps']} missing seq numbers", hard=False)
