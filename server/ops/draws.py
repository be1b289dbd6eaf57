"""Lucky-draw ops: create, enter, list, cancel. Thin: check the room or group the token may act
in (the registry checked the role), then the Draws adapter decides (docs/draws.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame
from server.errors import SoukError
from server.ops import fields
from server.ops.access import group_shop, staff_in_room
from server.ops.registry import (
    NEED_NOT_JOIN,
    NOT_CUSTOMERS,
    ROOM_OR_GROUP,
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
    from server.domain.draw import Draw
    from server.services import Services
    from server.session import Session


def _ident(s: Session) -> Identity:
    assert s.identity is not None
    return s.identity


async def _staff_target(sv: Services, ident: Identity, scope: str, target: str) -> str:
    """The shop a staff member acts for in this room or group (refused if it is not theirs)."""
    if scope == "room":
        await staff_in_room(sv, ident, target)
        return ident.shop
    return await group_shop(sv, ident, target)


@op("draw_create", roles=STREAMERS, scope=ROOM_OR_GROUP)
async def draw_create(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    scope, target = fields.room_or_group(frame)
    shop = await _staff_target(sv, ident, scope, target)
    return {"draw": await sv.draws.create(shop, scope, target, ident.id, frame)}


@op("draw_cancel", roles=STREAMERS, scope=through("draw", Target.ROOM, Target.GROUP))
async def draw_cancel(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    d = await sv.draws.find(frame.get("draw"))
    await _staff_target(sv, ident, d.scope, d.target)
    return {"draw": await sv.draws.cancel(d)}


@op("draw_enter", roles=VIEWERS, scope=through("draw", Target.ROOM, Target.GROUP))
async def draw_enter(sv: Services, s: Session, frame: Frame) -> Result:
    """Enter a draw whose condition needs no chat; the caller must be in its room or group
    (joined on this connection). Entering twice answers the same."""
    ident = _ident(s)
    d = await sv.draws.find(frame.get("draw"))
    _joined(s, d)
    return await sv.draws.enter(d, ident.id, ident.name, customer=not may(ident.role, NOT_CUSTOMERS))


def _joined(s: Session, d: Draw) -> None:
    if d.channel not in s.channels:
        raise SoukError(Code.FORBIDDEN, f"join {d.channel} first")


@op("draws", roles=VIEWERS, scope=ROOM_OR_GROUP)
async def draws(sv: Services, s: Session, frame: Frame) -> Result:
    """The latest draws of a room or group, with the caller's own state in each."""
    ident = _ident(s)
    scope, target = fields.room_or_group(frame)
    if scope == "room":
        if not ident.may_enter_room(target):
            raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    elif f"group:{target}" not in s.channels:
        if may(ident.role, NEED_NOT_JOIN):
            await group_shop(sv, ident, target)
        elif not await sv.community.is_member_fresh(ident.id, target):
            raise SoukError(Code.FORBIDDEN, f"join group {target} first")
    return {"draws": await sv.draws.listing(scope, target, ident.id)}
