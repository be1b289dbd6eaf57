"""Member layers (用户分层): spending, frequency and engagement into high-value, high-activity,
medium or dormant.

Why pure: the adapter reads counts from SQLite (orders, group messages, poll votes,
check-ins, answers over a 30-day window) and hands them here; the rule is a function of those
counts and the merchant's thresholds, so it is testable without a database.

Order of the rule (first match wins):
1. high-value: average order value >= `high_value_aov` and at least one order in the window;
2. high-activity: orders >= `high_activity_orders` or engagement >= `high_activity_engagement`;
3. dormant: no order and engagement < `dormant_engagement` in the window;
4. medium: everyone else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from server.domain import fields

HIGH_VALUE: Final = "high_value"
HIGH_ACTIVITY: Final = "high_activity"
MEDIUM: Final = "medium"
DORMANT: Final = "dormant"
LAYERS: Final = (HIGH_VALUE, HIGH_ACTIVITY, MEDIUM, DORMANT)
WINDOW_MS: Final = 30 * 86_400_000


@dataclass(frozen=True)
class Thresholds:
    high_value_aov: int = 20_000  # cents
    high_activity_orders: int = 3
    high_activity_engagement: int = 30
    dormant_engagement: int = 1

    def to_dict(self) -> dict[str, int]:
        return {
            "high_value_aov": self.high_value_aov,
            "high_activity_orders": self.high_activity_orders,
            "high_activity_engagement": self.high_activity_engagement,
            "dormant_engagement": self.dormant_engagement,
        }

    def updated(self, raw: Any) -> Thresholds:
        """A copy with the given fields changed (each validated)."""
        f = fields.mapping(raw)
        changes: dict[str, int] = {}
        for name, hi in (("high_value_aov", fields.MAX_PRICE), ("high_activity_orders", 10_000),
                         ("high_activity_engagement", 1_000_000), ("dormant_engagement", 1_000_000)):
            if f.get(name) is not None:
                changes[name] = fields.integer(f, name, 1, hi)
        return replace(self, **changes)


@dataclass(frozen=True)
class MemberStats:
    user: str
    orders: int = 0  # confirmed orders in the window
    spent: int = 0  # cents, in the window
    messages: int = 0
    votes: int = 0
    checkins: int = 0
    answers: int = 0

    @property
    def aov(self) -> int:
        return self.spent // self.orders if self.orders else 0

    @property
    def engagement(self) -> int:
        return self.messages + self.votes + self.checkins + self.answers


def layer_of(s: MemberStats, t: Thresholds) -> str:
    if s.orders and s.aov >= t.high_value_aov:
        return HIGH_VALUE
    if s.orders >= t.high_activity_orders or s.engagement >= t.high_activity_engagement:
        return HIGH_ACTIVITY
    if s.orders == 0 and s.engagement < t.dormant_engagement:
        return DORMANT
    return MEDIUM


def describe(s: MemberStats, t: Thresholds) -> dict[str, Any]:
    return {
        "user": s.user, "layer": layer_of(s, t), "orders_30d": s.orders, "spent_30d": s.spent,
        "aov": s.aov, "engagement_30d": s.engagement, "messages": s.messages, "votes": s.votes,
        "checkins": s.checkins, "answers": s.answers,
    }  # fmt: skip


def layer_value(value: Any) -> str:
    if value not in LAYERS:
        raise fields.invalid("layer", f"must be one of {', '.join(LAYERS)}")
    return str(value)


def thresholds_from(row: Mapping[str, Any] | None) -> Thresholds:
    return Thresholds() if row is None else Thresholds(**{k: int(v) for k, v in row.items()})
