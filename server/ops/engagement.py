"""Engagement ops: polls, check-in and points, invites, show-your-order, coupons,
member layers, and the users the merchant's numbers leave out. Thin: check the room/group the
token may act in (the registry checked the role), then the Engagement adapter (the Insights
for `metrics_exclude`) decides. See docs/engagement.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.access import group_shop, staff_in_room
from server.ops.posting import check_text
from server.ops.registry import (
    ANY_SHOP,
    GROUP,
    MEMBERS,
    MODERATORS,
    NEED_NOT_JOIN,
    NOT_CUSTOMERS,
    OWN_SHOP,
    OWN_USER,
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
    from server.services import Services
    from server.session import Session

MAX_USERS_PER_OP = 100


def _ident(s: Session) -> Identity:
    assert s.identity is not None
    return s.identity


async def _member_of(sv: Services, ident: Identity, group: str) -> str:
    shop = await group_shop(sv, ident, group)
    if not may(ident.role, NEED_NOT_JOIN) and not await sv.community.is_member_fresh(ident.id, group):
        raise SoukError(Code.FORBIDDEN, f"join group {group} first")
    return shop


# -- polls ----------------------------------------------------------------------------------
@op("poll_create", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def poll_create(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    scope, target = fields.room_or_group(frame)
    if scope == "room":
        if not ident.may_enter_room(target):
            raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
        shop = ident.shop
    else:
        shop = await group_shop(sv, ident, target)
    return {"poll": await sv.engagement.poll_create(shop, scope, target, ident.id, frame)}


@op("poll_vote", roles=VIEWERS, scope=through("poll", Target.ROOM, Target.GROUP))
async def poll_vote(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    poll = await sv.engagement.find_poll(frame.get("poll"))
    ch = room_channel(poll.target) if poll.scope == "room" else group_channel(poll.target)
    if ch not in s.channels:
        raise SoukError(Code.FORBIDDEN, f"join {ch} first")
    if (poll.scope == "group" and not may(ident.role, NEED_NOT_JOIN)
            and not await sv.community.is_member_fresh(ident.id, poll.target)):
        raise SoukError(Code.FORBIDDEN, "only members vote in a group's poll")
    return {"poll": await sv.engagement.poll_vote(poll, ident.id, frame.get("option"))}


@op("poll_close", roles=MODERATORS, scope=through("poll", Target.ROOM, Target.GROUP))
async def poll_close(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    poll = await sv.engagement.find_poll(frame.get("poll"))
    if poll.scope == "room":
        await staff_in_room(sv, ident, poll.target)
    if poll.scope == "group":
        await group_shop(sv, ident, poll.target)
    return {"poll": await sv.engagement.poll_close(poll)}


# -- check-in and points --------------------------------------------------------------------
@op("checkin", roles=MEMBERS, scope=GROUP)
async def checkin(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    group = fields.ident(frame, "group")
    if not await sv.community.is_member_fresh(ident.id, group):  # in a cluster: joined on any node
        raise SoukError(Code.FORBIDDEN, f"join group {group} first")
    shop = (await group_shop(sv, ident, group) if may(ident.role, ANY_SHOP)
            else sv.community.directory.groups[group].shop)
    return {"checkin": await sv.engagement.checkin(shop, group, ident.id)}


@op("points_mine", roles=VIEWERS, scope=OWN_USER)
async def points_mine(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    return {"points": await sv.engagement.points_balance(ident.shop, ident.id)}


@op("points_redeem", roles=VIEWERS, scope=OWN_USER)
async def points_redeem(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    return dict(await sv.engagement.points_redeem(ident.shop, ident.id, frame.get("points")))


# -- invites --------------------------------------------------------------------------------
@op("invite_code", roles=MEMBERS, scope=OWN_SHOP)
async def invite_code(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    code = await sv.engagement.invite_code(ident.shop, ident.id)
    group = fields.opt_ident(frame, "group")
    link = f"/group/{group}?invite={code}" if group else f"/?invite={code}"
    return {"code": code, "link": link, **(await sv.engagement.invite_stats(ident.shop, ident.id))}


# -- show-your-order ------------------------------------------------------------------------
@op("showcase_post", roles=MEMBERS, scope=GROUP)
async def showcase_post(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    group = fields.ident(frame, "group")
    shop = await _member_of(sv, ident, group)
    check_text(sv.community, fields.text(frame, "text", 1000), ident)
    order_id = fields.ident(frame, "order")
    order = await sv.commerce.store.order(order_id)
    return {"post": await sv.engagement.showcase_post(shop, group, ident.id, order, frame)}


@op("showcase_approve", roles=STREAMERS, scope=through("post", Target.SHOP))
async def showcase_approve(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    shop = None if may(ident.role, ANY_SHOP) else ident.shop
    return dict(await sv.engagement.showcase_approve(shop, frame.get("post")))


# -- coupons --------------------------------------------------------------------------------
@op("coupon_issue", roles=STREAMERS, scope=OWN_SHOP + GROUP)
async def coupon_issue(sv: Services, s: Session, frame: Frame) -> Result:
    """To exactly one of: `user` (an id or a list of ids), `layer` (every member of the shop in
    that layer), `group` (every member of the group)."""
    ident = _ident(s)
    given = [k for k in ("user", "layer", "group") if frame.get(k) is not None]
    if len(given) != 1:
        raise SoukError(Code.INVALID, "give exactly one of 'user', 'layer' or 'group'")
    shop = ident.shop
    target: tuple[str, str]
    if given[0] == "user":
        raw = frame["user"]
        raw_users = raw if isinstance(raw, list) else [raw]
        if not raw_users or len(raw_users) > MAX_USERS_PER_OP:
            raise SoukError(Code.INVALID, f"'user' must be an id or a list of 1..{MAX_USERS_PER_OP} ids")
        users = sorted({fields.ident({"user": u}, "user") for u in raw_users})
        target = ("user", users[0] if len(users) == 1 else f"{len(users)} users")
    elif given[0] == "layer":
        rows = await sv.engagement.members(shop, frame.get("layer"))
        users = [r["user"] for r in rows]
        target = ("layer", str(frame.get("layer")))
    else:
        group = fields.ident(frame, "group")
        shop = await group_shop(sv, ident, group)
        users = [m["user"] for m in sv.community.group_members(group) if not may(m["role"], NOT_CUSTOMERS)]
        target = ("group", group)
    return dict(await sv.engagement.coupon_issue(shop, frame, users, target))


@op("coupons_mine", roles=VIEWERS, scope=OWN_USER)
async def coupons_mine(sv: Services, s: Session, frame: Frame) -> Result:
    return {"coupons": await sv.engagement.coupons_mine(_ident(s).id)}


# -- layers ---------------------------------------------------------------------------------
@op("members", roles=STREAMERS, scope=OWN_SHOP)
async def members(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    rows = await sv.engagement.members(ident.shop, frame.get("layer"), frame.get("tag"))
    limit = fields.integer(frame, "limit", 1, 5000, default=500)
    return {"members": rows[:limit], "total": len(rows)}


@op("layer_thresholds", roles=STREAMERS, scope=OWN_SHOP)
async def layer_thresholds(sv: Services, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    if any(frame.get(k) is not None for k in ("high_value_aov", "high_activity_orders",
                                                "high_activity_engagement", "dormant_engagement")):
        return {"thresholds": await sv.engagement.set_thresholds(ident.shop, frame)}
    return {"thresholds": sv.engagement.thresholds_of(ident.shop).to_dict()}


@op("layer_invite", roles=STREAMERS, scope=GROUP)
async def layer_invite(sv: Services, s: Session, frame: Frame) -> Result:
    """Invite a layer into a group: each member gets a `group_invite` event on user:<id>. A
    core group takes only high-value and high-activity members."""
    ident = _ident(s)
    group = fields.ident(frame, "group")
    shop = await group_shop(sv, ident, group)
    layer = frame.get("layer")
    g = sv.community.directory.groups[group]
    if g.tier == "core" and layer not in ("high_value", "high_activity"):
        raise SoukError(Code.INVALID, "a core group takes the high_value and high_activity layers")
    rows = await sv.engagement.members(shop, layer)
    invited = 0
    for r in rows:
        if not sv.community.is_member(r["user"], group):
            sv.bus.publish(f"user:{r['user']}", "group_invite", {"group": group, "tier": g.tier, "layer": layer})
            invited += 1
    return {"invited": invited}


@op("sale_target", roles=STREAMERS, scope=through("sale", Target.ROOM))
async def sale_target(sv: Services, s: Session, frame: Frame) -> Result:
    """Target a flash sale at a layer: only members of that layer may buy it."""
    ident = _ident(s)
    sale_id = fields.ident(frame, "sale")
    room = await sv.commerce.locate_sale(sale_id)
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no sale {sale_id}")
    await staff_in_room(sv, ident, room)
    return {"target": await sv.engagement.target_sale(ident.shop, sale_id, frame.get("layer"))}


# -- the numbers ----------------------------------------------------------------------------
@op("metrics_exclude", roles=STREAMERS, scope=OWN_SHOP)
async def metrics_exclude(sv: Services, s: Session, frame: Frame) -> Result:
    """The merchant's own accounts and bots: never counted in the numbers."""
    ident = _ident(s)

    def ids(name: str) -> list[str]:
        raw: Any = frame.get(name) or []
        if not isinstance(raw, list) or len(raw) > MAX_USERS_PER_OP:
            raise SoukError(Code.INVALID, f"'{name}' must be a list of at most {MAX_USERS_PER_OP} ids")
        return [fields.ident({name: u}, name) for u in raw]

    return {"excluded": await sv.insights.set_excluded(ident.shop, ids("add"), ids("remove"))}
