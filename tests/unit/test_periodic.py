"""The node's periodic loop outlives a failing tick (a frozen viewer count was the symptom)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.periodic import every


async def test_a_failing_tick_does_not_stop_the_loop() -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first tick fails")

    async def atick() -> None:
        calls.append(-1)
        raise OSError("redis away")

    log = logging.getLogger("test.periodic")
    tasks = [asyncio.create_task(every(0.005, tick, "sync tick", log)),
             asyncio.create_task(every(0.005, atick, "async tick", log, (OSError,)))]
    try:
        for _ in range(400):
            if sum(c >= 0 for c in calls) >= 3 and calls.count(-1) >= 3:
                break
            await asyncio.sleep(0.01)
        assert sum(c >= 0 for c in calls) >= 3 and calls.count(-1) >= 3, calls
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
