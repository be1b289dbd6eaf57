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
    """A durable guard refused a write (stock would go below zero, or the sale closed).

    `code` is the protocol code the buyer hears (client_sdk.protocol.Code): in a cluster the
    shared guard, not this node's memory, decides, so its reason must reach the buyer as is
    (`sold_out`, `limit_reached`, `not_live`, `ended`, `team_full`)."""

    def __init__(self, message: str, code: str = "ended") -> None:
        super().__init__(message)
        self.code = code


class KnownKey(Exception):
    """The (user, sale or offer, key) already made an order, on another node of the cluster:
    the buyer must get that order back, not a refusal (read it with `sale_order` /
    `team_order`)."""


class CouponConflict(Exception):
    """The redemption's unique row exists: this coupon was already spent (issue 10)."""


class CommerceStore(Protocol):
    # several server processes share this store (a cluster): a node's memory only knows its
    # own buyers, so the adapter asks the store (and follows other nodes' events)
    shared: bool

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
        is refused), a CouponConflict when its coupon (`Order.coupon`) already has a
        redemption row (the redemption is written in the same transaction as the order).
        Raises if nothing could be recorded. Many orders per call is the point:
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

    async def fail_team(self, team_id: str) -> bool:
        """Mark a team failed, its orders failed, and give its held units back to the offer.
        Returns True only for the call that failed it (False: it was no longer open), so
        that in a cluster exactly one node tells the members."""

    # -- reading one thing back (a cluster node adopts what another node created) ----------
    async def product(self, product_id: str) -> Product | None:
        """One product as stored, or None."""

    async def sale(self, sale_id: str) -> FlashSale | None:
        """One sale with its orders (as `load` gives it), or None."""

    async def offer(self, offer_id: str) -> TeamBuyOffer | None:
        """One offer with its open teams and their members (the ones that can be joined),
        its stock_left as stored; or None."""

    async def team(self, team_id: str) -> Team | None:
        """One team with its members' orders, or None."""

    async def sale_order(self, user: str, sale_id: str, key: str) -> Order | None:
        """The order a (user, sale, key) made, or None."""

    async def team_order(self, user: str, offer_id: str, key: str) -> Order | None:
        """The team order a (user, offer, key) made, or None."""

    async def room_items(self, room: str) -> tuple[list[str], list[str]]:
        """The ids of a room's sales and offers, oldest first."""

    def stock_left(self, sale_id: str) -> int | None:
        """The sale's units left cluster-wide as this node's last write saw them, or None
        when the node's own memory is the whole truth (a single-process store)."""

    async def claim(self, what: str) -> bool:
        """True for exactly one caller per `what` over the cluster (a node that will
        announce a sale's phase); a single-process store always says True."""

    async def orders_of(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """A buyer's orders, newest first."""

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """One order by id, or None."""

    async def orders_of_room(self, room: str, limit: int = 1000, after: str | None = None) -> list[dict[str, Any]]:
        """A room's orders, oldest first, paged by the last order id seen."""

    async def sales_stats(self, room: str) -> dict[str, Any]:
        """Confirmed orders, units and revenue per product of a room."""
