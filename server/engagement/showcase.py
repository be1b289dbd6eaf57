"""Show-your-order (晒单): a buyer's photo of a delivered order in a group, and its reward.

Why one post per order and one approval per post are the record's: a post made on one node
may be approved on another, twice at once; the unique order and `WHERE status = 'pending'`
in the transaction that writes the reward coupon decide (server/store/engagement.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from client_sdk.protocol import Code
from server.cluster.notices import Notice
from server.domain import fields
from server.domain.coupons import CouponSpec
from server.engagement.coupons import Coupons, reward_spec
from server.engagement.plumbing import Plumbing, log, new_id
from server.errors import SoukError
from server.store.db import Row
from server.store.engagement import post_from

SHOWCASE_REWARD: Final = CouponSpec("amount", 300, 0, 0, "Thanks for showing your order")
MAX_POST_TEXT: Final = 1000
PUBLIC: Final = ("id", "group", "order", "user", "image_url", "text", "ts", "status", "coupon")


class Showcase:
    """The posts of this process (a working copy in a cluster)."""

    def __init__(self, plumbing: Plumbing, coupons: Coupons) -> None:
        self.p = plumbing
        self.coupons = coupons
        self.posts: dict[str, dict[str, Any]] = {}
        self.posted_orders: set[str] = set()

    def load(self, rows: Mapping[str, list[Row]]) -> None:
        for r in rows["posts"]:
            self.posts[r["id"]] = post_from(r)
            self.posted_orders.add(r["order_id"])

    async def on_post(self, n: Notice) -> None:
        await self._load(str(n["p"]))

    async def _load(self, post_id: str) -> None:
        post = await self.p.store.load_post(post_id)
        if post is not None:
            self.posts[post_id] = post
            self.posted_orders.add(post["order"])

    async def post(self, shop: str, group: str, user: str, order: dict[str, Any] | None,
                   raw: Any) -> dict[str, Any]:
        f = fields.mapping(raw)
        order_id = fields.ident(f, "order")
        if order is None or order.get("user") != user:
            raise SoukError(Code.NOT_FOUND, f"no order {order_id} of yours")
        if order.get("status") != "confirmed":
            raise SoukError(Code.CONFLICT, "only a confirmed (delivered) order can be shown")
        image_url = fields.url(f, "image_url")
        if not image_url:
            raise fields.invalid("image_url", "a photo link is required")
        text = fields.text(f, "text", 1, MAX_POST_TEXT)
        if order_id in self.posted_orders:
            raise SoukError(Code.CONFLICT, "this order was already shown")
        now = self.p.clock_ms()
        post: dict[str, Any] = {"id": new_id("sp", now), "shop": shop, "group": group, "order": order_id, "user": user,
                "image_url": image_url, "text": text, "ts": now, "status": "pending", "coupon": None}
        self.posted_orders.add(order_id)
        try:
            await self.p.store.add_post(post)
        except Exception:
            self.posted_orders.discard(order_id)
            log.exception("post write failed")
            raise SoukError(Code.CONFLICT, "this order was already shown") from None
        self.posts[post["id"]] = post
        self.p.publish(f"group:{group}", "showcase", public(post))
        self.p.notify("post", p=post["id"])
        return public(post)

    async def approve(self, shop: str | None, post_id: Any) -> dict[str, Any]:
        pid = fields.ident_value(post_id, "post")
        if self.p.store.shared:  # posted on another node, or approved there: the record's state
            await self._load(pid)
        post = self.posts.get(pid)
        if post is None or (shop is not None and post["shop"] != shop):
            raise SoukError(Code.NOT_FOUND, f"no post {pid}")
        if post["status"] != "pending":
            raise SoukError(Code.CONFLICT, "this post was already approved")
        now = self.p.clock_ms()
        post["status"] = "approved"  # one reward per order: decided here, in one step
        c = self.coupons.make(post["shop"], post["user"], reward_spec(SHOWCASE_REWARD, now), now, "showcase")
        try:
            await self.coupons.issue([c], self.p.store.approve_post(pid, c))
        except SoukError:
            post["status"] = "pending"
            raise
        post["coupon"] = c.id
        self.p.publish(f"group:{post['group']}", "showcase", public(post))
        self.p.notify("post", p=pid)
        return {"post": public(post), "coupon": c.to_dict(now)}


def public(p: dict[str, Any]) -> dict[str, Any]:
    """A post as the group sees it (without the shop)."""
    return {k: p[k] for k in PUBLIC}
