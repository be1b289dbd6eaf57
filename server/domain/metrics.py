"""The arithmetic of the merchant's numbers: percentiles, rates, weekly buckets.

Why pure: the store reads counts and durations from SQLite; how they become "p90 answer time"
or "exit rate per week" is a rule the merchant reads against their actions, so it is defined
(and tested) once, here. Rates are fractions in [0, 1] rounded to 4 places; an empty
denominator gives 0, never a division error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

WEEK_MS: Final = 7 * 86_400_000


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile of an ascending list; None for an empty one."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(p * len(sorted_values) * 1000) // 100_000))  # ceil(p/100 * n)
    return int(sorted_values[min(rank, len(sorted_values)) - 1])


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def week_of(ts_ms: int) -> int:
    """Weeks since the epoch (weeks start on Thursday 00:00 UTC, the epoch's weekday)."""
    return ts_ms // WEEK_MS


def weekly(joins: Sequence[int], exits: Sequence[int], members_before: int,
           messages: dict[int, int], actions: dict[int, list[str]], first: int, last: int) -> list[dict[str, Any]]:
    """One row per week `first..last`: members at its start, joins, exits, exit rate
    (exits / (members at start + joins)), messages, the merchant's actions that week and the
    change in messages and exits against the week before."""
    jw: dict[int, int] = {}
    ew: dict[int, int] = {}
    for ts in joins:
        jw[week_of(ts)] = jw.get(week_of(ts), 0) + 1
    for ts in exits:
        ew[week_of(ts)] = ew.get(week_of(ts), 0) + 1
    out: list[dict[str, Any]] = []
    members = members_before
    prev: dict[str, Any] | None = None
    for w in range(first, last + 1):
        j, e = jw.get(w, 0), ew.get(w, 0)
        row: dict[str, Any] = {
            "week_start": w * WEEK_MS, "members_start": members, "joins": j, "exits": e,
            "exit_rate": rate(e, members + j), "messages": messages.get(w, 0),
            "actions": actions.get(w, []),
        }  # fmt: skip
        if prev is not None:
            row["messages_change"] = row["messages"] - prev["messages"]
            row["exits_change"] = e - prev["exits"]
        out.append(row)
        prev = row
        members += j - e
    return out
