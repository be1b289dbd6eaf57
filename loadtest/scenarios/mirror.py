"""`mirror`: questions asked in the room, timed until they reach members of linked groups.

The streamer creates G community groups and links them to the room; each group gets a crowd
of members (all probes: they decode). Askers in the room `ask` stamped questions at --rate;
every member times each mirrored question (`mirror`), and every acknowledged question that a
member never sees is a timeout.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from client_sdk.protocol import Op
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import join_offsets
from loadtest.scenarios.buyers import connect_actors, object_id
from loadtest.scenarios.storm import stamped_storm


class MirrorScenario(Scenario):
    name = "mirror"
    summary = "questions in the room timed until they reach members of linked groups (knobs groups, members, askers)"
    metrics = ("join", "ask", "mirror")
    default_slos: ClassVar[tuple[str, ...]] = ("mirror.p99<600ms", "ask.p99<600ms")
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 0, "rate": 5, "duration_s": 2, "probes": 0, "groups": 2,
                  "members": 4, "askers": 5},
        "full": {"viewers": 0, "rate": 20, "duration_s": 20, "probes": 0, "groups": 5,
                 "members": 200, "askers": 50},
    }

    def actor_sockets(self, config: object) -> int:
        extra = getattr(config, "extra", {})
        return int(extra.get("askers", 5)) + int(extra.get("groups", 2)) * int(extra.get("members", 4)) + 2

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        n_groups = int(ctx.knob("groups", 2))
        members = int(ctx.knob("members", 4))
        askers_n = int(ctx.knob("askers", 5))
        streamer = await ctx.session("streamer", 0)
        await streamer.request(Op.JOIN, room=cfg.room)
        groups = []
        for g in range(n_groups):
            reply = await streamer.request(Op.GROUP_CREATE, tier="normal",
                                           topic=f"{cfg.run_id}-{g}", cap=max(350, members + 10))
            groups.append(object_id(reply, "group"))
        await streamer.request(Op.LINK_GROUPS, room=cfg.room, groups=groups)
        pools = []
        for g, gid in enumerate(groups):
            offsets = join_offsets(members, max(cfg.rate, 50.0), "steady")
            pools.append(await ctx.start_crowd(
                {"group": str(gid)}, members, members, offsets, role="member",
                first_index=4_000_000 + g * members, group_join=True, label=f"group{g}-",
            ))
        for p in pools:
            await ctx.wait_joined(p, members / max(cfg.rate, 50.0) + 1.0)
        askers = await connect_actors(ctx, askers_n, 50.0, first_index=5_000_000)
        ctx.phase = f"asking {cfg.rate:g} questions/s"
        count = max(1, int(cfg.rate * cfg.duration_s))
        expected = await stamped_storm(
            ctx, askers, op=Op.ASK, kind="mirror", ack_metric="ask", count=count, rate=cfg.rate,
            fields=lambda i: {"room": cfg.room},
        )
        ctx.phase = "draining"
        await asyncio.sleep(ctx.drain_s())
        for p in pools:
            await ctx.finish_crowd(p, {"mirror": expected})
        ctx.check("every question accepted", len(expected) == count, f"{len(expected)} of {count}")
