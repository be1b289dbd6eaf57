"""`draw`: lucky draws (福袋) under a crowd of entrants while the room's other traffic flows.

The streamer opens two draws closing `window_s + lead_s` later (`lead_s` covers the
generator's start-up). `entrants` viewers arrive within `window_s` (open loop, silent viewers
of the crowd's worker processes): each connects, joins the room and `draw_enter`s the first
draw (the `enter` latency runs from its scheduled arrival to that last reply); `keyword` more
enter the second by saying its keyword in the chat. Meanwhile the streamer publishes stamped
chat at `--rate` to the seated audience, whose probes time every delivery (`event`). With
`--set draw=0` the same arrivals and chat run without a draw: the baseline the `event` p99 is
compared with (bench/bench_draws.py runs both).

The verdict fails, whatever the latencies, unless every acknowledged entrant (an `ok` to
`draw_enter`, a `draw_entered` event for a keyword) is in the published entrant list exactly
once, the list holds nobody who did not try, and the result counts it. `draw_result` is the
server's time from a draw's `ends_at` to its `done` event (the event's `ts`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, ClassVar

import aiohttp

from client_sdk.protocol import Frame, Op
from loadtest.credentials import http_base
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat
from loadtest.scenarios.buyers import connect_actors, object_id
from loadtest.scenarios.storm import stamped_storm
from loadtest.schedule import OpenLoop, steady
from loadtest.session import RequestError

KEYWORD = "福袋"
MS = 1_000_000


class DrawWatch:
    """The streamer's view of the room: the draws' events, and when each result came."""

    def __init__(self) -> None:
        self.done: dict[str, dict[str, Any]] = {}
        self.done_wall_ms: dict[str, int] = {}
        self.counts = 0
        self.changed = asyncio.Event()

    def __call__(self, ev: Frame, now: int) -> None:
        if ev.get("type") != "draw":
            return
        self.counts += 1
        did = str(ev.get("id"))
        if ev.get("phase") in ("done", "cancelled") and did not in self.done:
            self.done[did] = dict(ev)
            self.done_wall_ms[did] = time.time_ns() // MS
            self.changed.set()

    async def wait(self, ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(i in self.done for i in ids) and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return


class KeywordAcks:
    """`draw_entered` on each keyword entrant's own channel: its acknowledgement."""

    def __init__(self) -> None:
        self.users: set[str] = set()

    def __call__(self, ev: Frame, now: int) -> None:
        if ev.get("type") == "draw_entered" and isinstance(ev.get("ch"), str):
            self.users.add(str(ev["ch"]).removeprefix("user:"))


async def published_list(ctx: RunContext, draw_id: Any) -> list[str] | None:
    token = (await ctx.tokens.tokens("streamer", 1))[0]
    url = f"{http_base(ctx.config.url)}/api/draws/{draw_id}/entrants"
    async with aiohttp.ClientSession() as http, http.get(
            url, headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status != 200:
            ctx.notes.append(f"GET entrants answered HTTP {r.status}")
            return None
        body = await r.json()
        return list(body.get("entrants", []))


class DrawScenario(Scenario):
    name = "draw"
    summary = ("a lucky draw: knob entrants draw_enter within window_s, keyword more by chat, "
               "while the streamer publishes --rate events/s (draw=0: the same load, no draw)")
    metrics = ("join", "event", "publish", "enter", "draw_result")
    default_slos: ClassVar[tuple[str, ...]] = ("enter.p99<600ms", "draw_result.max<1000ms")
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 20, "rate": 10, "duration_s": 6, "probes": 4, "entrants": 60,
                  "keyword": 10, "window_s": 2, "lead_s": 3, "join_rate": 200, "draw": 1},
        "full": {"viewers": 1000, "rate": 10, "duration_s": 30, "probes": 20, "entrants": 10000,
                 "keyword": 500, "window_s": 10, "lead_s": 15, "join_rate": 1000, "draw": 1,
                 "workers": 2},
    }

    def slos_for(self, config: object) -> tuple[str, ...]:
        return self.default_slos if getattr(config, "extra", {}).get("draw", 1) else ()

    def actor_sockets(self, config: object) -> int:
        extra = getattr(config, "extra", {})
        return int(extra.get("entrants", 60)) + int(extra.get("keyword", 10)) + 4

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        with_draw = bool(ctx.knob("draw", 1))
        n = int(ctx.knob("entrants", 60))
        n_kw = int(ctx.knob("keyword", 10))
        window_s = ctx.knob("window_s", 2)
        watch = DrawWatch()
        streamer = await ctx.session("streamer", 0, on_event=watch)
        await streamer.request(Op.JOIN, room=cfg.room)
        pool = await seat(ctx, cfg.viewers, cfg.probes, ctx.knob("join_rate", 500))
        ctx.phase = f"connecting {n_kw} keyword senders"
        first = 3_000_000
        kw_acks = KeywordAcks()
        talkers = await connect_actors(ctx, n_kw, ctx.knob("join_rate", 500), first_index=first + n,
                                       on_event=kw_acks)
        draws: dict[str, tuple[str, int]] = {}  # how entered -> (draw id, ends_at)
        if with_draw:  # one draw entered by draw_enter, one by the keyword in the chat
            for how, condition in (("enter", {}), ("keyword", {"keyword": KEYWORD})):
                reply = await streamer.request(
                    Op.DRAW_CREATE, room=cfg.room, title=f"load-test draw {cfg.run_id} {how}",
                    winners=3, prize={"coupon": {"kind": "amount", "value": 100, "title": "load test"}},
                    duration_s=max(5, int(window_s + ctx.knob("lead_s", 3))), condition=condition)
                draws[how] = (str(object_id(reply, "draw")), int(reply["draw"]["ends_at"]))
        ctx.phase = (f"{n} entrants within {window_s:g} s, {n_kw} by keyword, {cfg.rate:g} events/s"
                     if with_draw else f"baseline: {n} arrivals within {window_s:g} s, {cfg.rate:g} events/s")
        count = max(1, int(cfg.rate * cfg.duration_s))
        storm = asyncio.create_task(stamped_storm(
            ctx, [streamer], op=Op.CHAT, kind="event", ack_metric="publish", count=count,
            rate=cfg.rate, fields=lambda i: {"room": cfg.room}))
        # the entrants arrive as silent viewers of the crowd (worker processes): connect, auth,
        # join the room, then `draw_enter` (the baseline: the same arrivals without it); the
        # `enter` latency runs from the scheduled arrival to the last reply
        then = [{"op": Op.DRAW_ENTER, "draw": draws["enter"][0]}] if with_draw else []
        offsets = steady(n, n / window_s)
        crowd = await ctx.start_crowd({"room": cfg.room}, n, 0, offsets, first_index=first,
                                      label="entrants", then=then, join_metric="enter")
        # the keyword entries go with the rush: one chat each, over the window; the baseline
        # sends the same chats (with no draw to enter, they are chat like any other), so that
        # both runs carry the same room traffic and differ only by the draw
        async def say(i: int, scheduled_ns: int) -> None:
            try:
                await talkers[i].request(Op.CHAT, room=cfg.room, text=f"我要{KEYWORD} {i}")
            except (RequestError, TimeoutError):
                ctx.metrics.error("keyword_chat", "refused")

        await OpenLoop(steady(len(talkers), max(1.0, len(talkers) / window_s)), say, ctx.metrics,
                       failure_metric="keyword_chat").run()
        await ctx.wait_joined(crowd, window_s)
        entered = crowd.totals()["joined"]
        expected = await storm
        if with_draw:
            ctx.phase = "waiting for the results"
            last = max(e for _, e in draws.values())
            await watch.wait([d for d, _ in draws.values()], max(0.0, last / 1000 - time.time()) + 5)
            subs = {ctx.tokens.sub("viewer", first + i) for i in range(n)}
            await self.check_draw(ctx, watch, "draw_enter", *draws["enter"], subs, entered, n)
            kw_subs = {ctx.tokens.sub("viewer", first + n + i) for i in range(n_kw)}
            await self.check_draw(ctx, watch, "keyword", *draws["keyword"], kw_subs,
                                  len(kw_acks.users & kw_subs), n_kw, known=kw_acks.users)
        ctx.phase = "draining"
        await asyncio.sleep(ctx.drain_s())
        await ctx.finish_crowd(crowd, {})
        await ctx.finish_crowd(pool, {"event": expected})
        ctx.check("every publish accepted", len(expected) == count,
                  f"{len(expected)} of {count} chat events acknowledged")

    async def check_draw(self, ctx: RunContext, watch: DrawWatch, how: str, draw_id: str,
                         ends_at: int, users: set[str], acked: int, tried: int,
                         known: set[str] | None = None) -> None:
        """`users`: who tried; `acked`: how many were acknowledged (`known`: which, when the
        generator knows them one by one)."""
        done = watch.done.get(draw_id)
        ctx.check(f"{how}: the result arrived", done is not None and done.get("phase") == "done",
                  f"{watch.counts} draw events seen")
        if done is None:
            return
        # the server's time from the close to the result (the event's `ts`), and the arrival
        server_ns = max(0, int(done.get("ts", 0)) - ends_at) * MS
        ctx.metrics.record("draw_result", server_ns, time.monotonic_ns())
        arrival_ms = watch.done_wall_ms[draw_id] - ends_at
        listed = await published_list(ctx, draw_id)
        if listed is None:
            ctx.check(f"{how}: the entrant list is published", False)
            return
        got = set(listed)
        tried_hashes = {hashlib.sha256(u.encode()).hexdigest() for u in users}
        ctx.check(f"{how}: each entrant once", len(got) == len(listed),
                  f"{len(listed) - len(got)} duplicates")
        ctx.check(f"{how}: nobody listed who did not try", got <= tried_hashes,
                  f"{len(got - tried_hashes)} strangers in the list")
        ctx.check(f"{how}: every acknowledged entrant is in the list", len(got) >= acked,
                  f"{acked} acknowledged, {len(got)} listed")
        if known is not None:
            want = {hashlib.sha256(u.encode()).hexdigest() for u in known}
            ctx.check(f"{how}: each acknowledged entrant by name", want <= got,
                      f"{len(want - got)} of {len(want)} missing")
        ctx.check(f"{how}: at most the unanswered attempts beyond the acknowledged",
                  len(got) - acked <= tried - acked, f"{len(got) - acked} listed without an answer")
        ctx.check(f"{how}: the result counts the list", done.get("entrants") == len(listed),
                  f"result says {done.get('entrants')}, list has {len(listed)}")
        ctx.check(f"{how}: every attempt entered", acked == tried, f"{acked} of {tried} acknowledged",
                  hard=False)
        ctx.notes.append(f"{how}: {acked} of {tried} acknowledged, {len(listed)} listed, result"
                         f" published {server_ns / MS:.0f} ms after the close (arrived at the"
                         f" streamer after {arrival_ms} ms)")
