"""How the features react to each other's domain events: the whole map, in one place.

Why one module: commerce decides about sales and orders, the community keeps groups and
members, engagement keeps coupons, and insights the merchant's numbers; each reacts to what
another decided. Were these calls inside the features, each would import the others and the
cycle would be invisible to a reader. Here the subscriptions are made once, at wiring time,
and a reader sees at a glance who reacts to what:

| event | reaction |
|---|---|
| `SaleWentLive` (once per sale on this node) | insights: an action in the log; community: a notice to the room's linked groups |
| `TeamBuyOpened` (once per offer on this node) | community: a notice to the linked groups |
| `OrderConfirmed` | community: the buyer's tags follow what they bought |
| `CouponRedeemed` | engagement: the other nodes' coupon books learn it was spent |
| `ChatPosted` | group: community keeps it (a reply may answer a mirrored question); room: insights counts it; draws: a keyword in it enters its sender |
| `Liked` | insights counts it |
| `RoomJoined` / `RoomLeft` | insights: presence in the numbers; draws: a viewer's time in the room |
| `SaleWentLive` (also) | replays: a `sale` chapter in the room's recording |
| `RoomEnded` | replays: the room's recording is closed; media: the room's publisher and viewers are closed; commerce: its running sales end and its open teams fail |
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from client_sdk.protocol import room_channel
from server.domain.events import (
    ChatPosted,
    CouponRedeemed,
    Liked,
    OrderConfirmed,
    RoomEnded,
    RoomJoined,
    RoomLeft,
    SaleWentLive,
    TeamBuyOpened,
)
from server.events import EventDispatcher
from server.ops.registry import NOT_CUSTOMERS, may

if TYPE_CHECKING:
    from server.commerce import Commerce
    from server.community import Community
    from server.engagement import Engagement
    from server.engagement.draws import Draws
    from server.insights import Insights
    from server.replays import Replays
    from server.rooms import Rooms
    from server.services import Relay


class Reactions:
    """The cross-feature reactions of one process, subscribed by `wire`."""

    def __init__(
        self,
        commerce: Commerce,
        community: Community,
        engagement: Engagement,
        insights: Insights,
        rooms: Rooms,
        media: Callable[[], Relay | None],
        draws: Draws | None = None,
        replays: Replays | None = None,
    ) -> None:
        """`media` returns the relay once it is started (None before, and on a server
        without one)."""
        self.commerce = commerce
        self.community = community
        self.engagement = engagement
        self.insights = insights
        self.rooms = rooms
        self.media = media
        self.draws = draws
        self.replays = replays
        self._announced: set[str] = set()  # sales and offers announced by this node

    def wire(self, events: EventDispatcher) -> None:
        events.subscribe(SaleWentLive, self.sale_went_live)
        events.subscribe(TeamBuyOpened, self.teambuy_opened)
        events.subscribe(OrderConfirmed, self.order_confirmed)
        events.subscribe(CouponRedeemed, self.coupon_redeemed)
        events.subscribe(ChatPosted, self.chat_posted)
        events.subscribe(Liked, self.liked)
        events.subscribe(RoomJoined, self.room_joined)
        events.subscribe(RoomLeft, self.room_left)
        events.subscribe(RoomEnded, self.room_ended)

    # ---- commerce -> insights, engagement, community ------------------------------------
    def sale_went_live(self, ev: SaleWentLive) -> Awaitable[object] | None:
        if ev.sale in self._announced:
            return None
        self._announced.add(ev.sale)
        room = self.rooms.get(room_channel(ev.room))
        self.insights.action(room.shop if room else "default", "room", ev.room, "sale",
                             str(ev.view.get("title") or ev.sale))
        return self._sale_started(ev)

    async def _sale_started(self, ev: SaleWentLive) -> None:
        if self.replays is not None:  # a chapter of the room's recording, if it records
            product = self.commerce.product(str(ev.view.get("product") or ""))
            if product is not None:
                with contextlib.suppress(Exception):
                    await self.replays.mark(ev.room, "sale", product)
        await self.community.on_sale_started(ev.room, dict(ev.view))

    def teambuy_opened(self, ev: TeamBuyOpened) -> Awaitable[object] | None:
        if ev.offer in self._announced:
            return None
        self._announced.add(ev.offer)
        return self.community.on_teambuy_started(ev.room, dict(ev.view))

    def order_confirmed(self, ev: OrderConfirmed) -> Awaitable[None]:
        product = self.commerce.product(ev.product)
        shop = product["shop"] if product else "default"
        return self.community.tag_purchase(shop, ev.user, ev.product)

    def coupon_redeemed(self, ev: CouponRedeemed) -> None:
        self.engagement.coupon_spent(ev.coupon, ev.order)

    # ---- rooms and chat -> community, insights ------------------------------------------
    async def chat_posted(self, ev: ChatPosted) -> None:
        if self.draws is not None:  # staff never enter the shop's draws
            self.draws.on_chat(f"{ev.kind}:{ev.target}", ev.user, ev.name,
                               str(ev.message.get("text", "")),
                               customer=not may(ev.role, NOT_CUSTOMERS))
        if ev.kind == "group":
            user = {"id": ev.user, "name": ev.name, "role": ev.role}
            await self.community.on_group_chat(ev.target, user, dict(ev.message))
        else:  # room messages count in the merchant's numbers
            self.insights.activity(ev.target, ev.user, ev.role, "chat")

    def liked(self, ev: Liked) -> None:
        self.insights.activity(ev.room, ev.user, ev.role, "like", ev.count)

    def room_joined(self, ev: RoomJoined) -> None:
        self.insights.viewer_joined(ev.room, ev.user, ev.role)
        if self.draws is not None:
            self.draws.joined(ev.room, ev.user)

    def room_left(self, ev: RoomLeft) -> None:
        self.insights.viewer_left(ev.room, ev.user)
        if self.draws is not None:
            self.draws.left(ev.room, ev.user)

    # ---- rooms -> media ---------------------------------------------------------------
    async def room_ended(self, ev: RoomEnded) -> None:
        if self.replays is not None:  # the file is closed before the publisher goes
            with contextlib.suppress(Exception):
                await self.replays.ended(ev.room)
        await self.commerce.end_room(ev.room)
        media = self.media()
        if media is not None:
            with contextlib.suppress(Exception):
                await media.close_room(ev.room)
