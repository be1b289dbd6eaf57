"""Open-loop arrivals: every action has a scheduled time, and its latency counts from it.

A closed-loop generator (send, wait for the reply, send the next) slows down with the server
and so measures a stall as one slow request instead of thousands (coordinated omission). Here
the arrival times are computed up front from the rate; the runner starts each action at its
time whether or not earlier ones have finished, and hands it the scheduled time, which is what
latency is measured from. If the runner itself falls behind, that lateness is recorded
(`sched_lag`) so the watchdog can call the run inconclusive.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.metrics import Metrics

NS = 1_000_000_000


def steady(count: int, rate: float, start_s: float = 0.0) -> list[int]:
    """`count` arrivals at a constant `rate` per second, offsets in ns from the start."""
    if count < 0 or rate <= 0:
        raise ValueError("count must be >= 0 and rate > 0")
    return [int((start_s + i / rate) * NS) for i in range(count)]


def ramp(count: int, rate: float, start_s: float = 0.0) -> list[int]:
    """`count` arrivals whose rate grows linearly from 0 to `rate` (a warming-up audience).

    With r(t) = rate * t / T the k-th arrival is at t_k = sqrt(2 T k / rate), T = 2 count / rate.
    """
    if count < 0 or rate <= 0:
        raise ValueError("count must be >= 0 and rate > 0")
    total = 2.0 * count / rate
    return [int((start_s + math.sqrt(2.0 * total * k / rate)) * NS) for k in range(count)]


def spike(count: int, window_s: float = 0.1, start_s: float = 0.0) -> list[int]:
    """A flash crowd: `count` arrivals spread evenly over `window_s` (a sale announcement)."""
    if count < 0 or window_s < 0:
        raise ValueError("count and window must be >= 0")
    step = window_s / count if count else 0.0
    return [int((start_s + i * step) * NS) for i in range(count)]


def duration_s(offsets: Sequence[int]) -> float:
    return (max(offsets) / NS) if offsets else 0.0


@dataclass
class OpenLoop:
    """Runs `action(index, scheduled_ns)` at `start_ns + offsets[index]`, never waiting for it."""

    offsets: Sequence[int]
    action: Callable[[int, int], Coroutine[Any, Any, None]]
    metrics: Metrics | None = None
    lag_metric: str = "sched_lag"
    failure_metric: str | None = None  # where an action that raised counts as an error

    async def run(self, start_ns: int | None = None) -> None:
        start = time.monotonic_ns() if start_ns is None else start_ns
        tasks: set[asyncio.Task[None]] = set()
        for i, off in enumerate(sorted(self.offsets)):
            due = start + off
            wait = due - time.monotonic_ns()
            if wait > 0:
                await asyncio.sleep(wait / NS)
            late = time.monotonic_ns() - due
            if self.metrics is not None:
                self.metrics.record(self.lag_metric, max(late, 0))
            t = asyncio.create_task(self._guarded(i, due))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _guarded(self, i: int, due: int) -> None:
        """An action that raises is a generator bug: counted, never silently lost."""
        try:
            await self.action(i, due)
        except Exception as exc:
            if self.metrics is None:
                raise
            self.metrics.count("generator_crashes")
            if self.failure_metric is not None:
                self.metrics.error(self.failure_metric, f"crash:{type(exc).__name__}")
