"""Channel ops: join, leave, resume. A room and a group are both channels with a snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Code, Frame, group_channel, room_channel, staff_channel
from server.errors import SoukError
from server.ops import fields
from server.ops.registry import (
    CHANNEL_ROLES,
    ROOM_OR_GROUP,
    VIEWERS,
    Result,
    Scope,
    Target,
    may,
    op,
)
from server.wsframe import bounded_events

if TYPE_CHECKING:
    from server.auth import Identity
    from server.services import Services
    from server.session import Session

_BAD_CHANNEL = "'ch' must be room:<id>, group:<id>, user:<id> or staff:<room>"
_ROLE_REFUSALS = {"staff": "the staff channel is for the streamer and moderators"}


async def authorize_channel(sv: Services, ident: Identity, ch: str) -> None:
    """May this identity subscribe to `ch`? Raises forbidden/not_found/invalid otherwise."""
    kind, _, key = ch.partition(":")
    if not key or not fields.ID_RE.fullmatch(key) or kind not in CHANNEL_ROLES:
        raise SoukError(Code.INVALID, _BAD_CHANNEL)
    if not may(ident.role, CHANNEL_ROLES[kind]):
        raise SoukError(Code.FORBIDDEN, _ROLE_REFUSALS.get(kind, f"your role may not follow {kind} channels"))
    if kind == "room":
        if not ident.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, f"your token does not admit you to room {key}")
    elif kind == "group":
        if not await sv.community.group_known(key):
            raise SoukError(Code.NOT_FOUND, f"no group {key}")
        if not ident.token_lists_group(key) and not await sv.community.is_member_fresh(ident.id, key):
            raise SoukError(Code.FORBIDDEN, f"you are not a member of group {key}")
    elif kind == "user":
        if key != ident.id:
            raise SoukError(Code.FORBIDDEN, "a user channel is private to its user")
    elif kind == "staff":
        if not ident.may_enter_room(key):
            raise SoukError(Code.FORBIDDEN, _ROLE_REFUSALS["staff"])


def _enter(sv: Services, s: Session, ch: str) -> None:
    """Count presence and subscribe; the hub is flushed first so that the snapshot or the
    resumed history and the live stream neither overlap nor leave a hole."""
    assert s.identity is not None
    if ch in s.channels:
        return
    if len(s.channels) >= sv.max_channels:
        raise SoukError(Code.RATE_LIMITED, f"at most {sv.max_channels} channels per connection")
    room = None
    if ch.startswith("room:"):
        room = sv.rooms.room(ch[5:])
    elif ch.startswith("group:"):
        room = sv.rooms.group(ch[6:])
    if room is not None:
        room.enter(s.identity.actor)
        sv.rooms.dirty_viewers.add(ch)
    sv.hub.flush(ch)
    sv.channels.subscribe(s, ch)


@op("join", roles=VIEWERS, scope=ROOM_OR_GROUP)
async def join(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    await authorize_channel(sv, s.identity, ch)
    await sv.rooms.ensure(ch)
    _enter(sv, s, ch)
    room = sv.rooms.get(ch)
    if room is not None:
        await sv.rooms.staff_seen(room, s.identity.actor)
    if kind == "room" and may(s.identity.role, CHANNEL_ROLES["staff"]):
        sv.hub.flush(staff_channel(key))
        sv.channels.subscribe(s, staff_channel(key))
    snapshot = await sv.channels.snapshot(ch)
    return {"ch": ch, "snapshot": snapshot}


@op("leave", roles=VIEWERS, scope=ROOM_OR_GROUP, cost=0.5)
async def leave(sv: Services, s: Session, frame: Frame) -> Result:
    kind, key = fields.room_or_group(frame)
    ch = room_channel(key) if kind == "room" else group_channel(key)
    if ch not in s.channels:
        raise SoukError(Code.NOT_FOUND, f"you have not joined {ch}")
    sv.channels.leave(s, ch)
    if kind == "room":
        sv.channels.unsubscribe(s, staff_channel(key))
    return None


@op("resume", roles=VIEWERS, scope=(Scope(Target.CHANNEL, "ch"),))
async def resume(sv: Services, s: Session, frame: Frame) -> Result:
    assert s.identity is not None
    ch = frame.get("ch")
    if not isinstance(ch, str) or len(ch) > 80:
        raise SoukError(Code.INVALID, "'ch' must be a channel name")
    seq = fields.integer(frame, "seq", 0, 2**53)
    epoch = frame.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
        raise SoukError(Code.INVALID, "'epoch' must be a string")
    await authorize_channel(sv, s.identity, ch)
    await sv.rooms.ensure(ch)
    _enter(sv, s, ch)
    sv.hub.flush(ch)  # whatever was pending is now in both the history and the socket
    missed = await sv.bus.since(ch, seq, epoch)
    head_epoch, head_seq = await sv.bus.head(ch)
    # what the client missed, unless it would pass the bound: then a snapshot is both smaller
    # and what a client that far behind needs (replies are bounded: docs/wire.md)
    replay = bounded_events(missed, s.subprotocol, sv.resume_limit) if missed else None
    if missed is None or (missed and replay is None):
        snapshot: dict[str, Any] = await sv.channels.snapshot(ch)
        s.send({"op": "event", "ch": ch, "type": "resync", "epoch": head_epoch, "seq": head_seq,
                "ts": sv.clock_ms(), "snapshot": snapshot})
        return {"ch": ch, "resync": True, "epoch": head_epoch, "seq": head_seq}
    if replay is not None:
        s.send_bytes(replay)
    return {"ch": ch, "missed": len(missed), "epoch": head_epoch, "seq": head_seq}
