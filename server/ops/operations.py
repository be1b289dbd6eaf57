"""Community-operations ops (issue 10): polls, check-in and points, invites, show-your-order,
coupons, member layers. Thin: check the role and the room/group the token may act in, then the
Operations adapter decides. See docs/operations.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import MEMBERS, MODERATORS, STREAMERS, VIEWERS, Result, op

if TYPE_CHECKING:
    from server.app import App
    from server.auth import Identity
    from server.session import Session

MAX_USERS_PER_OP = 100


def _ident(s: Session) -> Identity:
    assert s.identity is not None
    return s.identity


async def _shop_of_group(app: App, ident: Identity, group: str) -> str:
    """The group's shop; staff of another shop (admins excepted) may not act in it. (In a
    cluster a group created on another node is loaded first.)"""
    await app.community.group_known(group)
    g = app.community.directory.groups.get(group)
    if g is None:
        raise SoukError(Code.NOT_FOUND, f"no group {group}")
    if ident.role != "admin" and g.shop != ident.shop:
        raise SoukError(Code.FORBIDDEN, "this group belongs to another shop")
    return str(g.shop)


async def _member_of(app: App, ident: Identity, group: str) -> str:
    shop = await _shop_of_group(app, ident, group)
    if not ident.is_staff and not await app.community.is_member_fresh(ident.id, group):
        raise SoukError(Code.FORBIDDEN, f"join group {group} first")
    return shop


# -- polls ----------------------------------------------------------------------------------
@op("poll_create", roles=MODERATORS)
async def poll_create(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    scope, target = fields.room_or_group(frame)
    if scope == "room":
        if not ident.may_enter_room(target):
            raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
        shop = ident.shop
    else:
        shop = await _shop_of_group(app, ident, target)
    return {"poll": await app.operations.poll_create(shop, scope, target, ident.id, frame)}


@op("poll_vote", roles=VIEWERS)
async def poll_vote(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    poll = await app.operations.find_poll(frame.get("poll"))
    ch = room_channel(poll.target) if poll.scope == "room" else group_channel(poll.target)
    if ch not in s.channels:
        raise SoukError(Code.FORBIDDEN, f"join {ch} first")
    if poll.scope == "group" and not ident.is_staff and not await app.community.is_member_fresh(ident.id, poll.target):
        raise SoukError(Code.FORBIDDEN, "only members vote in a group's poll")
    return {"poll": await app.operations.poll_vote(poll, ident.id, frame.get("option"))}


@op("poll_close", roles=MODERATORS)
async def poll_close(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    poll = await app.operations.find_poll(frame.get("poll"))
    if poll.scope == "room" and not ident.may_enter_room(poll.target):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    if poll.scope == "group":
        await _shop_of_group(app, ident, poll.target)
    return {"poll": await app.operations.poll_close(poll)}


# -- check-in and points --------------------------------------------------------------------
@op("checkin", roles=MEMBERS)
async def checkin(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    group = fields.ident(frame, "group")
    if not await app.community.is_member_fresh(ident.id, group):  # in a cluster: joined on any node
        raise SoukError(Code.FORBIDDEN, f"join group {group} first")
    shop = await _shop_of_group(app, ident, group) if ident.role == "admin" else app.community.directory.groups[group].shop
    return {"checkin": await app.operations.checkin(shop, group, ident.id)}


@op("points_mine", roles=VIEWERS)
async def points_mine(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    return {"points": await app.operations.points_balance(ident.shop, ident.id)}


@op("points_redeem", roles=VIEWERS)
async def points_redeem(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    return dict(await app.operations.points_redeem(ident.shop, ident.id, frame.get("points")))


# -- invites --------------------------------------------------------------------------------
@op("invite_code", roles=MEMBERS)
async def invite_code(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    code = await app.operations.invite_code(ident.shop, ident.id)
    group = fields.opt_ident(frame, "group")
    link = f"/group/{group}?invite={code}" if group else f"/?invite={code}"
    return {"code": code, "link": link, **(await app.operations.invite_stats(ident.shop, ident.id))}


# -- show-your-order ------------------------------------------------------------------------
@op("showcase_post", roles=MEMBERS)
async def showcase_post(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    group = fields.ident(frame, "group")
    shop = await _member_of(app, ident, group)
    app.check_text(fields.text(frame, "text", 1000), ident)
    order_id = fields.ident(frame, "order")
    order = await app.commerce.store.order(order_id)
    return {"post": await app.operations.showcase_post(shop, group, ident.id, order, frame)}


@op("showcase_approve", roles=STREAMERS)
async def showcase_approve(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    shop = None if ident.role == "admin" else ident.shop
    return dict(await app.operations.showcase_approve(shop, frame.get("post")))


# -- coupons --------------------------------------------------------------------------------
@op("coupon_issue", roles=STREAMERS)
async def coupon_issue(app: App, s: Session, frame: Frame) -> Result:
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
        rows = await app.operations.members(shop, frame.get("layer"))
        users = [r["user"] for r in rows]
        target = ("layer", str(frame.get("layer")))
    else:
        group = fields.ident(frame, "group")
        shop = await _shop_of_group(app, ident, group)
        users = [m["user"] for m in app.community.group_members(group) if m["role"] not in ("moderator", "streamer", "admin")]
        target = ("group", group)
    return dict(await app.operations.coupon_issue(shop, frame, users, target))


@op("coupons_mine", roles=VIEWERS)
async def coupons_mine(app: App, s: Session, frame: Frame) -> Result:
    return {"coupons": await app.operations.coupons_mine(_ident(s).id)}


# -- layers ---------------------------------------------------------------------------------
@op("members", roles=STREAMERS)
async def members(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    rows = await app.operations.members(ident.shop, frame.get("layer"), frame.get("tag"))
    limit = fields.integer(frame, "limit", 1, 5000, default=500)
    return {"members": rows[:limit], "total": len(rows)}


@op("layer_thresholds", roles=STREAMERS)
async def layer_thresholds(app: App, s: Session, frame: Frame) -> Result:
    ident = _ident(s)
    if any(frame.get(k) is not None for k in ("high_value_aov", "high_activity_orders",
                                                "high_activity_engagement", "dormant_engagement")):
        return {"thresholds": await app.operations.set_thresholds(ident.shop, frame)}
    return {"thresholds": app.operations.thresholds_of(ident.shop).to_dict()}


@op("layer_invite", roles=STREAMERS)
async def layer_invite(app: App, s: Session, frame: Frame) -> Result:
    """Invite a layer into a group: each member gets a `group_invite` event on user:<id>. A
    core group takes only high-value and high-activity members."""
    ident = _ident(s)
    group = fields.ident(frame, "group")
    shop = await _shop_of_group(app, ident, group)
    layer = frame.get("layer")
    g = app.community.directory.groups[group]
    if g.tier == "core" and layer not in ("high_value", "high_activity"):
        raise SoukError(Code.INVALID, "a core group takes the high_value and high_activity layers")
    rows = await app.operations.members(shop, layer)
    invited = 0
    for r in rows:
        if not app.community.is_member(r["user"], group):
            app.bus.publish(f"user:{r['user']}", "group_invite", {"group": group, "tier": g.tier, "layer": layer})
            invited += 1
    return {"invited": invited}


@op("sale_target", roles=STREAMERS)
async def sale_target(app: App, s: Session, frame: Frame) -> Result:
    """Target a flash sale at a layer: only members of that layer may buy it."""
    ident = _ident(s)
    sale_id = fields.ident(frame, "sale")
    room = await app.commerce.locate_sale(sale_id)
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no sale {sale_id}")
    if not ident.may_enter_room(room):
        raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
    return {"target": await app.operations.target_sale(ident.shop, sale_id, frame.get("layer"))}


@op("metrics_exclude", roles=STREAMERS)
async def metrics_exclude(app: App, s: Session, frame: Frame) -> Result:
    """The merchant's own accounts and bots: never counted in the numbers."""
    ident = _ident(s)

    def ids(name: str) -> list[str]:
        raw: Any = frame.get(name) or []
        if not isinstance(raw, list) or len(raw) > MAX_USERS_PER_OP:
            raise SoukError(Code.INVALID, f"'{name}' must be a list of at most {MAX_USERS_PER_OP} ids")
        return [fields.ident({name: u}, name) for u in raw]

    return {"excluded": await app.operations.set_excluded(ident.shop, ids("add"), ids("remove"))}
