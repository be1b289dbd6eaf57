"""Q&A and community-group ops: thin checks of access, then the Community adapter decides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.access import lists_group
from server.ops.posting import check_text
from server.ops.registry import (
    ADMINS,
    ANY_SHOP,
    GROUP,
    MEMBERS,
    MODERATORS,
    OWN_SHOP,
    ROOM,
    ROOM_OR_GROUP,
    STREAMERS,
    UNLIMITED_CHAT,
    VIEWERS,
    Handler,
    Result,
    may,
    op,
)
from server.ops.room import moderated, name_of, sanction

if TYPE_CHECKING:
    from server.services import Services
    from server.session import Session


def _delegate(name: str, *, joined_room: bool = False, staff: bool = False) -> Handler:
    async def handler(sv: Services, s: Session, frame: Frame) -> Result:
        assert s.identity is not None
        if joined_room:
            room = fields.ident(frame, "room")
            if room_channel(room) not in s.channels:
                raise SoukError(Code.FORBIDDEN, f"join room:{room} first")
        if staff and frame.get("room") is not None:
            if not s.identity.may_enter_room(fields.ident(frame, "room")):
                raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
        if name == "ask":
            check_text(sv.community, fields.text(frame, "text", 500), s.identity)
            if not may(s.identity.role, UNLIMITED_CHAT) and not s.chat_bucket.take(sv.clock_ms()):
                raise SoukError(Code.RATE_LIMITED, "you are asking too fast")
        result = await sv.community.dispatch(name, s.identity.public(), frame, shop=s.identity.shop)
        return dict(result)

    handler.__name__ = f"community_{name}"
    return handler


op("ask", roles=VIEWERS, scope=ROOM)(_delegate("ask", joined_room=True))
op("upvote", roles=VIEWERS, scope=ROOM)(_delegate("upvote", joined_room=True))
op("answer", roles=MODERATORS, scope=ROOM)(_delegate("answer", staff=True))
op("dismiss", roles=MODERATORS, scope=ROOM)(_delegate("dismiss", staff=True))
op("group_create", roles=STREAMERS, scope=OWN_SHOP)(_delegate("group_create"))
_group_join = _delegate("group_join")


@op("group_join", roles=MEMBERS, scope=GROUP + OWN_SHOP)
async def group_join(sv: Services, s: Session, frame: Frame) -> Result:
    """Into a group by id, or placed by tier and topic in the caller's shop. An `invite` code
    attributes the join to its inviter (tag invited_by, reward rule); self-invites and
    members the shop already had do not count."""
    assert s.identity is not None
    if frame.get("group") is None and not may(s.identity.role, ANY_SHOP) and not lists_group(
            s.identity, ""):
        raise SoukError(Code.FORBIDDEN, "your token lists the groups you may join: name one")
    code = frame.get("invite")
    if code is None:
        return await _group_join(sv, s, frame)
    shop, inviter = await sv.engagement.find_code(code)
    known = await sv.engagement.known_before(shop, s.identity.id)
    if inviter != s.identity.id:
        frame = {**frame, "invited_by": inviter}
    result = await _group_join(sv, s, frame)
    group = (result or {}).get("group") or {}
    invite = await sv.engagement.joined(shop, s.identity.id, str(group.get("id")), inviter, known)
    return {**(result or {}), "invite": invite}


op("group_leave", roles=MEMBERS, scope=GROUP)(_delegate("group_leave"))
op("group_members", roles=MEMBERS, scope=GROUP)(_delegate("group_members"))
op("link_groups", roles=STREAMERS, scope=ROOM)(_delegate("link_groups", staff=True))
op("notice", roles=STREAMERS, scope=ROOM_OR_GROUP)(_delegate("notice", staff=True))
op("connector_create", roles=ADMINS, scope=OWN_SHOP)(_delegate("connector_create"))


@op("remove", roles=MODERATORS, scope=GROUP)
async def remove(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    gid = fields.ident(frame, "group")
    room = sv.rooms.group(gid)
    await sv.rooms.ensure(group_channel(gid))
    room.check_rank(s.identity.actor, fields.ident(frame, "user"))
    await sv.community.dispatch("remove", s.identity.public(), frame, shop=s.identity.shop)
    sv.channels.expel(fields.ident(frame, "user"), group_channel(gid))
    return None


@op("warn", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def warn(sv: Services, s: Session, frame: Frame) -> Result:
    """One more offence on the warn → mute → remove ladder, applied at once."""
    assert s.identity is not None
    ch, room = await moderated(sv, s, frame)
    user = fields.ident(frame, "user")
    room.check_rank(s.identity.actor, user)
    step = await sv.community.offence(ch, user)
    name = name_of(sv, room, user)
    sv.bus.publish(ch, "warned", {"user": user, "by": s.identity.id, **step})
    if step["action"] == "mute":
        type_, ev = room.mute(s.identity.actor, user, step.get("seconds") or 600, sv.clock_ms())
        await sanction(sv, ch, room, type_, ev, name)
    elif step["action"] == "remove":
        if room.kind == "room":
            type_, ev = room.ban(s.identity.actor, user)
            await sanction(sv, ch, room, type_, ev, name)
        sv.channels.expel(user, ch)
    return dict(step)
