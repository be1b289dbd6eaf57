"""Domain events: what one feature tells the others, as typed values.

Why typed events: a confirmed order tags the buyer in the community, a sale going live sends
a notice to the room's groups and a line to the merchant's action log, a coupon spent in a
`buy` must reach the other nodes' coupon books. The feature that decides (commerce) should
not know who cares, and the ones that care should not parse its wire events by their type
string. So the deciding feature announces one of these values, and the reactions are
subscribed by type at wiring time (`server/reactions.py`); the wire events that clients see
are published on the bus as before, unchanged.

Every event is a frozen value with the ids a reaction needs; `view` fields carry the same map
the room was sent, so a reaction words its notice exactly as the viewers saw the sale.
Nothing here does I/O: these are plain data, like the rest of the domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SaleWentLive:
    """A room was told that a flash sale is live: when it starts, and again with each stock
    push while it is live (a node that restarts or joins late learns it that way), so a
    reaction that must act once per sale remembers which sales it has seen."""

    room: str
    sale: str
    view: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TeamBuyOpened:
    """A room was told of a team-buy offer: on creation, and again with each progress push;
    as for sales, a once-per-offer reaction remembers the offers it has seen."""

    room: str
    offer: str
    view: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    """An order is durable and confirmed (a flash-sale order, or a team's orders when it
    fills); its buyer has been told on `user:<id>`."""

    order: str
    user: str
    room: str
    product: str


@dataclass(frozen=True, slots=True)
class CouponRedeemed:
    """A coupon was spent by a durable order (its redemption row is committed)."""

    coupon: str
    order: str
    user: str


@dataclass(frozen=True, slots=True)
class ChatPosted:
    """A chat message was accepted and published in a room or a group. Delivered (awaited)
    before the sender's `ok`: a group message is kept and may answer a mirrored question,
    and a refusal there is the sender's error."""

    kind: str  # "room" or "group"
    target: str  # the room or group id
    user: str
    name: str
    role: str
    message: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Liked:
    """Likes from one viewer in a room (counted, not fanned out one by one)."""

    room: str
    user: str
    role: str
    count: int


@dataclass(frozen=True, slots=True)
class RoomJoined:
    """A connection subscribed to a room's channel."""

    room: str
    user: str
    role: str


@dataclass(frozen=True, slots=True)
class RoomLeft:
    """A connection left a room's channel (leave, ban, disconnect, slow-consumer eviction)."""

    room: str
    user: str


@dataclass(frozen=True, slots=True)
class RoomEnded:
    """The streamer set the room's state to `ended`."""

    room: str


DomainEvent = (
    SaleWentLive | TeamBuyOpened | OrderConfirmed | CouponRedeemed | ChatPosted | Liked
    | RoomJoined | RoomLeft | RoomEnded
)
