"""Stamped actions at a fixed rate from a set of actors (chat, questions): the shared engine.

Each action carries its scheduled time in its text (see `stamps`), so probes anywhere time its
delivery; its reply is timed into `ack_metric` from the same scheduled time. Actions the
server acknowledged become `Expected` deliveries: a probe that misses one records a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loadtest.run import Expected, RunContext
from loadtest.schedule import OpenLoop, steady
from loadtest.session import RequestError, Session
from loadtest.stamps import Clock, stamp


async def stamped_storm(
    ctx: RunContext,
    actors: list[Session],
    *,
    op: str,
    kind: str,
    ack_metric: str,
    count: int,
    rate: float,
    fields: Callable[[int], dict[str, Any]],
    text_field: str = "text",
    first_id: int = 0,
) -> list[Expected]:
    """Send `count` stamped `op`s at `rate`/s, round-robin over `actors`; return what was acked."""
    clock = Clock(ctx.config.clock)
    expected: list[Expected] = []

    async def act(i: int, scheduled_ns: int) -> None:
        ident = first_id + i
        actor = actors[i % len(actors)]
        body = {**fields(i), text_field: stamp(kind, ident, clock.at(scheduled_ns), "load test")}
        try:
            await actor.request(op, timeout_s=ctx.config.event_timeout_s, **body)
        except RequestError as exc:
            ctx.metrics.error(ack_metric, exc.code)
            return
        except TimeoutError:
            ctx.metrics.timeout(ack_metric)
            return
        except Exception as exc:
            ctx.metrics.error(ack_metric, type(exc).__name__)
            return
        now = time.monotonic_ns()
        ctx.metrics.record(ack_metric, now - scheduled_ns, now)
        expected.append(Expected(ident, scheduled_ns))

    await OpenLoop(steady(count, rate), act, ctx.metrics, failure_metric=ack_metric).run()
    return expected
