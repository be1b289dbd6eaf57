"""Q&A and community-group ops: thin checks of access, then the Community adapter decides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import ADMINS, MEMBERS, MODERATORS, STREAMERS, VIEWERS, Handler, Result, op
from server.ops.room import staff_room

if TYPE_CHECKING:
    from server.app import App
    from server.session import Session


def _delegate(name: str, *, joined_room: bool = False, staff: bool = False) -> Handler:
    async def handler(app: App, s: Session, frame: Frame) -> Result:
        assert s.identity is not None
        if joined_room:
            room = fields.ident(frame, "room")
            if room_channel(room) not in s.channels:
                raise SoukError(Code.FORBIDDEN, f"join room:{room} first")
        if staff and frame.get("room") is not None:
            if not s.identity.may_enter_room(fields.ident(frame, "room")):
                raise SoukError(Code.FORBIDDEN, "your token does not admit you to this room")
        if name == "ask":
            app.check_text(fields.text(frame, "text", 500), s.identity)
            if not s.identity.is_staff and not s.chat_bucket.take(app.clock_ms()):
                raise SoukError(Code.RATE_LIMITED, "you are asking too fast")
        result = await app.community.dispatch(name, s.identity.public(), frame, shop=s.identity.shop)
        return dict(result)

    handler.__name__ = f"community_{name}"
    return handler


op("ask", roles=VIEWERS)(_delegate("ask", joined_room=True))
op("upvote", roles=VIEWERS)(_delegate("upvote", joined_room=True))
op("answer", roles=MODERATORS)(_delegate("answer", staff=True))
op("dismiss", roles=MODERATORS)(_delegate("dismiss", staff=True))
op("group_create", roles=STREAMERS)(_delegate("group_create"))
_group_join = _delegate("group_join")


@op("group_join", roles=MEMBERS)
async def group_join(app: App, s: Session, frame: Frame) -> Result:
    """Operations (issue 10): an `invite` code attributes the join to its inviter (tag
    invited_by, reward rule); self-invites and members the shop already had do not count."""
    assert s.identity is not None
    code = frame.get("invite")
    if code is None:
        result = await _group_join(app, s, frame)
        group = (result or {}).get("group") or {}
        app.operations.mark_known(str(group.get("shop", s.identity.shop)), s.identity.id)
        return result
    shop, inviter = await app.operations.find_code(code)
    known = await app.operations.known_before(shop, s.identity.id)
    if inviter != s.identity.id:
        frame = {**frame, "invited_by": inviter}
    result = await _group_join(app, s, frame)
    group = (result or {}).get("group") or {}
    invite = await app.operations.joined(shop, s.identity.id, str(group.get("id")), inviter, known)
    return {**(result or {}), "invite": invite}
op("group_leave", roles=MEMBERS)(_delegate("group_leave"))
op("group_members", roles=MEMBERS)(_delegate("group_members"))
op("link_groups", roles=STREAMERS)(_delegate("link_groups", staff=True))
op("notice", roles=STREAMERS)(_delegate("notice", staff=True))
op("connector_create", roles=ADMINS)(_delegate("connector_create"))


@op("remove", roles=MODERATORS)
async def remove(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    gid = fields.ident(frame, "group")
    await app.community.dispatch("remove", s.identity.public(), frame, shop=s.identity.shop)
    app.expel(fields.ident(frame, "user"), group_channel(gid))
    return None


@op("warn", roles=MODERATORS)
async def warn(app: App, s: Session, frame: Frame) -> Result:
    """One more offence on the warn → mute → remove ladder, applied at once."""
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    user = fields.ident(frame, "user")
    step = await app.community.offence(ch, user)
    app.bus.publish(ch, "warned", {"user": user, "by": s.identity.id, **step})
    if step["action"] == "mute":
        type_, ev = room.mute(s.identity.actor, user, step.get("seconds") or 600, app.clock_ms())
        app.bus.publish(ch, type_, ev)
    elif step["action"] == "remove":
        if room.kind == "room":
            type_, ev = room.ban(s.identity.actor, user)
            app.bus.publish(ch, type_, ev)
        app.expel(user, ch)
    return dict(step)
