"""Commerce ops: products, flash sales, team buys, orders. The Commerce adapter decides; these
handlers check that the token may act in the room the sale or offer belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import STREAMERS, VIEWERS, Result, op

if TYPE_CHECKING:
    from server.app import App
    from server.auth import Identity
    from server.session import Session


def _room_admits(ident: Identity, room: str | None, what: str) -> str:
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no such {what}")
    if not ident.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    return room


def _staff_room(s: Session, frame: Frame) -> str:
    assert s.identity is not None
    return _room_admits(s.identity, fields.ident(frame, "room"), "room")


@op("product_create", roles=STREAMERS)
async def product_create(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"product": await app.commerce.product_create(s.identity.shop, frame)}


@op("products", roles=VIEWERS)
async def products(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"products": app.commerce.products(s.identity.shop)}


@op("sale_create", roles=STREAMERS)
async def sale_create(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    room = _staff_room(s, frame)
    shop = None if s.identity.role == "admin" else s.identity.shop
    return {"sale": await app.commerce.sale_create(room, frame, shop=shop)}


@op("sale_cancel", roles=STREAMERS)
async def sale_cancel(app: App, s: Session, frame: Frame) -> Result:
    room = _staff_room(s, frame)
    return {"sale": await app.commerce.sale_cancel(room, frame.get("sale"))}


@op("buy", roles=VIEWERS)
async def buy(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    _room_admits(s.identity, await app.commerce.locate_sale(frame.get("sale")), "sale")
    order = await app.buy(s.identity, frame)
    return {"order": order}


@op("orders_mine", roles=VIEWERS)
async def orders_mine(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    return {"orders": await app.commerce.orders_mine(s.identity.id)}


@op("sales_stats", roles=STREAMERS)
async def sales_stats(app: App, s: Session, frame: Frame) -> Result:
    room = _staff_room(s, frame)
    return {"stats": await app.commerce.sales_stats(room)}


@op("teambuy_create", roles=STREAMERS)
async def teambuy_create(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    room = _staff_room(s, frame)
    shop = None if s.identity.role == "admin" else s.identity.shop
    return {"teambuy": await app.commerce.teambuy_create(room, frame, shop=shop)}


@op("team_open", roles=VIEWERS)
async def team_open(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    _room_admits(s.identity, await app.commerce.locate_offer(frame.get("offer")), "team-buy offer")
    return dict(await app.commerce.team_open(s.identity.id, s.identity.name, frame.get("offer"), frame.get("key")))


@op("team_join", roles=VIEWERS)
async def team_join(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    _room_admits(s.identity, await app.commerce.locate_offer(frame.get("offer")), "team-buy offer")
    result = await app.commerce.team_join(
        s.identity.id, s.identity.name, frame.get("offer"), frame.get("team"), frame.get("key"))
    return dict(result)
