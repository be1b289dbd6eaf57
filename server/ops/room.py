"""Room and group conversation ops: chat, like, pin, room state, and moderation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel
from server.domain.events import ChatPosted, Liked, RoomEnded
from server.domain.replay import valid_recording_id
from server.domain.room import MAX_CHAT_CHARS, Actor, Room
from server.errors import SoukError
from server.ops import fields
from server.ops.media import start_recording
from server.ops.posting import check_text
from server.ops.registry import (
    MODERATES_ANY_GROUP,
    MODERATORS,
    ROOM,
    ROOM_OR_GROUP,
    STREAMERS,
    UNLIMITED_CHAT,
    VIEWERS,
    Result,
    may,
    op,
)

if TYPE_CHECKING:
    from server.services import Services
    from server.session import Session

log = logging.getLogger("souk.ops.room")


def joined_room(sv: Services, s: Session, frame: Frame) -> tuple[str, Room]:
    """The channel and Room the frame names, which this session must have joined."""
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    if ch not in s.channels:
        raise SoukError(Code.FORBIDDEN, f"join {ch} first")
    room = sv.rooms.get(ch)
    if room is None:
        raise SoukError(Code.NOT_FOUND, f"no such {kind}")
    return ch, room


def staff_room(sv: Services, s: Session, frame: Frame) -> tuple[str, Room]:
    """For staff ops: the token must admit the staff member; joining is not required."""
    assert s.identity is not None
    kind, key = fields.room_or_group(frame)
    if kind == "room":
        if not s.identity.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
        return room_channel(key), sv.rooms.room(key)
    if not s.identity.token_lists_group(key) and not may(s.identity.role, MODERATES_ANY_GROUP):
        if group_channel(key) not in s.channels:
            raise SoukError(Code.FORBIDDEN, f"you do not moderate group {key}")
    return group_channel(key), sv.rooms.group(key)


@op("chat", roles=VIEWERS, scope=ROOM_OR_GROUP)
async def chat(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = joined_room(sv, s, frame)
    now = sv.clock_ms()
    room.check_may_speak(s.identity.actor, now)
    text = fields.text(frame, "text", MAX_CHAT_CHARS)
    if not may(s.identity.role, UNLIMITED_CHAT) and not s.chat_bucket.take(now):
        raise SoukError(Code.RATE_LIMITED, "you are sending messages too fast")
    cid = frame.get("cid")
    if (first := room.resent(s.identity.id, cid)) is not None:
        return {"id": first["id"], "message": first}  # a resend: answered, never posted twice
    check_text(sv.community, text, s.identity, ch)
    msg = room.compose_chat(s.identity.actor, text, frame.get("reply_to"), now, cid)
    try:
        first = await sv.rooms.record_chat(ch, msg)  # durable before anyone sees it
    except Exception:
        log.exception("recording a chat message failed", extra={"ch": ch})
        raise SoukError(Code.UNAVAILABLE, "could not keep the message; try again") from None
    if first is not None:
        return {"id": first["id"], "message": first}
    room.keep_chat(msg)
    sv.bus.publish(ch, "chat", msg, droppable=True)
    ident = s.identity
    await sv.events.deliver(ChatPosted(room.kind, room.id, ident.id, ident.name, ident.role, msg))
    return {"id": msg["id"], "message": msg}


@op("like", roles=VIEWERS, scope=ROOM_OR_GROUP, cost=0.25)
async def like(sv: Services, s: Session, frame: Frame) -> Result:
    ch, room = joined_room(sv, s, frame)
    room.like(frame.get("count"))
    sv.rooms.dirty_likes.add(ch)
    if room.kind == "room" and s.identity is not None:  # likes count in the merchant's numbers
        count = frame.get("count")
        n = count if type(count) is int and count > 0 else 1
        sv.events.emit(Liked(room.id, s.identity.id, s.identity.role, n))
    return None


@op("room_create", roles=STREAMERS, scope=ROOM)
async def room_create(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    key = fields.ident(frame, "room")
    if not s.identity.may_enter_room(key):
        raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
    room = sv.rooms.room(key)
    room.set_title(s.identity.actor, frame.get("title", room.title) or "")
    record = frame.get("record")
    if record is not None and not isinstance(record, bool):
        raise SoukError(Code.INVALID, "record must be a boolean")
    room.claim(s.identity.shop)  # a room another shop claimed was refused (server/ops/access.py)
    await sv.save_room(room)
    if record is not None and sv.replays is not None:
        await sv.replays.set_record(key, record)
    sv.bus.publish(room_channel(key), "room", {"title": room.title, "shop": room.shop})
    return {"room": {"id": key, "title": room.title, "shop": room.shop, "state": room.state}}


@op("room_state", roles=STREAMERS, scope=ROOM_OR_GROUP)
async def room_state(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(sv, s, frame)
    type_, ev = room.set_state(s.identity.actor, frame.get("state"))
    if room.kind == "room":
        room.claim(s.identity.shop)
    await sv.save_room(room)
    sv.bus.publish(ch, type_, ev)
    if room.state == "ended":
        await sv.events.deliver(RoomEnded(room.id))
    elif room.state == "live" and room.kind == "room":
        await start_recording(sv, room.id)
    return {"state": room.state}


@op("pin", roles=STREAMERS, scope=ROOM_OR_GROUP)
async def pin(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(sv, s, frame)
    product: dict[str, Any] | None = None
    if frame.get("product") is not None:
        product_id = fields.ident(frame, "product")
        product = await sv.commerce.find_product(product_id)
        if product is None:
            raise SoukError(Code.NOT_FOUND, f"no product {product_id}")
    type_, ev = room.pin(s.identity.actor, product)
    await sv.save_room(room)
    sv.bus.publish(ch, type_, ev)
    if product is not None and room.kind == "room" and sv.replays is not None:
        try:  # a chapter of the room's recording; the pin stands without it
            await sv.replays.mark(room.id, "pin", product)
        except Exception:
            log.exception("writing a chapter failed", extra={"room": room.id})
    return {"pinned": product}


async def moderated(sv: Services, s: Session, frame: Frame) -> tuple[str, Room]:
    """`staff_room`, with the room's record current (its bans and staff, in a cluster
    possibly written on another node) and the moderator remembered as its staff."""
    assert s.identity is not None
    ch, room = staff_room(sv, s, frame)
    await sv.rooms.ensure(ch)
    await sv.rooms.refresh_staff(ch, room)
    await sv.rooms.staff_seen(room, s.identity.actor)
    return ch, room


def name_of(sv: Services, room: Room, user: Any) -> str:
    """The name a user goes by here (their latest kept message, else a connection of theirs):
    kept with a sanction, so that staff see whom they sanctioned by name, never by id."""
    for msg in reversed(room.chat):
        if msg.get("user") == user:
            return str(msg.get("name") or "")
    for session in sv.channels.sessions:
        if session.identity is not None and session.identity.id == user:
            return session.identity.name
    return ""


async def sanction(sv: Services, ch: str, room: Room, type_: str, ev: dict[str, Any],
                   name: str = "") -> None:
    """Record, then announce (and apply what the announcement implies): every sanction goes
    through here, whatever op made it, so none is lost by a restart."""
    try:
        await sv.sanctions.record(ch, type_, ev, name)
    except Exception:
        log.exception("recording a sanction failed", extra={"ch": ch})
        raise SoukError(Code.UNAVAILABLE, "could not record the sanction; try again") from None
    if type_ == "banned":  # what they said goes with them, from the kept history too
        await sv.rooms.forget_chat(ch, user=ev["user"])
    sv.bus.publish(ch, type_, ev)
    if type_ == "banned":
        sv.rooms.dirty_viewers.add(ch)
        sv.channels.expel(ev["user"], ch)


@op("mute", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def mute(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = await moderated(sv, s, frame)
    name = name_of(sv, room, frame.get("user"))
    type_, ev = room.mute(s.identity.actor, frame.get("user"), frame.get("seconds"), sv.clock_ms())
    await sanction(sv, ch, room, type_, ev, name)
    return {"until": ev["until"]}


@op("ban", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def ban(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = await moderated(sv, s, frame)
    name = name_of(sv, room, frame.get("user"))  # before the ban takes their messages away
    type_, ev = room.ban(s.identity.actor, frame.get("user"))
    await sanction(sv, ch, room, type_, ev, name)
    return None


async def _lift(sv: Services, s: Session, frame: Frame,
                lift: Callable[[Room, Actor, Any], tuple[str, dict[str, Any]]]) -> Result:
    """`unban` / `unmute`: lifted in the room, then recorded and announced like a sanction."""
    assert s.identity is not None
    ch, room = await moderated(sv, s, frame)
    type_, ev = lift(room, s.identity.actor, frame.get("user"))
    await sanction(sv, ch, room, type_, ev)
    return None


@op("unban", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def unban(sv: Services, s: Session, frame: Frame) -> Result:
    return await _lift(sv, s, frame, Room.unban)


@op("unmute", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def unmute(sv: Services, s: Session, frame: Frame) -> Result:
    return await _lift(sv, s, frame, Room.unmute)


@op("sanctions", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def sanctions(sv: Services, s: Session, frame: Frame) -> Result:
    """The room's or group's bans and running mutes, by name, for its staff to lift."""
    ch, _room = staff_room(sv, s, frame)
    return {"sanctions": await sv.sanctions.current(ch)}


@op("delete_message", roles=MODERATORS, scope=ROOM_OR_GROUP)
async def delete_message(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch, room = staff_room(sv, s, frame)
    type_, ev = room.delete_message(s.identity.actor, frame.get("message"))
    await sv.rooms.forget_chat(ch, message_id=ev["id"])
    sv.bus.publish(ch, type_, ev)
    return None


@op("replay_delete", roles=STREAMERS, scope=ROOM)
async def replay_delete(sv: Services, s: Session, frame: Frame) -> Result:
    """Staff of the room delete one of its recordings (the file and its chapters)."""
    assert s.identity is not None
    key = fields.ident(frame, "room")
    if not s.identity.may_enter_room(key):
        raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
    rid = frame.get("replay")
    if sv.replays is None or not valid_recording_id(rid):
        raise SoukError(Code.NOT_FOUND, "no such replay")
    row = await sv.replays.replay(str(rid))
    if row is None or row["room"] != key:
        raise SoukError(Code.NOT_FOUND, "no such replay")
    if not await sv.replays.delete(str(rid)):
        raise SoukError(Code.CONFLICT, "the replay is still recording")
    return {"deleted": rid}
