"""An order: a confirmed (or, for a team, pending) reservation the merchant's shop settles.

Why its own module: flash sales and team buys both make orders, the ledger stores them and the
adapter pushes them on `user:<id>`; one shape keeps `orders_mine` uniform. Payment is out of
scope: an order is a reservation at a fixed unit price in integer cents. A lucky draw's winner
gets an order too (kind `prize`, price 0, naming the `draw`), so the merchant ships it like
any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

CONFIRMED: Final = "confirmed"
PENDING: Final = "pending"  # a team member's hold, until the team fills
FAILED: Final = "failed"  # a team that did not fill in time: the hold is released
STATUSES: Final = (CONFIRMED, PENDING, FAILED)


@dataclass(frozen=True)
class Order:
    """Immutable: a status change makes a new Order (`dataclasses.replace`), so a copy handed
    to the storage thread can never change under it."""

    id: str
    user: str
    room: str
    product: str
    qty: int
    price: int  # unit price, integer cents
    currency: str
    key: str
    created_at: int
    status: str = CONFIRMED
    sale: str | None = None
    offer: str | None = None
    team: str | None = None
    name: str = ""
    # a coupon applied atomically with the order, and its discount
    coupon: str | None = None
    discount: int = 0  # cents off `amount`
    draw: str | None = None  # a prize won in this lucky draw (price 0)

    @property
    def kind(self) -> str:
        """`sale`, `team` or `prize`."""
        if self.draw is not None:
            return "prize"
        return "team" if self.team is not None else "sale"

    @property
    def amount(self) -> int:
        return self.price * self.qty

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "user": self.user,
            "room": self.room,
            "product": self.product,
            "qty": self.qty,
            "price": self.price,
            "amount": self.amount,
            "currency": self.currency,
            "key": self.key,
            "status": self.status,
            "created_at": self.created_at,
        }
        if self.sale is not None:
            out["sale"] = self.sale
        if self.coupon is not None:
            out["coupon"] = self.coupon
            out["discount"] = self.discount
            out["paid"] = self.amount - self.discount
        if self.team is not None:
            out["team"] = self.team
            out["offer"] = self.offer
        if self.draw is not None:
            out["draw"] = self.draw
        return out
