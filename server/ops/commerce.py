"""Commerce ops: products, flash sales, team buys, orders. The Commerce adapter decides; these
handlers check that the token may act in the room the sale or offer belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, room_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import (
    ANY_SHOP,
    OWN_SHOP,
    OWN_USER,
    ROOM,
    STREAMERS,
    VIEWERS,
    Result,
    Target,
    may,
    op,
    through,
)

if TYPE_CHECKING:
    from server.auth import Identity
    from server.services import Services
    from server.session import Session


def _room_admits(ident: Identity, room: str | None, what: str) -> str:
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no such {what}")
    if not ident.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    return room


def _still_live(sv: Services, room: str) -> None:
    """Nothing sells in a room whose live has ended (until the streamer goes live again)."""
    record = sv.rooms.get(room_channel(room))
    if record is not None and record.state == "ended":
        raise SoukError(Code.ENDED, "the live has ended")


def _staff_room(s: Session, frame: Frame) -> str:
    assert s.identity is not None
    return _room_admits(s.identity, fields.ident(frame, "room"), "room")


def _shop_limit(ident: Identity) -> str | None:
    """The shop whose products the caller may sell (None: any shop's)."""
    return None if may(ident.role, ANY_SHOP) else ident.shop


@op("product_create", roles=STREAMERS, scope=OWN_SHOP)
async def product_create(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"product": await sv.commerce.product_create(s.identity.shop, frame)}


@op("products", roles=VIEWERS, scope=OWN_SHOP)
async def products(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"products": sv.commerce.products(s.identity.shop)}


@op("sale_create", roles=STREAMERS, scope=ROOM)
async def sale_create(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    room = _staff_room(s, frame)
    return {"sale": await sv.commerce.sale_create(room, frame, shop=_shop_limit(s.identity))}


@op("sale_cancel", roles=STREAMERS, scope=ROOM)
async def sale_cancel(sv: Services, s: Session, frame: Frame) -> Result:
    room = _staff_room(s, frame)
    return {"sale": await sv.commerce.sale_cancel(room, frame.get("sale"))}


@op("buy", roles=VIEWERS, scope=through("sale", Target.ROOM))
async def buy(sv: Services, s: Session, frame: Frame) -> Result:
    """A sale targeted at a member layer is refused to the others before commerce reserves."""
    ident = s.identity
    assert ident is not None
    _still_live(sv, _room_admits(ident, await sv.commerce.locate_sale(frame.get("sale")), "sale"))
    await sv.engagement.check_sale_target(frame.get("sale"), ident.id)
    order = await sv.commerce.buy(ident.id, frame.get("sale"), frame.get("qty", 1),
                                  frame.get("key"), ident.name, coupon=frame.get("coupon"))
    return {"order": dict(order)}


@op("orders_mine", roles=VIEWERS, scope=OWN_USER)
async def orders_mine(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"orders": await sv.commerce.orders_mine(s.identity.id)}


@op("teams_mine", roles=VIEWERS, scope=OWN_USER)
async def teams_mine(sv: Services, s: Session, frame: Frame) -> Result:
    """The caller's open and recent teams with their members, for a reloaded page (a full
    team is no longer in the room's snapshot)."""
    assert s.identity is not None
    return {"teams": await sv.commerce.teams_mine(s.identity.id)}


@op("sales_stats", roles=STREAMERS, scope=ROOM)
async def sales_stats(sv: Services, s: Session, frame: Frame) -> Result:
    room = _staff_room(s, frame)
    return {"stats": await sv.commerce.sales_stats(room)}


@op("teambuy_create", roles=STREAMERS, scope=ROOM)
async def teambuy_create(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    room = _staff_room(s, frame)
    return {"teambuy": await sv.commerce.teambuy_create(room, frame, shop=_shop_limit(s.identity))}


@op("team_open", roles=VIEWERS, scope=through("offer", Target.ROOM))
async def team_open(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    _still_live(sv, _room_admits(s.identity, await sv.commerce.locate_offer(frame.get("offer")),
                                 "team-buy offer"))
    return dict(await sv.commerce.team_open(s.identity.id, s.identity.name, frame.get("offer"),
                                            frame.get("key")))


@op("team_join", roles=VIEWERS, scope=through("offer", Target.ROOM))
async def team_join(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    _still_live(sv, _room_admits(s.identity, await sv.commerce.locate_offer(frame.get("offer")),
                                 "team-buy offer"))
    result = await sv.commerce.team_join(
        s.identity.id, s.identity.name, frame.get("offer"), frame.get("team"), frame.get("key"))
    return dict(result)
