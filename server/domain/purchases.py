"""Social proof: "小* just bought Longjing tea ×2", aggregated and throttled per room.

Why a rule of its own: in a rush a room confirms hundreds of orders a second, and one
broadcast per order would cost the loop more than the orders themselves and scroll faster than
anyone reads. A room's purchases are collected and sent as one `purchase` event at most every
`gap_ms` (500 ms: at most 2 a second per room on a node, whatever the order rate), carrying the
last few items and how many orders it stands for (`count`, summing to every order). Buyers'
names are masked: the first character and `*`.

Sans-I/O: the adapter (server/commerce/ticker.py) passes the time and runs the timer.
"""

from __future__ import annotations

from typing import Any, Final

from server.domain.throttle import PushThrottle

GAP_MS: Final = 500
MAX_ITEMS: Final = 3


def mask_name(name: str) -> str:
    """The first character and a star (`小刚` → `小*`); a nameless buyer is just `*`."""
    name = name.strip()
    return f"{name[0]}*" if name else "*"


class PurchaseFeed:
    """One room's purchases since its last `purchase` event."""

    def __init__(self, gap_ms: int = GAP_MS, max_items: int = MAX_ITEMS) -> None:
        self.throttle = PushThrottle(gap_ms)
        self.max_items = max_items
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, name: str, product: str, qty: int, now_ms: int) -> int | None:
        """Count an acknowledged order. Returns when to send: `now_ms` (call `take` now), a
        later time (call `take` then, once), or None (a send is already due)."""
        self.items.append({"name": mask_name(name), "product": product, "qty": qty})
        del self.items[:-self.max_items]
        self.count += 1
        return self.throttle.note(now_ms)

    def take(self, now_ms: int) -> dict[str, Any] | None:
        """The event's fields ({`items`, `count`}), or None if nothing was bought since."""
        self.throttle.pushed(now_ms)
        if not self.count:
            return None
        event = {"items": self.items, "count": self.count}
        self.items, self.count = [], 0
        return event

    @property
    def idle(self) -> bool:
        return not self.count and not self.throttle.pending
