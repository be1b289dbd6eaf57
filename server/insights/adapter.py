"""`Insights`: the merchant's numbers, and the activity log they are computed from.

Why one object: the numbers are SQL aggregates over the records every feature keeps
(server/store/insights.py, arithmetic in server/domain/insights.py) plus the activity log
(server/insights/activity.py); a read flushes the log first, so a merchant sees what just
happened. The shops' excluded users (testers, bots) are held here because both sides use
them: presence samples skip them, the queries and the member layers leave them out. In a
cluster the list is the record's, and the other nodes hear of a change by a notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from server.cluster.notices import NoSync, Notice, Sync
from server.domain.layers import Thresholds
from server.insights.activity import ActivityLog
from server.store.insights import InsightsStore

log = logging.getLogger("souk.insights")


class Insights:
    """The activity log of one process, the shops' excluded users, and the numbers' reads."""

    def __init__(self, store: InsightsStore, clock_ms: Callable[[], int], *,
                 presence_interval_s: float = 5.0, flush_interval_s: float = 1.0,
                 sync: Sync | None = None) -> None:
        """`sync`: how this node hears of other nodes' changes and tells its own (a cluster)."""
        self.store = store
        self.log = ActivityLog(clock_ms)
        self.sync = sync if sync is not None else NoSync()
        self.excluded: dict[str, set[str]] = {}
        self.presence_interval_s = presence_interval_s
        self.flush_interval_s = flush_interval_s
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def clock_ms(self) -> Callable[[], int]:
        return self.log.clock_ms

    @clock_ms.setter
    def clock_ms(self, clock_ms: Callable[[], int]) -> None:
        self.log.clock_ms = clock_ms

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.sync.start()  # subscribed before loading: nothing committed is missed
        self.excluded = await self.store.excluded()
        self._tasks = [asyncio.create_task(self._flush_loop()), asyncio.create_task(self._presence_loop())]
        self.sync.run(self.apply_notice)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.flush()
        await self.sync.stop()

    async def apply_notice(self, n: Notice) -> None:
        """Another node changed a shop's excluded users."""
        if n.get("k") == "excluded":
            self.excluded[str(n["s"])] = set(n["u"])

    # -- the activity log ------------------------------------------------------------------
    def viewer_joined(self, room: str, user: str, role: str) -> None:
        self.log.viewer_joined(room, user, role)

    def viewer_left(self, room: str, user: str) -> None:
        self.log.viewer_left(room, user)

    def activity(self, room: str, user: str, role: str, kind: str, n: int = 1) -> None:
        """A viewer's chat message or likes in a room (staff never counted)."""
        self.log.note(room, user, role, kind, n)

    def action(self, shop: str, scope: str, target: str, kind: str, detail: str) -> None:
        """A merchant action (a sale, a talk, a notice) for the 'what preceded changes' view."""
        self.log.action(shop, scope, target, kind, detail)

    def sample_presence(self) -> None:
        excluded = set().union(*self.excluded.values()) if self.excluded else set()
        self.log.sample_presence(int(self.presence_interval_s * 1000), excluded)

    async def forget_rooms(self, rooms: list[str]) -> None:
        """Rooms nobody created were freed (server/collector.py): their rows go too, once the
        notes still buffered for them are written."""
        await self.flush()
        await self.store.forget_rooms(rooms)

    async def flush(self) -> None:
        batch = self.log.take()
        if batch is None:
            return
        try:
            await self.store.record(*batch)
        except Exception:
            log.exception("activity write failed (%d rows lost)", sum(len(rows) for rows in batch))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.presence_interval_s)
            self.sample_presence()

    async def set_excluded(self, shop: str, add: list[str], remove: list[str]) -> list[str]:
        # the record's list: another node may have changed it too
        ex = self.excluded[shop] = await self.store.set_excluded(shop, add, remove)
        self.sync.notify("excluded", s=shop, u=sorted(ex))
        return sorted(ex)

    # -- the numbers -----------------------------------------------------------------------
    async def for_room(self, room: str, shop: str | None = None) -> dict[str, Any]:
        await self.flush()
        return await self.store.for_room(room, shop)

    async def for_group(self, group: str) -> dict[str, Any] | None:
        await self.flush()
        return await self.store.for_group(group, self.clock_ms())

    async def for_shop(self, shop: str) -> dict[str, Any]:
        await self.flush()
        return await self.store.for_shop(shop)

    async def member_stats(self, shop: str, thresholds: Thresholds) -> list[dict[str, Any]]:
        """Every member of the shop with layer and stats (excluded users left out)."""
        return await self.store.member_stats(shop, self.clock_ms(), thresholds,
                                             self.excluded.get(shop, set()))

    async def one_member(self, shop: str, user: str, thresholds: Thresholds) -> dict[str, Any]:
        """One member's layer and stats, read from the records now."""
        return await self.store.one_member(shop, user, self.clock_ms(), thresholds)
