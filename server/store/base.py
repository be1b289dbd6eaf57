"""The storage interface of commerce, shared by every backend.

Why a Protocol: the embedded backend (SQLite, `server.store.ledger`) and the scale-out one
(PostgreSQL + Redis, issue 9) must be interchangeable under the same adapter
(`server.commerce.Commerce`) and pass one shared test suite. Every write method returns only
once its effect is durable; the adapter acknowledges a client only after that.

Writers receive domain objects but must read every value they need before their first
`await` (the domain objects keep changing on the event loop while the write is queued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from server.domain.catalog import Product
from server.domain.flashsale import FlashSale
from server.domain.order import Order
from server.domain.teambuy import Team, TeamBuyOffer


@dataclass
class LedgerState:
    """Everything recovery needs: products, sales with their orders, offers with their teams."""

    products: list[Product] = field(default_factory=list)
    sales: list[FlashSale] = field(default_factory=list)
    offers: list[TeamBuyOffer] = field(default_factory=list)


class StockConflict(Exception):
    """A durable guard refused a write (stock would go below zero, or the sale closed)."""


class CommerceStore(Protocol):
    async def migrate(self) -> None:
        """Create the schema if missing (idempotent)."""

    async def load(self) -> LedgerState:
        """Read back every product, sale (with orders) and offer (with teams)."""

    async def add_product(self, product: Product) -> None:
        """Insert a product; raises on a duplicate id."""

    async def add_sale(self, sale: FlashSale) -> None:
        """Insert a sale and take its stock from the product, atomically."""

    async def add_orders(self, orders: list[Order]) -> list[Exception | None]:
        """Insert sale orders and decrement their sales' stock_left, in one durable step; a
        sale reaching zero is marked sold_out. Returns one entry per order: None when it is
        recorded, a StockConflict when its sale is closed or short of stock (that order alone
        is refused). Raises if nothing could be recorded. Many orders per call is the point:
        the adapter gathers the orders of one loop iteration into one write."""

    async def close_sale(self, sale_id: str, phase: str) -> int:
        """End or cancel a sale and give its unsold stock back to the product; returns the
        units given back (0 when it was already closed)."""

    async def add_offer(self, offer: TeamBuyOffer) -> None:
        """Insert a team-buy offer, taking its stock (if any) from the product."""

    async def open_team(self, team: Team, order: Order) -> None:
        """Insert a team with its leader's pending order; holds `size` units of offer stock."""

    async def join_team(self, order: Order) -> bool:
        """Insert a member's order; when that makes the team full (counted in the store), mark
        the team and all its orders confirmed and return True."""

    async def fail_team(self, team_id: str) -> None:
        """Mark a team failed, its orders failed, and give its held units back to the offer."""

    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """A buyer's orders, newest first."""

    async def orders_of_room(self, room: str, limit: int = 1000, after: str | None = None) -> list[dict[str, Any]]:
        """A room's orders, oldest first, paged by the last order id seen."""

    async def sales_stats(self, room: str) -> dict[str, Any]:
        """Confirmed orders, units and revenue per product of a room."""
