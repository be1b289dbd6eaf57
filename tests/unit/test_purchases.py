"""The social-proof rule: masked names, at most one event per 500 ms per room, counts that
sum to every order, and the last few items only."""

from __future__ import annotations

import itertools

from server.domain.purchases import GAP_MS, PurchaseFeed, mask_name


def test_names_are_masked() -> None:
    assert mask_name("小刚") == "小*"
    assert mask_name("Ann Lee") == "A*"
    assert mask_name("  ") == "*"
    assert mask_name("x") == "x*"


def test_a_rush_is_sent_at_most_every_gap_with_counts_summing_to_every_order() -> None:
    feed = PurchaseFeed()
    events: list[tuple[int, dict[str, object]]] = []
    due: int | None = None
    orders = 0
    for now in range(0, 3000, 2):  # an order every 2 ms for 3 s: 1,500 orders
        orders += 1
        at = feed.add(f"buyer{now}", "Tea", 1, now)
        if at is not None:
            due = at
        if due is not None and now >= due:
            ev = feed.take(now)
            assert ev is not None
            events.append((now, ev))
            due = None
    if (ev := feed.take(3000)) is not None:
        events.append((3000, ev))
    times = [t for t, _ in events]
    assert all(b - a >= GAP_MS for a, b in itertools.pairwise(times))  # ≤ 2 a second
    assert len(events) <= 3000 // GAP_MS + 1
    assert sum(int(str(ev["count"])) for _, ev in events) == orders
    assert all(len(ev["items"]) <= 3 for _, ev in events)  # type: ignore[arg-type]
    assert events[-1][1]["items"][-1] == {"name": "b*", "product": "Tea", "qty": 1}  # type: ignore[index]


def test_a_quiet_room_is_told_at_once_and_an_empty_feed_sends_nothing() -> None:
    feed = PurchaseFeed()
    assert feed.add("小刚", "Tea", 2, 1000) == 1000  # nothing sent lately: now
    assert feed.take(1000) == {"items": [{"name": "小*", "product": "Tea", "qty": 2}], "count": 1}
    assert feed.add("Bo", "Tea", 1, 1100) == 1000 + GAP_MS  # too soon: later, once
    assert feed.add("Cy", "Tea", 1, 1200) is None
    assert feed.take(1500) == {"items": [{"name": "B*", "product": "Tea", "qty": 1},
                                         {"name": "C*", "product": "Tea", "qty": 1}], "count": 2}
    assert feed.take(2100) is None and feed.idle
