"""Coupons: the coupon book of this process, issuing, and a cluster's copies of it.

Why here: every reward (points, invites, show-your-order) and the merchant's own issue end
as coupons, written the same way: made in memory, made durable, dropped again if the write
fails, then announced to their owner and to the other nodes. The book (server/domain/
coupons.py) is shared with commerce, which reserves a coupon inside `buy` in the same
synchronous step as the sale's units.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Final, TypeVar

from client_sdk.protocol import Code, user_channel
from server.cluster.notices import Notice
from server.domain.coupons import Coupon, CouponBook, CouponSpec, coupon_spec, spec_from_row
from server.engagement.plumbing import Plumbing, log, new_id
from server.errors import SoukError
from server.store.db import Row
from server.store.engagement import GuardRefused

T = TypeVar("T")
NOTICE_ROWS: Final = 500  # coupons per notice: a big issue goes out in bounded notices
REWARD_VALID_MS: Final = 30 * 86_400_000  # a reward coupon (points, invites, posts) lasts 30 days


def reward_spec(kind: CouponSpec, now: int) -> CouponSpec:
    """A reward of `kind` granted at `now`: valid for `REWARD_VALID_MS`."""
    return CouponSpec(kind.kind, kind.value, 0, now + REWARD_VALID_MS, kind.title)


class Coupons:
    """The book, and every way a coupon enters it."""

    def __init__(self, plumbing: Plumbing) -> None:
        self.p = plumbing
        self.book = CouponBook()

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["coupons"]:
            self.book.add(coupon_from(r))
        for r in rows["redemptions"]:
            self.book.restore_redemption(r["coupon"], r["order_id"])

    # -- cluster: other nodes' coupons -----------------------------------------------------
    async def on_issued(self, n: Notice) -> None:
        for row in n["c"]:
            if row["id"] not in self.book.coupons:
                self.book.add(coupon_from(row))

    async def on_spent(self, n: Notice) -> None:
        self.book.restore_redemption(str(n["c"]), str(n["o"]))

    def spent(self, coupon_id: str, order_id: str) -> None:
        """This node's `buy` committed a coupon's redemption: the other nodes' books learn."""
        self.p.notify("spent", c=coupon_id, o=order_id)

    async def find(self, coupon_id: str, user: str) -> None:
        """Before `buy` in a cluster: a coupon this node does not know (issued on another
        node, its notice not arrived) is read from the record with the user's others."""
        if self.p.store.shared and coupon_id not in self.book.coupons:
            await self._load_of(user)

    async def _load_of(self, user: str) -> None:
        rows, spent = await self.p.store.coupons_of(user)
        for r in rows:
            if r["id"] not in self.book.coupons:
                self.book.add(coupon_from(r))
        for r in spent:
            self.book.restore_redemption(r["coupon"], r["order_id"])

    # -- issuing ---------------------------------------------------------------------------
    def make(self, shop: str, user: str, spec: CouponSpec, now: int, source: str) -> Coupon:
        c = Coupon(new_id("c", now), shop, user, spec, now, source)
        self.book.add(c)
        return c

    async def issue(self, coupons: list[Coupon], write: Awaitable[T]) -> T:
        """Await a write that makes `coupons` durable; drop them from memory if it fails
        (`conflict` when a guard of the cluster store refused it). Returns the write's result."""
        try:
            result = await write
        except GuardRefused as exc:
            for c in coupons:
                self.book.discard(c.id)
            extra = {} if exc.balance is None else {"balance": exc.balance}
            raise SoukError(Code.CONFLICT, str(exc), **extra) from None
        except Exception:
            for c in coupons:
                self.book.discard(c.id)
            log.exception("coupon write failed")
            raise SoukError(Code.UNAVAILABLE, "could not record the coupon; try again") from None
        self.announce(coupons, self.p.clock_ms())
        return result

    def announce(self, coupons: list[Coupon], now: int) -> None:
        """Durable coupons: each to its owner, all to the other nodes."""
        for c in coupons:
            self.p.publish(user_channel(c.user), "coupon", c.to_dict(now))
        for at in range(0, len(coupons), NOTICE_ROWS):
            self.p.notify("coupons", c=[coupon_row(c) for c in coupons[at:at + NOTICE_ROWS]])

    def granted(self, coupons: list[Coupon]) -> None:
        """Coupons another feature made durable in its own transaction (a lucky draw's prizes,
        with its result): into the book, then announced like any other."""
        for c in coupons:
            if c.id not in self.book.coupons:
                self.book.add(c)
        self.announce(coupons, self.p.clock_ms())

    async def issue_to(self, shop: str, raw: Any, users: list[str],
                       target: tuple[str, str]) -> dict[str, Any]:
        """Issue one coupon per user of `users` (the op resolved user/layer/group to users)."""
        now = self.p.clock_ms()
        spec = coupon_spec(raw, now)
        if not users:
            return {"issued": 0, "coupons": []}
        made = [self.make(shop, u, spec, now, target[0]) for u in users]
        action = (shop, target[0], target[1], "coupon", f"{spec.kind}:{spec.value}", now)
        await self.issue(made, self.p.store.add_coupons(made, action))
        return {"issued": len(made), "coupons": [c.to_dict(now) for c in made[:100]]}

    async def mine(self, user: str) -> list[dict[str, Any]]:
        if self.p.store.shared:  # the cluster's record: issued or spent on any node
            await self._load_of(user)
        now = self.p.clock_ms()
        return [c.to_dict(now) for c in self.book.mine(user)]


def coupon_row(c: Coupon) -> dict[str, Any]:
    """A coupon as a notice carries it (the stored row's names)."""
    s = c.spec
    return {"id": c.id, "shop": c.shop, "user_id": c.user, "kind": s.kind, "value": s.value,
            "min_spend": s.min_spend, "expires_at": s.expires_at, "title": s.title,
            "issued_at": c.issued_at, "source": c.source}


def coupon_from(r: Any) -> Coupon:
    """A coupon from a stored row or a notice (the same names)."""
    return Coupon(r["id"], r["shop"], r["user_id"], spec_from_row(r), r["issued_at"], r["source"])
