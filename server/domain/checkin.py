"""Daily check-in (打卡/签到) with streaks and points.

Rules: one check-in per member per group per UTC day (a second one the same day is refused
with `conflict`). A check-in the day after the previous one extends the streak; a gap of one
day or more starts it again at 1. Points per check-in: BASE + BONUS per day of streak beyond
the first, capped at 7 days, so a week-long streak earns 10, 12, ..., 22 points a day.
Points belong to the member in the shop (all groups share one balance) and are redeemed for
coupons at POINTS_PER_CENT (see `redeem_value`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from client_sdk.protocol import Code
from server.domain.errors import SoukError

DAY_MS: Final = 86_400_000
BASE_POINTS: Final = 10
STREAK_BONUS: Final = 2
STREAK_CAP: Final = 7
REDEEM_STEP: Final = 100  # points are redeemed in multiples of 100
CENTS_PER_POINT: Final = 1  # 100 points -> a 1.00 (100 cents) coupon


def day_of(now_ms: int) -> int:
    return now_ms // DAY_MS


@dataclass
class Streak:
    last_day: int
    streak: int
    total: int  # check-ins ever in this group


def check_in(prev: Streak | None, now_ms: int) -> tuple[Streak, int]:
    """The streak after a check-in at `now_ms` and the points it earns."""
    today = day_of(now_ms)
    if prev is None:
        nxt = Streak(today, 1, 1)
    elif prev.last_day >= today:
        raise SoukError(Code.CONFLICT, "already checked in today", streak=prev.streak)
    elif prev.last_day == today - 1:
        nxt = Streak(today, prev.streak + 1, prev.total + 1)
    else:
        nxt = Streak(today, 1, prev.total + 1)
    return nxt, points_for(nxt.streak)


def points_for(streak: int) -> int:
    return BASE_POINTS + STREAK_BONUS * (min(streak, STREAK_CAP) - 1)


def redeem_value(points: int, balance: int) -> int:
    """The coupon value in cents for redeeming `points` out of `balance`."""
    if type(points) is not int or points < REDEEM_STEP or points % REDEEM_STEP:
        raise SoukError(Code.INVALID, f"points: must be a positive multiple of {REDEEM_STEP}", field="points")
    if points > balance:
        raise SoukError(Code.CONFLICT, f"you have {balance} points", balance=balance)
    return points * CENTS_PER_POINT
