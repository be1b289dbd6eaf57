"""`Engagement`: the one object the ops, the app and the tests hold for the whole feature.

Why a facade: callers see one stable surface (the calls below, plus `store`, `coupons` (the
book commerce reserves in), `polls`, `posts`), while the work is done by the parts it
composes: `Coupons`, `Polls`, `Checkins`, `Invites`, `Showcase`, `Layers`, over one
`Plumbing` (store, clock, bus, notices). Here live only the wiring, the start-up load, and
the routing of other nodes' notices to the part that owns each kind.

Every change follows one pattern: decide and change memory in one synchronous step (so two
racing requests can never both pass a rule), await the durable write, undo memory if the
write failed, then publish. The guards two writers can race are the store's SQL
(server/store/engagement.py: one vote per user and poll, one check-in a day, points spent
once, an invite reward once per threshold, one approval per post, a coupon redeemed once with
its order), so they hold however many nodes write. In a cluster (`--postgres`,
docs/scaleout.md) the store is `shared` and each node's memory is a working copy: kept in
step by change notices over Redis (the `sync`, on its own topic) and by lazy loads when a
node is asked about something it does not know (a coupon, a poll, an invite code, a post).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.bus.base import Publish
from server.cluster.notices import NoSync, Notice, Sync
from server.domain.coupons import Coupon, CouponBook
from server.domain.layers import Thresholds
from server.domain.polls import Poll
from server.engagement.checkins import Checkins
from server.engagement.coupons import Coupons
from server.engagement.invites import Invites
from server.engagement.layers import Layers, MemberNumbers
from server.engagement.plumbing import Plumbing
from server.engagement.polls import Polls
from server.engagement.showcase import Showcase
from server.store.engagement import EngagementStore


class Engagement:
    """Coupons, polls, check-ins and points, invites, posts and layers of one process."""

    def __init__(self, store: EngagementStore, members: MemberNumbers, publish: Publish,
                 clock_ms: Callable[[], int], *, sync: Sync | None = None) -> None:
        """`members`: the members' numbers the layers classify; `sync`: how this node hears
        of other nodes' changes and tells its own (a cluster)."""
        self.store = store
        self._plumbing = Plumbing(store, publish, clock_ms, sync if sync is not None else NoSync())
        self._coupons = Coupons(self._plumbing)
        self._polls = Polls(self._plumbing)
        self._checkins = Checkins(self._plumbing, self._coupons)
        self._invites = Invites(self._plumbing, self._coupons)
        self._showcase = Showcase(self._plumbing, self._coupons)
        self._layers = Layers(self._plumbing, members)
        # each kind of notice and the part whose copy it updates
        self._notices: dict[str, Callable[[Notice], Awaitable[None]]] = {
            "coupons": self._coupons.on_issued, "spent": self._coupons.on_spent,
            "poll": self._polls.on_created, "vote": self._polls.on_vote,
            "closed": self._polls.on_closed, "post": self._showcase.on_post,
            "thresholds": self._layers.on_thresholds, "target": self._layers.on_target,
            "code": self._invites.on_code,
        }

    # -- state callers read ----------------------------------------------------------------
    @property
    def clock_ms(self) -> Callable[[], int]:
        return self._plumbing.clock_ms

    @clock_ms.setter
    def clock_ms(self, clock_ms: Callable[[], int]) -> None:
        self._plumbing.clock_ms = clock_ms

    @property
    def coupons(self) -> CouponBook:
        """The coupon book (commerce reserves in it during `buy`)."""
        return self._coupons.book

    @property
    def polls(self) -> dict[str, Poll]:
        return self._polls.polls

    @property
    def vote_revs(self) -> dict[tuple[str, str], int]:
        return self._polls.vote_revs

    @property
    def posts(self) -> dict[str, dict[str, Any]]:
        return self._showcase.posts

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load state."""
        sync = self._plumbing.sync
        await sync.start()  # subscribed before loading: nothing committed is missed
        rows = await self.store.load()
        for part in (self._coupons, self._polls, self._checkins, self._invites,
                     self._showcase, self._layers):
            part.load(rows)
        sync.run(self.apply_notice)

    async def stop(self) -> None:
        await self._plumbing.sync.stop()

    async def apply_notice(self, n: Notice) -> None:
        """Another node committed a change: bring this node's copy in step. Never publishes
        (the node that made the change told the clients once)."""
        handler = self._notices.get(str(n.get("k")))
        if handler is not None:
            await handler(n)

    # -- coupons ---------------------------------------------------------------------------
    async def find_coupon(self, coupon_id: str, user: str) -> None:
        await self._coupons.find(coupon_id, user)

    def coupon_spent(self, coupon_id: str, order_id: str) -> None:
        self._coupons.spent(coupon_id, order_id)

    def coupons_granted(self, coupons: list[Coupon]) -> None:
        """Prize coupons a lucky draw committed with its result (server/engagement/draws.py)."""
        self._coupons.granted(coupons)

    async def coupon_issue(self, shop: str, raw: Any, users: list[str],
                           target: tuple[str, str]) -> dict[str, Any]:
        return await self._coupons.issue_to(shop, raw, users, target)

    async def coupons_mine(self, user: str) -> list[dict[str, Any]]:
        return await self._coupons.mine(user)

    # -- polls -----------------------------------------------------------------------------
    async def poll_create(self, shop: str, scope: str, target: str, by: str, raw: Any) -> dict[str, Any]:
        return await self._polls.create(shop, scope, target, by, raw)

    async def find_poll(self, poll_id: Any) -> Poll:
        return await self._polls.find(poll_id)

    def poll(self, poll_id: Any) -> Poll:
        return self._polls.get(poll_id)

    async def poll_vote(self, poll: Poll, user: str, option: Any) -> dict[str, Any]:
        return await self._polls.vote(poll, user, option)

    async def poll_close(self, poll: Poll) -> dict[str, Any]:
        return await self._polls.close(poll)

    # -- check-in and points ---------------------------------------------------------------
    async def checkin(self, shop: str, group: str, user: str) -> dict[str, Any]:
        return await self._checkins.checkin(shop, group, user)

    def balance(self, shop: str, user: str) -> int:
        return self._checkins.balance(shop, user)

    async def points_balance(self, shop: str, user: str) -> int:
        return await self._checkins.points_balance(shop, user)

    async def points_redeem(self, shop: str, user: str, raw_points: Any) -> dict[str, Any]:
        return await self._checkins.redeem(shop, user, raw_points)

    # -- invites ---------------------------------------------------------------------------
    async def invite_code(self, shop: str, user: str) -> str:
        return await self._invites.code(shop, user)

    async def find_code(self, code: Any) -> tuple[str, str]:
        return await self._invites.find_code(code)

    async def known_before(self, shop: str, user: str) -> bool:
        return await self._invites.known_before(shop, user)

    async def joined(self, shop: str, invitee: str, group: str, inviter: str | None,
                     known_before: bool) -> dict[str, Any] | None:
        return await self._invites.joined(shop, invitee, group, inviter, known_before)

    async def invite_stats(self, shop: str, user: str) -> dict[str, Any]:
        return await self._invites.stats(shop, user)

    # -- show-your-order -------------------------------------------------------------------
    async def showcase_post(self, shop: str, group: str, user: str, order: dict[str, Any] | None,
                            raw: Any) -> dict[str, Any]:
        return await self._showcase.post(shop, group, user, order, raw)

    async def showcase_approve(self, shop: str | None, post_id: Any) -> dict[str, Any]:
        return await self._showcase.approve(shop, post_id)

    # -- layers ----------------------------------------------------------------------------
    def thresholds_of(self, shop: str) -> Thresholds:
        return self._layers.thresholds_of(shop)

    async def set_thresholds(self, shop: str, raw: Any) -> dict[str, int]:
        return await self._layers.set_thresholds(shop, raw)

    async def members(self, shop: str, layer: Any = None, tag: Any = None) -> list[dict[str, Any]]:
        return await self._layers.members(shop, layer, tag)

    async def target_sale(self, shop: str, sale: str, layer: Any) -> dict[str, Any]:
        return await self._layers.target_sale(shop, sale, layer)

    async def check_sale_target(self, sale: Any, user: str) -> None:
        await self._layers.check_sale_target(sale, user)
