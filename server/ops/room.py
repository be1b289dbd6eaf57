"""Room and group conversation ops: chat, like, pin, room state, and moderation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.domain.room import MAX_CHAT_CHARS, Room
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import MODERATORS, STREAMERS, Result, op

if TYPE_CHECKING:
    from server.app import App
    from server.session import Session

log = logging.getLogger("souk.ops.room")


def joined_room(app: App, s: Session, frame: Frame) -> tuple[str, Room]:
    """The channel and Room the frame names, which this session must have joined."""
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    if ch not in s.channels:
        raise SoukError(Code.FORBIDDEN, f"join {ch} first")
    room = app.rooms.get(ch)
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no such {kind}")
    return ch, room


def staff_room(app: App, s: Session, frame: Frame) -> tuple[str, Room]:
    """For staff ops: the token must admit the staff member; joining is not required."""
    assert s.identity is not None
    kind, key = fields.room_or_group(frame)
    if kind == "room":
        if not s.identity.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
        return room_channel(key), app.rooms.room(key)
    if not s.identity.token_lists_group(key) and s.identity.role != "admin":
        if group_channel(key) not in s.channels:
            raise SoukError(Code.FORBIDDEN, f"you do not moderate group {key}")
    return group_channel(key), app.rooms.group(key)


@op("chat")
async def chat(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = joined_room(app, s, frame)
    now = app.clock_ms()
    room.check_may_speak(s.identity.actor, now)
    text = fields.text(frame, "text", MAX_CHAT_CHARS)
    if not s.identity.is_staff and not s.chat_bucket.take(now):
        raise SoukError(Code.RATE_LIMITED, "you are sending messages too fast")
    app.check_text(text, s.identity, ch)
    type_, msg = room.chat_message(s.identity.actor, text, frame.get("reply_to"), now)
    app.bus.publish(ch, type_, msg, droppable=True)
    await app.after_chat(ch, room, s.identity, msg)
    return {"id": msg["id"]}


@op("like", cost=0.25)
async def like(app: App, s: Session, frame: Frame) -> Result:
    ch, room = joined_room(app, s, frame)
    room.like(frame.get("count"))
    app.rooms.dirty_likes.add(ch)
    if room.kind == "room" and s.identity is not None:  # operations: likes in the numbers
        count = frame.get("count")
        n = count if type(count) is int and count > 0 else 1
        app.operations.activity(room.id, s.identity.id, s.identity.role, "like", n)
    return None


@op("room_create", roles=STREAMERS)
async def room_create(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    key = fields.ident(frame, "room")
    if not s.identity.may_enter_room(key):
        raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
    room = app.rooms.room(key)
    room.set_title(s.identity.actor, frame.get("title", room.title) or "")
    room.shop = s.identity.shop
    await app.save_room(room)
    app.bus.publish(room_channel(key), "room", {"title": room.title, "shop": room.shop})
    return {"room": {"id": key, "title": room.title, "shop": room.shop, "state": room.state}}


@op("room_state", roles=STREAMERS)
async def room_state(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    type_, ev = room.set_state(s.identity.actor, frame.get("state"))
    await app.save_room(room)
    app.bus.publish(ch, type_, ev)
    if room.state == "ended":
        await app.room_ended(room)
    return {"state": room.state}


@op("pin", roles=STREAMERS)
async def pin(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    product: dict[str, Any] | None = None
    if frame.get("product") is not None:
        product = await app.product_card(fields.ident(frame, "product"))
    type_, ev = room.pin(s.identity.actor, product)
    await app.save_room(room)
    app.bus.publish(ch, type_, ev)
    return {"pinned": product}


@op("mute", roles=MODERATORS)
async def mute(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    type_, ev = room.mute(s.identity.actor, frame.get("user"), frame.get("seconds"), app.clock_ms())
    await _record(app, ch, ev)
    app.bus.publish(ch, type_, ev)
    return {"until": ev["until"]}


async def _record(app: App, ch: str, ev: dict[str, Any]) -> None:
    """A sanction is written before it is announced: it must hold after a restart and on
    nodes that were not watching (server/sanctions.py). This node's Room already applies it."""
    try:
        await app.sanctions.record(ch, ev)
    except Exception:
        log.exception("recording a sanction failed", extra={"ch": ch})
        raise SoukError(Code.UNAVAILABLE, "could not record the sanction; try again") from None


@op("ban", roles=MODERATORS)
async def ban(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    type_, ev = room.ban(s.identity.actor, frame.get("user"))
    await _record(app, ch, ev)
    app.bus.publish(ch, type_, ev)
    app.rooms.dirty_viewers.add(ch)
    app.expel(ev["user"], ch)
    return None


@op("delete_message", roles=MODERATORS)
async def delete_message(app: App, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(app, s, frame)
    type_, ev = room.delete_message(s.identity.actor, frame.get("message"))
    app.bus.publish(ch, type_, ev)
    return None
