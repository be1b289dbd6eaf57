"""Flash sale (限时秒杀): a fixed stock at a special price, a countdown and a per-buyer limit.

Phases: scheduled -> live -> sold_out | ended, and scheduled | live -> cancelled.
`buy` is the one atomic step of the industry pattern (check phase, limit and stock, then
reserve), done in memory on one thread so it needs no lock; the adapter then makes the order
durable and calls `release` if that fails. The same idempotency key never makes two orders.
Pure rules: time is the `now_ms` argument; ids are made by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain import fields
from server.domain.catalog import Product
from server.domain.errors import SoukError
from server.domain.order import Order

MAX_DURATION_S: Final = 86_400
MAX_LEAD_MS: Final = 30 * 86_400_000  # a sale may be scheduled up to 30 days ahead
MAX_PER_USER: Final = 1_000


class Phase(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    SOLD_OUT = "sold_out"
    ENDED = "ended"
    CANCELLED = "cancelled"


OVER: Final = frozenset({Phase.ENDED, Phase.CANCELLED})


@dataclass(frozen=True)
class SaleSpec:
    """Validated `sale_create` fields."""

    product: str
    price: int
    stock: int
    starts_at: int
    ends_at: int
    per_user_limit: int


def sale_spec(raw: Any, now_ms: int) -> SaleSpec:
    """Validate `sale_create`: product, price, stock, starts_at? (ms; absent = now),
    duration_s (1..86400), per_user_limit? (default 1)."""
    f: Mapping[str, Any] = fields.mapping(raw)
    product = fields.ident(f, "product")
    price = fields.integer(f, "price", 1, fields.MAX_PRICE)
    stock = fields.integer(f, "stock", 1, fields.MAX_STOCK)
    starts_at = fields.optional_integer(f, "starts_at", 0, now_ms + MAX_LEAD_MS)
    starts_at = now_ms if starts_at is None or starts_at < now_ms else starts_at
    duration_s = fields.integer(f, "duration_s", 1, MAX_DURATION_S)
    limit = fields.integer(f, "per_user_limit", 1, MAX_PER_USER, default=1)
    return SaleSpec(product, price, stock, starts_at, starts_at + duration_s * 1000, limit)


class FlashSale:
    """One sale's state; every mutation is a method taking the current time."""

    def __init__(
        self,
        *,
        id: str,
        room: str,
        product: str,
        price: int,
        currency: str,
        stock: int,
        starts_at: int,
        ends_at: int,
        per_user_limit: int,
        created_at: int,
        stock_left: int | None = None,
        phase: Phase = Phase.SCHEDULED,
        returned: int = 0,
    ) -> None:
        self.id = id
        self.room = room
        self.product = product
        self.price = price
        self.currency = currency
        self.stock = stock
        self.stock_left = stock if stock_left is None else stock_left
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.per_user_limit = per_user_limit
        self.created_at = created_at
        self.phase = phase
        self.returned = returned  # units given back to the product when the sale closed
        self._by_key: dict[tuple[str, str], Order] = {}
        self._units: dict[str, int] = {}

    @classmethod
    def create(
        cls, sale_id: str, room: str, spec: SaleSpec, product: Product, now_ms: int
    ) -> FlashSale:
        """A new sale; the caller reserves `spec.stock` from the product (Product.reserve)."""
        sale = cls(
            id=sale_id,
            room=room,
            product=product.id,
            price=spec.price,
            currency=product.currency,
            stock=spec.stock,
            starts_at=spec.starts_at,
            ends_at=spec.ends_at,
            per_user_limit=spec.per_user_limit,
            created_at=now_ms,
        )
        sale.tick(now_ms)
        return sale

    # -- time -------------------------------------------------------------------------------
    def tick(self, now_ms: int) -> bool:
        """Apply the clock: start when `starts_at` is reached, end at `ends_at`.
        Returns whether the phase changed. A sale that sold out stays sold_out."""
        before = self.phase
        if self.phase is Phase.SCHEDULED and now_ms >= self.starts_at:
            self.phase = Phase.LIVE
        if self.phase is Phase.LIVE and now_ms >= self.ends_at:
            self.phase = Phase.ENDED
            self.returned += self.stock_left
        return self.phase is not before

    def next_deadline(self) -> int | None:
        """When `tick` should next be called (ms), or None when no time-driven change is left."""
        if self.phase is Phase.SCHEDULED:
            return self.starts_at
        if self.phase is Phase.LIVE:
            return self.ends_at
        return None

    # -- buying ----------------------------------------------------------------------------
    def buy(self, user: str, name: str, qty: Any, key: Any, order_id: str, now_ms: int) -> Order:
        """All or nothing: the order for `qty` units, or a refusal.

        A known (user, key) returns the order it made, whatever the phase now (a retry after
        the sale sold out must see its order, not `sold_out`). Call `tick` effects: a sale whose
        start passed is live even if the adapter's timer has not fired yet.
        """
        key = fields.key_value(key)
        if type(qty) is not int or not 1 <= qty <= MAX_PER_USER:
            raise fields.invalid("qty", f"must be an integer between 1 and {MAX_PER_USER}")
        known = self._by_key.get((user, key))
        if known is not None:
            if known.qty != qty:
                raise SoukError(
                    Code.CONFLICT, "this key was used for another quantity", order=known.id
                )
            return known
        self.tick(now_ms)
        if self.phase is Phase.SCHEDULED:
            raise SoukError(Code.NOT_LIVE, "the sale has not started", starts_at=self.starts_at)
        if self.phase in OVER:
            raise SoukError(Code.ENDED, "the sale is over")
        if self.phase is Phase.SOLD_OUT:
            raise SoukError(Code.SOLD_OUT, "sold out")
        bought = self._units.get(user, 0)
        if bought + qty > self.per_user_limit:
            raise SoukError(
                Code.LIMIT_REACHED,
                f"at most {self.per_user_limit} per buyer",
                limit=self.per_user_limit,
                remaining=self.per_user_limit - bought,
            )
        if qty > self.stock_left:
            raise SoukError(
                Code.SOLD_OUT, f"only {self.stock_left} left", stock_left=self.stock_left
            )
        order = Order(
            id=order_id,
            user=user,
            room=self.room,
            product=self.product,
            qty=qty,
            price=self.price,
            currency=self.currency,
            key=key,
            created_at=now_ms,
            sale=self.id,
            name=name,
        )
        self._remember(order)
        self.stock_left -= qty
        if self.stock_left == 0:
            self.phase = Phase.SOLD_OUT
        return order

    def _remember(self, order: Order) -> None:
        self._by_key[(order.user, order.key)] = order
        self._units[order.user] = self._units.get(order.user, 0) + order.qty

    def release(self, order: Order, now_ms: int) -> int:
        """Undo a reservation whose durable write failed. Returns the units the caller must give
        back to the product (non-zero only when the sale closed in the meantime)."""
        if self._by_key.get((order.user, order.key)) is not order:
            return 0
        del self._by_key[(order.user, order.key)]
        left = self._units[order.user] - order.qty
        if left:
            self._units[order.user] = left
        else:
            del self._units[order.user]
        if self.phase in OVER:
            self.returned += order.qty
            return order.qty
        self.stock_left += order.qty
        if self.phase is Phase.SOLD_OUT:
            self.phase = Phase.LIVE
            self.tick(now_ms)
            if self.phase in OVER:
                return self.stock_left
        return 0

    def amend(self, order: Order) -> None:
        """Replace a reserved order by an amended copy (same user, key and qty), e.g. with a
        coupon applied, so that replays and `release` see the copy that is written."""
        known = self._by_key.get((order.user, order.key))
        if known is None or known.id != order.id or known.qty != order.qty:
            raise ValueError("amend: not a reserved order of this sale")
        self._by_key[(order.user, order.key)] = order

    def restore(self, order: Order) -> None:
        """Recovery: re-learn a durable order (stock_left was loaded with the sale)."""
        self._remember(order)

    def observe(self, stock_left: int | None, phase: Phase | None = None) -> bool:
        """Cluster: follow what the whole cluster did (another node's buyers, its timers, a
        cancel made there). `stock_left` is the units left cluster-wide (the gate's number, or
        another node's view): this node's view never goes above it; reaching 0 sells out. A
        `phase` another node moved to is applied when it is later in the life of a sale.
        Returns whether the phase changed (the units to give back are `stock_left` when it
        is now over)."""
        before = self.phase
        if stock_left is not None and 0 <= stock_left < self.stock_left and before not in OVER:
            self.stock_left = stock_left
            if stock_left == 0 and before is Phase.LIVE:
                self.phase = Phase.SOLD_OUT
        if phase is not None and self.phase not in OVER:
            if phase in OVER:
                self.phase = phase
                self.returned += self.stock_left
            elif phase is Phase.SOLD_OUT and self.phase is not Phase.SOLD_OUT:
                self.phase, self.stock_left = Phase.SOLD_OUT, 0
            elif phase is Phase.LIVE and self.phase is Phase.SCHEDULED:
                self.phase = Phase.LIVE
        return self.phase is not before

    def order_for(self, user: str, key: str) -> Order | None:
        return self._by_key.get((user, key))

    def units_of(self, user: str) -> int:
        return self._units.get(user, 0)

    @property
    def units_sold(self) -> int:
        return sum(self._units.values())

    # -- closing ---------------------------------------------------------------------------
    def cancel(self, now_ms: int) -> int:
        """The streamer stops the sale: orders made stay; returns the units to give back."""
        self.tick(now_ms)
        if self.phase in OVER:
            raise SoukError(Code.ENDED, "the sale is already over")
        if self.phase is Phase.SOLD_OUT:
            raise SoukError(Code.SOLD_OUT, "the sale sold out; nothing left to cancel")
        self.phase = Phase.CANCELLED
        self.returned += self.stock_left
        return self.stock_left

    def end_now(self, now_ms: int) -> bool:
        """The live ended: a sale not over yet ends now (orders made stay; the units left go
        back). Returns whether it changed."""
        self.tick(now_ms)
        if self.phase in OVER:
            return False
        self.phase = Phase.ENDED
        self.returned += self.stock_left
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "product": self.product,
            "phase": str(self.phase),
            "price": self.price,
            "currency": self.currency,
            "stock": self.stock,
            "stock_left": self.stock_left,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "per_user_limit": self.per_user_limit,
        }
