"""Open-loop arrivals: shapes of the schedule, and latency counted from the scheduled time."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from loadtest.metrics import Metrics
from loadtest.schedule import NS, OpenLoop, ramp, spike, steady

MS = 1_000_000


def test_steady_spacing() -> None:
    assert steady(4, 2.0) == [0, NS // 2, NS, 3 * NS // 2]


def test_ramp_accelerates_and_keeps_the_mean_rate() -> None:
    offs = ramp(100, 50.0)
    gaps = [b - a for a, b in itertools.pairwise(offs)]
    assert gaps[0] > gaps[-1]  # arrivals come faster as the ramp rises
    assert offs == sorted(offs)
    # 100 arrivals ramping to 50/s take 2*100/50 = 4 s
    assert 3.9 * NS < offs[-1] < 4.0 * NS


def test_spike_packs_arrivals_in_the_window() -> None:
    offs = spike(10, 0.1, start_s=2.0)
    assert min(offs) == 2 * NS and max(offs) < 2.1 * NS


def test_bad_rates_refused() -> None:
    with pytest.raises(ValueError):
        steady(3, 0.0)
    with pytest.raises(ValueError):
        ramp(-1, 1.0)


async def test_open_loop_does_not_wait_for_slow_actions() -> None:
    """A stalled action must not delay the next arrival (no coordinated omission)."""
    started: list[int] = []
    latencies: list[int] = []
    stall = asyncio.Event()

    async def action(i: int, scheduled_ns: int) -> None:
        started.append(time.monotonic_ns() - scheduled_ns)
        if i == 0:
            await stall.wait()  # the "server" stalls on the first request
        latencies.append(time.monotonic_ns() - scheduled_ns)

    async def release() -> None:
        await asyncio.sleep(0.3)
        stall.set()

    m = Metrics()
    releaser = asyncio.create_task(release())
    await OpenLoop(steady(5, 50.0), action, m).run()  # arrivals at 0, 20, ..., 80 ms
    await releaser
    assert len(started) == 5
    assert max(started) < 50 * MS  # each started on time despite the stall
    # the stalled request's latency runs from its schedule: about 300 ms, not hidden
    assert max(latencies) >= 290 * MS
    assert m.summary("sched_lag").count == 5


async def test_latency_counts_from_the_scheduled_time_when_the_generator_is_late() -> None:
    """If the loop is blocked past an arrival, that wait is part of the measured latency."""
    measured: list[int] = []

    async def action(i: int, scheduled_ns: int) -> None:
        if i == 0:
            time.sleep(0.1)  # noqa: ASYNC251 - deliberately block the loop: arrival 1 starts ~90 ms late
        measured.append(time.monotonic_ns() - scheduled_ns)

    m = Metrics()
    await OpenLoop(steady(2, 100.0), action, m).run()
    assert measured[1] >= 85 * MS
    assert m.summary("sched_lag").max_ms >= 85


async def test_an_action_that_raises_is_counted_not_lost() -> None:
    async def action(i: int, scheduled_ns: int) -> None:
        if i == 1:
            raise RuntimeError("bug")

    m = Metrics()
    await OpenLoop(steady(3, 1000.0), action, m, failure_metric="join").run()
    assert m.counters["generator_crashes"] == 1
    assert m.errors["join"]["crash:RuntimeError"] == 1
