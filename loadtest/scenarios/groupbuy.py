"""`groupbuy`: buyers open and join teams (拼团) until they fill or their window expires.

ceil(buyers/size) leaders open teams, then the others `team_join` without an id (matched
into the team closest to full). Checked: every buyer answered, no team above its size, and after the
window every team is settled (full -> confirmed, else failed and released), none left open.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, ClassVar

from client_sdk.protocol import Frame, Op
from loadtest.run import RunContext, Scenario
from loadtest.scenarios.audience import seat
from loadtest.scenarios.buyers import connect_actors, object_id
from loadtest.schedule import OpenLoop, steady
from loadtest.session import RequestError, Session

SUCCESS = {"full", "confirmed", "complete", "completed", "succeeded", "success"}
FAILURE = {"failed", "expired", "released", "cancelled"}


class TeamWatch:
    """The latest state of every team, from `team` events in the room (and replies)."""

    def __init__(self) -> None:
        self.teams: dict[str, dict[str, Any]] = {}

    def see(self, team: object) -> None:
        if isinstance(team, dict) and "id" in team:
            prev = self.teams.get(str(team["id"]), {})
            self.teams[str(team["id"])] = {**prev, **team}

    def __call__(self, ev: Frame, now: int) -> None:
        if ev.get("type") == "team":
            self.see(ev.get("team", ev))


def _members(team: dict[str, Any]) -> int:
    m = team.get("members")
    if isinstance(m, list):
        return len(m)
    return int(m) if isinstance(m, int) else 0


async def create_offer(ctx: RunContext, streamer: Session, size: int, window_s: int) -> Any:
    product = await streamer.request(
        Op.PRODUCT_CREATE, title=f"load-test team product {ctx.config.run_id}", price=19900, stock=10_000,
    )
    reply = await streamer.request(
        Op.TEAMBUY_CREATE, room=ctx.config.room, product=object_id(product, "product"),
        price=9900, size=size, window_s=window_s,
    )
    return object_id(reply, "teambuy", "offer")


async def team_rush(ctx: RunContext, buyers: list[Session], offer: Any, size: int, rate: float,
                    watch: TeamWatch) -> None:
    """Leaders open ceil(n/size) teams first; then the others join, matched, at `rate`.

    Opening first keeps the expected outcome exact (every team but maybe the last fills)
    without depending on how fast the server answers the opens.
    """
    leaders = -(-len(buyers) // size)

    async def act(i: int, scheduled_ns: int) -> None:
        op = Op.TEAM_OPEN if i < leaders else Op.TEAM_JOIN
        try:
            reply = await buyers[i].request(op, timeout_s=ctx.config.event_timeout_s,
                                            offer=offer, key=uuid.uuid4().hex)
        except RequestError as exc:
            ctx.metrics.error("team", exc.code)
            return
        except TimeoutError:
            ctx.metrics.timeout("team")
            return
        except Exception as exc:
            ctx.metrics.error("team", type(exc).__name__)
            return
        now = time.monotonic_ns()
        ctx.metrics.record("team", now - scheduled_ns, now)
        watch.see(reply.get("team"))

    await OpenLoop(steady(leaders, rate), act, ctx.metrics, failure_metric="team").run()
    joiners = len(buyers) - leaders

    async def join(i: int, scheduled_ns: int) -> None:
        await act(leaders + i, scheduled_ns)

    await OpenLoop(steady(joiners, rate), join, ctx.metrics, failure_metric="team").run()


async def check_teams(ctx: RunContext, watch: TeamWatch, size: int, window_s: float, buyers: int) -> None:
    # let unfilled teams reach their deadline and be settled
    deadline = time.monotonic() + window_s + ctx.config.event_timeout_s
    while time.monotonic() < deadline:
        if watch.teams and all(str(t.get("status")) in SUCCESS | FAILURE for t in watch.teams.values()):
            break
        await asyncio.sleep(0.1)
    teams = list(watch.teams.values())
    over = [t for t in teams if _members(t) > size]
    ctx.check("no team above its size", not over, f"{len(over)} teams above {size}")
    unsettled = [t for t in teams if str(t.get("status")) not in SUCCESS | FAILURE]
    ctx.check("every team settled (full or expired)", bool(teams) and not unsettled,
              f"{len(teams)} teams, {len(unsettled)} still open: "
              f"{sorted({str(t.get('status')) for t in unsettled})}")
    full = [t for t in teams if str(t.get("status")) in SUCCESS]
    ctx.check("full teams have exactly their size", all(_members(t) == size for t in full),
              f"{len(full)} full teams")
    ctx.check("expected number of full teams", len(full) == buyers // size,
              f"{len(full)} full, expected {buyers // size}")
    s = ctx.metrics.summary("team")
    ctx.check("every buyer answered", s.timeouts == 0, f"{s.timeouts} team requests without reply")
    ctx.metrics.count("teams_full", len(full))
    ctx.metrics.count("teams_failed", len(teams) - len(full) - len(unsettled))


class GroupBuyScenario(Scenario):
    name = "groupbuy"
    summary = "buyers open/join teams of size N until full or expired (knobs buyers, size, window_s)"
    metrics = ("join", "team")
    default_slos: ClassVar[tuple[str, ...]] = ("team.p99<600ms",)
    profiles: ClassVar[dict[str, dict[str, float]]] = {
        "small": {"viewers": 10, "rate": 50, "duration_s": 1, "probes": 2, "buyers": 10,
                  "size": 3, "window_s": 2},
        "full": {"viewers": 1000, "rate": 300, "duration_s": 5, "probes": 10, "buyers": 1001,
                 "size": 5, "window_s": 10, "workers": 2},
    }

    def actor_sockets(self, config: object) -> int:
        return int(getattr(config, "extra", {}).get("buyers", 10)) + 2

    async def run(self, ctx: RunContext) -> None:
        cfg = ctx.config
        n = int(ctx.knob("buyers", 10))
        size = int(ctx.knob("size", 3))
        window_s = int(ctx.knob("window_s", 2))
        watch = TeamWatch()
        streamer = await ctx.session("streamer", 0, on_event=watch)
        await streamer.request(Op.JOIN, room=cfg.room)
        pool = await seat(ctx, cfg.viewers, cfg.probes, cfg.rate)
        buyers = await connect_actors(ctx, n, cfg.rate, first_index=3_000_000)
        offer = await create_offer(ctx, streamer, size, window_s)
        ctx.phase = f"team buy: {len(buyers)} buyers, teams of {size}"
        await team_rush(ctx, buyers, offer, size, cfg.rate, watch)
        ctx.phase = "waiting for teams to settle"
        await check_teams(ctx, watch, size, window_s, len(buyers))
        await ctx.finish_crowd(pool, {})
