"""`chat`: a chat storm from many senders while the audience watches; acks and deliveries timed."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from client_sdk.protocol import Op
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat
from loadtest.scenarios.storm import stamped_storm


class ChatScenario(Scenario):
    name = "chat"
    summary = "a chat storm: --rate messages/s from many senders (knob senders), probes time deliveries"
    metrics = ("join", "event", "chat_ack")
    default_slos: ClassVar[tuple[str, ...]] = ("chat_ack.p99<600ms",)
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 20, "rate": 20, "duration_s": 1.5, "probes": 4, "senders": 10,
                  "join_rate": 100},
        "full": {"viewers": 2000, "rate": 200, "duration_s": 20, "probes": 20, "senders": 400,
                 "join_rate": 500, "workers": 2},
    }

    def actor_sockets(self, config: object) -> int:
        extra = getattr(config, "extra", {})
        return int(extra.get("senders", 10)) + 4

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        n = max(1, int(ctx.knob("senders", 10)))
        ctx.phase = f"connecting {n} senders"
        senders = list(await asyncio.gather(*(ctx.session("viewer", 1_000_000 + i) for i in range(n))))
        await asyncio.gather(*(s.request(Op.JOIN, room=cfg.room) for s in senders))
        pool = await seat(ctx, cfg.viewers, cfg.probes, ctx.knob("join_rate", 200))
        ctx.phase = f"storm: {cfg.rate:g} msgs/s from {n} senders"
        count = max(1, int(cfg.rate * cfg.duration_s))
        expected = await stamped_storm(
            ctx, senders, op=Op.CHAT, kind="event", ack_metric="chat_ack", count=count,
            rate=cfg.rate, fields=lambda i: {"room": cfg.room},
        )
        ctx.phase = "draining"
        await asyncio.sleep(ctx.drain_s())
        await ctx.finish_crowd(pool, {"event": expected})
        refused = ctx.metrics.summary("chat_ack").errors
        if refused:
            ctx.notes.append(f"{refused} chat messages were refused (see errors by code)")
        ctx.check("every sender answered", ctx.metrics.timeouts["chat_ack"] == 0,
                  f"{ctx.metrics.timeouts['chat_ack']} chat sends without a reply")
