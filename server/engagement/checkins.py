"""Daily check-in in a group, the points it earns, and points turned into a coupon.

Why the memory is only a copy: the record's guards decide (one check-in per group, user and
day; points spent with `balance - n WHERE balance >= n`), so in a cluster the node reads the
last check-in and the balance from the record first, and a refusal from another node's
earlier write answers `conflict`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from client_sdk.protocol import Code
from server.domain import checkin as checkin_rules
from server.domain.coupons import CouponSpec
from server.engagement.coupons import REWARD_VALID_MS, Coupons
from server.engagement.plumbing import Plumbing, log
from server.errors import SoukError
from server.store.db import Row
from server.store.engagement import GuardRefused


class Checkins:
    """Streaks per (group, user) and points per (shop, user)."""

    def __init__(self, plumbing: Plumbing, coupons: Coupons) -> None:
        self.p = plumbing
        self.coupons = coupons
        self.streaks: dict[tuple[str, str], checkin_rules.Streak] = {}
        self.points: Counter[tuple[str, str]] = Counter()

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["streaks"]:
            self.streaks[(r["group_id"], r["user_id"])] = checkin_rules.Streak(r["day"], r["streak"], r["total"])
        for r in rows["points"]:
            self.points[(r["shop"], r["user_id"])] = int(r["balance"])

    async def checkin(self, shop: str, group: str, user: str) -> dict[str, Any]:
        now = self.p.clock_ms()
        key = (group, user)
        if self.p.store.shared:  # the last check-in may have been taken on another node
            last = await self.p.store.streak(group, user)
            if last is not None:
                self.streaks[key] = last
        prev = self.streaks.get(key)
        nxt, points = checkin_rules.check_in(prev, now)
        self.streaks[key] = nxt
        self.points[(shop, user)] += points
        try:
            balance = await self.p.store.checkin(shop, group, user, nxt.last_day, nxt.streak, points, now)
        except Exception as exc:
            self.points[(shop, user)] -= points
            if self.streaks.get(key) is nxt:
                if prev is None:
                    self.streaks.pop(key, None)
                else:
                    self.streaks[key] = prev
            if isinstance(exc, GuardRefused):  # another node took today's check-in first
                raise SoukError(Code.CONFLICT, "already checked in today") from None
            log.exception("check-in write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the check-in; try again") from None
        self.points[(shop, user)] = balance
        return {"group": group, "streak": nxt.streak, "points": points, "total": nxt.total,
                "balance": self.points[(shop, user)]}

    def balance(self, shop: str, user: str) -> int:
        return self.points.get((shop, user), 0)

    async def points_balance(self, shop: str, user: str) -> int:
        """The balance; in a cluster the shared one (points earned on any node)."""
        if self.p.store.shared:
            self.points[(shop, user)] = await self.p.store.balance(shop, user)
        return self.balance(shop, user)

    async def redeem(self, shop: str, user: str, raw_points: Any) -> dict[str, Any]:
        await self.points_balance(shop, user)
        now = self.p.clock_ms()
        value = checkin_rules.redeem_value(raw_points, self.balance(shop, user))
        points = int(raw_points)
        self.points[(shop, user)] -= points
        spec = CouponSpec("amount", value, 0, now + REWARD_VALID_MS, f"{points} points")
        c = self.coupons.make(shop, user, spec, now, "points")
        try:
            # the store spends the points with a conditional UPDATE: `conflict` when they were
            # spent meanwhile (on another node)
            left = await self.coupons.issue([c], self.p.store.redeem(shop, user, points, c))
        except SoukError:
            self.points[(shop, user)] += points
            raise
        self.points[(shop, user)] = left
        return {"coupon": c.to_dict(now), "balance": self.balance(shop, user)}
