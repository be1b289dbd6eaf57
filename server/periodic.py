"""One loop for the node's periodic work (presence reports, cascade upkeep, like and viewer
flushes, the overdue check), and the probe of the loop's own lateness.

Why one place: each of these ran its own `while True: sleep; tick` loop, and a loop whose tick
raised once stopped for good (viewer counts frozen, pulls never refreshed). Here a failed tick
is logged and the next one runs; only cancelling the task ends the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable


async def every(interval_s: float, tick: Callable[[], object], what: str, log: logging.Logger,
                expected: tuple[type[Exception], ...] = (), first: bool = False) -> None:
    """Run `tick` (plain or async) every `interval_s` until cancelled (`first`: once at once
    too). `expected` failures (e.g. Redis away) get a one-line warning; anything else a
    traceback."""
    while True:
        if first:
            first = False
        else:
            await asyncio.sleep(interval_s)
        try:
            result = tick()
            if inspect.isawaitable(result):
                await result
        except expected as exc:
            log.warning("%s failed: %s", what, exc)
        except Exception:
            log.exception("%s failed", what)


async def watch_lag(observe: Callable[[float], None], interval_s: float = 0.1) -> None:
    """Observe how late the loop wakes a timer due every `interval_s` (seconds), until
    cancelled. Why: every event, reply and write of the node waits for this one loop; a lag
    here is the server's own share of any latency its clients see, whatever the generator."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))
