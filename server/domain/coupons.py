"""Coupons (优惠券): issued to a user, single use, amount or percent off, minimum spend, expiry.

Why sans-I/O and in memory: `buy` must decide "this coupon is yours, valid, unspent" in the
same synchronous step in which it takes the sale's stock, so that two buys racing on one
coupon can never both pass (the event loop is single-threaded; no await sits between the
check and the reservation). The durable guard is the ledger's unique redemption row, written
in the same transaction as the order; `restore_redemption` replays those rows after a restart.

States: issued → reserved (an order is being written) → redeemed; a failed write releases the
reservation back to issued. Expiry is checked against the caller's `now_ms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from client_sdk.protocol import Code
from server.domain import fields
from server.domain.errors import SoukError

AMOUNT: Final = "amount"
PERCENT: Final = "percent"
KINDS: Final = (AMOUNT, PERCENT)
MAX_COUPONS_PER_ISSUE: Final = 10_000
DAY_MS: Final = 86_400_000


@dataclass(frozen=True)
class CouponSpec:
    """What the merchant asked for; one spec is issued to one or many users."""

    kind: str
    value: int  # cents for `amount`, 1..100 for `percent`
    min_spend: int  # cents; the order amount before discount must reach it
    expires_at: int  # ms since epoch
    title: str = ""


def coupon_spec(raw: Any, now_ms: int) -> CouponSpec:
    """Validate `coupon_issue` fields: kind, value, min_spend?, expires_at | valid_s."""
    f = fields.mapping(raw)
    kind = f.get("kind", AMOUNT)
    if kind not in KINDS:
        raise fields.invalid("kind", "must be 'amount' or 'percent'")
    if kind == AMOUNT:
        value = fields.integer(f, "value", 1, fields.MAX_PRICE)
    else:
        value = fields.integer(f, "value", 1, 100)
    min_spend = fields.integer(f, "min_spend", 0, fields.MAX_PRICE, default=0)
    if kind == AMOUNT and min_spend and value > min_spend:
        raise fields.invalid("value", "an amount coupon cannot exceed its minimum spend")
    expires_at = fields.optional_integer(f, "expires_at", now_ms + 1, now_ms + 366 * DAY_MS)
    if expires_at is None:
        valid_s = fields.integer(f, "valid_s", 60, 366 * 86_400, default=30 * 86_400)
        expires_at = now_ms + valid_s * 1000
    title = f.get("title", "")
    if not isinstance(title, str) or len(title) > fields.MAX_TITLE:
        raise fields.invalid("title", f"must be a string of at most {fields.MAX_TITLE} characters")
    return CouponSpec(kind, value, min_spend, expires_at, title)


@dataclass
class Coupon:
    id: str
    shop: str
    user: str
    spec: CouponSpec
    issued_at: int
    source: str = "issue"  # issue | layer | group | points | invite | showcase
    order: str | None = None  # the order that reserved or redeemed it
    redeemed: bool = False

    def discount_for(self, amount: int) -> int:
        """The cents taken off an order of `amount` cents (never more than the amount)."""
        if self.spec.kind == AMOUNT:
            return min(self.spec.value, amount)
        return amount * self.spec.value // 100

    def status(self, now_ms: int) -> str:
        if self.redeemed:
            return "redeemed"
        if self.order is not None:
            return "reserved"
        return "expired" if now_ms >= self.spec.expires_at else "issued"

    def to_dict(self, now_ms: int) -> dict[str, Any]:
        s = self.spec
        return {
            "id": self.id, "shop": self.shop, "user": self.user, "kind": s.kind,
            "value": s.value, "min_spend": s.min_spend, "expires_at": s.expires_at,
            "title": s.title, "issued_at": self.issued_at, "source": self.source,
            "status": self.status(now_ms), "order": self.order,
        }  # fmt: skip


class CouponBook:
    """Every coupon of this process, by id and by owner."""

    def __init__(self) -> None:
        self.coupons: dict[str, Coupon] = {}
        self._of_user: dict[str, list[str]] = {}

    def add(self, coupon: Coupon) -> None:
        if coupon.id in self.coupons:
            raise SoukError(Code.CONFLICT, f"coupon {coupon.id} exists")
        self.coupons[coupon.id] = coupon
        self._of_user.setdefault(coupon.user, []).append(coupon.id)

    def discard(self, coupon_id: str) -> None:
        c = self.coupons.pop(coupon_id, None)
        if c is not None:
            self._of_user.get(c.user, []).remove(coupon_id)

    def mine(self, user: str) -> list[Coupon]:
        return [self.coupons[i] for i in self._of_user.get(user, [])]

    def check(self, coupon_id: Any, user: str, amount: int, now_ms: int) -> int:
        """Refuse a coupon that is not this user's, spent, reserved, expired or below its
        minimum spend; otherwise return the discount it gives on `amount` cents."""
        cid = fields.ident_value(coupon_id, "coupon")
        c = self.coupons.get(cid)
        if c is None or c.user != user:
            raise SoukError(Code.NOT_FOUND, f"no coupon {cid} for you")
        if c.redeemed or c.order is not None:
            raise SoukError(Code.CONFLICT, "this coupon was already used", coupon=cid)
        if now_ms >= c.spec.expires_at:
            raise SoukError(Code.ENDED, "this coupon has expired", coupon=cid)
        if amount < c.spec.min_spend:
            raise SoukError(
                Code.INVALID, f"this coupon needs a spend of at least {c.spec.min_spend}",
                field="coupon", min_spend=c.spec.min_spend,
            )  # fmt: skip
        return c.discount_for(amount)

    def reserve(self, coupon_id: str, user: str, amount: int, order_id: str, now_ms: int) -> int:
        """`check`, then bind the coupon to `order_id` (call in the same synchronous step as
        the stock reservation); returns the discount."""
        discount = self.check(coupon_id, user, amount, now_ms)
        self.coupons[coupon_id].order = order_id
        return discount

    def release(self, coupon_id: str, order_id: str) -> None:
        """The order's write failed: the coupon is usable again."""
        c = self.coupons.get(coupon_id)
        if c is not None and c.order == order_id and not c.redeemed:
            c.order = None

    def redeemed(self, coupon_id: str, order_id: str) -> None:
        """The order (and its redemption row) is durable."""
        c = self.coupons.get(coupon_id)
        if c is not None and c.order == order_id:
            c.redeemed = True

    def restore_redemption(self, coupon_id: str, order_id: str) -> None:
        c = self.coupons.get(coupon_id)
        if c is not None:
            c.order, c.redeemed = order_id, True


def spec_from_row(row: Mapping[str, Any]) -> CouponSpec:
    return CouponSpec(row["kind"], row["value"], row["min_spend"], row["expires_at"], row["title"])
