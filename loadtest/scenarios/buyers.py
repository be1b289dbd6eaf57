"""Connected buyers (or any acting users): opened on an open-loop schedule, joins timed."""

from __future__ import annotations

import asyncio
import time

from client_sdk.protocol import Op
from loadtest.run import RunContext
from loadtest.schedule import OpenLoop, steady
from loadtest.session import EventHandler, RequestError, Session


async def connect_actors(
    ctx: RunContext,
    count: int,
    rate: float,
    *,
    role: str = "viewer",
    first_index: int = 0,
    on_event: EventHandler | None = None,
) -> list[Session]:
    """Open `count` sessions that join the room, timing each join into `join`.

    Failures are counted (and the actor is left out); the caller checks how many it got.
    """
    cfg = ctx.config
    tokens = await ctx.tokens.tokens(role, count, first=first_index)
    out: list[Session | None] = [None] * count

    async def one(i: int, scheduled_ns: int) -> None:
        try:
            s = await Session.open(cfg.url_for(i), tokens[i], on_event=on_event,
                                   timeout_s=cfg.join_timeout_s)
            ctx.sessions.append(s)
            await s.request(Op.JOIN, timeout_s=cfg.join_timeout_s, room=cfg.room)
        except RequestError as exc:
            ctx.metrics.error("join", exc.code)
            return
        except TimeoutError:
            ctx.metrics.timeout("join")
            return
        except Exception as exc:
            ctx.metrics.error("join", type(exc).__name__)
            return
        now = time.monotonic_ns()
        ctx.metrics.record("join", now - scheduled_ns, now)
        out[i] = s

    await OpenLoop(steady(count, rate), one, ctx.metrics, failure_metric="join").run()
    await asyncio.sleep(0)
    return [s for s in out if s is not None]


def object_id(reply: dict[str, object], *keys: str) -> str | int | None:
    """The `id` of the first named object in a reply (e.g. `product`, `sale`), or a top `id`."""
    for k in keys:
        obj = reply.get(k)
        if isinstance(obj, dict):
            ident = obj.get("id")
            if isinstance(ident, str | int):
                return ident
    top = reply.get("id")
    return top if isinstance(top, str | int) else None
