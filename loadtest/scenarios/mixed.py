"""`mixed`: a live-commerce hour, compressed: joins, chat, likes, a sale, a team buy,
questions and media viewers, all at once, as the room experiences them.

The audience arrives on a ramp; while it does, chatters and askers keep talking, likers tap,
then a flash sale and a team buy open in the middle of it, and media viewers watch. Every
part is on by default; a server that lacks one (unknown_op) makes the run a configuration
error, unless that part is switched off explicitly (`--set sale=0`, `teambuy=0`,
`questions=0`, `media=0`), so a partial run never passes as a whole one.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from client_sdk.protocol import Op
from loadtest.run import Config, Expected, RunContext, Scenario
from loadtest.scenarios.audience import join_offsets
from loadtest.scenarios.buyers import connect_actors
from loadtest.scenarios.flashsale import StockWatch, check_sale, create_sale, rush
from loadtest.scenarios.groupbuy import TeamWatch, check_teams, create_offer, team_rush
from loadtest.scenarios.media import media_viewers
from loadtest.scenarios.storm import stamped_storm
from loadtest.schedule import NS, OpenLoop, steady
from loadtest.session import RequestError, Session


async def likes(ctx: RunContext, likers: list[Session], count: int, rate: float) -> None:
    async def tap(i: int, scheduled_ns: int) -> None:
        try:
            await likers[i % len(likers)].request(Op.LIKE, room=ctx.config.room, count=1)
        except RequestError as exc:
            ctx.metrics.error("like", exc.code)
            return
        except Exception:
            ctx.metrics.timeout("like")
            return
        now = time.monotonic_ns()
        ctx.metrics.record("like", now - scheduled_ns, now)

    await OpenLoop(steady(count, rate), tap, ctx.metrics, failure_metric="like").run()


class MixedScenario(Scenario):
    name = "mixed"
    summary = "joins, chat, likes, a flash sale, a team buy, questions and media viewers at once"
    metrics = ("join", "event", "question", "chat_ack", "ask", "like", "buy", "team", "first_frame",
               "first_frame_rtp", "media_latency")
    default_slos: ClassVar[tuple[str, ...]] = ("question.p99<600ms", "chat_ack.p99<600ms", "like.p99<600ms", "buy.p99<600ms", "team.p99<600ms")
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 30, "rate": 50, "duration_s": 2, "probes": 4, "chatters": 6,
                  "chat_rate": 6, "ask_rate": 2, "like_rate": 10, "buyers": 20, "units": 5,
                  "size": 3, "window_s": 2, "media": 2, "fps": 10},
        "full": {"viewers": 5000, "rate": 200, "duration_s": 30, "probes": 30, "chatters": 200,
                 "chat_rate": 50, "ask_rate": 5, "like_rate": 200, "buyers": 1000, "units": 100,
                 "size": 5, "window_s": 10, "media": 20, "workers": 2},
    }

    PARTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "sale": ("buy",), "teambuy": ("team",), "questions": ("question",), "media": ("first_frame",),
    }

    def slos_for(self, config: Config) -> tuple[str, ...]:
        off = {m for knob, metrics in self.PARTS.items() if not config.extra.get(knob, 1) for m in metrics}
        return tuple(t for t in self.default_slos if t.split(".", 1)[0] not in off)

    def actor_sockets(self, config: object) -> int:
        e = getattr(config, "extra", {})
        return int(e.get("chatters", 6)) + int(e.get("buyers", 20)) * 2 + int(e.get("media", 2)) * 3 + 8

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        stock_watch, team_watch = StockWatch(), TeamWatch()
        for knob in self.PARTS:
            if not ctx.knob(knob, 1):
                ctx.notes.append(f"part '{knob}' switched off (--set {knob}=0): not measured, not judged")

        def on_streamer_event(ev: dict[str, object], now: int) -> None:
            stock_watch(ev, now)
            team_watch(ev, now)

        streamer = await ctx.session("streamer", 0, on_event=on_streamer_event)
        await streamer.request(Op.JOIN, room=cfg.room)
        # the audience arrives on a ramp while everything else goes on
        offsets = join_offsets(cfg.viewers, cfg.rate, "mixed")
        ctx.phase = "live hour"
        pool = await ctx.start_crowd({"room": cfg.room}, cfg.viewers, cfg.probes, offsets)
        chatters = await connect_actors(ctx, int(ctx.knob("chatters", 6)), 100.0, first_index=7_000_000)
        buyers = await connect_actors(ctx, int(ctx.knob("buyers", 20)), 100.0, first_index=8_000_000)
        # probes must be seated before stamped events count as expected for them
        await ctx.wait_joined(pool, (max(offsets) if offsets else 0) / NS + 1.0)
        d = cfg.duration_s
        chat_n = max(1, int(ctx.knob("chat_rate", 6) * d))
        ask_n = max(1, int(ctx.knob("ask_rate", 2) * d))
        like_n = max(1, int(ctx.knob("like_rate", 10) * d))
        units = int(ctx.knob("units", 5))
        size = int(ctx.knob("size", 3))
        window_s = int(ctx.knob("window_s", 2))
        half = len(buyers) // 2
        sale_buyers, team_buyers = buyers[:half], buyers[half:]

        async def sale() -> None:
            if not ctx.knob("sale", 1):
                return
            await asyncio.sleep(d / 3)
            sale_id = await create_sale(ctx, streamer, units, 1, duration_s=int(d) + 30)
            sold, first = await rush(ctx, sale_buyers, sale_id, 2, 0.5)
            await check_sale(ctx, sale_buyers, sale_id, sold, first, units, 1, 2, stock_watch)

        async def teambuy() -> None:
            if not ctx.knob("teambuy", 1):
                return
            await asyncio.sleep(d / 2)
            offer = await create_offer(ctx, streamer, size, window_s)
            await team_rush(ctx, team_buyers, offer, size, 50.0, team_watch)
            await check_teams(ctx, team_watch, size, window_s, len(team_buyers))

        async def media() -> None:
            k = int(ctx.knob("media", 2))
            if k <= 0:
                return
            ctx.notes.extend(await media_viewers(ctx, streamer, k, 10.0, False, d / 2,
                                                 first_index=9_000_000, probes=1))

        async def no_questions() -> list[Expected]:
            return []

        chat_task = stamped_storm(ctx, chatters, op=Op.CHAT, kind="event", ack_metric="chat_ack",
                                  count=chat_n, rate=chat_n / d, fields=lambda i: {"room": cfg.room})
        ask_task = no_questions() if not ctx.knob("questions", 1) else stamped_storm(ctx, chatters, op=Op.ASK, kind="question", ack_metric="ask",
                                 count=ask_n, rate=ask_n / d, fields=lambda i: {"room": cfg.room},
                                 first_id=1_000_000)
        results = await asyncio.gather(chat_task, ask_task, likes(ctx, chatters, like_n, like_n / d),
                                       sale(), teambuy(), media(), return_exceptions=True)
        for r in results:
            if isinstance(r, RequestError):
                raise r  # e.g. unknown_op: this server lacks a feature (disable it with --set)
            if isinstance(r, BaseException):
                ctx.check("every part of the hour ran", False, f"{type(r).__name__}: {r}")
        chat_expected: list[Expected] = results[0] if isinstance(results[0], list) else []
        ask_expected: list[Expected] = results[1] if isinstance(results[1], list) else []
        ctx.phase = "draining"
        await asyncio.sleep(ctx.drain_s())
        await ctx.finish_crowd(pool, {"event": chat_expected, "question": ask_expected})
