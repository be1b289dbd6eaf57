"""The arithmetic of the merchant's numbers: percentiles, rates, weekly buckets.

Why pure: the store reads counts and durations from the database; how they become "p90
answer time" or "exit rate per week" is a rule the merchant reads against their actions, so it
is defined (and tested) once, here. Rates are fractions in [0, 1] rounded to 4 places; an empty
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
           messages: dict[int, int], actions: dict[int, list[dict[str, str]]], first: int,
           last: int) -> list[dict[str, Any]]:
    """One row per week `first..last`: members at its start, joins, exits, exit rate
    (exits / (members at start + joins)), messages, the merchant's actions that week
    ({`kind`, `detail`}: the pages name the kind in their language) and the change in
    messages and exits against the week before."""
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


ANSWER_TARGET_MS: Final = 5 * 60_000


def seconds(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000, 1)


def room_numbers(room: str, pres: Any, act: dict[str, Any], interacting: int, qs: Sequence[Any],
                 orders: Any, off: dict[Any, int], per_sale: list[dict[str, Any]],
                 per_team: list[dict[str, Any]]) -> dict[str, Any]:
    """A room's numbers from what the store read (rows indexable by column name)."""
    viewers = int(act["view"]["users"]) if "view" in act else 0
    waits = sorted(int(q["answered_at"]) - int(q["asked_at"]) for q in qs
                   if q["status"] == "answered" and q["answered_at"] is not None)
    per_sale.sort(key=lambda r: -r["revenue"])
    discounts = sum(off.values())
    buyers = int(orders["buyers"])
    return {
        "room": room,
        "viewers": {"unique": viewers, "peak": int(pres["peak"] or 0),
                    "average": round(float(pres["avg"] or 0), 2)},
        "watch_time_s": int(pres["watch"] or 0) // 1000,
        "messages": int(act["chat"]["n"]) if "chat" in act else 0,
        "likes": int(act["like"]["n"]) if "like" in act else 0,
        "questions": {
            "asked": len(qs), "answered": len(waits),
            "answer_p50_s": seconds(percentile(waits, 50)),
            "answer_p90_s": seconds(percentile(waits, 90)),
            "answered_within_5min": rate(sum(1 for w in waits if w <= ANSWER_TARGET_MS), len(qs)),
        },
        "interacting": interacting,
        "interaction_rate": rate(interacting, viewers),
        "buyers": buyers,
        "conversion_rate": rate(buyers, viewers),
        "orders": int(orders["orders"]), "units": int(orders["units"]),
        "revenue": int(orders["gross"]) - discounts, "discounts": discounts,
        "sales": per_sale, "teambuys": per_team,
    }


def group_numbers(group: str, members: int, active: int, msg_total: int, replies: int,
                  votes: int, buys: Sequence[Any], joins: list[int], exits: list[int],
                  since_ms: int, before: int, msg_weeks: dict[int, int],
                  actions: dict[int, list[dict[str, str]]], first: int, now_ms: int) -> dict[str, Any]:
    """A group's numbers from what the store read (`buys`: rows with `n` and `spent`)."""
    buyers = len(buys)
    return {
        "group": group, "members": members, "active_members_7d": active,
        "messages": msg_total,
        "interaction_rate": rate(replies + votes, msg_total),
        "buyers": buyers, "conversion_rate": rate(buyers, members),
        "repurchase_rate": rate(sum(1 for b in buys if b["n"] >= 2), buyers),
        "clv": sum(int(b["spent"]) for b in buys) // buyers if buyers else 0,
        "joins": len(joins), "exits": len(exits), "exit_rate": rate(len(exits), len(joins)),
        "weeks": weekly([t for t in joins if t >= since_ms], [t for t in exits if t >= since_ms],
                        before, msg_weeks, actions, first, week_of(now_ms)),
    }
